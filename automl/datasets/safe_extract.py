"""Extract a tar archive without letting it write, or point, outside the target folder.

Archives come from users and buckets, so every member is checked *before* it is written:

- names must be relative and free of ``..`` (no ``/etc/x``, no ``../../x``);
- only regular files, directories, symlinks and hard links are accepted (no devices,
  FIFOs or other special files);
- a symlink must be relative and resolve inside the target; a hard link must name a
  regular file this archive already extracted;
- no member may be written through a symlink (``link -> /tmp`` then ``link/x``), and no
  name may appear twice (a later member cannot replace a link or file);
- files are opened with ``O_EXCL | O_NOFOLLOW`` in folders this function created, and
  their permission bits are plain (0644 files, 0755 folders; no set-uid, no owners).

After extraction every symlink is resolved on disk once more (catching chains of links
that are each harmless alone). On any refusal the whole target folder is removed, so a
refused archive leaves nothing behind, inside or outside the target.
"""

from __future__ import annotations

import errno
import lzma
import os
import shutil
import tarfile
import zlib
from pathlib import Path

from automl.datasets.progress import byte_progress
from automl.errors import DatasetError

_CHUNK = 1024 * 1024
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


class UnsafeArchiveError(DatasetError):
    """The archive holds a member that could escape or damage the target folder."""


def safe_parts(name: str) -> tuple[str, ...]:
    """Split a member name into safe parts; raise ValueError with the reason if unsafe."""
    if "\x00" in name:
        raise ValueError("has a NUL byte in its name")
    if name.startswith("/") or name.startswith("\\") or (len(name) > 1 and name[1] == ":"):
        raise ValueError("is an absolute path")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise ValueError("contains '..' (path traversal)")
    return parts


def _resolve_link_target(link_parts: tuple[str, ...], linkname: str) -> tuple[str, ...]:
    """Lexically resolve a symlink's target against the link's folder; ValueError if it escapes."""
    if not linkname:
        raise ValueError("is a symlink with an empty target")
    if linkname.startswith("/") or linkname.startswith("\\"):
        raise ValueError(f"is a symlink to the absolute path {linkname!r}")
    here = list(link_parts[:-1])
    for part in linkname.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not here:
                raise ValueError(f"is a symlink to {linkname!r}, which points outside the target")
            here.pop()
        else:
            here.append(part)
    return tuple(here)


def safe_extract(archive: Path, target: Path, *, progress: bool | None = None) -> int:
    """Extract ``archive`` (tar, tar.gz/.tgz, .tar.bz2, .tar.xz) into ``target``; return the member count.

    ``target`` must not exist or be an empty folder. Raises UnsafeArchiveError for a
    hostile member and DatasetError for an unreadable archive; ``target`` is removed then.
    """
    archive = Path(archive)
    target = Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise DatasetError(f"cannot extract {archive} into {target}: the target exists and is not an empty folder")
    target.mkdir(parents=True, exist_ok=True)
    try:
        return _extract(archive, target, progress)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise


def _extract(archive: Path, target: Path, progress: bool | None) -> int:
    root = target.resolve()
    kinds: dict[tuple[str, ...], str] = {(): "dir"}  # what each extracted path is: dir/file/symlink
    checked_dirs: set[Path] = {root}
    symlinks: list[tuple[str, Path]] = []
    count = 0

    def refuse(member: tarfile.TarInfo, reason: str) -> UnsafeArchiveError:
        return UnsafeArchiveError(
            f"refusing to extract {archive}: member {member.name!r} {reason}. Nothing was extracted. "
            "Rebuild the archive from a plain folder with relative paths, e.g. `tar czf images.tar.gz images`"
        )

    def ensure_dirs(member: tarfile.TarInfo, parts: tuple[str, ...]) -> Path:
        """Create the folders ``parts`` (none may be a link or file); return the real path."""
        for i in range(1, len(parts) + 1):
            prefix = parts[:i]
            kind = kinds.get(prefix)
            if kind == "symlink":
                raise refuse(member, f"would be written through the symlink {'/'.join(prefix)!r}")
            if kind == "file":
                raise refuse(member, f"would be written under the file {'/'.join(prefix)!r}")
            if kind is None:
                os.mkdir(root.joinpath(*prefix), 0o755)
                kinds[prefix] = "dir"
        path = root.joinpath(*parts)
        if path not in checked_dirs:  # defence in depth: the folder really is inside the target
            real = Path(os.path.realpath(path))
            if real != root and root not in real.parents:
                raise refuse(member, f"would be written outside the target (folder resolves to {real})")
            checked_dirs.add(path)
        return path

    size = archive.stat().st_size
    try:
        with open(archive, "rb") as raw, byte_progress(f"extracting {archive.name}", size, progress) as advance:
            last = 0
            with tarfile.open(fileobj=raw, mode="r:*") as tf:
                for member in tf:
                    try:
                        parts = safe_parts(member.name)
                    except ValueError as exc:
                        raise refuse(member, str(exc)) from None
                    if not parts:
                        if member.isdir():
                            continue  # the archive's "./" entry
                        raise refuse(member, "has an empty name")
                    if parts in kinds and not (member.isdir() and kinds[parts] == "dir"):
                        raise refuse(member, "appears twice (a later member may not replace an earlier one)")
                    if member.isdir():
                        ensure_dirs(member, parts)
                    elif member.isreg():
                        folder = ensure_dirs(member, parts[:-1])
                        src = tf.extractfile(member)
                        fd = os.open(folder / parts[-1], _FILE_FLAGS, 0o644)
                        with os.fdopen(fd, "wb") as out:
                            if src is not None:
                                shutil.copyfileobj(src, out, _CHUNK)
                        kinds[parts] = "file"
                    elif member.issym():
                        try:
                            _resolve_link_target(parts, member.linkname)
                        except ValueError as exc:
                            raise refuse(member, str(exc)) from None
                        folder = ensure_dirs(member, parts[:-1])
                        os.symlink(member.linkname, folder / parts[-1])
                        kinds[parts] = "symlink"
                        symlinks.append((member.name, folder / parts[-1]))
                    elif member.islnk():
                        try:
                            source = safe_parts(member.linkname)
                        except ValueError as exc:
                            raise refuse(member, f"is a hard link whose target {member.linkname!r} {exc}") from None
                        if kinds.get(source) != "file":
                            raise refuse(
                                member,
                                f"is a hard link to {member.linkname!r}, which is not a regular file extracted earlier from this archive",
                            )
                        folder = ensure_dirs(member, parts[:-1])
                        os.link(root.joinpath(*source), folder / parts[-1], follow_symlinks=False)
                        kinds[parts] = "file"
                    else:
                        kind = {
                            tarfile.CHRTYPE: "a character device",
                            tarfile.BLKTYPE: "a block device",
                            tarfile.FIFOTYPE: "a FIFO",
                        }.get(member.type, f"a special file (tar type {member.type!r})")
                        raise refuse(member, f"is {kind}; only files, folders and links inside the archive are allowed")
                    count += 1
                    pos = raw.tell()
                    advance(pos - last)
                    last = pos
                while tf.fileobj.read(_CHUNK):  # to the end: gzip/bz2/xz check their CRC there
                    pass
                advance(raw.tell() - last)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EPERM):
            raise DatasetError(
                f"cannot extract {archive} into {target}: {exc.strerror}; free disk space or fix the permissions "
                "of the cache folder (AUTOML_DATA_CACHE / --cache)"
            ) from exc
        raise DatasetError(
            f"cannot read archive {archive}: {exc}; it is corrupt, truncated or not a tar archive. Re-create or re-upload it"
        ) from exc
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise DatasetError(
            f"cannot read archive {archive}: {exc}; it is corrupt, truncated or not a tar archive. Re-create or re-upload it"
        ) from exc

    for name, link in symlinks:  # chains of links, each harmless alone, may still escape
        real = Path(os.path.realpath(link))
        if real != root and root not in real.parents:
            raise UnsafeArchiveError(
                f"refusing to extract {archive}: symlink {name!r} resolves to {real}, outside the target "
                "(through a chain of links). Nothing was extracted. Rebuild the archive without such links"
            )
    return count
