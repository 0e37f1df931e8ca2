"""Grad-CAM heatmaps: where in the image the model looked when it scored melanoma.

    from dermscreen.bundle import load_bundle
    from dermscreen.heatmap import render_heatmap
    render_heatmap(load_bundle(), "lesion.jpg", "lesion-heatmap.png")

Grad-CAM (Selvaraju et al., 2017) weights the last spatial feature map of the network by the
mean gradient of the melanoma logit over it, keeps the positive part and scales it to [0, 1].
The map is drawn over the original image with a perceptually uniform colour map and stored as a
PNG; the case page shows it on top of the image and can hide it.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from dermscreen.bundle import Bundle, to_model_input

OVERLAY_ALPHA = 0.45
COLOR_MAP = "inferno"


def feature_layer(model):
    """The last top-level layer whose output is a spatial feature map (batch, h, w, channels).

    A nested backbone (a sub-model used as one layer) counts as one layer: its output map is used.
    """
    for layer in reversed(model.layers):
        if len(layer.output.shape) == 4:
            return layer
    raise ValueError("the model has no spatial feature map to explain")


def gradcam(model, batch: np.ndarray, class_index: int) -> np.ndarray:
    """Grad-CAM maps for ``class_index``: shape (n, h, w) of the feature map, values in [0, 1]."""
    import keras
    import tensorflow as tf

    # A nested model's ``output`` is its own inner tensor; the tensor of the outer graph is the
    # output of the node that calls it.
    feature_map = feature_layer(model)._inbound_nodes[0].output_tensors[0]
    # Two sub-models split at the feature map: a tape does not see the intermediate outputs of one
    # model call in Keras 3, so the map is fed to the head as a watched input instead.
    body = keras.Model(model.inputs, feature_map)
    head = keras.Model(feature_map, model.outputs[0])
    features = body(tf.convert_to_tensor(batch, dtype=tf.float32), training=False)
    with tf.GradientTape() as tape:
        tape.watch(features)
        score = head(features, training=False)[:, class_index]
    gradients = tape.gradient(score, features)
    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    maps = tf.nn.relu(tf.reduce_sum(features * weights, axis=-1)).numpy()
    peaks = maps.max(axis=(1, 2), keepdims=True)
    return np.divide(maps, peaks, out=np.zeros_like(maps), where=peaks > 0)


def overlay(image: Image.Image, cam: np.ndarray, alpha: float = OVERLAY_ALPHA) -> Image.Image:
    """Blend a [0, 1] map, resized to the image and coloured, over the image."""
    from matplotlib import colormaps

    image = image.convert("RGB")
    resized = Image.fromarray((cam * 255).astype(np.uint8)).resize(image.size, Image.Resampling.BILINEAR)
    colored = colormaps[COLOR_MAP](np.asarray(resized, dtype=np.float32) / 255.0)[..., :3]
    blended = (1 - alpha) * np.asarray(image, dtype=np.float32) + alpha * colored * 255.0
    return Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8))


def heatmap_image(bundle: Bundle, image_source) -> Image.Image:
    """The melanoma Grad-CAM overlay of one image (a path or a binary stream)."""
    with Image.open(image_source) as opened:
        image = opened.convert("RGB")
    batch = to_model_input(image, bundle.input_size)[None]
    cam = gradcam(bundle.keras_model, batch, bundle.melanoma_index)[0]
    return overlay(image, cam)


def heatmap_png(bundle: Bundle, image_source) -> bytes:
    """``heatmap_image`` encoded as PNG bytes (what the worker puts in the store)."""
    buffer = io.BytesIO()
    heatmap_image(bundle, image_source).save(buffer, format="PNG")
    return buffer.getvalue()


def render_heatmap(bundle: Bundle, image_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Write the melanoma Grad-CAM overlay of one image as a PNG at ``out_path`` and return it."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(out_path.name + ".part")
    partial.write_bytes(heatmap_png(bundle, image_path))
    partial.replace(out_path)  # readers never see half a file
    return out_path
