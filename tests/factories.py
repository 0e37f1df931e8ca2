"""Things tests make for themselves: images and a tiny model bundle whose answers are known.

The tiny bundle scores an image by its colour: the melanoma logit grows with mean redness
(red minus blue), so a red image is flagged (alert tier), a purple one is in the review tier and a
blue one in neither. With ``gate=True`` it carries a gate of image-quality checks alone
(``QUALITY_GATE``), which stops uniform, dark, bright and tiny images and lets the noisy
synthetic lesions through. Tests never read ../shared.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = [
    "actinic keratosis",
    "basal cell carcinoma",
    "dermatofibroma",
    "melanoma",
    "nevus",
    "pigmented benign keratosis",
    "seborrheic keratosis",
    "squamous cell carcinoma",
    "vascular lesion",
]
RED = (200, 40, 40)
PURPLE = (160, 40, 100)
BLUE = (40, 40, 200)
# A gate of quality checks alone (dermscreen.gate): no detectors, so no gate.npz.
QUALITY_GATE = {
    "quality": {"min_side": 16, "min_brightness": 20.0, "max_brightness": 240.0,
                "max_flat_share": 0.9, "min_sharpness": 5.0},
    "detectors": {},
}


def lesion_image(color=RED, size=(64, 64), seed: int = 0) -> Image.Image:
    """A synthetic 'lesion': a noisy disc of ``color`` on skin tone."""
    rng = np.random.default_rng(seed)
    height, width = size
    yy, xx = np.mgrid[:height, :width]
    disc = (yy - height / 2) ** 2 + (xx - width / 2) ** 2 < (min(size) / 3) ** 2
    pixels = np.empty((height, width, 3), dtype=np.float32)
    pixels[:] = (224, 180, 160)
    pixels[disc] = color
    pixels += rng.normal(0, 8, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def image_bytes(image: Image.Image, format: str = "JPEG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **params)
    return buffer.getvalue()


def plain_image(color, size=(64, 64)) -> Image.Image:
    """An image of one colour, no noise: what a gate must stop."""
    return Image.new("RGB", (size[1], size[0]), color)


def gated_images() -> dict[str, tuple[bytes, str]]:
    """The images ``QUALITY_GATE`` must stop, by file name, with the reason it gives: a uniform
    grey image, an all-black and an all-white frame, and an 8x8 image."""
    return {
        "grey.png": (image_bytes(plain_image((128, 128, 128)), "PNG"),
                     "mostly a uniform field: 100% of the image is flat"),
        "black.jpg": (image_bytes(plain_image((0, 0, 0))), "too dark: mean brightness 0 of 255"),
        "white.jpg": (image_bytes(plain_image((255, 255, 255))),
                      "too bright: mean brightness 255 of 255"),
        "tiny.png": (image_bytes(lesion_image(RED, size=(8, 8)), "PNG"),
                     "too small: 8x8 px, the gate needs at least 16 px on the shorter side"),
    }


def make_tiny_bundle(path: Path, threshold: float = 0.5, with_onnx: bool = False,
                     review_threshold: float | None = None, gate: bool = False) -> Path:
    """Build and save a bundle whose melanoma probability follows the image's redness, with an
    alert ``threshold``, a ``review_threshold`` (none: no review tier) and, with ``gate``,
    ``QUALITY_GATE``."""
    import keras

    from dermscreen.bundle import save_bundle

    size = 32
    inputs = keras.Input((size, size, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    dense = keras.layers.Dense(len(CLASSES), name="logits")
    model = keras.Model(inputs, dense(pooled))
    weights = np.zeros((3, len(CLASSES)), dtype=np.float32)
    melanoma = CLASSES.index("melanoma")
    weights[0, melanoma], weights[2, melanoma] = 12.0, -12.0  # red up, blue down
    weights[2, CLASSES.index("nevus")] = 6.0
    dense.set_weights([weights, np.zeros(len(CLASSES), dtype=np.float32)])
    metadata = {
        "name": "tiny-test-model",
        "version": "test-1",
        "changelog": ["test bundle built by tests/factories.py"],
        "input": {"height": size, "width": size},
        "output": {"classes": CLASSES, "alert_threshold": threshold, "temperature": 1.0},
        "metrics": {},
    }
    if review_threshold is not None:
        metadata["output"]["review_threshold"] = review_threshold
    if gate:
        metadata["gate"] = QUALITY_GATE
    onnx_bytes = None
    if with_onnx:
        from dermscreen.training.onnx_export import export_onnx

        onnx_bytes = export_onnx(model)
    return Path(save_bundle(path, model, metadata, onnx_bytes=onnx_bytes))
