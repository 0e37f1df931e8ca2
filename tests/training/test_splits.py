import shutil

import numpy as np
import pandas as pd
import pytest

from dermscreen.training.audit import with_hashes
from dermscreen.training.datasets import read_dataset
from dermscreen.training.splits import clean_records, drop_overlap, group_ids, grouped_split
from tests.factories import BLUE, RED
from tests.training.conftest import recolour, textured_image, write_image


@pytest.fixture
def grouped_dataset(tmp_path):
    """40 images in two classes; a lesion with 3 photos, a recoloured pair, an exact copy."""
    root = tmp_path / "lesions"
    lines = ["image_id,diagnosis,lesion_id"]
    for index in range(20):
        for label, color in (("melanoma", RED), ("nevus", BLUE)):
            image_id = f"{label[:3]}{index}"
            write_image(root / "images" / f"{image_id}.jpg", color)
            lesion = "LES1" if label == "nevus" and index < 3 else ""
            lines.append(f"{image_id},{label},{lesion}")
    original = textured_image(RED, seed=777)
    write_image(root / "images" / "pairA.jpg", image=original)
    write_image(root / "images" / "pairB.jpg", image=recolour(original))
    shutil.copy(root / "images" / "mel5.jpg", root / "images" / "copy5.jpg")
    lines += ["pairA,melanoma,", "pairB,melanoma,", "copy5,melanoma,"]
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root / "labels.csv"


def test_groups_join_lesions_near_duplicates_and_copies(grouped_dataset):
    hashed = with_hashes(read_dataset(grouped_dataset))
    groups = pd.Series(group_ids(hashed), index=hashed["image_id"])
    assert groups["nev0"] == groups["nev1"] == groups["nev2"] != groups["nev3"]
    assert groups["pairA"] == groups["pairB"]
    assert groups["mel5"] == groups["copy5"]
    assert groups.nunique() == len(groups) - 2 - 1 - 1


def test_grouped_split_never_cuts_a_group_and_is_reproducible(grouped_dataset):
    hashed = with_hashes(read_dataset(grouped_dataset))
    groups = group_ids(hashed)
    first = grouped_split(hashed, groups, val_fraction=0.25, seed=3)
    assert pd.Series(first).groupby(groups).nunique().max() == 1
    assert np.array_equal(first, grouped_split(hashed, groups, val_fraction=0.25, seed=3))
    assert 0.15 < (first == "val").mean() < 0.35
    assert {"melanoma", "nevus"} <= set(hashed.loc[first == "val", "label"])
    others = [grouped_split(hashed, groups, val_fraction=0.25, seed=s) for s in range(4, 8)]
    assert any(not np.array_equal(first, other) for other in others)


def test_cleaning_policies(tmp_path):
    root = tmp_path / "dirty"
    write_image(root / "melanoma" / "A.jpg", RED)
    shutil.copy(root / "melanoma" / "A.jpg", tmp_path / "A.jpg")
    (root / "nevus").mkdir(parents=True)
    shutil.copy(tmp_path / "A.jpg", root / "nevus" / "A.jpg")  # A in two classes
    write_image(root / "melanoma" / "B.jpg", RED)
    shutil.copy(root / "melanoma" / "B.jpg", root / "nevus" / "B.jpg")  # B in two classes
    write_image(root / "nevus" / "C.jpg", BLUE)  # the reference says melanoma
    write_image(root / "nevus" / "D.jpg", BLUE)
    shutil.copy(root / "nevus" / "D.jpg", root / "nevus" / "D2.jpg")  # exact copy
    reference = pd.Series({"A": "nevus", "C": "melanoma"})
    records = read_dataset(root)

    kept, log = clean_records(records, reference, policy="reference")
    labels = dict(zip(kept["image_id"], kept["label"]))
    assert labels == {"A": "nevus", "C": "melanoma", "D": "nevus"}  # B unresolved: dropped
    assert log["relabelled_by_reference"] == 2 and log["dropped_exact_copies"] == 2

    kept, log = clean_records(records, reference, policy="drop")
    assert dict(zip(kept["image_id"], kept["label"])) == {"D": "nevus"}


def test_drop_overlap_removes_ids_and_near_duplicates(tmp_path):
    original = textured_image(RED, seed=99)
    train = tmp_path / "train"
    write_image(train / "melanoma" / "T1.jpg", image=original)
    write_image(train / "melanoma" / "T2.jpg", RED)
    test = tmp_path / "test"
    write_image(test / "melanoma" / "T2.jpg", RED)  # same id as a training image
    write_image(test / "melanoma" / "R1.jpg", image=recolour(original))
    write_image(test / "melanoma" / "Q1.jpg", RED)
    kept, removed = drop_overlap(with_hashes(read_dataset(test)), with_hashes(read_dataset(train)))
    assert removed == 2 and list(kept["image_id"]) == ["Q1"]
