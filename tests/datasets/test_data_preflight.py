"""Each preflight finding, provoked by a deliberately broken dataset or spec."""

import json
from pathlib import Path

import pytest
import yaml

from automl.datasets import Finding, Severity, SpecFacts, StagedSplit, load_spec_facts, preflight
from automl.errors import ConfigError

from reference_files import tao_file

GOOD = SpecFacts(
    num_classes=4,
    batch_size=2,
    num_gpus=1,
    gpu_ids=[0],
    num_queries=300,
    num_select=300,
    num_feature_levels=4,
    return_interm_indices=[1, 2, 3, 4],
)


def split_of(folder: Path) -> StagedSplit:
    return StagedSplit(folder / "images", folder / "annotations.json")


def edit(folder: Path, change) -> None:
    path = folder / "annotations.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def only(findings: list[Finding], code: str) -> Finding:
    hits = [f for f in findings if f.code == code]
    assert len(hits) == 1, findings
    return hits[0]


@pytest.fixture
def good(tmp_path, coco_split):
    """A clean 3-class train split (6 images of 64x48) and a clean val split."""
    return coco_split(tmp_path / "train"), coco_split(tmp_path / "val", n_images=3, seed=1)


def test_clean_dataset_and_spec_have_no_findings(good):
    train, val = good
    assert preflight(split_of(train), split_of(val), GOOD) == []


def _truncate_png(folder: Path) -> None:
    p = folder / "images" / "0002.png"
    p.write_bytes(p.read_bytes()[:60])


def _set_ann(i, **kv):
    return lambda d: d["annotations"][i].update(kv)


DATA_BREAKAGES = {
    # name: (breaker(folder), code, severity, words in what/where)
    "not-json": (lambda f: (f / "annotations.json").write_text('{"images": [,]}'), "annotations_unreadable", "error", "not valid JSON"),
    "no-categories": (lambda f: edit(f, lambda d: d.pop("categories")), "annotations_unreadable", "error", "'categories'"),
    "json-list": (lambda f: (f / "annotations.json").write_text("[]"), "annotations_unreadable", "error", "JSON list"),
    "missing-image": (lambda f: (f / "images" / "0002.png").unlink(), "image_missing", "error", "'0002.png'"),
    "corrupt-image": (_truncate_png, "image_unreadable", "error", "'0002.png'"),
    # the data policy (dino/data/policy.py): fixes are warnings, refusals errors
    "size-mismatch": (lambda f: edit(f, lambda d: d["images"][1].update(width=100)), "image_size_inconsistent", "error", "is 64x48, annotations say 100x48"),
    "size-ratio": (lambda f: edit(f, lambda d: d["images"][1].update(width=128, height=96)), "image_rescaled", "warning", "is 64x48, annotations say 128x96: boxes x0.5"),
    "degenerate-box": (lambda f: edit(f, _set_ann(0, bbox=[3, 3, 0, 5])), "box_degenerate", "warning", "annotations[0] (id 1, image id 1): bbox [3, 3, 0, 5]"),
    "box-outside": (lambda f: edit(f, _set_ann(1, bbox=[500, 3, 5, 5])), "box_outside_image", "warning", "annotations[1]"),
    "box-past-border": (lambda f: edit(f, _set_ann(2, bbox=[60, 3, 20, 5])), "box_past_border", "warning", "annotations[2]"),
    "box-malformed": (lambda f: edit(f, _set_ann(0, bbox=[1, 2, 3])), "box_malformed", "error", "[1, 2, 3]"),
    "box-nan": (lambda f: (f / "annotations.json").write_text((f / "annotations.json").read_text().replace('"bbox": [', '"bbox": [NaN, ', 1)), "box_malformed", "error", "annotations[0]"),
    "unknown-image": (lambda f: edit(f, _set_ann(0, image_id=999)), "coco_unknown_image", "error", "image_id 999"),
    "unknown-category": (lambda f: edit(f, lambda d: d["categories"].pop()), "coco_unknown_category", "error", "category_id 3"),
    "duplicate-image-id": (lambda f: edit(f, lambda d: d["images"][1].update(id=1)), "coco_duplicate_image_id", "error", "id 1"),
    "bad-image-entry": (lambda f: edit(f, lambda d: d["images"][0].update(id="a")), "coco_bad_image", "error", "images[0]"),
    "bad-annotation": (lambda f: edit(f, lambda d: d["annotations"][0].pop("category_id")), "coco_bad_annotation", "error", "annotations[0]"),
    "no-size": (lambda f: edit(f, lambda d: d["images"][0].pop("width")), "image_size_from_file", "warning", "'0000.png' (image id 1) is 64x48"),
    "no-images": (lambda f: edit(f, lambda d: d.update(images=[], annotations=[])), "no_images", "error", "annotations.json"),
    "no-annotations": (lambda f: edit(f, lambda d: d.update(annotations=[])), "no_annotations", "warning", "annotations.json"),
}


@pytest.mark.parametrize("name", list(DATA_BREAKAGES))
def test_each_data_breakage_gives_its_finding(name, good):
    train, val = good
    breaker, code, severity, words = DATA_BREAKAGES[name]
    breaker(train)
    findings = preflight(split_of(train), split_of(val), GOOD)
    f = only(findings, code)
    assert f.severity == Severity(severity)
    assert words in f.what + " " + f.where, f
    assert "train" in f.where and f.fix
    others = [g for g in findings if g.code != code and g.is_error]
    assert others == [] or name in ("bad-image-entry", "duplicate-image-id", "no-images"), others


def test_image_folder_missing(good):
    train, val = good
    f = only(preflight(StagedSplit(train / "pictures", train / "annotations.json"), split_of(val), GOOD), "image_dir_missing")
    assert f.is_error and "pictures" in f.where


def test_problems_are_grouped_with_count_and_examples(good):
    train, val = good
    for i in range(5):
        (train / "images" / f"{i:04d}.png").unlink()
    f = only(preflight(split_of(train), split_of(val), GOOD), "image_missing")
    assert f.what.startswith("5 image files") and "and 2 more" in f.where


def test_large_sets_are_sampled_but_every_file_is_looked_up(tmp_path, coco_split):
    train = coco_split(tmp_path / "big", n_images=30)
    for i in range(25):
        p = train / "images" / f"{i:04d}.png"
        p.write_bytes(p.read_bytes()[:60])
    (train / "images" / "0029.png").unlink()
    findings = preflight(split_of(train), split_of(train), GOOD, sample_limit=5)
    unreadable = only(findings, "image_unreadable")
    assert "pixels decoded in a sample of 5 of 29" in unreadable.what
    assert only(findings, "image_missing").what.startswith("1 ")
    assert only(findings, "val_reuses_train").severity is Severity.WARNING


def test_num_classes_too_small_names_the_id_and_suggests_max_plus_one(good):
    train, val = good
    edit(val, lambda d: (d["categories"].append({"id": 7, "name": "rare"}), d["annotations"][0].update(category_id=7)))
    f = only(preflight(split_of(train), split_of(val), GOOD.replace(num_classes=5)), "num_classes_too_small")
    assert f.is_error and "category id 7" in f.what and "val" not in f.what
    assert "category id 7 at annotations[0]" in f.where and str(val / "annotations.json") in f.where
    assert (f.setting, f.suggested_value) == ("dataset.num_classes", 8)


def test_num_classes_left_at_91_is_a_warning_with_the_value_to_use(good):
    train, val = good
    f = only(preflight(split_of(train), split_of(val), GOOD.replace(num_classes=91)), "num_classes_too_large")
    assert f.severity is Severity.WARNING and "91" in f.what
    assert (f.setting, f.suggested_value) == ("dataset.num_classes", 4)
    assert not [g for g in preflight(split_of(train), split_of(val), GOOD.replace(num_classes=5)) if g.code.startswith("num_classes")]


def test_dataset_smaller_than_one_batch_per_gpu(good):
    train, val = good
    facts = GOOD.replace(batch_size=4, num_gpus=2, gpu_ids=[0, 1])
    f = only(preflight(split_of(train), split_of(val), facts), "too_few_images")
    assert f.is_error and "6 images" in f.what and "4 * 2 = 8" in f.what
    assert (f.setting, f.suggested_value) == ("dataset.batch_size", 3)
    assert preflight(split_of(train), split_of(val), facts.replace(batch_size=3)) == []


SPEC_BREAKAGES = {
    "num_select": (dict(num_queries=10, num_classes=4, num_select=40), "num_select_too_large", "model.num_select", 10),
    "num_select-few-queries": (dict(num_queries=2, num_classes=4, num_select=9), "num_select_too_large", "model.num_select", 2),
    "interm": (dict(num_feature_levels=3, return_interm_indices=[1, 2, 3, 4]), "interm_levels_mismatch", "model.num_feature_levels", 4),
    "gpu_ids": (dict(num_gpus=2, gpu_ids=[0]), "gpu_ids_mismatch", "train.gpu_ids", [0, 1]),
    "batch_zero": (dict(batch_size=0), "spec_value_invalid", None, None),
}


@pytest.mark.parametrize("name", list(SPEC_BREAKAGES))
def test_each_spec_breakage_gives_its_finding_and_fix(name, good):
    train, val = good
    overrides, code, setting, value = SPEC_BREAKAGES[name]
    f = only(preflight(split_of(train), split_of(val), GOOD.replace(**overrides)), code)
    assert f.is_error and f.fix
    assert (f.setting, f.suggested_value) == (setting, value)
    fixed = GOOD.replace(**overrides)
    if setting is not None:
        fixed = fixed.replace(**{setting.split(".")[1]: value})
        assert preflight(split_of(train), split_of(val), fixed) == []


def test_extra_strided_levels_are_a_warning_for_tao_compatibility(good):
    """DINO-4scale as in the paper (stages 2-4 + one strided level): the bundled trainer
    builds it, TAO's container would refuse it; so a warning with TAO's fix, not an error."""
    train, val = good
    findings = preflight(split_of(train), split_of(val), GOOD.replace(num_feature_levels=4, return_interm_indices=[2, 3, 4]))
    f = only(findings, "interm_levels_extra")
    assert not f.is_error and "TAO" in f.what and f.suggested_value == 3


def test_missing_or_identical_val_is_a_warning_not_a_crash(good):
    train, _ = good
    for val in (None, split_of(train)):
        findings = preflight(split_of(train), val, GOOD)
        f = only(findings, "val_reuses_train")
        assert f.severity is Severity.WARNING and f.where == "dataset.val_data_sources"
        assert len(findings) == 1


def test_spec_facts_from_the_tao_template():
    template = tao_file("spec_template_train.yaml")
    assert load_spec_facts(template) == SpecFacts(91, 4, 1, (0,), 300, 300, 4, (1, 2, 3, 4))
    assert yaml.safe_load(template.read_text())["dataset"]["num_classes"] == 91


def test_spec_facts_refuse_values_of_the_wrong_type(tmp_path):
    assert SpecFacts.from_spec({"dataset": {"num_classes": 5}}) == SpecFacts(num_classes=5)
    with pytest.raises(ConfigError, match="dataset.batch_size must be an integer"):
        SpecFacts.from_spec({"dataset": {"batch_size": "4"}})
    with pytest.raises(ConfigError, match="model.return_interm_indices must be a list"):
        SpecFacts(return_interm_indices="1234")
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_spec_facts(bad)
