"""`dermscreen train` hands each preset to the trainer it names."""

from pathlib import Path

from click.testing import CliRunner

from dermscreen.config import PACKAGE_DIR
from dermscreen.training import commands
from dermscreen.training.backbone.ensemble import EnsembleConfig
from dermscreen.training.backbone.finetune import FinetuneConfig
from dermscreen.training.train_config import TrainConfig
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


def test_an_unknown_trainer_is_refused(tmp_path: Path):
    preset = tmp_path / "odd.yaml"
    preset.write_text("trainer: magic\n")
    result = CliRunner().invoke(commands.train, ["--config", str(preset)])
    assert result.exit_code == 2
    assert "unknown trainer 'magic'" in result.output
