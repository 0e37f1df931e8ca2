"""Cached feature maps of the frozen bottom of the pretrained backbone, over augmented views.

Fine-tuning only the top blocks of EfficientNet-Lite0 needs the bottom's output for every
training image; computing it once per view instead of once per epoch makes CPU training
practical. View 0 of every image is the plain image (the only view validation and test data
get); views 1.. are random Augmentor views (rotations, flips, random zoom, brightness, contrast,
colour), seeded::

    python -m dermscreen.training.features --config dermscreen/training/presets/efficientnet_lite0.yaml

The bottom runs through ONNX Runtime (several times faster than Keras eager on the CPU). A cache
is a folder ``$DERMSCREEN_HOME/features/<name>/`` holding ``features.npy`` (float16, shape
``(images, views, height, width, channels)``), ``index.csv`` (the records, in row order) and
``meta.json`` (settings and how many rows are done, so an interrupted run resumes).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from dermscreen.bundle import to_model_input, file_sha256

FEATURES_FILE = "features.npy"
INDEX_FILE = "index.csv"
META_FILE = "meta.json"


@dataclass(frozen=True)
class CacheSpec:
    """What a feature cache holds; two runs with equal specs and records share a cache."""

    backbone_weights: str  # converted weights (see dermscreen.training.backbone.convert)
    size: int = 224  # input height and width
    cut: int = 10  # the cache holds the feature map entering this block
    views: int = 1  # view 0 plain, views 1.. augmented
    seed: int = 0


def augmentor_pipeline():
    """Random view of a dermoscopic image: any orientation, zoomed in, lighting varied."""
    import Augmentor

    pipeline = Augmentor.Pipeline()
    pipeline.rotate_random_90(probability=0.75)
    pipeline.flip_left_right(probability=0.5)
    pipeline.rotate(probability=0.5, max_left_rotation=20, max_right_rotation=20)
    pipeline.zoom_random(probability=0.6, percentage_area=0.7, randomise_percentage_area=True)
    pipeline.random_brightness(probability=0.5, min_factor=0.8, max_factor=1.2)
    pipeline.random_contrast(probability=0.5, min_factor=0.8, max_factor=1.2)
    pipeline.random_color(probability=0.5, min_factor=0.8, max_factor=1.2)
    return pipeline.torch_transform()  # a plain PIL -> PIL function, no torch involved


def bottom_session(spec: CacheSpec):
    """ONNX Runtime session of the backbone's frozen bottom (stem and blocks before ``cut``)."""
    import onnxruntime

    from dermscreen.training.backbone.efficientnet_lite import copy_weights, efficientnet_lite0
    from dermscreen.training.onnx_export import export_onnx

    full = efficientnet_lite0((spec.size, spec.size, 3))
    full.load_weights(spec.backbone_weights)
    bottom = efficientnet_lite0((spec.size, spec.size, 3), stop=spec.cut)
    copy_weights(full, bottom)
    return onnxruntime.InferenceSession(export_onnx(bottom), providers=["CPUExecutionProvider"])


def cache_name(records: pd.DataFrame, spec: CacheSpec) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({**asdict(spec), "backbone_weights": file_sha256(Path(spec.backbone_weights))},
                             sort_keys=True).encode())
    digest.update("\n".join(records["path"]).encode())
    return digest.hexdigest()[:16]


def _views(path: str, spec: CacheSpec, augment) -> list[np.ndarray]:
    with Image.open(path) as opened:
        image = opened.convert("RGB")
    size = (spec.size, spec.size)
    return [to_model_input(image, size)] + [to_model_input(augment(image), size)
                                            for _ in range(spec.views - 1)]


def cache_features(records: pd.DataFrame, spec: CacheSpec, root: Path, batch: int = 64,
                   progress=print) -> Path:
    """Compute (or resume) the cache of ``records`` under ``root``; return its folder."""
    folder = Path(root) / cache_name(records, spec)
    folder.mkdir(parents=True, exist_ok=True)
    meta_path = folder / META_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else None
    session = bottom_session(spec)
    name = session.get_inputs()[0].name
    if meta is None:
        probe = session.run(None, {name: np.zeros((1, spec.size, spec.size, 3), np.float32)})[0]
        shape = (len(records), spec.views, *probe.shape[1:])
        np.lib.format.open_memmap(folder / FEATURES_FILE, "w+", np.float16, shape).flush()
        records.to_csv(folder / INDEX_FILE, index=False)
        meta = {"spec": asdict(spec), "shape": list(shape), "done": 0}
        meta_path.write_text(json.dumps(meta, indent=2))
    features = np.load(folder / FEATURES_FILE, mmap_mode="r+")
    augment = augmentor_pipeline()
    start_time, start = time.monotonic(), meta["done"]
    paths = list(records["path"])
    for first in range(start, len(paths), batch):
        chunk = paths[first:first + batch]
        # Seeded per chunk: a resumed run draws the same views as an uninterrupted one (same batch).
        random.seed(spec.seed * 1_000_003 + first)  # Augmentor draws from both generators
        np.random.seed((spec.seed * 1_000_003 + first) % 2**32)
        views = np.stack([np.stack(_views(path, spec, augment)) for path in chunk])
        flat = views.reshape(-1, spec.size, spec.size, 3)
        out = session.run(None, {name: flat})[0]
        features[first:first + len(chunk)] = out.reshape(len(chunk), spec.views, *out.shape[1:])
        features.flush()
        meta["done"] = first + len(chunk)
        meta_path.write_text(json.dumps(meta, indent=2))
        rate = (meta["done"] - start) * spec.views / (time.monotonic() - start_time)
        progress(f"features {meta['done']}/{len(paths)} images x {spec.views} views, {rate:.1f} views/s")
    return folder


def load_cache(folder: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """The records and the (memory-mapped) feature array of a finished cache."""
    folder = Path(folder)
    meta = json.loads((folder / META_FILE).read_text())
    if meta["done"] != meta["shape"][0]:
        raise RuntimeError(f"{folder}: cache incomplete ({meta['done']}/{meta['shape'][0]})")
    records = pd.read_csv(folder / INDEX_FILE, dtype=str, keep_default_na=False)
    return records, np.load(folder / FEATURES_FILE, mmap_mode="r")
