"""Fine-tune on a machine that has neither the data nor the service (a rented GPU): pack a
prepared run, fit it there, finish it here.

    # here: prepare the pool and its split, write it with small copies of the images (WebP), or
    # with the image files themselves (--original: lossless; the presets' pool is 112 MiB of JPEG)
    python -m dermscreen.training.backbone.portable pack --config PRESET [--set k=v ...] --out PACK
    # there: train (KERAS_BACKEND=torch where PyTorch is the GPU framework); at most MINUTES of
    # training, as many epochs as fit (measured on the first steps), at most the config's
    python -m dermscreen.training.backbone.portable fit PACK --run RUN [--minutes MINUTES]
    # (a fit stopped by a time limit goes on from its last epoch: fit PACK --run RUN --resume)
    # here: bring back RUN/checkpoints/{state.json,best.weights.h5} and RUN/{history.csv,
    # training_curves.png}, then export, calibrate and measure the test sets with the same
    # settings (and the epochs the fit chose)
    dermscreen train --config PRESET [--set k=v ...] --set epochs=N --set output=RUN --resume

``fit`` runs ``finetune.train``, the very function ``dermscreen train`` runs, on the packed split;
the finishing run prepares the same split again from the data (same config, same seed) and
refuses to resume when any training setting differs. The pack's WebP copies are resized to the
model's input size at most, so training sees them as it would the originals, less WebP's loss,
which is not negligible: attempt 8 (docs/default_model.md) scored 0.016 lower validation AUC on
the original images than on its quality-85 copies. ``--original`` avoids that loss; a pack larger
than one transfer travels in parts to a machine that stays warm between calls (move part of
``PACK/images`` to a second folder here, carry each in its own call, move it back there).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import click
import keras
import numpy as np
import pandas as pd
import yaml
from PIL import Image

from dermscreen.training.backbone.finetune import (
    FinetuneConfig, load_config, prepare_data, state_file, train,
)
from dermscreen.training.train_config import config_from

CONFIG_FILE = "config.yaml"
FOLDS_FILE = "folds.csv"
COLUMNS = ["image_id", "source", "label", "fold", "path"]


def pack(config: FinetuneConfig, out: Path, quality: int = 85, original: bool = False,
         log=print) -> Path:
    """Write the prepared train and validation folds of ``config`` to ``out``: its config, the
    fold table and each image at most the model's input size, as WebP, or, with ``original``,
    each image file as it is."""
    out = Path(out)
    if out.exists():
        raise click.UsageError(f"{out} exists")
    pool, _, _ = prepare_data(config, log)
    table = pool[COLUMNS].reset_index(drop=True)
    (out / "images").mkdir(parents=True)
    packed = [packed_image(row["path"], out, f"images/{index:05d}_{row['image_id']}", config.size,
                           quality, original) for index, row in table.iterrows()]
    table.assign(path=packed).to_csv(out / FOLDS_FILE, index=False)
    (out / CONFIG_FILE).write_text(yaml.safe_dump(asdict(config), sort_keys=False))
    log(f"packed {len(table)} images into {out}")
    return out


def packed_image(source: str, out: Path, name: str, size: int, quality: int, original: bool) -> str:
    """Write one image into a pack as ``out/name`` plus a suffix: the file itself (``original``)
    or a WebP copy at most ``size`` px; the name it got."""
    if original:
        name += Path(source).suffix
        shutil.copyfile(source, out / name)
        return name
    name += ".webp"
    with Image.open(source) as opened:
        image = opened.convert("RGB")
    if max(image.size) > size:
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    image.save(out / name, "WEBP", quality=quality, method=6)
    return name


def read_pack(folder: Path) -> tuple[FinetuneConfig, pd.DataFrame, pd.DataFrame]:
    """The packed config and its train and validation tables, paths made absolute."""
    folder = Path(folder)
    config = config_from(FinetuneConfig, yaml.safe_load((folder / CONFIG_FILE).read_text()))
    table = pd.read_csv(folder / FOLDS_FILE, dtype=str, keep_default_na=False)
    table["path"] = [str(folder / path) for path in table["path"]]
    return (config, *(table[table["fold"] == fold].reset_index(drop=True) for fold in ("train", "val")))


def epochs_within(config: FinetuneConfig, seconds_per_epoch: float, minutes: float) -> int:
    """The most epochs (at least 1, at most the config's) that fit in ``minutes``."""
    return int(min(config.epochs, max(1, minutes * 60 // seconds_per_epoch)))


class EpochClock(keras.callbacks.Callback):
    """Wall-clock times of each epoch's start, last batch and end (after validation)."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append([time.monotonic()])

    def on_train_batch_end(self, batch, logs=None):
        self.epochs[-1][1:] = [time.monotonic()]

    def on_epoch_end(self, epoch, logs=None):
        self.epochs[-1].append(time.monotonic())


def time_one_epoch(config: FinetuneConfig, train_table, val_table, folder: Path, steps: int,
                   log=print) -> float:
    """Seconds one epoch of ``train_table`` takes, validation included: the second of two
    epochs of ``steps`` batches (a throwaway run in ``folder``), its batches scaled up."""
    probe = replace(config, epochs=2)
    sample = train_table.sample(min(len(train_table), steps * config.batch_size),
                                random_state=config.seed)
    clock = EpochClock()
    train(probe, folder, sample, val_table, False, log=log, callbacks=[clock])
    begin, last_batch, end = clock.epochs[-1]
    batches = np.ceil(len(train_table) / config.batch_size) / np.ceil(len(sample) / config.batch_size)
    return (last_batch - begin) * batches + (end - last_batch)


@click.group()
def main():
    """Pack a prepared run for another machine, or fit a packed one."""


@main.command("pack")
@click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--set", "overrides", multiple=True, help="key=value (YAML) over the preset")
@click.option("--out", required=True, type=click.Path(path_type=Path))
@click.option("--quality", default=85, show_default=True, help="WebP quality of the copies")
@click.option("--original", is_flag=True, help="copy the image files as they are (lossless)")
def pack_command(config_path, overrides, out, quality, original):
    """Write the prepared split of a fine-tune preset, with its images, to OUT."""
    pack(load_config(config_path, overrides), out, quality, original)


@main.command("fit")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--run", required=True, type=click.Path(path_type=Path), help="run folder to write")
@click.option("--minutes", type=float, help="train at most this long: fewer epochs if needed")
@click.option("--probe-steps", default=20, show_default=True, help="steps timed to size the epochs")
@click.option("--resume", is_flag=True,
              help="continue RUN (stopped by a time limit) to the epochs its first fit chose")
def fit_command(folder, run, minutes, probe_steps, resume):
    """Train a packed run (FOLDER) into RUN; RUN/checkpoints then finish it where the data is."""
    config, train_table, val_table = read_pack(folder)
    if resume:
        state = json.loads(state_file(run).read_text())
        config = replace(config, epochs=state["config"]["epochs"])
    elif minutes is not None:
        seconds = time_one_epoch(config, train_table, val_table, run / "probe", probe_steps)
        epochs = epochs_within(config, seconds, minutes)
        click.echo(f"{seconds:.1f} s per epoch measured: {epochs} of {config.epochs} epochs"
                   f" fit in {minutes} minutes")
        config = replace(config, epochs=epochs)
    _, history = train(config, run, train_table, val_table, resume=resume)
    best = max(history, key=lambda row: row[config.select_by])
    click.echo(json.dumps({"epochs": config.epochs, "best": best}))


if __name__ == "__main__":
    main()
