"""The one typed configuration of a training run: defaults here, presets in ``presets/*.yaml``,
command-line overrides with ``--set key=value``::

    dermscreen train --config dermscreen/training/presets/seed-plain.yaml --set epochs=3
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import click
import yaml

PRESETS_DIR = Path(__file__).resolve().parent / "presets"


@dataclass
class TrainConfig:
    # Which trainer runs the preset (see dermscreen.training.trainers).
    trainer: str = "seed-cnn"
    # Name and version written into the bundle's metadata.
    name: str = "seed-cnn"
    version: str = "0.1.0"
    # One line for the bundle's changelog.
    changelog: str = "seed CNN trained by dermscreen train"
    # Training datasets (class folders or label CSVs, see dermscreen.training.datasets) and the
    # split of them to read ("" reads every split).
    data: list[str] = field(default_factory=lambda: ["../shared/data/isic9"])
    data_split: str = "train"
    # Reference label CSV used by the cleaning policy ("" for none) and the policy itself:
    # "reference" (the reference label wins) or "drop" (conflicting ids are dropped).
    reference: str = "../shared/data/reference_labels.csv"
    label_policy: str = "reference"
    # Validation split: "grouped" (honest: groups of id, lesion, content and near-duplicates
    # never cut, augmentation after the split) or "leaky" (the seed's way: augment first, then a
    # random split by file, so copies of one image sit on both sides).
    split_mode: str = "grouped"
    val_fraction: float = 0.2
    # Class rebalancing: "none" or "augmentor" (copies until each class has rebalance_target).
    rebalance: str = "none"
    rebalance_target: int = 500
    # On-the-fly Keras augmentation (flip, rotation, zoom) of training batches.
    keras_augmentation: bool = False
    # Model: input side in pixels and dropout before the dense layer (the seed had none).
    image_size: int = 180
    dropout: float = 0.0
    # Optimisation.
    epochs: int = 15
    batch_size: int = 32
    learning_rate: float = 0.001
    seed: int = 0
    # Alert threshold: chosen on validation for at least this melanoma sensitivity.
    sensitivity_target: float = 0.9
    # Run folder (checkpoints, curves, bundle); "" means $DERMSCREEN_HOME/runs/<name>.
    output: str = ""
    # Stop after this many training steps per epoch (0: all); for smoke tests only.
    steps_per_epoch: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _coerce(kind, text: str):
    if kind in (bool, "bool"):
        return text.strip().lower() in {"1", "true", "yes", "on"}
    if kind in (int, "int"):
        return int(text)
    if kind in (float, "float"):
        return float(text)
    if kind in (str, "str"):
        return text
    return yaml.safe_load(text)  # lists and other YAML values


def config_from(kind, values: dict, overrides=()):
    """``kind`` (a config dataclass) from preset ``values``, then ``key=value`` overrides, each
    read as its field's type (YAML syntax for lists and mappings); unknown keys are a usage
    error."""
    types = {f.name: f.type for f in fields(kind)}
    values = dict(values)
    for item in overrides:
        key, _, text = item.partition("=")
        if key not in types:
            raise click.UsageError(f"unknown config key {key!r} in --set {item}")
        values[key] = _coerce(types[key], text)
    unknown = set(values) - set(types)
    if unknown:
        raise click.UsageError(f"unknown config keys: {sorted(unknown)}")
    for name in set(values) & {name for name, type_ in types.items() if type_ in (float, "float")}:
        values[name] = float(values[name])  # YAML reads 1e-4 (no dot) as a string
    return kind(**values)


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> TrainConfig:
    """Defaults, then the YAML file, then ``key=value`` overrides."""
    values = (yaml.safe_load(Path(path).read_text()) or {}) if path else {}
    return config_from(TrainConfig, values, overrides)
