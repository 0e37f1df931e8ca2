"""Safe extraction of uploaded zip and tar.gz archives.

Nothing from an archive chooses where it is written: members go to ``<target>/<n>`` and keep their
archive name only as a label. An archive is refused whole, with the reason, when any member names a
path outside the target (``../``, absolute), is a link or a device, or when it breaks the limits on
member count, total uncompressed size or compression ratio (zip bombs), or when it is malformed.

    members = extract_archive(upload, target, ArchiveLimits.from_config(config))
"""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator

COPY_BLOCK = 1 << 20
# Below this many uncompressed bytes a high compression ratio is harmless (tiny, uniform files).
RATIO_FLOOR = 1 << 20
# Entries that archivers add beside the real files (macOS resource forks, Finder metadata).
JUNK_PARTS = {"__MACOSX", ".DS_Store", "Thumbs.db"}


class ArchiveError(ValueError):
    """An archive that is refused; the message is the reason shown to the hospital."""


@dataclass(frozen=True)
class ArchiveLimits:
    max_members: int
    max_bytes: int
    max_ratio: int

    @classmethod
    def from_config(cls, config) -> "ArchiveLimits":
        return cls(config.max_archive_members, config.max_extracted_bytes,
                   config.max_compression_ratio)


@dataclass(frozen=True)
class Member:
    """One regular file taken out of an archive: its name in the archive and where it now is."""

    name: str
    path: Path


def archive_kind(path: Path, name: str | None = None) -> str | None:
    """``"zip"``, ``"tar.gz"`` or None, by the file's name (``name``, else the path's) or its
    first bytes."""
    name = (name or path.name).lower()
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if name.endswith(".zip") or magic == b"PK\x03\x04":
        return "zip"
    if name.endswith((".tar.gz", ".tgz")) or magic[:2] == b"\x1f\x8b":
        return "tar.gz"
    return None


def extract_archive(path: Path, target: Path, limits: ArchiveLimits,
                    name: str | None = None) -> list[Member]:
    """Extract the regular files of the archive at ``path`` (uploaded as ``name``) under
    ``target``. Raises ArchiveError (and leaves nothing under ``target``) when it is refused.
    """
    kind = archive_kind(path, name)
    target.mkdir(parents=True, exist_ok=True)
    try:
        if kind == "zip":
            return _extract_zip(path, target, limits)
        if kind == "tar.gz":
            return _extract_tar(path, target, limits)
        raise ArchiveError(f"{path.name}: not a zip or tar.gz archive")
    except ArchiveError:
        shutil.rmtree(target, ignore_errors=True)
        raise
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError) as error:
        shutil.rmtree(target, ignore_errors=True)
        raise ArchiveError(f"malformed {kind} archive: {error}") from error


def _check_name(name: str) -> bool:
    """Raise for a name that leaves the target; return False for entries to skip silently."""
    if "\x00" in name:
        raise ArchiveError(f"member {name!r}: NUL byte in name")
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or name[1:3] == ":/" or name[1:3] == ":\\":
        raise ArchiveError(f"member {name!r}: absolute path")
    if ".." in posix.parts:
        raise ArchiveError(f"member {name!r}: path outside the archive ('..')")
    return not any(part in JUNK_PARTS or part.startswith("._") for part in posix.parts)


class _Budget:
    """Counts members and bytes across an archive and refuses when a limit is passed."""

    def __init__(self, limits: ArchiveLimits):
        self.limits = limits
        self.members = 0
        self.bytes = 0

    def add_member(self, name: str, declared_size: int) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise ArchiveError(f"more than {self.limits.max_members} members")
        self.add_bytes(name, declared_size)

    def add_bytes(self, name: str, count: int) -> None:
        self.bytes += count
        if self.bytes > self.limits.max_bytes:
            raise ArchiveError(
                f"uncompressed size passes the limit of {self.limits.max_bytes} bytes at {name!r}"
            )

    def check_ratio(self, name: str, uncompressed: int, compressed: int) -> None:
        if uncompressed > RATIO_FLOOR and uncompressed > self.limits.max_ratio * max(compressed, 1):
            raise ArchiveError(
                f"member {name!r}: compression ratio {uncompressed / max(compressed, 1):.0f} "
                f"passes the limit of {self.limits.max_ratio} (zip bomb?)"
            )


def _copy(source: BinaryIO, destination: Path) -> None:
    """Copy a member's bytes. zipfile and tarfile stop at the declared size (zipfile then checks
    the CRC), so the declared sizes counted by the budget bound what is written."""
    with open(destination, "wb") as out:
        shutil.copyfileobj(source, out, COPY_BLOCK)


def _extract_zip(path: Path, target: Path, limits: ArchiveLimits) -> list[Member]:
    budget = _Budget(limits)
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        wanted = []
        for info in infos:
            keep = _check_name(info.filename)
            mode = info.external_attr >> 16
            file_type = mode & 0o170000
            if file_type not in (0, 0o100000, 0o040000):  # only regular files and folders
                raise ArchiveError(f"member {info.filename!r}: a link or special file")
            if info.is_dir():
                continue
            budget.add_member(info.filename, info.file_size)
            budget.check_ratio(info.filename, info.file_size, info.compress_size)
            if keep:
                wanted.append(info)
        members = []
        for index, info in enumerate(wanted):
            destination = target / str(index)
            with archive.open(info) as source:
                _copy(source, destination)
            members.append(Member(info.filename, destination))
    return members


def _tar_members(archive: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """Iterate members one header at a time, so limits apply before the rest is decompressed."""
    while (info := archive.next()) is not None:
        yield info


def _extract_tar(path: Path, target: Path, limits: ArchiveLimits) -> list[Member]:
    budget = _Budget(limits)
    compressed = path.stat().st_size
    members = []
    with tarfile.open(path, mode="r:gz") as archive:
        for info in _tar_members(archive):
            keep = _check_name(info.name)
            if info.issym() or info.islnk():
                raise ArchiveError(f"member {info.name!r}: a link (to {info.linkname!r})")
            if info.isdir():
                continue
            if not info.isfile():
                raise ArchiveError(f"member {info.name!r}: a device, pipe or other special file")
            budget.add_member(info.name, info.size)
            budget.check_ratio(info.name, budget.bytes, compressed)
            if not keep:
                continue
            destination = target / str(len(members))
            source = archive.extractfile(info)
            _copy(source, destination)
            members.append(Member(info.name, destination))
    return members
