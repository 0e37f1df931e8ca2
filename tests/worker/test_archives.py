"""Safe extraction: hostile archives are refused with a reason and leave nothing behind."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from dermscreen.worker.archives import ArchiveError, ArchiveLimits, extract_archive
from tests.factories import BLUE, RED, image_bytes, lesion_image

LIMITS = ArchiveLimits(max_members=50, max_bytes=20 * 1024 * 1024, max_ratio=100)


def make_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def make_tar(path: Path, entries: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            archive.addfile(info)
    return path


def good_entries() -> dict[str, bytes]:
    return {
        "lesions/red.jpg": image_bytes(lesion_image(RED)),
        "lesions/blue.png": image_bytes(lesion_image(BLUE), "PNG"),
        "__MACOSX/lesions/._red.jpg": b"resource fork",
    }


@pytest.mark.parametrize("maker,suffix", [(make_zip, ".zip"), (make_tar, ".tar.gz")])
def test_good_archive_extracts_regular_files_under_numbered_names(tmp_path, maker, suffix):
    archive = maker(tmp_path / f"good{suffix}", good_entries())
    members = extract_archive(archive, tmp_path / "out", LIMITS)
    assert sorted(member.name for member in members) == ["lesions/blue.png", "lesions/red.jpg"]
    for member in members:
        assert member.path.parent == tmp_path / "out"
        assert member.path.read_bytes() == good_entries()[member.name]


@pytest.mark.parametrize("maker,suffix", [(make_zip, ".zip"), (make_tar, ".tar.gz")])
@pytest.mark.parametrize("name,reason", [
    ("../escape.jpg", "outside the archive"),
    ("a/../../escape.jpg", "outside the archive"),
    ("/etc/escape.jpg", "absolute path"),
])
def test_paths_outside_the_target_are_refused(tmp_path, maker, suffix, name, reason):
    archive = maker(tmp_path / f"evil{suffix}", {**good_entries(), name: b"x"})
    with pytest.raises(ArchiveError, match=reason):
        extract_archive(archive, tmp_path / "out" / "batch", LIMITS)
    assert not (tmp_path / "out" / "batch").exists()
    assert not (tmp_path / "out" / "escape.jpg").exists()
    assert not (tmp_path / "escape.jpg").exists()


def test_tar_symlink_is_refused(tmp_path):
    archive = make_tar(tmp_path / "link.tar.gz", good_entries(), links={"passwd.jpg": "/etc/passwd"})
    with pytest.raises(ArchiveError, match="a link"):
        extract_archive(archive, tmp_path / "out", LIMITS)
    assert not (tmp_path / "out").exists()


def test_tar_hardlink_and_device_are_refused(tmp_path):
    path = tmp_path / "special.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo("dev.jpg")
        info.type = tarfile.CHRTYPE
        archive.addfile(info)
    with pytest.raises(ArchiveError, match="device"):
        extract_archive(path, tmp_path / "out", LIMITS)
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo("hard.jpg")
        info.type = tarfile.LNKTYPE
        info.linkname = "etc/passwd"
        archive.addfile(info)
    with pytest.raises(ArchiveError, match="a link"):
        extract_archive(path, tmp_path / "out", LIMITS)


def test_zip_symlink_is_refused(tmp_path):
    path = tmp_path / "link.zip"
    with zipfile.ZipFile(path, "w") as archive:
        info = zipfile.ZipInfo("passwd.jpg")
        info.external_attr = (0o120777 << 16)
        archive.writestr(info, "/etc/passwd")
    with pytest.raises(ArchiveError, match="link or special file"):
        extract_archive(path, tmp_path / "out", LIMITS)


def test_zip_bomb_is_refused_by_ratio_before_inflating(tmp_path):
    archive = make_zip(tmp_path / "bomb.zip", {"bomb.jpg": bytes(8 * 1024 * 1024)})
    assert archive.stat().st_size < 100_000
    with pytest.raises(ArchiveError, match="compression ratio"):
        extract_archive(archive, tmp_path / "out", LIMITS)


def test_tar_gz_bomb_is_refused_by_ratio(tmp_path):
    archive = make_tar(tmp_path / "bomb.tar.gz", {"bomb.jpg": bytes(8 * 1024 * 1024)})
    with pytest.raises(ArchiveError, match="compression ratio"):
        extract_archive(archive, tmp_path / "out", LIMITS)


def test_total_size_and_member_count_limits(tmp_path):
    noise = [lesion_image(RED, size=(256, 256), seed=seed).tobytes() for seed in range(3)]
    archive = make_zip(tmp_path / "big.zip", {f"{i}.raw": data for i, data in enumerate(noise)})
    small = ArchiveLimits(max_members=50, max_bytes=2 * len(noise[0]), max_ratio=100)
    with pytest.raises(ArchiveError, match="uncompressed size"):
        extract_archive(archive, tmp_path / "out", small)
    few = ArchiveLimits(max_members=2, max_bytes=LIMITS.max_bytes, max_ratio=100)
    with pytest.raises(ArchiveError, match="more than 2 members"):
        extract_archive(archive, tmp_path / "out", few)


def test_zip_that_lies_about_its_size_is_refused(tmp_path):
    path = make_zip(tmp_path / "liar.zip", {"a.jpg": b"A" * 5000})
    data = bytearray(path.read_bytes())
    # Shrink the declared uncompressed size in the central directory to 10 bytes.
    central = data.rfind(b"PK\x01\x02")
    data[central + 24:central + 28] = (10).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match="Bad CRC-32"):
        extract_archive(path, tmp_path / "out", LIMITS)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name,data", [
    ("broken.zip", b"PK\x03\x04 this is not really a zip"),
    ("broken.tar.gz", b"\x1f\x8b\x08\x00 not gzip data at all"),
    ("truncated.zip", None),
])
def test_malformed_archives_are_refused_with_a_reason(tmp_path, name, data):
    path = tmp_path / name
    if data is None:
        data = make_zip(tmp_path / "whole.zip", good_entries()).read_bytes()[:-40]
    path.write_bytes(data)
    with pytest.raises(ArchiveError, match="malformed"):
        extract_archive(path, tmp_path / "out", LIMITS)
    assert not (tmp_path / "out").exists()
