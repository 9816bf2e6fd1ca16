"""regex over stdout: the trainer's validation lines, user patterns, config errors."""

from __future__ import annotations

import random

import pytest

from automl.errors import ConfigError
from automl.observe.extractors import get_extractor
from metric_extractors import EpochMetrics, ExtractorOptionError, RegexExtractor

# What a DINO trainer's stdout looks like: progress bars redrawn with "\r", warnings,
# the per-validation summary lines.
TRAINER_STDOUT = (
    "[automl] 2026-11-03T10:00:00+00:00 trial 3 of study 'smoke': dino train -e spec.yaml\n"
    "loading annotations into memory...\nDone (t=0.01s)\n"
    "/venv/lib/python3.11/site-packages/torch/functional.py:554: UserWarning: torch.meshgrid\n"
    "Epoch 0/2\n"
    "  step 10/20  loss 18.2011  lr 0.0001\n"
    "Train:  10%|#         | 1/10 [00:01<00:09, loss=18.2]\rTrain: 100%|##########| 10/10 [00:09<00:00]\n"
    " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.001\n"
    "Validation mAP : 0.0012\n"
    "Validation mAP50 : 0.0045\n"
    "Epoch 0/2 done: train_loss 17.9000  time 0:00:41  eta 0:01:22  checkpoint model_epoch_000_step_20.pth\n"
    "Epoch 1/2\n"
    "  step 20/20  loss 16.1000  lr 0.0001\r\n"
    "Validation mAP : 0.0210\r\n"
    "Validation mAP50 : 0.0611\r\n"
    "Epoch 1/2 done: train_loss 16.1000  time 0:00:40  eta 0:00:40  checkpoint model_epoch_001_step_40.pth\r\n"
    "Epoch 2/2\n"
    "Validation mAP : 0.0210\n"
    "Validation mAP50 : 0.0611\n"
)


def _final(emitted):
    final = {}
    for item in emitted:
        final[item.epoch] = item.values
    return final


def test_default_patterns_read_the_trainer_stdout():
    ex = RegexExtractor()
    emitted = ex.feed(TRAINER_STDOUT.encode())
    assert _final(emitted) == {
        0: {"val_mAP": 0.0012, "val_mAP50": 0.0045, "train_loss": 17.9},
        1: {"val_mAP": 0.021, "val_mAP50": 0.0611, "train_loss": 16.1},
        2: {"val_mAP": 0.021, "val_mAP50": 0.0611},  # same values, still its own epoch
    }
    # an epoch is emitted as each of its metrics arrives, each time complete so far
    assert [m.epoch for m in emitted] == [0, 0, 0, 1, 1, 1, 2, 2]


def test_without_epoch_lines_epochs_count_validations_from_zero():
    text = "".join(
        f"noise {i}\nValidation mAP : {v / 2}\nValidation mAP50 : {v}\n" for i, v in enumerate([0.1, 0.1, 0.3])
    )
    ex = RegexExtractor()
    assert _final(ex.feed(text.encode())) == {
        0: {"val_mAP": 0.05, "val_mAP50": 0.1},
        1: {"val_mAP": 0.05, "val_mAP50": 0.1},
        2: {"val_mAP": 0.15, "val_mAP50": 0.3},
    }


def test_any_chunking_gives_the_same_result():
    data = TRAINER_STDOUT.encode()
    whole = RegexExtractor().feed(data)
    rng = random.Random(1)
    for _ in range(20):
        ex = RegexExtractor()
        got, pos = [], 0
        while pos < len(data):
            step = rng.randint(1, 60)
            got += ex.feed(data[pos : pos + step])
            pos += step
        assert got == whole
    # "\r\n" split exactly between the two bytes
    ex = RegexExtractor(epoch_pattern=None)
    assert ex.feed(b"Validation mAP50 : 0.5\r") == []
    assert ex.feed(b"\nValidation mAP50 : 0.6\r\n") == [
        EpochMetrics(0, {"val_mAP50": 0.5}),
        EpochMetrics(1, {"val_mAP50": 0.6}),
    ]


def test_partial_line_waits_and_flush_reads_it():
    ex = RegexExtractor()
    assert ex.feed(b"Validation mAP50 : 0.7") == []  # could still become 0.75
    assert ex.feed(b"5") == []
    assert ex.flush() == [EpochMetrics(0, {"val_mAP50": 0.75})]


def test_invalid_utf8_and_junk_do_not_break_it():
    ex = RegexExtractor()
    data = b"\xff\xfe\x00junk\nValidation mAP50 : \xe2\x28\xa1\nValidation mAP50 : 0.33\n"
    assert ex.feed(data) == [EpochMetrics(0, {"val_mAP50": 0.33})]


def test_user_pattern_with_value_and_epoch_groups():
    ex = RegexExtractor(patterns=r"epoch=(?P<epoch>\d+) .*bbox_mAP_50=(?P<value>[0-9.]+)", metric="map50")
    got = ex.feed(b"epoch=3 step=10 bbox_mAP_50=0.41\nepoch=5 step=20 bbox_mAP_50=0.52\n")
    assert got == [EpochMetrics(3, {"map50": 0.41}), EpochMetrics(5, {"map50": 0.52})]


def test_every_named_group_becomes_a_metric_and_mappings_name_value_groups():
    ex = RegexExtractor(
        patterns={
            "val_mAP50": r"AP50=(?P<value>\S+)",
            "ignored_name": r"loss=(?P<train_loss>\S+) lr=(?P<lr>\S+)",
        },
        epoch_pattern=r"^== epoch (?P<epoch>\d+) ==",
    )
    assert ex.metric_names == ["val_mAP50", "train_loss", "lr"]
    got = ex.feed(b"== epoch 7 ==\nloss=1.5 lr=1e-4\nAP50=0.2\n")
    assert got[-1] == EpochMetrics(7, {"train_loss": 1.5, "lr": 1e-4, "val_mAP50": 0.2})


def test_unparseable_capture_is_skipped():
    ex = RegexExtractor(patterns=r"mAP50 is (?P<value>\w+)", epoch_pattern=None)
    assert ex.feed(b"mAP50 is pending\nmAP50 is 0\n") == [EpochMetrics(0, {"val_mAP50": 0.0})]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"patterns": r"Validation mAP50 : (?P<value>[0-9.]+"}, "not a valid regular expression"),
        ({"patterns": [r"mAP50 : ([0-9.]+)"]}, "no named group"),
        ({"patterns": {"m": r"(?P<epoch>\d+)"}}, "no named group"),
        ({"patterns": []}, "empty"),
        ({"epoch_pattern": r"Epoch (\d+)"}, "(?P<epoch>"),
        ({"epoch_pattern": r"Epoch (?P<epoch>\d+"}, "not a valid regular expression"),
        ({"source": "stderr"}, "source"),
    ],
)
def test_bad_configuration_is_a_config_error_at_construction(options, message):
    with pytest.raises(ExtractorOptionError) as info:
        RegexExtractor(**options)
    assert message in str(info.value)
    with pytest.raises(ConfigError) as info:  # as the run config reports it
        get_extractor("regex", **options)
    assert message in str(info.value) and "metric.extractor" in str(info.value)


def test_overlong_line_without_newline_keeps_memory_bounded():
    ex = RegexExtractor()
    for _ in range(5):
        assert ex.feed(b"x" * (1 << 20)) == []
    assert len(ex._partial) <= ex.max_line_bytes
    assert ex.feed(b"\nValidation mAP50 : 0.9\n") == [EpochMetrics(0, {"val_mAP50": 0.9})]
