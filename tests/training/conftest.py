"""Generated datasets for training tests, in both layouts (never ../shared)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.factories import BLUE, RED, lesion_image


def write_image(path: Path, color=RED, seed: int = 0, size=(48, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lesion_image(color, size=size, seed=seed).save(path)
    return path


@pytest.fixture
def folder_dataset(tmp_path) -> Path:
    """``root/Train/<class>/`` and ``root/Test/<class>/``: red melanomas, blue nevi."""
    root = tmp_path / "seed9"
    for split, count in (("Train", 6), ("Test", 2)):
        for index in range(count):
            write_image(root / split / "melanoma" / f"{split}_mel_{index}.jpg", RED, seed=index)
            write_image(root / split / "nevus" / f"{split}_nev_{index}.jpg", BLUE, seed=100 + index)
    return root


@pytest.fixture
def csv_dataset(tmp_path) -> Path:
    """``root/labels.csv`` with images under ``root/images``."""
    root = tmp_path / "extra"
    lines = ["image_id,source,split,diagnosis,lesion_id"]
    for index in range(4):
        write_image(root / "images" / f"X_mel_{index}.jpg", RED, seed=200 + index)
        write_image(root / "images" / f"X_nev_{index}.jpg", BLUE, seed=300 + index)
        split = "test" if index < 2 else "train"
        lines.append(f"X_mel_{index},src,{split},melanoma,L{index}")
        lines.append(f"X_nev_{index},src,{split},nevus,")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root / "labels.csv"
