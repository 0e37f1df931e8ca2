"""Image validation and the content-addressed store."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dermscreen.storage import LocalStore
from dermscreen.worker.imagestore import ImageRejected, store_image
from tests.factories import RED, image_bytes, lesion_image

MAX_PIXELS = 1_000_000


def test_a_rotated_jpeg_is_stored_upright_as_png_without_exif_or_icc(tmp_path):
    image = lesion_image(RED, size=(40, 60))  # 60 wide, 40 high
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to display
    exif[0x010F] = "CameraMaker"
    exif[0x8825] = {2: (51.0, 30.0, 0.0)}  # GPS
    source = tmp_path / "exif.jpg"
    source.write_bytes(image_bytes(image, exif=exif.tobytes(), icc_profile=b"\0" * 128))
    assert Image.open(source).getexif()[0x010F] == "CameraMaker"

    stored = store_image(source, LocalStore(tmp_path / "store"), MAX_PIXELS)

    assert (stored.width, stored.height) == (40, 60)  # upright
    path = Path(stored.ref)
    data = path.read_bytes()
    assert stored.content_hash == hashlib.sha256(data).hexdigest()
    assert path.name == f"{stored.content_hash}.png"
    with Image.open(path) as clean:
        assert dict(clean.getexif()) == {}
        assert "icc_profile" not in clean.info and "exif" not in clean.info
    assert b"CameraMaker" not in data


@pytest.mark.parametrize("params", [{}, {"progressive": True}, {"restart_marker_rows": 1}],
                         ids=["baseline", "progressive", "restart markers"])
def test_an_upright_jpeg_is_stored_as_itself_without_metadata(tmp_path, params):
    image = lesion_image(RED, size=(48, 80))
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"
    exif[0x8825] = {2: (51.0, 30.0, 0.0)}  # GPS
    original = image_bytes(image, exif=exif.tobytes(), icc_profile=b"\0" * 128,
                           comment=b"patient Jane Doe", **params)
    source = tmp_path / "lesion.jpg"
    source.write_bytes(original + b"trailing bytes")

    stored = store_image(source, LocalStore(tmp_path / "store"), MAX_PIXELS)

    path = Path(stored.ref)
    data = path.read_bytes()
    assert path.name == f"{hashlib.sha256(data).hexdigest()}.jpg"
    assert (stored.width, stored.height) == (80, 48)
    for secret in (b"CameraMaker", b"Jane Doe", b"trailing"):
        assert secret not in data
    with Image.open(path) as clean:
        assert clean.format == "JPEG" and dict(clean.getexif()) == {}
        assert not {"icc_profile", "exif", "comment"} & set(clean.info)
        pixels = np.asarray(clean.convert("RGB"))
    assert np.array_equal(pixels, np.asarray(Image.open(io.BytesIO(original)).convert("RGB")))
    assert len(data) < len(original)


def test_same_pixels_are_stored_once(tmp_path):
    data = image_bytes(lesion_image(RED), "PNG")
    (tmp_path / "a.png").write_bytes(data)
    (tmp_path / "b.png").write_bytes(data)
    first = store_image(tmp_path / "a.png", LocalStore(tmp_path / "store"), MAX_PIXELS)
    second = store_image(tmp_path / "b.png", LocalStore(tmp_path / "store"), MAX_PIXELS)
    assert first == second
    assert len(list((tmp_path / "store").rglob("*.png"))) == 1


def test_decompression_bomb_png_is_rejected(tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (2000, 2000)).save(bomb)  # 4 Mpx in a few kB
    assert bomb.stat().st_size < 10_000
    with pytest.raises(ImageRejected, match="decompression bomb"):
        store_image(bomb, LocalStore(tmp_path / "store"), MAX_PIXELS)
    large = tmp_path / "large.jpg"
    large.write_bytes(image_bytes(Image.new("RGB", (1200, 1000))))
    with pytest.raises(ImageRejected, match="decompression bomb"):
        store_image(large, LocalStore(tmp_path / "store"), MAX_PIXELS)
    huge = tmp_path / "huge.png"
    Image.new("1", (3000, 3000)).save(huge)  # past twice the limit: Pillow's error, not warning
    with pytest.raises(ImageRejected, match="decompression bomb"):
        store_image(huge, LocalStore(tmp_path / "store"), MAX_PIXELS)


@pytest.mark.parametrize("name,make,reason", [
    ("truncated.jpg", lambda: image_bytes(lesion_image(RED, size=(128, 128)))[:1500], "corrupt"),
    ("headless.jpg", lambda: image_bytes(lesion_image(RED, size=(128, 128)))[:600], "corrupt"),
    ("text.jpg", lambda: b"this is a text file, not a lesion\n", "not a recognised image"),
    ("anim.gif", lambda: image_bytes(lesion_image(RED), "GIF"), "GIF images are not accepted"),
    ("empty.png", lambda: b"", "not a recognised image"),
])
def test_non_images_are_rejected_with_a_reason(tmp_path, name, make, reason):
    path = tmp_path / name
    path.write_bytes(make())
    with pytest.raises(ImageRejected, match=reason):
        store_image(path, LocalStore(tmp_path / "store"), MAX_PIXELS)
    assert not (tmp_path / "store").exists()
