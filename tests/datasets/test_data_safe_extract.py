"""Hostile archives are refused and leave nothing behind, inside or outside the target."""

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from automl.datasets import UnsafeArchiveError, safe_extract
from automl.errors import DatasetError

REG, DIR, SYM, LNK = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE


def snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every path under ``folder`` with its bytes (files) or link target (links)."""
    out: dict[str, bytes | str] = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            out[rel] = "-> " + str(p.readlink())
        elif p.is_file():
            out[rel] = p.read_bytes()
        else:
            out[rel] = "dir"
    return out


@pytest.fixture
def sandbox(tmp_path: Path):
    """``tmp/sentinel`` (with a victim file) beside ``tmp/target``; the archive goes in tmp."""
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (sentinel / "victim.txt").write_text("original")
    return tmp_path, sentinel, tmp_path / "target"


def test_plain_archive_with_inner_links_extracts(tar_builder, sandbox):
    root, sentinel, target = sandbox
    archive = tar_builder(
        "ok.tar.gz",
        [
            ("./", None, {"type": DIR}),
            ("images", None, {"type": DIR, "mode": 0o777}),
            ("images/a.jpg", b"AAA", {"mode": 0o4755}),  # set-uid bit must not survive
            ("images/sub/b.jpg", b"BB", {}),  # parent folder not listed: created
            ("images/alias.jpg", None, {"type": SYM, "linkname": "a.jpg"}),
            ("images/up.jpg", None, {"type": SYM, "linkname": "../images/sub/b.jpg"}),
            ("images/hard.jpg", None, {"type": LNK, "linkname": "images/a.jpg"}),
        ],
    )
    assert safe_extract(archive, target) == 6
    images = target / "images"
    assert (images / "a.jpg").read_bytes() == b"AAA"
    assert (images / "sub" / "b.jpg").read_bytes() == b"BB"
    assert (images / "alias.jpg").read_bytes() == b"AAA" and (images / "alias.jpg").is_symlink()
    assert (images / "up.jpg").read_bytes() == b"BB"
    assert (images / "hard.jpg").stat().st_ino == (images / "a.jpg").stat().st_ino
    assert (images / "a.jpg").stat().st_mode & 0o7777 == 0o644
    assert snapshot(sentinel) == {"victim.txt": b"original"}


def hostile_cases(sentinel: Path) -> dict[str, tuple[list, str]]:
    victim = str(sentinel / "victim.txt")
    return {
        "traversal": ([("images/ok.jpg", b"ok", {}), ("../sentinel/pwned.txt", b"x", {})], "path traversal"),
        "traversal-nested": ([("images/../../sentinel/pwned.txt", b"x", {})], "path traversal"),
        "absolute": ([(str(sentinel / "abs.txt"), b"x", {})], "absolute path"),
        "symlink-absolute-then-file": (
            [("images/evil", None, {"type": SYM, "linkname": str(sentinel)}), ("images/evil/pwned.txt", b"x", {})],
            "symlink to the absolute path",
        ),
        "symlink-relative-escape": ([("images/evil", None, {"type": SYM, "linkname": "../../sentinel"})], "points outside the target"),
        "symlink-inside-then-file-through-it": (
            [("images", None, {"type": DIR}), ("images/d", None, {"type": SYM, "linkname": "."}), ("images/d/pwned.txt", b"x", {})],
            "written through the symlink",
        ),
        "symlink-chain-escape": (
            # each link alone stays inside; e -> d/.. resolves to target/.. on disk
            [("d", None, {"type": SYM, "linkname": "."}), ("e", None, {"type": SYM, "linkname": "d/.."})],
            "chain of links",
        ),
        "hardlink-absolute": (
            [("images/h", None, {"type": LNK, "linkname": victim}), ("images/h", b"overwritten", {})],
            "absolute path",
        ),
        "hardlink-relative-escape": ([("images/h", None, {"type": LNK, "linkname": "../sentinel/victim.txt"})], "path traversal"),
        "hardlink-to-non-member": ([("images/h", None, {"type": LNK, "linkname": "etc/passwd"})], "not a regular file extracted earlier"),
        "char-device": ([("images/null", None, {"type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3})], "character device"),
        "block-device": ([("images/sda", None, {"type": tarfile.BLKTYPE, "devmajor": 8, "devminor": 0})], "block device"),
        "fifo": ([("images/pipe", None, {"type": tarfile.FIFOTYPE})], "FIFO"),
        "duplicate-replaces-link": (
            [("images/a.jpg", b"a", {}), ("images/l", None, {"type": SYM, "linkname": "a.jpg"}), ("images/l", b"x", {})],
            "appears twice",
        ),
        "file-under-file": ([("images/a.jpg", b"a", {}), ("images/a.jpg/x", b"x", {})], "written under the file"),
    }


@pytest.mark.parametrize("case", list(hostile_cases(Path("/x"))))
def test_hostile_archive_refused_and_nothing_written(case, tar_builder, sandbox):
    root, sentinel, target = sandbox
    members, reason = hostile_cases(sentinel)[case]
    archive = tar_builder(f"{case}.tar.gz", members)
    before_root = sorted(p.name for p in root.iterdir())
    with pytest.raises(UnsafeArchiveError) as info:
        safe_extract(archive, target)
    message = str(info.value)
    assert reason in message, message
    assert "Nothing was extracted" in message and str(archive) in message
    assert snapshot(sentinel) == {"victim.txt": b"original"}
    assert not target.exists()  # nothing kept inside either
    assert sorted(p.name for p in root.iterdir()) == [n for n in before_root if n != "target"]


def test_corrupt_archive_is_a_clear_error(tmp_path: Path, tar_builder):
    good = tar_builder("good.tar.gz", [("images/a.jpg", os.urandom(100_000), {})])
    data = good.read_bytes()
    for cut in (len(data) // 2, len(data) - 4):  # mid-file, and only the gzip trailer lost
        truncated = tmp_path / f"truncated{cut}.tar.gz"
        truncated.write_bytes(data[:cut])
        with pytest.raises(DatasetError, match="corrupt, truncated or not a tar archive") as info:
            safe_extract(truncated, tmp_path / "t1")
        assert not isinstance(info.value, UnsafeArchiveError)
        assert not (tmp_path / "t1").exists()
    notgz = tmp_path / "images.tar.gz"
    notgz.write_bytes(gzip.compress(b"just text, not a tar"))
    with pytest.raises(DatasetError, match="corrupt, truncated or not a tar archive"):
        safe_extract(notgz, tmp_path / "t2")


def test_target_must_be_new_or_empty(tmp_path: Path, tar_builder):
    archive = tar_builder("a.tar.gz", [("images/a.jpg", b"A", {})])
    target = tmp_path / "full"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not an empty folder"):
        safe_extract(archive, target)
    assert (target / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("suffix, mode", [(".tar", "w"), (".tar.bz2", "w:bz2"), (".tar.xz", "w:xz"), (".tgz", "w:gz")])
def test_compressions(tmp_path: Path, suffix, mode):
    archive = tmp_path / f"images{suffix}"
    with tarfile.open(archive, mode) as tf:
        info = tarfile.TarInfo("images/a.jpg")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    assert safe_extract(archive, tmp_path / "out") == 1
    assert (tmp_path / "out" / "images" / "a.jpg").read_bytes() == b"abc"
