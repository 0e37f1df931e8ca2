"""Image validation and the content-addressed image store.

Only real, fully decodable images are accepted (Pillow ``verify`` then ``load``); Pillow's
decompression-bomb guard, at ``config.max_image_pixels``, rejects the image instead of warning.
What is stored is the pixel data alone, re-encoded as PNG with the EXIF orientation applied: no
EXIF, GPS, ICC profile or text chunk survives. The file is named by the SHA-256 of its bytes.

    stored = store_image(path, config.store_dir, config.max_image_pixels)
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

ACCEPTED_FORMATS = {"JPEG", "PNG", "TIFF", "BMP", "WEBP"}


class ImageRejected(ValueError):
    """A file that is not an acceptable image; the message is the reason."""


@dataclass(frozen=True)
class StoredImage:
    content_hash: str
    path: Path
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


def store_path(store_dir: str | os.PathLike, content_hash: str) -> Path:
    """Where the image with this hash lives (absolute: every node mounts the store alike)."""
    return Path(store_dir).resolve() / "images" / content_hash[:2] / f"{content_hash}.png"


def store_image(path: Path, store_dir: str | os.PathLike, max_pixels: int) -> StoredImage:
    """Validate ``path`` and put its clean pixels in the store (once per distinct content)."""
    pixels = decode_image(path, max_pixels)
    buffer = io.BytesIO()
    pixels.save(buffer, format="PNG")
    data = buffer.getvalue()
    content_hash = hashlib.sha256(data).hexdigest()
    destination = store_path(store_dir, content_hash)
    if not destination.exists():
        destination.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=destination.parent, suffix=".part")
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, destination)
    return StoredImage(content_hash, destination, pixels.width, pixels.height)
