import numpy as np
import pandas as pd

from dermscreen.training.datasets import class_counts, read_dataset
from dermscreen.training.rebalance import augmentor_rebalance, keras_augmentation
from dermscreen.training.train import prepare_folds
from dermscreen.training.train_config import TrainConfig
from tests.factories import BLUE, RED
from tests.training.conftest import write_image


def imbalanced(tmp_path, melanomas=3, nevi=8):
    root = tmp_path / "imbalanced"
    for index in range(melanomas):
        write_image(root / "melanoma" / f"m{index}.jpg", RED)
    for index in range(nevi):
        write_image(root / "nevus" / f"n{index}.jpg", BLUE)
    return root


def test_augmentor_tops_classes_up_to_target_reproducibly(tmp_path, dermscreen_home):
    records = read_dataset(imbalanced(tmp_path))
    copies = augmentor_rebalance(records, target=10, seed=1)
    counts = class_counts(pd.concat([records, copies]))
    assert counts["melanoma"] == 10 and counts["nevus"] == 10 and counts.sum() == 20
    assert set(copies["augmented_from"]) <= set(records["image_id"])
    assert all(str(dermscreen_home) in path for path in copies["path"])
    again = augmentor_rebalance(records, target=10, seed=1)  # from the cache
    assert list(again["image_id"]) == list(copies["image_id"])


def test_grouped_folds_never_augment_validation(tmp_path):
    root = imbalanced(tmp_path, melanomas=6, nevi=14)
    base = dict(data=[str(root)], data_split="", reference="", val_fraction=0.25, seed=2)
    plain, _ = prepare_folds(TrainConfig(**base), log=lambda line: None)
    augmented, info = prepare_folds(TrainConfig(**base, rebalance="augmentor", rebalance_target=20),
                                    log=lambda line: None)
    val = augmented[augmented["fold"] == "val"]
    assert (val["augmented_from"] == "").all()
    assert sorted(val["image_id"]) == sorted(plain.loc[plain["fold"] == "val", "image_id"])
    train = augmented[augmented["fold"] == "train"]
    assert class_counts(train)["melanoma"] == 20 and class_counts(train)["nevus"] == 20
    # copies stay in the group of their source
    sources = augmented.set_index("image_id")["group"]
    copies = train[train["augmented_from"] != ""]
    assert (copies["group"].to_numpy() == sources[copies["augmented_from"]].to_numpy()).all()
    assert info["folds"]["val"]["augmented"] == 0


def test_keras_augmentation_changes_training_batches_only():
    layers = keras_augmentation(seed=0)
    batch = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    assert np.array_equal(np.asarray(layers(batch, training=False)), batch)
    assert not np.array_equal(np.asarray(layers(batch, training=True)), batch)
