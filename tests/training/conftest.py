"""Generated datasets for training tests, in both layouts (never ../shared).

Images are smooth random textures tinted by class (red melanomas, blue nevi): each seed gives a
different structure, so distinct seeds are never perceptual near-duplicates, while a recoloured
copy of one seed is.
"""

from __future__ import annotations

from itertools import count
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.factories import BLUE, RED

_seeds = count(1000)


def textured_image(color=RED, seed: int = 0, size: int = 48) -> Image.Image:
    rng = np.random.default_rng(seed)
    field = Image.fromarray((rng.random((16, 16)) * 255).astype(np.uint8))
    texture = np.asarray(field.resize((size, size), Image.Resampling.BICUBIC), np.float32)[..., None]
    pixels = np.array(color, np.float32) * (0.35 + 0.65 * texture / 255)
    pixels += rng.normal(0, 2, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def recolour(image: Image.Image, gains=(0.8, 1.3, 1.2), size: int = 60) -> Image.Image:
    """The same picture with another colour balance and size (a near-duplicate)."""
    pixels = np.asarray(image, np.float32) * np.array(gains) + 15
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).resize((size, size))


def write_image(path: Path, color=RED, seed: int | None = None, image: Image.Image | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (image or textured_image(color, next(_seeds) if seed is None else seed)).save(path)
    return path


@pytest.fixture(autouse=True)
def dermscreen_home(tmp_path, monkeypatch) -> Path:
    """Caches (image hashes, Augmentor copies) and runs go to a fresh home per test."""
    home = tmp_path / "home"
    monkeypatch.setenv("DERMSCREEN_HOME", str(home))
    return home


@pytest.fixture
def folder_dataset(tmp_path) -> Path:
    """``root/Train/<class>/`` and ``root/Test/<class>/``: red melanomas, blue nevi."""
    root = tmp_path / "seed9"
    for split, number in (("Train", 6), ("Test", 2)):
        for index in range(number):
            write_image(root / split / "melanoma" / f"{split}_mel_{index}.jpg", RED)
            write_image(root / split / "nevus" / f"{split}_nev_{index}.jpg", BLUE)
    return root


@pytest.fixture
def csv_dataset(tmp_path) -> Path:
    """``root/labels.csv`` with images under ``root/images``."""
    root = tmp_path / "extra"
    lines = ["image_id,source,split,diagnosis,lesion_id"]
    for index in range(4):
        write_image(root / "images" / f"X_mel_{index}.jpg", RED)
        write_image(root / "images" / f"X_nev_{index}.jpg", BLUE)
        split = "test" if index < 2 else "train"
        lines.append(f"X_mel_{index},src,{split},melanoma,L{index}")
        lines.append(f"X_nev_{index},src,{split},nevus,")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root / "labels.csv"
