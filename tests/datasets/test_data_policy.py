"""The data policy (dino/data/policy.py) on the quirky-dataset generator, without torch:
the generator's truth against the pixels, the policy's corrections against that truth,
and ``automl dataset check`` (the real entry point) on the same files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from quirky_data import BACKGROUND, COLORS, displayed, write_quirky_split

from automl.cli import main
from automl.datasets import Severity, StagedSplit, preflight
from dino.data.policy import (
    BoxEntry,
    ImageEntry,
    ImageProbe,
    PolicyReport,
    apply_policy,
    positive_size,
    probe_image,
    probe_images,
)


def policy_of(json_file: Path, image_dir: Path, strict: bool = False) -> PolicyReport:
    data = json.loads(json_file.read_text())
    images = [ImageEntry(i["id"], i["file_name"], positive_size(i.get("width")), positive_size(i.get("height")))
              for i in data["images"]]
    boxes = [BoxEntry(k, a.get("id"), a["image_id"], a["bbox"]) for k, a in enumerate(data["annotations"])]
    probes = probe_images({i.id: str(image_dir / i.file_name) for i in images}).probes
    return apply_policy(images, boxes, probes, strict=strict, source=str(json_file))


def corrected_by_image(json_file: Path, report: PolicyReport) -> dict[int, list[tuple[int, list[float]]]]:
    """image id -> (category, xyxy) of the boxes the policy keeps."""
    anns = json.loads(json_file.read_text())["annotations"]
    out: dict[int, list[tuple[int, list[float]]]] = {}
    for index, box in report.boxes.items():
        ann = anns[index]
        out.setdefault(ann["image_id"], []).append((ann["category_id"], [box.x, box.y, box.x + box.w, box.y + box.h]))
    return out


def close(a: list[float], b: list[float], tol: float = 1e-6) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def test_the_generator_truth_is_what_a_viewer_shows(tmp_path):
    """Independently of our code: PIL's exif_transpose shows each object where the truth says."""
    split = write_quirky_split(tmp_path / "q", inconsistent=True)
    for name, boxes in split.truth.items():
        img = displayed(split.image_dir / name)
        for cat, (x0, y0, x1, y1) in boxes:
            inside = img.getpixel((int((x0 + x1) / 2), int((y0 + y1) / 2)))
            assert all(abs(a - b) < 40 for a, b in zip(inside, COLORS[cat])), (name, inside)
            for px, py in ((x0 - 3, y0 + 3), (x1 + 2, y1 - 3)):  # just outside the box
                if 0 <= px < img.width and 0 <= py < img.height:
                    assert all(abs(a - b) < 40 for a, b in zip(img.getpixel((int(px), int(py))), BACKGROUND)), name
    stored = Image.open(split.image_dir / "exif6.jpg")
    assert stored.size == (80, 64) and displayed(split.image_dir / "exif6.jpg").size == (64, 80)


def test_probe_reads_the_displayed_size_and_orientation(tmp_path):
    split = write_quirky_split(tmp_path / "q")
    assert probe_image(split.image_dir / "exif6.jpg") == ImageProbe(64, 80, 6)
    assert probe_image(split.image_dir / "exif6.jpg").stored_size == (80, 64)
    assert probe_image(split.image_dir / "exif3.jpg") == ImageProbe(64, 64, 3)
    assert probe_image(split.image_dir / "half.png") == ImageProbe(64, 64, 1)


def test_the_policy_turns_the_quirky_annotations_into_the_truth(tmp_path):
    split = write_quirky_split(tmp_path / "q")
    report = policy_of(split.json_file, split.image_dir)
    assert report.refused == []
    assert report.counts() == {"image_exif_rotated": 2, "image_rescaled": 1, "box_degenerate": 1, "box_past_border": 1}
    got = corrected_by_image(split.json_file, report)
    for name, truth in split.truth.items():
        boxes = got.get(split.ids[name], [])
        assert [c for c, _ in boxes] == [c for c, _ in truth], name
        assert all(close(b, t) for (_, b), (_, t) in zip(boxes, truth)), (name, boxes, truth)
    assert report.frames[split.ids["exif6.jpg"]] == (64, 80)
    assert report.frames[split.ids["half.png"]] == (64, 64)
    anns = json.loads(split.json_file.read_text())["annotations"]
    half = next(k for k, a in enumerate(anns) if a["image_id"] == split.ids["half.png"])
    assert report.boxes[half].area_scale == pytest.approx(0.25)  # COCO's area follows the rescale
    # each finding names the first ids: file, image id, annotation id
    by_code = {f.code: f for f in report.findings}
    zero_id = split.annotation_ids["zero.png"][1]
    assert f"(id {zero_id}, image id {split.ids['zero.png']}): bbox [50.0, 50.0, 0.0, 0.0]" in by_code["box_degenerate"].examples_text()
    assert by_code["box_degenerate"].summary().startswith("1 box has zero or negative width or height: dropped")
    assert f"'half.png' (image id {split.ids['half.png']}) is 64x64, annotations say 128x128: boxes x0.5" \
        in by_code["image_rescaled"].examples_text()
    assert "'exif6.jpg'" in by_code["image_exif_rotated"].examples_text() and "stored 80x64, displayed 64x80" in \
        by_code["image_exif_rotated"].examples_text()


def test_an_inconsistent_ratio_is_refused_with_what_where_and_the_fix(tmp_path):
    split = write_quirky_split(tmp_path / "q", inconsistent=True)
    report = policy_of(split.json_file, split.image_dir)
    (refused,) = report.refused
    assert refused.code == "image_size_inconsistent" and refused.count == 1
    assert f"'odd.png' (image id {split.ids['odd.png']}) is 64x48, annotations say 128x128 (x0.5, y0.375)" in refused.examples_text()
    assert "write each image's real width/height" in refused.fix
    # never clamped to nothing: the refused image keeps no box at all
    anns = json.loads(split.json_file.read_text())["annotations"]
    assert not any(anns[i]["image_id"] == split.ids["odd.png"] for i in report.boxes)


def test_strict_refuses_every_fix(tmp_path):
    split = write_quirky_split(tmp_path / "q")
    report = policy_of(split.json_file, split.image_dir, strict=True)
    assert {f.code for f in report.refused} == {"image_exif_rotated", "image_rescaled", "box_degenerate", "box_past_border"}
    assert all("strict data policy" in f.fix for f in report.refused)
    assert report.fixed == []


def _one_image(tmp_path: Path, file_size: tuple[int, int], json_size: tuple[float, float] | None, bbox: list,
               orientation: int = 1) -> PolicyReport:
    image_dir = tmp_path / "images"
    image_dir.mkdir(exist_ok=True)
    img = Image.new("RGB", file_size, BACKGROUND)
    if orientation == 1:
        img.save(image_dir / "a.png")
        name = "a.png"
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        img.save(image_dir / "a.jpg", "JPEG", exif=exif.tobytes())
        name = "a.jpg"
    entry = {"id": 7, "file_name": name}
    if json_size is not None:
        entry.update(width=json_size[0], height=json_size[1])
    ann = {"id": 70, "image_id": 7, "category_id": 1, "bbox": bbox}
    json_file = tmp_path / "ann.json"
    json_file.write_text(json.dumps({"images": [entry], "annotations": [ann], "categories": [{"id": 1}]}))
    return policy_of(json_file, image_dir)


@pytest.mark.parametrize("file_size, json_size, bbox, code, box", [
    # a resize that rounded each side (1000x750 -> 333x250): one ratio within a pixel, rescaled
    ((333, 250), (1000, 750), [300, 150, 300, 300], "image_rescaled", [99.9, 50.0, 99.9, 100.0]),
    # sizes equal but for JSON floats: nothing to do
    ((64, 48), (64.2, 47.9), [1, 2, 3, 4], None, [1, 2, 3, 4]),
    # no size in the annotations: the file's is used, and boxes are clipped to it
    ((64, 48), None, [60, 2, 10, 4], "image_size_from_file box_past_border", [60, 2, 4, 4]),
    # a negative width: dropped
    ((64, 48), (64, 48), [10, 10, -5, 4], "box_degenerate", None),
    # a box entirely past the border: nothing left inside, dropped
    ((64, 48), (64, 48), [70, 10, 5, 5], "box_outside_image", None),
    # a half-pixel overhang is rounding: clipped without a finding
    ((64, 48), (64, 48), [60, 10, 4.5, 5], None, [60, 10, 4, 5]),
    # NaN, strings, three numbers: refused
    ((64, 48), (64, 48), [1, "2", 3, 4], "box_malformed", None),
])  # fmt: skip
def test_single_box_cases(tmp_path, file_size, json_size, bbox, code, box):
    report = _one_image(tmp_path, file_size, json_size, bbox)
    assert [f.code for f in report.findings] == (code.split() if code else [])
    if box is None:
        assert report.boxes == {}
    else:
        got = report.boxes[0]
        assert close([got.x, got.y, got.w, got.h], box, 0.05), got


def test_a_rotated_file_annotated_at_its_stored_size_is_ambiguous_and_refused(tmp_path):
    # stored 80x64 with orientation 6 (displayed 64x80), but the annotations say 80x64
    report = _one_image(tmp_path, (80, 64), (80, 64), [10, 10, 20, 20], orientation=6)
    codes = [f.code for f in report.findings]
    assert codes == ["image_exif_ambiguous", "image_exif_rotated"]
    assert "exiftool -Orientation=1" in report.refused[0].fix and report.boxes == {}
    # the same file annotated at its displayed size: rotated, boxes kept
    report = _one_image(tmp_path, (80, 64), (64, 80), [10, 10, 20, 20], orientation=6)
    assert [f.code for f in report.findings] == ["image_exif_rotated"] and list(report.boxes) == [0]


def test_preflight_reports_the_policy_as_the_trainer_applies_it(tmp_path):
    train = write_quirky_split(tmp_path / "train")
    val = write_quirky_split(tmp_path / "val", n_plain=2, seed=1, inconsistent=True)
    findings = preflight(StagedSplit(train.image_dir, train.json_file), StagedSplit(val.image_dir, val.json_file))
    by = {(f.where.split(" ", 1)[0], f.code): f for f in findings}
    assert by[("train", "box_degenerate")].severity is Severity.WARNING
    assert by[("train", "image_exif_rotated")].what.startswith("2 images carry an EXIF orientation")
    assert by[("val", "image_size_inconsistent")].severity is Severity.ERROR
    assert f"'odd.png' (image id {val.ids['odd.png']})" in by[("val", "image_size_inconsistent")].where
    assert str(val.json_file) in by[("val", "image_size_inconsistent")].where
    assert not any(f.is_error for f in findings if f.where.startswith("train"))
    strict = preflight(StagedSplit(train.image_dir, train.json_file), None, strict=True)
    assert {f.code for f in strict if f.is_error} == {"image_exif_rotated", "image_rescaled", "box_degenerate",
                                                       "box_past_border"}


@pytest.fixture
def wide_console(monkeypatch, tmp_path):
    monkeypatch.setenv("COLUMNS", "1000")  # rich tables: one line per cell
    monkeypatch.setenv("AUTOML_DATA_CACHE", str(tmp_path / "cache"))


def test_dataset_check_cli_warns_fixes_and_refuses_what_cannot_train(tmp_path, capsys, wide_console):
    train = write_quirky_split(tmp_path / "train")
    val = write_quirky_split(tmp_path / "val", n_plain=2, seed=1)
    rc = main(["dataset", "check", "--train", str(train.root), "--val", str(val.root), "--num-classes", "3"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "1 box has zero or negative width or height: dropped" in out
    assert "1 box extends past its image's border: clipped to it" in out
    assert "2 images carry an EXIF orientation: applied" in out
    assert "1 image is a constant ratio of its size in the annotations" in out
    assert "0 error(s), 8 warning(s)." in out  # four kinds of fix in each split

    rc = main(["dataset", "check", "--train", str(train.root), "--val", str(val.root), "--num-classes", "3", "--strict"])
    out = capsys.readouterr().out
    assert rc == 1 and "8 error(s), 0 warning(s)." in out and "strict data policy" in out

    odd = write_quirky_split(tmp_path / "odd", inconsistent=True)
    rc = main(["dataset", "check", "--train", str(odd.root), "--val", str(val.root), "--num-classes", "3"])
    out = capsys.readouterr().out
    assert rc == 1 and "1 error(s)" in out
    assert f"'odd.png' (image id {odd.ids['odd.png']}) is 64x48, annotations say 128x128" in out


def test_preflight_reports_progress_of_the_header_scan(tmp_path):
    train = write_quirky_split(tmp_path / "train", n_plain=300)
    calls: list[tuple[str, int, int]] = []
    preflight(StagedSplit(train.image_dir, train.json_file), None, progress=lambda *a: calls.append(a))
    total = len(train.ids)
    assert calls[-1] == ("train", total, total)
    assert [c[1] for c in calls] == sorted(c[1] for c in calls) and len(calls) == total // 256 + 1
