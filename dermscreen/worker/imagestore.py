"""Image validation and the content-addressed image store.

What is stored is the pixel data alone, upright: no EXIF, GPS, ICC profile or text chunk
survives. An upright RGB JPEG is stored as it came, its metadata segments cut out without
decoding it (dermscreen.worker.jpeg): the same pixels, at the JPEG's size and no CPU, and the
worker's decode is its only one (a JPEG whole in structure whose image data is damaged fails
there, as a corrupt image). Any other image must decode fully here (Pillow ``verify`` then
``load``) and is stored as PNG of its pixels with the EXIF orientation applied. Pillow's
decompression-bomb guard, at ``config.max_image_pixels``, rejects an image instead of warning.
The object is named by the SHA-256 of its bytes (in the configured store, see
dermscreen.storage).

    stored = store_image(path, store_for(config), config.max_image_pixels)
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from dermscreen.storage import Store
from dermscreen.worker.jpeg import without_metadata

ACCEPTED_FORMATS = {"JPEG", "PNG", "TIFF", "BMP", "WEBP"}
ORIENTATION = 0x0112  # the EXIF tag


class ImageRejected(ValueError):
    """A file that is not an acceptable image; the message is the reason."""


@dataclass(frozen=True)
class StoredImage:
    content_hash: str
    ref: str  # the store's reference to it
    width: int
    height: int


def decode_image(path: Path, max_pixels: int) -> Image.Image:
    """Open, verify and fully decode ``path``; return its RGB pixels, upright, with no metadata."""
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as probe:
                if probe.format not in ACCEPTED_FORMATS:
                    raise ImageRejected(f"{probe.format} images are not accepted")
                probe.verify()
            with Image.open(path) as opened:
                opened.load()
                upright = ImageOps.exif_transpose(opened).convert("RGB")
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageRejected(f"decompression bomb: {error}") from error
    except UnidentifiedImageError as error:
        raise ImageRejected("not a recognised image file") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageRejected(f"corrupt image: {error}") from error
    # A fresh image from raw pixels carries no info dict, so nothing but pixels is written.
    return Image.frombytes("RGB", upright.size, upright.tobytes())


def image_key(content_hash: str, suffix: str = "png") -> str:
    """The store key of the image with this hash."""
    return f"images/{content_hash[:2]}/{content_hash}.{suffix}"


def _upright_jpeg(path: Path, max_pixels: int) -> tuple[bytes, tuple[int, int]] | None:
    """An upright RGB JPEG's bytes without metadata, and its size; None for any other image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below
            with Image.open(path) as opened:
                if (opened.format != "JPEG" or opened.mode != "RGB"
                        or opened.getexif().get(ORIENTATION, 1) != 1):
                    return None
                size = opened.size
    except (Image.DecompressionBombError, OSError, SyntaxError, ValueError, EOFError):
        return None  # decode_image says why
    if size[0] * size[1] > max_pixels:
        raise ImageRejected(f"decompression bomb: {size[0]}x{size[1]} pixels is more than "
                            f"the limit of {max_pixels}")
    try:
        return without_metadata(path.read_bytes()), size
    except ValueError as error:
        raise ImageRejected(f"corrupt image: {error}") from error


def _as_png(path: Path, max_pixels: int) -> tuple[bytes, tuple[int, int]]:
    pixels = decode_image(path, max_pixels)
    buffer = io.BytesIO()
    pixels.save(buffer, format="PNG")
    return buffer.getvalue(), pixels.size


def store_image(path: Path, store: Store, max_pixels: int) -> StoredImage:
    """Validate ``path`` and put its clean pixels in the store (once per distinct content)."""
    jpeg = _upright_jpeg(path, max_pixels)
    (data, (width, height)), suffix = (jpeg, "jpg") if jpeg else (_as_png(path, max_pixels), "png")
    content_hash = hashlib.sha256(data).hexdigest()
    key = image_key(content_hash, suffix)
    ref = store.ref(key) if store.exists(key) else store.put(key, data)
    return StoredImage(content_hash, ref, width, height)
