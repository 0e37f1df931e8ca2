"""The gate in front of the melanoma model: only usable dermoscopic images get a melanoma score.

A bundle's gate lives in its ``metadata.json`` (``gate``: thresholds and the data they were
fitted on) and ``gate.npz`` (the arrays). ``Bundle.screen`` applies it in two steps:

1. **quality**, on plain statistics of the image (``image_statistics``): too small, too dark,
   too bright, mostly a uniform field, too blurred. Each threshold lies beyond (almost) every
   training dermoscopy image;
2. **dermoscopy or not**, on the model's own features (pooled, and two inner feature maps'
   statistics) of the plain view with its
   bottom-left corner masked (``mask_corner``: where clinical photograph libraries put their
   logo, so the gate never sees one, in fitting or in serving): a logistic regression trained on
   dermoscopy against images that are not (clinical photographs, documents, natural
   photographs), and a Mahalanobis distance to the training dermoscopy in the features' main
   components, which also stops kinds of image that no example showed.

``dermscreen.training.gate`` fits both and writes them into a bundle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

GATE_FILE = "gate.npz"
# Statistics are taken on the image as the model sees it, at this working size.
TILE = 16           # px: the side of the tiles whose flatness ``flat_share`` counts
FLAT_TILE_STD = 2.0  # a tile whose luminance varies less than this (of 255) is flat
# The bottom-left corner (share of width, share of height) that the detectors never see.
LOGO_CORNER = (0.45, 0.40)


def mask_corner(batch: np.ndarray) -> np.ndarray:
    """A copy of an NHWC ``batch`` with each image's bottom-left ``LOGO_CORNER`` filled with
    that image's mean colour."""
    height, width = batch.shape[1:3]
    masked = np.array(batch, dtype=np.float32)
    corner = (slice(None), slice(int(height * (1 - LOGO_CORNER[1])), None),
              slice(None, int(width * LOGO_CORNER[0])))
    masked[corner] = masked.mean(axis=(1, 2))[:, None, None, :]
    return masked


def luminance(pixels: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of an RGB array in [0, 255]."""
    return pixels[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def image_statistics(pixels: np.ndarray) -> dict[str, float]:
    """Plain statistics of one model input (height, width, 3) in [0, 255]:

    - ``brightness``: mean luminance;
    - ``flat_share``: share of 16x16 tiles whose luminance is flat (std < 2);
    - ``sharpness``: variance of the luminance's 4-neighbour Laplacian.
    """
    grey = luminance(pixels)
    height, width = (grey.shape[0] // TILE) * TILE, (grey.shape[1] // TILE) * TILE
    tiles = grey[:height, :width].reshape(height // TILE, TILE, width // TILE, TILE)
    laplacian = (grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:]
                 - 4 * grey[1:-1, 1:-1])
    return {
        "brightness": float(grey.mean()),
        "flat_share": float((tiles.std(axis=(1, 3)) < FLAT_TILE_STD).mean()),
        "sharpness": float(laplacian.var()),
    }


@dataclass
class Gate:
    """A fitted gate: ``quality`` thresholds and the feature detectors' arrays and thresholds."""

    quality: dict
    detectors: dict
    arrays: dict

    def quality_reason(self, pixels: np.ndarray, size: tuple[int, int]) -> str | None:
        """Why this image (model input ``pixels``, own ``size`` (width, height)) is unusable, or
        None."""
        q = self.quality
        if min(size) < q["min_side"]:
            return (f"too small: {size[0]}x{size[1]} px, the gate needs at least {q['min_side']} px"
                    f" on the shorter side")
        stats = image_statistics(pixels)
        if stats["brightness"] < q["min_brightness"]:
            return f"too dark: mean brightness {stats['brightness']:.0f} of 255"
        if stats["brightness"] > q["max_brightness"]:
            return f"too bright: mean brightness {stats['brightness']:.0f} of 255"
        if stats["flat_share"] > q["max_flat_share"]:
            return f"mostly a uniform field: {stats['flat_share']:.0%} of the image is flat"
        if stats["sharpness"] < q["min_sharpness"]:
            return f"too blurred: sharpness {stats['sharpness']:.1f}, below {q['min_sharpness']:.1f}"
        return None

    def scores(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """The detectors' scores of pooled ``features`` (n, d): ``not_dermoscopy`` (the
        classifier's probability) and ``distance`` (Mahalanobis, in the main components)."""
        a = self.arrays
        standard = (features - a["mean"]) / a["scale"]
        logit = standard @ a["coef"] + a["intercept"]
        components = (features - a["pca_mean"]) @ a["pca_components"].T
        return {
            "not_dermoscopy": 1.0 / (1.0 + np.exp(-logit)),
            "distance": np.sqrt(((components ** 2) / a["pca_variance"]).sum(axis=1)),
        }

    def feature_reasons(self, features: np.ndarray | None) -> list[str | None]:
        """Why each image is not dermoscopy by its pooled features, or None for those that are
        (every image, for a gate of quality checks alone)."""
        if not self.detectors:
            return [None] * (0 if features is None else len(features))
        if features is None:
            raise ValueError("this bundle's gate needs the model's pooled features")
        scores = self.scores(np.asarray(features, dtype=np.float64))
        d = self.detectors
        reasons = []
        for probability, distance in zip(scores["not_dermoscopy"], scores["distance"]):
            if probability >= d["classifier_threshold"]:
                reasons.append(f"not a dermoscopic image (gate score {probability:.2f})")
            elif distance >= d["distance_threshold"]:
                reasons.append(f"unlike any dermoscopic image the model was trained on (distance"
                               f" {distance:.0f}, limit {d['distance_threshold']:.0f})")
            else:
                reasons.append(None)
        return reasons


def load_gate(path: Path, metadata: dict) -> Gate | None:
    """The gate of the bundle at ``path`` from its metadata and ``gate.npz``; None without one."""
    spec = metadata.get("gate")
    if not spec:
        return None
    arrays = {}
    if spec.get("detectors"):
        with np.load(Path(path) / GATE_FILE) as stored:
            arrays = {name: stored[name].astype(np.float64) for name in stored.files}
    return Gate(quality=spec["quality"], detectors=spec.get("detectors") or {}, arrays=arrays)
