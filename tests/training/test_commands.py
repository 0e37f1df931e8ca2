"""`dermscreen train` hands each preset to the trainer it names."""

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from dermscreen.config import PACKAGE_DIR
from dermscreen.training import commands
from dermscreen.training.backbone.ensemble import EnsembleConfig
from dermscreen.training.backbone.finetune import FinetuneConfig
from dermscreen.training.train_config import TrainConfig, config_from
from dermscreen.training.trainers import TRAINERS, resolve

PRESETS = PACKAGE_DIR / "training" / "presets"


def test_every_preset_names_a_trainer_whose_loader_reads_it():
    import yaml

    for preset in sorted(PRESETS.glob("*.yaml")):
        trainer = (yaml.safe_load(preset.read_text()) or {}).get("trainer", "seed-cnn")
        config = resolve(TRAINERS[trainer].load_config)(preset, [])
        expected = {"efficientnet-finetune": FinetuneConfig,
                    "efficientnet-ensemble": EnsembleConfig}.get(trainer, TrainConfig)
        assert isinstance(config, expected), preset.name
        assert config.trainer == trainer


def test_every_trainer_reads_a_set_value_as_its_field_type():
    values = {"learning_rate": "1e-4"}  # YAML reads a rate without a dot as a string
    for kind in (TrainConfig, FinetuneConfig):
        config = config_from(kind, values, ["version=2.0", "epochs=3", "seed=7"])
        assert (config.version, config.epochs, config.seed, config.learning_rate) == ("2.0", 3, 7, 1e-4)
    config = config_from(TrainConfig, {}, ["keras_augmentation=yes", "data=[a, b]"])
    assert (config.keras_augmentation, config.data) == (True, ["a", "b"])
    for values, overrides in (({"epochz": 3}, []), ({}, ["epochz=3"])):
        with pytest.raises(click.UsageError, match="epochz"):
            config_from(FinetuneConfig, values, overrides)


def test_an_unknown_trainer_is_refused(tmp_path: Path):
    preset = tmp_path / "odd.yaml"
    preset.write_text("trainer: magic\n")
    result = CliRunner().invoke(commands.train, ["--config", str(preset)])
    assert result.exit_code == 2
    assert "unknown trainer 'magic'" in result.output
