"""Each known failure signature, on log text the way PyTorch, NCCL and the trainer write it."""

from __future__ import annotations

import pytest

from automl.observe.diagnosis import CATALOGUE, Diagnosis, diagnose

PREAMBLE = (
    "[automl] 2026-11-03T10:00:00+00:00 trial 4 of study 'smoke': dino train -e /ws/trial_0004/spec.yaml\n"
    "Loading annotations into memory...\nDone (t=0.02s)\ncreating index...\nindex created!\n"
    "Epoch 0/10\n"
    "Train:  40%|####      | 4/10 [00:04<00:06, loss=17.3]\n"
)


def traceback(*frames_and_error: str) -> str:
    lines = ["Traceback (most recent call last):"]
    for frame in frames_and_error[:-1]:
        lines += [f'  File "{frame}", line 42, in forward', "    out = self.layer(x)"]
    return PREAMBLE + "\n".join(lines + [frames_and_error[-1]]) + "\n"


CUDA_OOM = traceback(
    "/opt/dino/dino/engine.py",
    "/opt/dino/dino/models/deformable_attention.py",
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
    "capacity of 79.10 GiB of which 1.06 GiB is free. Including non-PyTorch memory, this process "
    "has 78.03 GiB memory in use. Of the allocated memory 75.12 GiB is allocated by PyTorch, and "
    "1.35 GiB is reserved by PyTorch but unallocated. If reserved but unallocated memory is large "
    "try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.",
)

DEVICE_ASSERT = (
    PREAMBLE
    + "/pytorch/aten/src/ATen/native/cuda/ScatterGatherKernel.cu:367: operator(): block: [0,0,0], "
    "thread: [12,0,0] Assertion `idx_dim >= 0 && idx_dim < index_size && \"index out of bounds\"` failed.\n"
    + traceback(
        "/opt/dino/dino/models/criterion.py",
        "RuntimeError: CUDA error: device-side assert triggered\n"
        "CUDA kernel errors might be asynchronously reported at some other API call, so the "
        "stacktrace below might be incorrect.\nFor debugging consider passing CUDA_LAUNCH_BLOCKING=1\n"
        "Compile with `TORCH_USE_CUDA_DSA` to enable device-side assertions.",
    )
)

ONE_HOT_CPU = traceback(
    "/opt/dino/dino/models/criterion.py",
    "RuntimeError: Class values must be smaller than num_classes.",
)

MISSING_VAL = traceback(
    "/opt/dino/dino/data/coco.py",
    "/venv/lib/python3.11/site-packages/pycocotools/coco.py",
    "FileNotFoundError: [Errno 2] No such file or directory: '/data/val/annotations.json'",
)

MISSING_TRAIN_IMAGE = traceback(
    "/opt/dino/dino/data/coco.py",
    "/venv/lib/python3.11/site-packages/PIL/Image.py",
    "FileNotFoundError: [Errno 2] No such file or directory: '/data/train/images/000123.jpg'",
)

NUM_SELECT_TOPK = traceback(
    "/opt/dino/dino/models/postprocess.py",
    "RuntimeError: selected index k out of range",
)

NUM_SELECT_TRAINER = PREAMBLE + (
    "error: model.num_select (400) must be smaller than model.num_queries * dataset.num_classes "
    "(300 * 1 = 300)\n"
)

INTERM = PREAMBLE + (
    "error: len(model.return_interm_indices) = 3 must equal model.num_feature_levels = 4\n"
)

TOO_SMALL_TORCH = traceback(
    "/opt/dino/dino/data/loader.py",
    "/venv/lib/python3.11/site-packages/torch/utils/data/sampler.py",
    "ValueError: num_samples should be a positive integer value, but got num_samples=0",
)

TOO_SMALL_TRAINER = PREAMBLE + (
    "error: the training set has 3 images, fewer than one batch (dataset.batch_size 4 x "
    "train.num_gpus 1); lower the batch size or add images\n"
)

NCCL = PREAMBLE + (
    "[rank1]:[E1103 10:12:01.123456 ProcessGroupNCCL.cpp:616] [Rank 1] Watchdog caught collective "
    "operation timeout: WorkNCCL(SeqNum=412, OpType=ALLREDUCE, NumelIn=1, NumelOut=1, "
    "Timeout(ms)=600000) ran for 600043 milliseconds before timing out.\n"
    "torch.distributed.DistBackendError: NCCL error in: ../torch/csrc/distributed/c10d/"
    "ProcessGroupNCCL.cpp:1970, unhandled system error (run with NCCL_DEBUG=INFO for details), "
    "NCCL version 2.21.5\nncclSystemError: System call (e.g. socket, malloc) or external library "
    "call failed or device error.\n"
)

OOM_THEN_NCCL = CUDA_OOM + NCCL  # rank 0 ran out of memory; rank 1 then timed out

SHM = PREAMBLE + (
    "ERROR: Unexpected bus error encountered in worker. This might be caused by insufficient "
    "shared memory (shm).\n"
    "RuntimeError: DataLoader worker (pid 4121) is killed by signal: Bus error. It is possible "
    "that dataloader's workers are out of shared memory. Please try to raise your shared memory limit.\n"
)

SPEC_UNKNOWN_KEY = (
    "error: unknown key 'model.num_querys' in overrides (did you mean 'model.num_queries'?)\n"
)

OMEGACONF = traceback(
    "/opt/tao/hydra_runner.py",
    "omegaconf.errors.ConfigKeyError: Key 'num_querys' is not in struct\n"
    "    full_key: model.num_querys\n    object_type=DINOModelConfig",
)

NAN = PREAMBLE + "Loss is nan, stopping training\n{'loss_ce': nan, 'loss_bbox': nan}\n"

SEGFAULT = PREAMBLE + "Fatal Python error: Segmentation fault\n\nThread 0x00007f (most recent call first):\n"

OTHER_EXCEPTION = traceback(
    "/opt/dino/dino/train.py",
    "/opt/dino/dino/models/backbone.py",
    "KeyError: 'layer5'",
)


@pytest.mark.parametrize(
    "exit_code, log, code, in_fix",
    [
        (1, CUDA_OOM, "cuda_oom", "dataset.batch_size"),
        (1, OOM_THEN_NCCL, "cuda_oom", "dataset.batch_size"),
        (1, DEVICE_ASSERT, "device_side_assert", "dataset.num_classes"),
        (1, ONE_HOT_CPU, "device_side_assert", "max(category_id) + 1"),
        (1, MISSING_VAL, "missing_file", "val_data_sources"),
        (1, MISSING_TRAIN_IMAGE, "missing_file", "train_data_sources"),
        (1, NUM_SELECT_TOPK, "num_select", "model.num_select < model.num_queries"),
        (2, NUM_SELECT_TRAINER, "num_select", "model.num_select"),
        (2, INTERM, "interm_levels", "num_feature_levels"),
        (1, TOO_SMALL_TORCH, "dataset_too_small", "dataset.batch_size"),
        (2, TOO_SMALL_TRAINER, "dataset_too_small", "dataset.batch_size"),
        (134, NCCL, "nccl", "gpu_ids"),
        (1, SHM, "shared_memory", "shm-size"),
        (2, SPEC_UNKNOWN_KEY, "spec_error", "search space"),
        (1, OMEGACONF, "spec_error", "overrides"),
        (1, NAN, "nan_loss", "lr"),
        (127, "[automl] cannot start 'dino': [Errno 2] No such file or directory: 'dino'\n", "command_not_found", "pip install"),
        (139, SEGFAULT, "killed_by_signal", "native crash"),
        (-11, SEGFAULT, "killed_by_signal", "native crash"),
        (1, OTHER_EXCEPTION, "python_exception", "traceback"),
    ],
)
def test_signatures(exit_code, log, code, in_fix):
    diagnosis = diagnose(exit_code, log, None, False)
    assert diagnosis.code == code, diagnosis
    assert in_fix in diagnosis.fix
    assert diagnosis.summary and diagnosis.evidence


def test_missing_file_names_the_path():
    d = diagnose(1, MISSING_VAL, None, False)
    assert "/data/val/annotations.json" in d.summary
    assert d.evidence.startswith("FileNotFoundError")
    assert "train_data_sources" not in d.fix  # the validation set is the one to check


def test_device_side_assert_evidence_is_the_kernel_assertion():
    d = diagnose(1, DEVICE_ASSERT, None, False)
    assert "Assertion `idx_dim >= 0" in d.evidence


def test_oom_killer_flag_wins_and_exit_137_with_a_kernel_message():
    d = diagnose(137, PREAMBLE, None, oom_killed=True)
    assert d.code == "host_oom" and "dataset.workers" in d.fix
    d = diagnose(137, PREAMBLE + "Out of memory: Killed process 4242 (python)\n", None, False)
    assert d.code == "host_oom"


def test_plain_signals():
    d = diagnose(137, PREAMBLE, None, False)
    assert d.code == "killed_by_signal" and "SIGKILL" in d.summary and "out-of-memory" in d.fix
    d = diagnose(143, "", None, False)
    assert d.code == "killed_by_signal" and "SIGTERM" in d.summary and d.evidence == ""


def test_status_json_failure_line_is_read():
    status = [
        {"status": "STARTED", "message": "Starting DINO training."},
        {"status": "FAILURE", "message": "Training failed: dataset.num_classes (3) must be >= max "
         "category id + 1 (5); invalid value for dataset.num_classes"},
    ]
    d = diagnose(1, "", status, False)
    assert d.code == "spec_error" and "num_classes (3)" in d.summary
    # a failure status with exit code 0 is still a failure (TAO containers do that)
    assert diagnose(0, PREAMBLE, status, False).code == "spec_error"
    odd = [{"status": "FAILURE", "message": "Something unusual happened"}]
    d = diagnose(1, PREAMBLE, odd, False)
    assert d.code == "trainer_failure" and "Something unusual happened" in d.summary


def test_success_and_unknown_failures():
    assert diagnose(0, PREAMBLE, [{"status": "RUNNING"}], False).code == "ok"
    d = diagnose(3, PREAMBLE + "bye\n", None, False)
    assert d.code == "exit_code" and "code 3" in d.summary and d.evidence == "bye"


def test_config_dumps_do_not_trigger_signatures():
    """The trainer prints its spec at start: keys alone must not look like failures."""
    dump = PREAMBLE + (
        "model: {'num_select': 300, 'num_queries': 900, 'return_interm_indices': [1, 2, 3, 4], "
        "'num_feature_levels': 4}\ntrain: {'gpu_ids': [0], 'num_gpus': 1}\n"
    )
    assert diagnose(1, dump + "ValueError: boom\n", None, False).code in ("exit_code", "python_exception")
    assert diagnose(1, dump + OTHER_EXCEPTION, None, False).code == "python_exception"


def test_catalogue_codes_are_unique_and_diagnosis_serialises():
    codes = [sig.code for sig in CATALOGUE]
    assert len(codes) == len(set(codes))
    d = diagnose(1, CUDA_OOM, None, False)
    assert isinstance(d, Diagnosis) and set(d.as_dict()) == {"code", "summary", "fix", "evidence"}
    assert str(d).startswith("[cuda_oom] The GPU ran out of memory.")
