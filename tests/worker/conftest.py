"""Worker test helpers: batches submitted the way the API submits them, and upload files."""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest
from PIL import Image

from tests.factories import BLUE, RED, image_bytes, lesion_image


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def symlink_tar_bytes(entries: dict[str, bytes], link: str, target: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo(link)
        info.type, info.linkname = tarfile.SYMTYPE, target
        archive.addfile(info)
    return buffer.getvalue()


def bomb_png_bytes(side: int = 2000) -> bytes:
    """A PNG of side x side pixels in a few kB (past a 1 Mpx limit)."""
    return image_bytes(Image.new("1", (side, side)), "PNG")


def red(seed: int = 0) -> bytes:
    return image_bytes(lesion_image(RED, seed=seed))


def blue(seed: int = 0) -> bytes:
    return image_bytes(lesion_image(BLUE, seed=seed), "PNG")


def hostile_batch() -> dict[str, bytes]:
    """Good images beside every kind of bad upload the worker must refuse."""
    return {
        "red.jpg": red(),
        "blue.png": blue(),
        "good.zip": zip_bytes({"lesions/red2.jpg": red(2), "lesions/notes.jpg": b"not an image",
                               "lesions/bomb.png": bomb_png_bytes()}),
        "traversal.zip": zip_bytes({"../../escape.jpg": red(3), "ok.jpg": red(4)}),
        "symlink.tar.gz": symlink_tar_bytes({"ok.jpg": red(5)}, "passwd.jpg", "/etc/passwd"),
        "bomb.zip": zip_bytes({"bomb.jpg": bytes(8 * 1024 * 1024)}),
        "truncated.jpg": image_bytes(lesion_image(RED, size=(128, 128)))[:1500],
    }


@pytest.fixture
def worker_config(config):
    """The shared test config with worker limits small enough for synthetic bombs."""
    config.max_image_pixels = 1_000_000
    config.chunk_size = 2
    return config


@pytest.fixture
def submit(sessions, worker_config):
    """``submit(hospital, {name: bytes}, metadata_csv=None) -> batch id``, as the API does it."""
    from dermscreen.submissions import submit_batch

    def make(hospital, files: dict[str, bytes], metadata_csv: str | None = None) -> str:
        uploads = [(name, io.BytesIO(data)) for name, data in files.items()]
        metadata = io.BytesIO(metadata_csv.encode()) if metadata_csv else None
        with sessions.begin() as session:
            return submit_batch(session, worker_config, hospital.id, uploads, metadata).id

    return make
