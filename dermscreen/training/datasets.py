"""Readers for labelled image sets: one record table, whatever the layout on disk.

Two layouts are read:

* a folder per class, ``ROOT/<class>/<image_id>.jpg``, or a folder of split folders each holding
  class folders, ``ROOT/<split>/<class>/<image_id>.jpg`` (``isic9/Train``, ``isic9/Test``);
* an ISIC-style CSV with columns ``image_id, diagnosis`` and optionally ``split``, ``lesion_id``,
  ``source``; its images sit at ``<csv folder>/images/<image_id>.jpg``.

Every command takes datasets the same way: a path to a folder or a CSV, and optionally a split
name (``--split test``) that keeps only the records of that split::

    records = read_dataset("../shared/data/isic9")                       # Train and Test
    records = read_dataset("../shared/data/extra/labels.csv", split="test")
    records = read_datasets(["../shared/data/isic9", "../shared/data/extra/labels.csv"])

The record table is a pandas DataFrame with the columns ``RECORD_COLUMNS``, all strings:
``path`` (absolute), ``image_id`` (file stem), ``label`` (one of ``CLASSES``), ``split``
(lower case, "" when the layout has none), ``lesion_id`` ("" when unknown) and ``source`` (the
CSV's ``source`` column, else the dataset folder's name). This API is used by audit, splits,
training, evaluation and feature caching: keep it stable.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from dermscreen.bundle import MELANOMA

# The seed's nine classes, in the order of the model's outputs.
CLASSES = [
    "actinic keratosis",
    "basal cell carcinoma",
    "dermatofibroma",
    MELANOMA,
    "nevus",
    "pigmented benign keratosis",
    "seborrheic keratosis",
    "squamous cell carcinoma",
    "vascular lesion",
]
RECORD_COLUMNS = ["path", "image_id", "label", "split", "lesion_id", "source"]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
# Folder names taken as split names when a class-folder tree sits directly under them.
SPLIT_FOLDER_NAMES = {"train", "training", "val", "valid", "validation", "test", "testing"}


class DatasetError(ValueError):
    """A dataset path cannot be read as one of the supported layouts."""


def empty_records() -> pd.DataFrame:
    return pd.DataFrame({column: pd.Series(dtype=str) for column in RECORD_COLUMNS})


def _check_labels(records: pd.DataFrame, where: Path) -> None:
    unknown = sorted(set(records["label"]) - set(CLASSES))
    if unknown:
        raise DatasetError(f"{where}: labels outside the 9 classes: {unknown}")


def _is_class_tree(folder: Path) -> bool:
    """True when ``folder`` holds at least one class-named subfolder."""
    return any(child.is_dir() and child.name in CLASSES for child in folder.iterdir())


def _read_class_tree(folder: Path, split: str, source: str) -> list[dict]:
    rows = []
    for class_dir in sorted(child for child in folder.iterdir() if child.is_dir()):
        if class_dir.name not in CLASSES:
            raise DatasetError(f"{class_dir}: folder name is not one of the 9 classes")
        for file in sorted(class_dir.iterdir()):
            if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES:
                rows.append({"path": str(file.resolve()), "image_id": file.stem,
                             "label": class_dir.name, "split": split, "lesion_id": "",
                             "source": source})
    return rows


def read_folder(root: str | os.PathLike) -> pd.DataFrame:
    """Read a folder-per-class tree, or a folder of split folders that are class trees.

    Split names are the split folders' names in lower case (``Train`` -> ``train``); a class tree
    given directly gets its own name as split when that is a usual split name, else "".
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder")
    if _is_class_tree(root):
        split = root.name.lower() if root.name.lower() in SPLIT_FOLDER_NAMES else ""
        source = root.parent.name if split else root.name
        rows = _read_class_tree(root, split, source)
    else:
        rows = []
        for split_dir in sorted(child for child in root.iterdir() if child.is_dir()):
            if not _is_class_tree(split_dir):
                raise DatasetError(f"{split_dir}: neither a class folder nor a split of class folders")
            rows += _read_class_tree(split_dir, split_dir.name.lower(), root.name)
    if not rows:
        raise DatasetError(f"{root}: no images found")
    return pd.DataFrame(rows, columns=RECORD_COLUMNS)


def read_csv(csv_path: str | os.PathLike) -> pd.DataFrame:
    """Read an ISIC-style label CSV; images are at ``<csv folder>/images/<image_id>.jpg``."""
    csv_path = Path(csv_path).resolve()
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    missing = {"image_id", "diagnosis"} - set(table.columns)
    if missing:
        raise DatasetError(f"{csv_path}: missing columns {sorted(missing)}")
    images = csv_path.parent / "images"
    records = pd.DataFrame({
        "path": [str(images / f"{image_id}.jpg") for image_id in table["image_id"]],
        "image_id": table["image_id"],
        "label": table["diagnosis"].str.strip(),
        "split": table["split"].str.lower() if "split" in table else "",
        "lesion_id": table["lesion_id"] if "lesion_id" in table else "",
        "source": table["source"] if "source" in table else csv_path.parent.name,
    }, columns=RECORD_COLUMNS)
    _check_labels(records, csv_path)
    return records


def read_dataset(spec: str | os.PathLike, split: str | None = None) -> pd.DataFrame:
    """Read a dataset given as a folder or a CSV file; keep only ``split`` when given."""
    path = Path(spec)
    if path.is_dir():
        records = read_folder(path)
    elif path.is_file() and path.suffix.lower() == ".csv":
        records = read_csv(path)
    else:
        raise DatasetError(f"{spec}: expected a class folder or a labels CSV")
    if split:
        records = records[records["split"] == split.lower()]
        if records.empty:
            raise DatasetError(f"{spec}: no records in split {split!r}")
    return records.reset_index(drop=True)


def read_datasets(specs, split: str | None = None) -> pd.DataFrame:
    """Read and concatenate several datasets (see ``read_dataset``)."""
    tables = [read_dataset(spec, split) for spec in specs]
    return pd.concat(tables, ignore_index=True) if tables else empty_records()


def class_counts(records: pd.DataFrame) -> pd.Series:
    """Images per class, in ``CLASSES`` order (zeros included)."""
    return records["label"].value_counts().reindex(CLASSES, fill_value=0)


# The HAM10000 release holds ISIC_0024306 .. ISIC_0034320: centre crops from two clinics, while the
# older ISIC archive images (ISIC 2016/2017 challenges, the seed set's melanomas) are whole frames.
HAM10000_IDS = (24306, 34320)


def acquisition(records: pd.DataFrame) -> pd.Series:
    """The image collection each record comes from: ``ham10000`` or ``isic-archive`` for ISIC ids
    (by the id range of the HAM10000 release; copies such as ``ISIC_0025509(1)`` count), the
    record's ``source`` otherwise.

    Sources name datasets, and one dataset can mix collections (the seed set's melanomas are
    archive images, its other classes mostly HAM10000): the collection is what a model can see."""
    number = pd.to_numeric(records["image_id"].str.extract(r"^ISIC_(\d+)")[0], errors="coerce")
    first, last = HAM10000_IDS
    named = np.where(number.between(first, last), "ham10000", "isic-archive")
    return pd.Series(np.where(number.notna(), named, records["source"]), index=records.index)


def sources_within_collections(records: pd.DataFrame) -> np.ndarray:
    """Each record's ``collection/source`` (``acquisition``, then the dataset): isic9's copies of
    archive frames and isic2017's frames are both archive frames from different pipelines, and
    ``ham10000/isic9`` holds the seed set's HAM10000 images."""
    return (acquisition(records) + "/" + records["source"]).to_numpy()
