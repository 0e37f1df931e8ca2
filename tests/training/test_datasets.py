from pathlib import Path

import pytest

from dermscreen.training.datasets import (
    RECORD_COLUMNS, DatasetError, class_counts, read_dataset, read_datasets,
)


def test_folder_of_splits_reads_split_and_label(folder_dataset):
    records = read_dataset(folder_dataset)
    assert list(records.columns) == RECORD_COLUMNS
    assert records.groupby("split").size().to_dict() == {"test": 4, "train": 12}
    assert set(records["source"]) == {"seed9"}
    row = records[records["image_id"] == "Train_mel_3"].iloc[0]
    assert row["label"] == "melanoma" and Path(row["path"]).is_file()


def test_class_folder_named_like_a_split_gets_that_split(folder_dataset):
    records = read_dataset(folder_dataset / "Test")
    assert set(records["split"]) == {"test"} and len(records) == 4


def test_csv_reader_and_split_filter(csv_dataset):
    records = read_dataset(csv_dataset, split="test")
    assert sorted(records["image_id"]) == ["X_mel_0", "X_mel_1", "X_nev_0", "X_nev_1"]
    assert records.set_index("image_id").loc["X_mel_1", "lesion_id"] == "L1"
    assert all(Path(path).is_file() for path in records["path"])
    assert class_counts(records)["melanoma"] == 2


def test_several_datasets_concatenate(folder_dataset, csv_dataset):
    assert len(read_datasets([folder_dataset, csv_dataset])) == 24


def test_unknown_split_and_labels_are_errors(csv_dataset, tmp_path):
    with pytest.raises(DatasetError):
        read_dataset(csv_dataset, split="nope")
    bad = tmp_path / "bad.csv"
    bad.write_text("image_id,diagnosis\nA,not a class\n")
    with pytest.raises(DatasetError):
        read_dataset(bad)
