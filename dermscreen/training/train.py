"""Training: clean and split the data, fit the seed CNN, calibrate, export a model bundle.

    dermscreen train --config dermscreen/training/presets/seed-plain.yaml [--set key=value ...] [--resume]

The run folder (``config.output``) holds ``config.yaml``, ``folds.csv`` (every record with its
fold and group), ``checkpoints/last.keras`` with ``checkpoints/state.json`` (the config, the
epoch reached and the history: every checkpoint carries the config that made it),
``history.csv``, ``training_curves.png`` (redrawn after every epoch) and ``bundle/``.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from sklearn.model_selection import train_test_split

from dermscreen.bundle import MELANOMA, save_bundle, softmax, to_model_input
from dermscreen.config import Config
from dermscreen.measured import fmt
from dermscreen.training.audit import read_reference
from dermscreen.training.calibration import fit_temperature, threshold_for_sensitivity
from dermscreen.training.datasets import CLASSES, class_counts, read_datasets
from dermscreen.training.metrics import screening_metrics
from dermscreen.training.rebalance import augmentor_rebalance, keras_augmentation
from dermscreen.training.report import plot_training_curves
from dermscreen.training.splits import clean_records, group_ids, grouped_split
from dermscreen.training.train_config import TrainConfig

TRAINING_IDS_FILE = "training_ids.txt"
TRAINING_PHASHES_FILE = "training_phashes.txt"
HISTORY_FILE = "history.csv"
CURVES_FILE = "training_curves.png"


def run_folder(config: TrainConfig) -> Path:
    return Path(config.output) if config.output else Config.from_env().home / "runs" / config.name


def prepare_folds(config: TrainConfig, log=print) -> tuple[pd.DataFrame, dict]:
    """Read, clean, group and split the training data; add Augmentor copies to training.

    Returns all records with a ``fold`` column ("train" / "val") and a dict describing the data.
    """
    records = read_datasets(config.data, config.data_split or None)
    reference = read_reference(config.reference) if config.reference else None
    hashed, cleaning = clean_records(records, reference, config.label_policy)
    log(f"cleaning: {cleaning}")
    hashed["group"] = group_ids(hashed)
    hashed["augmented_from"] = ""
    augment = config.rebalance == "augmentor"
    if config.rebalance not in ("none", "augmentor"):
        raise ValueError(f"rebalance must be 'none' or 'augmentor', not {config.rebalance!r}")
    if config.split_mode == "grouped":
        hashed["fold"] = grouped_split(hashed, hashed["group"], config.val_fraction, config.seed)
        if augment:
            train = hashed[hashed["fold"] == "train"]
            copies = augmentor_rebalance(train.drop(columns="augmented_from"),
                                         config.rebalance_target, config.seed)
            hashed = pd.concat([hashed, copies.assign(fold="train")], ignore_index=True)
    elif config.split_mode == "leaky":
        # The seed's measurement: augment everything, then split files at random.
        if augment:
            copies = augmentor_rebalance(hashed.drop(columns="augmented_from"),
                                         config.rebalance_target, config.seed)
            hashed = pd.concat([hashed, copies], ignore_index=True)
        train_index, _ = train_test_split(np.arange(len(hashed)), test_size=config.val_fraction,
                                          random_state=config.seed)
        hashed["fold"] = "val"
        hashed.loc[train_index, "fold"] = "train"
    else:
        raise ValueError(f"split_mode must be 'grouped' or 'leaky', not {config.split_mode!r}")
    hashed["fold"] = hashed["fold"].astype(str)
    hashed["augmented_from"] = hashed["augmented_from"].fillna("")
    folds = {fold: {"images": int((hashed["fold"] == fold).sum()),
                    "augmented": int(((hashed["fold"] == fold) & (hashed["augmented_from"] != "")).sum()),
                    "class_counts": class_counts(hashed[hashed["fold"] == fold]).to_dict()}
             for fold in ("train", "val")}
    for fold, info in folds.items():
        log(f"{fold}: {info['images']} images ({info['augmented']} augmented) {info['class_counts']}")
    return hashed, {"datasets": list(config.data), "split": config.data_split,
                    "cleaning": cleaning, "folds": folds}


def load_pixels(paths, size: int) -> np.ndarray:
    """Decode images to a uint8 array (n, size, size, 3) with ``bundle.to_model_input``."""
    def decode(path):
        return to_model_input(path, (size, size)).astype(np.uint8)

    with ThreadPoolExecutor(max_workers=2) as pool:
        arrays = list(pool.map(decode, paths))
    return np.stack(arrays) if arrays else np.zeros((0, size, size, 3), np.uint8)


def _dataset(pixels, labels, config: TrainConfig, training: bool):
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((pixels, labels))
    if training:
        data = data.shuffle(len(labels), seed=config.seed, reshuffle_each_iteration=True)
        if config.steps_per_epoch:
            data = data.repeat()
    data = data.batch(config.batch_size).map(lambda x, y: (tf.cast(x, tf.float32), y))
    if training and config.keras_augmentation:
        augmentation = keras_augmentation(config.seed)
        data = data.map(lambda x, y: (augmentation(x, training=True), y))
    return data.prefetch(2)


def _checkpoint_callback(folder: Path, config: TrainConfig, history: dict):
    import keras

    class Checkpoint(keras.callbacks.Callback):
        """Save the model, the config and the history after every epoch; redraw the curves."""

        def on_epoch_end(self, epoch, logs=None):
            for key, value in (logs or {}).items():
                history.setdefault(key, []).append(float(value))
            checkpoints = folder / "checkpoints"
            checkpoints.mkdir(parents=True, exist_ok=True)
            self.model.save(checkpoints / "last.keras")
            state = {"config": config.to_dict(), "epoch": epoch + 1, "history": history}
            (checkpoints / "state.json").write_text(json.dumps(state, indent=1))
            pd.DataFrame(history).rename_axis("epoch").to_csv(folder / HISTORY_FILE)
            plot_training_curves(history, folder / CURVES_FILE, title=config.name)

    return Checkpoint()


def _resume_state(folder: Path, config: TrainConfig) -> dict | None:
    state_path = folder / "checkpoints" / "state.json"
    if not state_path.is_file():
        return None
    state = json.loads(state_path.read_text())
    saved = {k: v for k, v in state["config"].items() if k != "epochs"}
    wanted = {k: v for k, v in config.to_dict().items() if k != "epochs"}
    if saved != wanted:
        changed = sorted(k for k in wanted if saved.get(k) != wanted[k])
        raise ValueError(f"cannot resume {folder}: the config differs in {changed}")
    return state


def ids_digest(ids) -> str:
    """sha256 of the sorted image-id list, one id per line."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


def train(config: TrainConfig, resume: bool = False, log=print) -> Path:
    """Run a whole training and return the exported bundle's path."""
    import keras
    import tensorflow as tf

    from dermscreen.training.seed_cnn import build_seed_cnn

    folder = run_folder(config)
    state = _resume_state(folder, config) if resume else None
    if resume and state is None:
        log(f"nothing to resume in {folder}; starting afresh")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    keras.utils.set_random_seed(config.seed)

    records, data_info = prepare_folds(config, log)
    records.drop(columns=["error"]).to_csv(folder / "folds.csv", index=False)
    label_index = {name: i for i, name in enumerate(CLASSES)}
    train_rows = records[records["fold"] == "train"]
    val_rows = records[records["fold"] == "val"]
    log(f"decoding {len(records)} images at {config.image_size} px")
    train_x = load_pixels(train_rows["path"], config.image_size)
    val_x = load_pixels(val_rows["path"], config.image_size)
    train_y = train_rows["label"].map(label_index).to_numpy(np.int64)
    val_y = val_rows["label"].map(label_index).to_numpy(np.int64)

    history: dict[str, list] = {}
    if state:
        model = keras.saving.load_model(folder / "checkpoints" / "last.keras")
        history.update(state["history"])
        initial_epoch = state["epoch"]
        log(f"resuming from epoch {initial_epoch}")
    else:
        model = build_seed_cnn(config.image_size, len(CLASSES), config.dropout)
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        initial_epoch = 0
    model.fit(_dataset(train_x, train_y, config, training=True),
              validation_data=_dataset(val_x, val_y, config, training=False),
              epochs=config.epochs, initial_epoch=initial_epoch,
              steps_per_epoch=config.steps_per_epoch or None, verbose=2, shuffle=False,
              callbacks=[_checkpoint_callback(folder, config, history)])

    val_logits = model.predict(_dataset(val_x, val_y, config, training=False), verbose=0)
    temperature = fit_temperature(val_logits, val_y)
    val_probabilities = softmax(val_logits, temperature)
    melanoma = CLASSES.index(MELANOMA)
    threshold = threshold_for_sensitivity(val_probabilities[:, melanoma], val_y == melanoma,
                                          config.sensitivity_target)
    val_metrics = screening_metrics(val_probabilities, val_y, CLASSES, threshold)
    val_metrics["data"] = (f"validation fold ({config.split_mode} split, "
                           f"{int((val_rows['augmented_from'] != '').sum())} augmented copies) of "
                           f"{', '.join(config.data)} [{config.data_split or 'all splits'}]")
    log(f"temperature {temperature:.3f}, threshold {threshold:.4f}, validation: "
        + ", ".join(f"{k} {v:.3f}" for k, v in val_metrics.items() if isinstance(v, float)))
    return export_bundle(folder, model, config, records, data_info, temperature, threshold,
                         val_metrics, tf.__version__, keras.__version__)


def export_bundle(folder: Path, model, config: TrainConfig, records: pd.DataFrame, data_info: dict,
                  temperature: float, threshold: float, val_metrics: dict,
                  tf_version: str, keras_version: str) -> Path:
    """Write ``folder/bundle``: an optimizer-free copy of the model plus metadata and card."""
    import keras

    originals = records[records["augmented_from"] == ""]
    seen_ids = sorted(set(originals["image_id"]))
    # A functional wrapper shares the layers but not the optimizer, whose Adam slots would
    # triple the file (clone_model keeps them).
    inference_model = keras.Model(model.input, model.output, name=model.name)
    metadata = {
        "name": config.name,
        "version": config.version,
        "changelog": [config.changelog],
        "frameworks": {"tensorflow": tf_version, "keras": keras_version, "numpy": np.__version__,
                       "python": platform.python_version()},
        "input": {"height": config.image_size, "width": config.image_size},
        "output": {"classes": CLASSES, "alert_threshold": threshold, "temperature": temperature},
        "metrics": {"validation": val_metrics},
        "training_data": {
            **data_info,
            "ids_file": TRAINING_IDS_FILE,
            "ids_count": len(seen_ids),
            "ids_sha256": ids_digest(seen_ids),
            "ids_note": "every original image id of the training and validation folds",
        },
        "training": config.to_dict(),
    }
    bundle = folder / "bundle"
    if bundle.exists():
        shutil.rmtree(bundle)
    save_bundle(bundle, inference_model, metadata, card=model_card(metadata))
    (bundle / TRAINING_IDS_FILE).write_text("\n".join(seen_ids) + "\n")
    phashes = sorted(set(originals["phash"]) - {""})
    (bundle / TRAINING_PHASHES_FILE).write_text("\n".join(phashes) + "\n")
    for name in (HISTORY_FILE, CURVES_FILE):
        if (folder / name).exists():
            shutil.copy(folder / name, bundle / name)
    return bundle


def model_card(metadata: dict) -> str:
    """The bundle's README.md: what the model is, what it was trained on, how well it does."""
    out, data, config = metadata["output"], metadata["training_data"], metadata["training"]
    lines = [
        f"# Model card: {metadata['name']} {metadata['version']}", "",
        f"{metadata['changelog'][-1]}.", "",
        "## Model",
        f"- Seed CNN (3 conv blocks 16/32/64, dense 128, 9 logits), input {config['image_size']} px RGB"
        " float32 in [0, 255], normalised inside the model.",
        f"- Calibration temperature {out['temperature']:.3f} (fitted on validation NLL); melanoma alert"
        f" threshold {out['alert_threshold']:.4f} (>= {config['sensitivity_target']:.0%} sensitivity on"
        " validation).", "",
        "## Training data",
        f"- {', '.join(data['datasets'])} (split {data['split'] or 'all'}), cleaning policy"
        f" `{config['label_policy']}`: {data['cleaning']}.",
        f"- Split `{config['split_mode']}`, validation fraction {config['val_fraction']}, seed"
        f" {config['seed']}; rebalancing `{config['rebalance']}` (target {config['rebalance_target']}).",
        f"- Training folds: {data['folds']}.",
        f"- {data['ids_count']} image ids (`{data['ids_file']}`), sha256 {data['ids_sha256']}.", "",
        "## Metrics", "",
        "| data | n | melanomas | accuracy | balanced acc. | melanoma AUC | sensitivity"
        " | specificity | ECE |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, m in metadata["metrics"].items():
        lines.append(f"| {m.get('data', name)} | {m['n']} | {m['melanomas']} | {m['accuracy']:.3f} |"
                     f" {m['balanced_accuracy']:.3f} | {fmt(m['melanoma_auc'])} |"
                     f" {fmt(m['sensitivity'])} | {fmt(m['specificity'])} | {m['ece']:.3f} |")
    lines += ["", "## Limits",
              "- A screening aid that flags images for a dermatologist; never a diagnosis.",
              "- Trained on a small, dirty public set; see the cleaning log above."]
    unseen = [name for name, count in data["folds"]["train"]["class_counts"].items() if not count]
    if unseen:
        lines.append(f"- No training images of: {', '.join(unseen)}; it cannot recognise them.")
    lines.append("")
    return "\n".join(lines)
