"""Device slots and packing without processes: the policy's arithmetic, the pool's leases
(who runs beside whom, running alone, waiting for room) and ``auto`` from scripted peaks."""

from __future__ import annotations

import threading
import time

import pytest

from automl.config import build_run_config
from automl.errors import ConfigError
from automl.study.events import Note
from automl.study.packing import CUDA_CONTEXT_MIB, PackingPolicy, fitting_trials
from automl.study.slots import GpuInfo, Slot, SlotPool, SlotWaitCancelled, card_memory, plan_slots

H200_MIB = 143771  # memory.total of an H200 as nvidia-smi reports it


def _policy(trials_per_slot="auto", *, gpu=True, card=H200_MIB, cores=16, n_slots=1, cap=4, margin=0.1):
    return PackingPolicy(trials_per_slot=trials_per_slot, max_trials_per_slot=cap, memory_margin=margin,
                         min_cores_per_trial=2, cpu_cores=cores, n_slots=n_slots, gpu_slots=gpu,
                         card_mib=card if gpu else None)


def test_fitting_trials_counts_a_context_per_process_and_keeps_the_margin():
    # the GPU smoke study on main: about 45 GiB per trial as nvidia-smi saw it -> 2 on an H200
    assert fitting_trials(H200_MIB, 44_000, 0.1) == 2
    # 13 GiB (the figure for R50 at 320 px, batch 8) -> 9 fit, before any cap
    assert fitting_trials(H200_MIB, 13 * 1024, 0.1) == 9
    assert fitting_trials(10_000, 2_000, 0.1) == 9_000 // (2_000 + CUDA_CONTEXT_MIB)
    assert fitting_trials(10_000, 50_000, 0.1) == 1  # one trial always runs (it may OOM alone)


def test_auto_is_one_per_slot_until_a_peak_then_capped_by_limit_and_cores():
    policy = _policy()
    assert policy.trials_for(None) == 1
    assert policy.trials_for(44_000) == 2
    assert policy.trials_for(13 * 1024) == 4  # max_trials_per_slot
    assert _policy(cores=6).trials_for(13 * 1024) == 3  # 2 cores per trial
    assert _policy(cores=16, n_slots=8).ceiling == 1  # 8 GPUs on 16 cores: one trial per GPU
    assert _policy(card=None).ceiling == 1  # unknown card memory: no packing
    assert _policy(3).trials_for(None) == 3  # a number is taken as given
    assert _policy("auto", gpu=False, cores=8).trials_for(None) == 4  # CPU: by cores, capped
    assert _policy("auto", gpu=False, cores=2).trials_for(None) == 1


def test_card_memory_is_the_smallest_card_of_the_slots():
    slots = [Slot((0, 1)), Slot((2, 3))]
    gpus = [GpuInfo(0, 81_000), GpuInfo(1, 81_000), GpuInfo(2, 40_000), GpuInfo(3, 81_000)]
    assert card_memory(slots, gpus, None) == 40_000
    assert card_memory(slots, gpus, 20_000) == 20_000  # configured wins
    assert card_memory(slots, [GpuInfo(0, None)], None) is None


def test_plan_slots_groups_devices():
    assert plan_slots("cpu", 1) == [Slot(())]
    assert plan_slots("auto", 1, gpus=[]) == [Slot(())]
    assert plan_slots([0, 1, 2, 3], 2) == [Slot((0, 1)), Slot((2, 3))]
    assert plan_slots("auto", 2, gpus=[0, 1, 2]) == [Slot((0, 1))]
    with pytest.raises(ConfigError, match="train.num_gpus is 2"):
        plan_slots([0], 2)


def test_leases_record_neighbours_and_spread_over_slots():
    pool = SlotPool([Slot((0,)), Slot((1,))], _policy(2, n_slots=2))
    assert pool.size == 4
    with pool.acquire(0) as a, pool.acquire(1) as b, pool.acquire(2) as c:
        assert (a.slot, b.slot) == (Slot((0,)), Slot((1,)))  # the least occupied slot first
        assert c.slot == Slot((0,)) and c.packed_with == (0,)
        assert a.neighbours == {2} and c.neighbours == {0} and not b.was_packed
        assert a.most_at_once == 2
        assert pool.occupancy() == {"cuda:0": (0, 2), "cuda:1": (1,)}
    # each of 4 concurrent trials gets a quarter of the 16 cores
    assert a.env == {"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4"}
    # one trial per GPU keeps the trainer's own thread defaults, as before packing existed
    assert SlotPool([Slot((0,))], _policy(1)).thread_env(Slot((0,))) == {}


def _start(pool, trial, alone=False, hold=None):
    """Acquire in a thread; returns (thread, event set once acquired, release event, box)."""
    got, release, box = threading.Event(), hold or threading.Event(), {}

    def run():
        with pool.acquire(trial, alone=alone) as lease:
            box["lease"] = lease
            got.set()
            release.wait(10)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, got, release, box


def test_a_trial_marked_alone_waits_for_an_empty_slot_and_keeps_it():
    pool = SlotPool([Slot(())], _policy(2, gpu=False))
    t0, got0, rel0, _ = _start(pool, 0)
    assert got0.wait(5)
    t1, got1, rel1, box1 = _start(pool, 1, alone=True)
    time.sleep(0.2)
    assert not got1.is_set()  # trial 0 is still on the slot
    t2, got2, rel2, box2 = _start(pool, 2)
    time.sleep(0.2)
    assert not got2.is_set()  # room for 2, but new trials wait while one waits to run alone
    rel0.set()
    assert got1.wait(5) and box1["lease"].packed_with == ()
    time.sleep(0.2)
    assert not got2.is_set()  # nobody joins a trial running alone
    rel1.set()
    assert got2.wait(5)
    rel2.set()
    for t in (t0, t1, t2):
        t.join(5)
    assert not box1["lease"].was_packed


def test_auto_admits_more_trials_once_a_peak_is_reported_and_fewer_after_an_oom():
    notes = []
    pool = SlotPool([Slot((0,))], _policy(card=10_000, cores=16), on_event=notes.append)
    assert pool.size == 4 and pool.capacity == 1
    t0, got0, rel0, box0 = _start(pool, 0)
    assert got0.wait(5)
    t1, got1, rel1, box1 = _start(pool, 1)
    time.sleep(0.2)
    assert not got1.is_set()  # no peak known yet: one trial per slot
    box0["lease"].report_peak(2_000)  # 9000 / 3024 -> 2 fit
    assert got1.wait(5)
    assert pool.capacity == 2
    assert any(isinstance(n, Note) and "trial 0 peaked at 2.0 GiB" in n.text and "2 trial(s) per slot" in n.text
               for n in notes)
    box0["lease"].report_peak(1_000)  # a lower peak changes nothing: the largest counts
    assert pool.capacity == 2
    box1["lease"].report_oom()  # two on the slot and one ran out of memory: one from now
    assert pool.capacity == 1
    assert "at most 1 per slot" in notes[-1].text
    rel0.set()
    rel1.set()
    t0.join(5)
    t1.join(5)


def test_a_wait_for_a_slot_ends_when_the_run_is_stopped():
    pool = SlotPool([Slot(())], _policy(1, gpu=False))
    stop = threading.Event()
    with pool.acquire(0):
        threading.Timer(0.3, stop.set).start()
        began = time.monotonic()
        with pytest.raises(SlotWaitCancelled, match="trial 1 stopped while it waited"):
            with pool.acquire(1, cancel=stop):
                pass
        assert time.monotonic() - began < 2


def test_devices_config_shapes():
    def devices(value):
        return build_run_config({"data": {"synth": {}}, "devices": value}, use_cpu_variant=False, where="x").devices

    assert devices("cpu").use == "cpu" and devices("cpu").trials_per_slot == 1
    assert devices([0, 1]).use == [0, 1]
    assert devices({"trials_per_slot": "auto"}).use == "auto"
    assert devices({"use": "cpu", "trials_per_slot": 3}).trials_per_slot == 3
    with pytest.raises(ConfigError, match="devices.trials_per_slot: expected a number of trials"):
        devices({"trials_per_slot": 0})
    with pytest.raises(ConfigError, match="devices.use: expected auto, cpu or a list of GPU indices"):
        devices({"use": "gpu"})
    with pytest.raises(ConfigError, match="devices.memory_margin"):
        devices({"memory_margin": 1.5})
    with pytest.raises(ConfigError, match=r"cpu_parallel is now devices.trials_per_slot.*trials_per_slot: 2"):
        build_run_config({"data": {"synth": {}}, "cpu_parallel": 2}, use_cpu_variant=False, where="x")


def _ran(number, start_s, end_s, slot="cuda:0", state=None, job=None, worker="hostA:1:2"):
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    at = "2026-12-02T01:{:02d}:{:02d}+00:00"
    t = create_trial(state=state or TrialState.COMPLETE, value=None if state else 0.5,
                     params={"x": 0.1}, distributions={"x": FloatDistribution(0, 1)},
                     user_attrs={"slot": slot, "job_id": job or f"pid-{number}", "worker": worker,
                                 "job_started_at": at.format(*divmod(start_s, 60)),
                                 "job_ended_at": at.format(*divmod(end_s, 60))})
    t.number = number
    return t


def test_slot_usage_counts_jobs_at_once_and_skips_retry_copies():
    from optuna.trial import TrialState

    from automl.study.packing import slot_usage

    trials = [_ran(0, 0, 180), _ran(1, 40, 120), _ran(2, 120, 300), _ran(3, 0, 60, slot="cuda:1"),
              # queued to retry trial 1: same job attributes, inherited
              _ran(4, 40, 120, state=TrialState.WAITING, job="pid-1")]
    gpu0, gpu1 = slot_usage(trials)
    assert (gpu0.slot, gpu0.trials, gpu0.max_at_once) == ("cuda:0", (0, 1, 2), 2)
    assert gpu0.busy_s == 300 and gpu0.mean_at_once == pytest.approx((40 + 80 * 2 + 60 * 2 + 120) / 300)
    assert (gpu1.slot, gpu1.max_at_once) == ("cuda:1", 1)
    assert "up to 2 at once" in gpu0.describe()
    # several hosts: each host's cuda:0 is its own slot
    two_hosts = slot_usage([_ran(0, 0, 60), _ran(1, 0, 60, worker="hostB:1:2")])
    assert [u.slot for u in two_hosts] == ["hostA/cuda:0", "hostB/cuda:0"]
    assert all(u.max_at_once == 1 for u in two_hosts)
