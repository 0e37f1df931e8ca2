"""Fine-tuning: on cached features of a frozen bottom, on images with every block trained, and a
run packed here, fitted elsewhere, finished here."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import click
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from dermscreen.training.backbone.efficientnet_lite import efficientnet_lite0
from dermscreen.training.backbone.finetune import (
    AugmentedBatches, FinetuneConfig, epoch_weights, kept_by, kept_epochs, layers_of, learning_rate_schedule,
    load_config, load_images, prepare_data, train,
)
from dermscreen.training.backbone.portable import epochs_within, main, pack, read_pack

SIZE = 32


@pytest.fixture
def config(tmp_path, folder_dataset):
    weights = tmp_path / "lite0.weights.h5"
    efficientnet_lite0((SIZE, SIZE, 3)).save_weights(weights)
    return FinetuneConfig(backbone_weights=str(weights), size=SIZE, cut=0, epochs=2, batch_size=4,
                          val_fraction=0.35, balance="class", seed=3,
                          train=[{"path": str(folder_dataset / "Train")}],
                          test={"seed_test": {"path": str(folder_dataset / "Test")}})


def test_augmented_batches_draw_a_new_view_each_epoch_and_the_same_view_again(config, folder_dataset):
    paths = sorted(str(p) for p in (folder_dataset / "Train").rglob("*.jpg"))
    images = load_images(paths, SIZE)
    assert images.shape == (len(paths), SIZE, SIZE, 3) and images.dtype == np.uint8
    rows, labels, weights = np.arange(len(paths)), np.zeros(len(paths), int), np.ones(len(paths))

    def epoch_batches(epochs_before):
        batches = AugmentedBatches(images, rows, labels, weights, config, workers=1)
        for _ in range(epochs_before):
            batches.on_epoch_end()
        return [batches[i] for i in range(len(batches))]

    first, again, second = epoch_batches(0), epoch_batches(0), epoch_batches(1)
    x, y, w = first[0]
    assert x.shape == (config.batch_size, SIZE, SIZE, 3) and x.dtype == np.uint8
    assert y.shape == (config.batch_size, 9) and w.shape == (config.batch_size,)
    assert sum(len(batch[0]) for batch in first) == len(paths)  # each image once per epoch
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a[0], b[0])
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, second))


def test_the_kept_epochs_are_the_window_with_the_best_mean():
    history = [{"epoch": e, "auc": a} for e, a in enumerate([0.5, 0.9, 0.5, 0.8, 0.8, 0.7], 1)]
    assert kept_epochs(history, "auc", 1) == [2]  # the lone peak
    assert kept_epochs(history, "auc", 2) == [4, 5]  # mean 0.80 against 0.70 for [1, 2] and [2, 3]
    assert kept_epochs(history, "auc", 3) == [4, 5, 6]  # 0.767 against 0.733 for [2, 3, 4]
    assert kept_epochs(history[:2], "auc", 5) == [1, 2]  # a window longer than the run: all of it


def test_a_rate_set_without_a_dot_is_a_number():
    config = load_config("dermscreen/training/presets/efficientnet_lite0.yaml",
                         ["swa_learning_rate=1e-4", "learning_rate=3e-4", "epochs=5"])
    assert (config.swa_learning_rate, config.learning_rate, config.epochs) == (1e-4, 3e-4, 5)


def test_weight_averaging_keeps_the_last_epochs_at_the_constant_learning_rate():
    config = FinetuneConfig(epochs=8, swa_epochs=3, learning_rate=3e-4, swa_learning_rate=5e-5)
    per_epoch = 10
    rate = learning_rate_schedule(config, 8 * per_epoch)
    at = [float(rate(step)) for step in range(8 * per_epoch)]
    assert at[0] == pytest.approx(3e-5)  # warming up from a tenth
    assert max(at) == pytest.approx(3e-4, rel=0.05)
    assert all(a > 5e-5 * 1.01 for a in at[per_epoch:5 * per_epoch - 1])  # still decaying
    assert at[5 * per_epoch:] == pytest.approx([5e-5] * 3 * per_epoch)  # epochs 6-8: constant
    history = [{"epoch": e, "val_auc": a} for e, a in enumerate([0.5, 0.9, 0.5, 0.8, 0.8, 0.7, 0.6, 0.6], 1)]
    assert kept_by(config, history) == [6, 7, 8]  # whatever validation says
    assert kept_by(replace(config, swa_epochs=0, average_epochs=2), history) == [4, 5]


def test_training_on_cached_features_keeps_the_mean_of_the_best_epochs_layer_weights(tmp_path, config):
    cached = replace(config, cut=3, views=2, average_epochs=2)
    pool, _, _ = prepare_data(cached, log=lambda _: None)
    tables = [pool[pool["fold"] == fold].reset_index(drop=True) for fold in ("train", "val")]
    model, history = train(cached, tmp_path / "run", *tables, resume=False, log=lambda _: None)
    assert [row["epoch"] for row in history] == [1, 2]
    assert {"val_auc", "val_auc_within", "val_auc_within_source", "val_loss"} <= set(history[0])
    checkpoints = tmp_path / "run" / "checkpoints"
    # The kept file holds the layers alone; the last checkpoint also the optimizer's state.
    assert (checkpoints / "best.weights.h5").stat().st_size < (checkpoints / "last.keras").stat().st_size / 2
    epochs = []
    for epoch in (1, 2):
        layers_of(model).load_weights(epoch_weights(tmp_path / "run", epoch))
        epochs.append(model.get_layer("logits").get_weights()[0])
    apart = np.abs(epochs[0] - epochs[1]).max()
    assert apart > 0  # the epochs differ
    layers_of(model).load_weights(checkpoints / "best.weights.h5")
    kept = model.get_layer("logits").get_weights()[0]
    assert np.abs(kept - (epochs[0] + epochs[1]) / 2).max() < apart / 10  # their mean, not either
    assert model.input.shape[1:] == (SIZE // 4, SIZE // 4, 24)  # the map entering block 3
    resumed, again = train(cached, tmp_path / "run", *tables, resume=True, log=lambda _: None)
    assert again == history  # all epochs done: nothing trained again
    np.testing.assert_array_equal(resumed.get_layer("logits").get_weights()[0],
                                  model.get_layer("logits").get_weights()[0])


def test_packed_run_fits_elsewhere_and_resumes_here_without_training(tmp_path, config):
    packed = pack(config, tmp_path / "pack", log=lambda _: None)
    packed_config, train_table, val_table = read_pack(packed)
    assert packed_config == config
    assert len(train_table) and len(val_table)
    assert all(Image.open(path).format == "WEBP" for path in train_table["path"])
    assert max(Image.open(train_table["path"][0]).size) <= SIZE

    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["fit", str(packed), "--run", str(run), "--minutes", "5",
                                       "--probe-steps", "2"])
    assert result.exit_code == 0, result.output
    assert "s per epoch measured: 2 of 2 epochs" in result.output
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == 2 and len(state["history"]) == 2

    # Here: the same config prepares the same split; a finished run only loads its best weights.
    pool, _, _ = prepare_data(config, log=lambda _: None)
    here = {fold: pool[pool["fold"] == fold].reset_index(drop=True) for fold in ("train", "val")}
    for fold, table in (("train", train_table), ("val", val_table)):
        assert list(here[fold]["image_id"]) == list(table["image_id"])
    for name in ("last.keras",):  # not brought back: a finished run does not need it
        (run / "checkpoints" / name).unlink()
    model, history = train(config, run, here["train"], here["val"], resume=True, log=lambda _: None)
    assert history == state["history"]
    best = efficientnet_lite0((SIZE, SIZE, 3))  # any layer of the trunk: weights came from best
    trained = model.get_layer("block3_project_conv").get_weights()[0]
    assert not np.allclose(trained, best.get_layer("block3_project_conv").get_weights()[0])

    changed = replace(config, learning_rate=1e-3)
    with pytest.raises(Exception, match="config differs in \\['learning_rate'\\]"):
        train(changed, run, here["train"], here["val"], resume=True, log=lambda _: None)


def test_a_pack_of_the_original_files_holds_them_unchanged(tmp_path, config):
    pool, _, _ = prepare_data(config, log=lambda _: None)
    _, train_table, val_table = read_pack(pack(config, tmp_path / "pack", original=True,
                                               log=lambda _: None))
    packed = pd.concat([train_table, val_table]).set_index("image_id")["path"]
    sources = pool.set_index("image_id")["path"]
    assert sorted(packed.index) == sorted(sources.index)
    for image_id, path in packed.items():
        assert Path(path).read_bytes() == Path(sources[image_id]).read_bytes()


def test_a_packed_fit_stopped_early_resumes_to_its_epochs(tmp_path, config):
    import keras

    class StopAfterOneEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True  # as a time limit would, after its checkpoint

    packed = pack(config, tmp_path / "pack", log=lambda _: None)
    _, train_table, val_table = read_pack(packed)
    run = tmp_path / "run"
    train(config, run, train_table, val_table, resume=False, log=lambda _: None,
          callbacks=[StopAfterOneEpoch()])
    assert json.loads((run / "checkpoints" / "state.json").read_text())["epoch"] == 1
    result = CliRunner().invoke(main, ["fit", str(packed), "--run", str(run), "--resume"])
    assert result.exit_code == 0, result.output
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == 2 and [row["epoch"] for row in state["history"]] == [1, 2]


def test_a_fine_tune_without_test_sets_is_refused(config):
    with pytest.raises(click.UsageError, match="no test sets"):
        prepare_data(replace(config, test={}), log=lambda _: None)


def test_epochs_within_a_time_budget():
    config = FinetuneConfig(epochs=30)
    assert epochs_within(config, seconds_per_epoch=20, minutes=5) == 15
    assert epochs_within(config, seconds_per_epoch=5, minutes=5) == 30
    assert epochs_within(config, seconds_per_epoch=600, minutes=5) == 1
