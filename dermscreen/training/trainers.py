"""The trainers a preset can name (its ``trainer`` key), each as three "module:function" names
imported on use (TensorFlow stays out of ``dermscreen --help``): the config loader, the training
function ``(config, resume, log) -> bundle path`` and the model card writer of its bundles."""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Trainer:
    load_config: str
    run: str
    model_card: str


TRAINERS = {
    "seed-cnn": Trainer("dermscreen.training.train_config:load_config",
                        "dermscreen.training.train:train",
                        "dermscreen.training.train:model_card"),
    "efficientnet-finetune": Trainer("dermscreen.training.backbone.finetune:load_config",
                                     "dermscreen.training.backbone.finetune:finetune",
                                     "dermscreen.training.backbone.finetune:model_card"),
    "efficientnet-ensemble": Trainer("dermscreen.training.backbone.ensemble:load_config",
                                     "dermscreen.training.backbone.ensemble:build",
                                     "dermscreen.training.backbone.ensemble:model_card"),
}


def resolve(name: str):
    """The function a "module:function" name points at."""
    module, _, attribute = name.partition(":")
    return getattr(importlib.import_module(module), attribute)


def model_card(metadata: dict) -> str:
    """The model card of a bundle made by ``dermscreen train``: its trainer's, then the section
    of its gate when it has one."""
    from dermscreen.training.gate import gate_lines

    card = resolve(TRAINERS[metadata["training"].get("trainer", "seed-cnn")].model_card)(metadata)
    gate = gate_lines(metadata)
    return "\n".join([card, "", *gate, ""]) if gate else card
