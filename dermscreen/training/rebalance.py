"""Class rebalancing with Augmentor, as the seed notebook did, plus on-the-fly Keras augmentation.

``augmentor_rebalance`` tops every class up to ``target`` images with Augmentor copies
(rotation up to 10 degrees either way, left-right and top-bottom flips, random zoom), seeded,
and writes them under ``$DERMSCREEN_HOME/cache/augmentor/<key>/``, where ``key`` hashes the
source list, target, seed and operations, so a rerun reuses them. Each copy is a record of its
own that remembers its source image (``augmented_from``) and shares the source's group: a
grouped split then keeps copies with their source. Only training records are ever passed here;
validation and test data are never augmented.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import Augmentor
import numpy as np
import pandas as pd
from PIL import Image

from dermscreen.config import Config
from dermscreen.training.datasets import CLASSES

# Augmentor operations: (method name, keyword arguments). The seed used the rotation only.
OPERATIONS = [
    ("rotate", {"probability": 0.7, "max_left_rotation": 10, "max_right_rotation": 10}),
    ("flip_left_right", {"probability": 0.5}),
    ("flip_top_bottom", {"probability": 0.5}),
    ("zoom_random", {"probability": 0.5, "percentage_area": 0.8}),
]
MANIFEST = "manifest.csv"


def augmentor_transform():
    """The Augmentor pipeline as a PIL image -> PIL image function.

    Augmentor 0.2.12's ``sample_with_array`` is broken (it never passes the array to the
    operations), so the pipeline's public ``torch_transform`` function is used instead; it draws
    from Python's ``random``, which ``Pipeline.set_seed`` seeds.
    """
    pipeline = Augmentor.Pipeline()
    for name, kwargs in OPERATIONS:
        getattr(pipeline, name)(**kwargs)
    return pipeline.torch_transform()


def _cache_key(records: pd.DataFrame, target: int, seed: int) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([OPERATIONS, target, seed]).encode())
    for path, label in sorted(zip(records["path"], records["label"])):
        digest.update(f"{path}\t{label}\n".encode())
    return digest.hexdigest()[:16]


def augmentor_rebalance(records: pd.DataFrame, target: int, seed: int = 0,
                        cache_dir: str | Path | None = None) -> pd.DataFrame:
    """New records (Augmentor copies) that bring each class of ``records`` up to ``target``.

    Classes already at or above ``target`` get none; empty classes stay empty. Columns are
    those of ``records`` plus ``augmented_from`` (the source image id); ``image_id`` is
    ``<source id>_aug<n>``.
    """
    cache_dir = Path(cache_dir or Config.from_env().home / "cache") / "augmentor"
    folder = cache_dir / _cache_key(records, target, seed)
    if (folder / MANIFEST).is_file():
        cached = pd.read_csv(folder / MANIFEST, dtype=str, keep_default_na=False)
        for column in records.select_dtypes("number").columns:
            cached[column] = cached[column].astype(records[column].dtype)
        return cached
    rng = np.random.default_rng(seed)
    Augmentor.Pipeline.set_seed(seed)
    transform = augmentor_transform()
    rows = []
    for label in CLASSES:
        members = records[records["label"] == label]
        missing = target - len(members)
        if missing <= 0 or members.empty:
            continue
        (folder / label).mkdir(parents=True, exist_ok=True)
        for number, index in enumerate(rng.choice(len(members), size=missing, replace=True)):
            source = members.iloc[index]
            with Image.open(source["path"]) as image:
                copy = transform(image.convert("RGB"))
            image_id = f"{source['image_id']}_aug{number}"
            path = folder / label / f"{image_id}.jpg"
            copy.convert("RGB").save(path, quality=95)
            rows.append({**source.to_dict(), "path": str(path), "image_id": image_id,
                         "augmented_from": source["image_id"]})
    augmented = pd.DataFrame(rows, columns=[*records.columns, "augmented_from"])
    folder.mkdir(parents=True, exist_ok=True)
    augmented.to_csv(folder / MANIFEST, index=False)
    return augmented


def keras_augmentation(seed: int = 0):
    """On-the-fly augmentation layers (active only in training mode)."""
    import keras

    return keras.Sequential([
        keras.layers.RandomFlip("horizontal_and_vertical", seed=seed),
        keras.layers.RandomRotation(10 / 360, seed=seed),
        keras.layers.RandomZoom(0.1, seed=seed),
    ], name="augmentation")
