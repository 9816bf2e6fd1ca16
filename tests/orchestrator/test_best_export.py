"""The best trial's export runs through the study's launcher and waits with JobHandle.wait."""

import sys
import textwrap
from pathlib import Path

from automl.launchers.base import JobResult, JobSpec
from automl.launchers.local import LocalLauncher
from automl.study.best_export import export_best

FAKE_DINO = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    task, args = sys.argv[1], dict(a.split("=", 1) for a in sys.argv[2:] if "=" in a)
    assert task == "export", task
    if "SLOW" in args["export.onnx_file"]:
        time.sleep(60)
    Path(args["export.onnx_file"]).write_bytes(b"onnx")
""")


def _files(tmp_path: Path, out_name: str) -> tuple[list[str], Path, Path, Path]:
    script = tmp_path / "fake_dino.py"
    script.write_text(FAKE_DINO)
    trial = tmp_path / "trial_0000"
    (trial / "train").mkdir(parents=True)
    spec, ckpt = trial / "spec.yaml", trial / "train" / "model_epoch_000_step_1.pth"
    spec.write_text("results_dir: x\n")
    ckpt.write_bytes(b"ckpt")
    return [sys.executable, str(script), "train"], spec, ckpt, tmp_path / out_name


def test_export_waits_for_the_job(tmp_path):
    command, spec, ckpt, out = _files(tmp_path, "best_model.onnx")
    result, log = export_best(LocalLauncher(registry_dir=tmp_path / "jobs"), command, "s", 0, spec, ckpt, out,
                              (), timeout_s=60)
    assert result.exit_code == 0 and out.read_bytes() == b"onnx"
    assert log == out.with_suffix(".log") and "export" in log.read_text()


def test_an_export_past_its_timeout_is_stopped(tmp_path):
    command, spec, ckpt, out = _files(tmp_path, "SLOW.onnx")
    result, _ = export_best(LocalLauncher(registry_dir=tmp_path / "jobs"), command, "s", 0, spec, ckpt, out,
                            (), timeout_s=1.0)
    assert result.stopped and result.exit_code != 0 and not out.exists()


class _RecordingHandle:
    """A handle whose job never ends by itself: what export_best does with it."""

    def __init__(self, job: JobSpec) -> None:
        self.job, self.waited, self.stopped = job, [], False

    @property
    def id(self) -> str:
        return "fake"

    @property
    def result(self) -> JobResult | None:
        return None

    def poll(self) -> JobResult | None:
        raise AssertionError("export_best waits through JobHandle.wait, it does not poll")

    def wait(self, timeout: float | None = None) -> JobResult:
        self.waited.append(timeout)
        raise TimeoutError("still running")

    def stop(self, grace_period: float = 10.0) -> JobResult:
        self.stopped = True
        return JobResult(exit_code=143, stopped=True)


def test_export_uses_the_handles_wait(tmp_path):
    handles = []

    class Launcher:
        name = "fake"

        def launch(self, job):
            handles.append(_RecordingHandle(job))
            return handles[-1]

        def reap_orphans(self, study_name, keep):
            return []

    command, spec, ckpt, out = _files(tmp_path, "best.onnx")
    result, _ = export_best(Launcher(), command, "s", 3, spec, ckpt, out, (), timeout_s=42)
    (handle,) = handles
    assert handle.waited == [42] and handle.stopped and result.exit_code == 143
    assert handle.job.command[2] == "export" and f"export.checkpoint={ckpt}" in handle.job.command


def test_export_and_pictures_of_the_best_run_side_by_side(tmp_path):
    """The end of a study exports the best checkpoint and draws its detections at once,
    not one after the other: each here waits for the other to have started."""
    import threading

    from automl.study.results import StudyOutcome, _hand_over

    both = threading.Barrier(2, timeout=10)
    outcome = StudyOutcome("s", {}, best_spec=tmp_path / "best_spec.yaml", best_checkpoint=tmp_path / "best.pth")

    def exporter(best, spec, checkpoint):
        both.wait()  # BrokenBarrierError after 10 s if the pictures did not start meanwhile
        return tmp_path / "best_model.onnx"

    def showcase(best, checkpoint):
        both.wait()
        return "pictures"

    _hand_over(outcome, None, exporter, showcase)
    assert outcome.exported_model == tmp_path / "best_model.onnx" and outcome.showcase == "pictures"
    _hand_over(outcome, None, None, lambda best, checkpoint: "alone")  # export off: pictures only
    assert outcome.showcase == "alone"
