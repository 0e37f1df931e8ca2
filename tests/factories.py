"""Things tests make for themselves: images and a tiny model bundle whose answers are known.

The tiny bundle scores an image by its colour: the melanoma logit grows with mean redness
(red minus blue), so a red image is flagged and a blue one is not. Tests never read ../shared.
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
BLUE = (40, 40, 200)


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


def make_tiny_bundle(path: Path, threshold: float = 0.5, with_onnx: bool = False) -> Path:
    """Build and save a bundle whose melanoma probability follows the image's redness."""
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
    onnx_bytes = None
    if with_onnx:
        from dermscreen.training.onnx_export import export_onnx

        onnx_bytes = export_onnx(model)
    return Path(save_bundle(path, model, metadata, onnx_bytes=onnx_bytes))
