"""Image validation and the content-addressed image store.

Only real, fully decodable images are accepted (Pillow ``verify`` then ``load``); Pillow's
decompression-bomb guard, at ``config.max_image_pixels``, rejects the image instead of warning.
What is stored is the pixel data alone, re-encoded as PNG with the EXIF orientation applied: no
EXIF, GPS, ICC profile or text chunk survives. The object is named by the SHA-256 of its bytes
(in the configured store, see dermscreen.storage).

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

ACCEPTED_FORMATS = {"JPEG", "PNG", "TIFF", "BMP", "WEBP"}


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


def image_key(content_hash: str) -> str:
    """The store key of the image with this hash."""
    return f"images/{content_hash[:2]}/{content_hash}.png"


def store_image(path: Path, store: Store, max_pixels: int) -> StoredImage:
    """Validate ``path`` and put its clean pixels in the store (once per distinct content)."""
    pixels = decode_image(path, max_pixels)
    buffer = io.BytesIO()
    pixels.save(buffer, format="PNG")
    data = buffer.getvalue()
    content_hash = hashlib.sha256(data).hexdigest()
    key = image_key(content_hash)
    ref = store.ref(key) if store.exists(key) else store.put(key, data)
    return StoredImage(content_hash, ref, pixels.width, pixels.height)
