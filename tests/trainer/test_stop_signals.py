"""The trainer's stop-signal plumbing on its own (``dino.runtime``), with real signals:
a signal held by a deferred block arrives when it ends, also when a loader's epoch ends
there, and a process forked while the signals are blocked never takes one it ignores."""

from __future__ import annotations

import os
import signal
import time

import pytest

from dino.runtime import Interrupted, SignalGuard, deferred_stop, ignore_stop_signals, stop_signals_blocked


def _sigterm_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.05)  # the handler runs here, in the main thread


def test_a_deferred_block_holds_the_signal_until_it_ends():
    with SignalGuard() as guard:
        reached_end = False
        with pytest.raises(Interrupted) as info:
            with deferred_stop():
                _sigterm_self()
                reached_end = True
        assert reached_end and info.value.signum == signal.SIGTERM and guard.received == signal.SIGTERM


def test_an_epoch_ending_in_a_deferred_block_still_delivers_the_signal():
    def batches():
        with deferred_stop():
            _sigterm_self()
            raise StopIteration

    with SignalGuard(), pytest.raises(Interrupted):
        batches()


def test_without_a_guard_deferred_stop_does_nothing():
    previous = signal.signal(signal.SIGUSR1, lambda *a: None)
    try:
        with deferred_stop():
            pass
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_a_child_forked_with_the_signals_blocked_ignores_the_groups_sigterm():
    """As a data-loader worker: forked while blocked, SIGTERMed before it sets up, then it
    ignores the signal and lives on until told to exit."""
    read_end, write_end = os.pipe()
    with stop_signals_blocked():
        pid = os.fork()
        if pid == 0:  # the child, which (like multiprocessing's) never leaves the block but exits
            os.close(read_end)
            time.sleep(0.3)  # the SIGTERM arrives while still blocked
            ignore_stop_signals()
            time.sleep(0.3)  # and again after
            os.write(write_end, b"alive")
            os._exit(0)
    os.close(write_end)
    os.kill(pid, signal.SIGTERM)
    time.sleep(0.4)
    os.kill(pid, signal.SIGTERM)
    _, status = os.waitpid(pid, 0)
    assert os.read(read_end, 16) == b"alive"
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
