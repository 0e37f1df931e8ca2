"""What bounds fine-tuning every block (``cut: 0``): the Augmentor input pipeline or the model's
training step. Three rates in one run, images/s, on a packed run's training images:

- input: the training batches (``finetune.AugmentedBatches``, one process per core) fed to a
  model that does next to nothing (pooling and a dense layer);
- step: the model's training step (``finetune.compiled_top_model``) on batches already in memory;
- both: the model on the training batches, as ``dermscreen train`` runs it.

    python benchmarks/training_throughput.py PACK [--images 2048] [--plot throughput.png]

PACK is a folder written by ``python -m dermscreen.training.backbone.portable pack``. Each rate
is the second of two epochs over ``--images`` images (the first warms up the processes, kernels
and caches). Set KERAS_BACKEND=torch on a machine whose GPU framework is PyTorch.
"""

from __future__ import annotations

import os
from dataclasses import replace

import click
import keras
import numpy as np

from dermscreen.training.backbone.finetune import AugmentedBatches, compiled_top_model, load_images
from dermscreen.training.backbone.portable import EpochClock, read_pack
from dermscreen.training.datasets import CLASSES


def second_epoch_rate(model, data, images: int, batch_size: int) -> float:
    clock = EpochClock()
    if isinstance(data, tuple):
        x, y, weights = data
        model.fit(x, y, sample_weight=weights, batch_size=batch_size, epochs=2, verbose=0,
                  callbacks=[clock])
    else:
        model.fit(data, epochs=2, verbose=0, callbacks=[clock])
    begin, last_batch, _ = clock.epochs[-1]
    return images / (last_batch - begin)


def trivial_model(size: int):
    """Pools the image and classifies it: costs next to nothing, so the input sets the pace."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(len(CLASSES))(x))
    model.compile(optimizer="adam", loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    return model


def plot(rates: dict, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.2))
    axis.barh(list(rates), list(rates.values()), color=["#999999", "#4477aa", "#228833"])
    for y, value in enumerate(rates.values()):
        axis.text(value, y, f" {value:.0f}", va="center")
    axis.set(xlabel="images/s", title=title)
    axis.invert_yaxis()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


@click.command()
@click.argument("pack", type=click.Path(exists=True, file_okay=False))
@click.option("--images", default=2048, show_default=True, help="training images per epoch")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="also draw the rates")
def main(pack, images, plot_path):
    config, train_table, _ = read_pack(pack)
    table = train_table[:images]
    config = replace(config, epochs=2)
    pixels = load_images(table["path"], config.size)
    rows, labels = np.arange(len(table)), np.zeros(len(table), int)
    weights = np.ones(len(table), np.float32)
    batches = AugmentedBatches(pixels, rows, labels, weights, config, os.cpu_count())
    steps = 2 * len(batches)
    in_memory = (pixels, keras.utils.to_categorical(labels, len(CLASSES)), weights)
    rates = {
        "input (Augmentor)": second_epoch_rate(trivial_model(config.size), batches, len(table), config.batch_size),
        "step (model)": second_epoch_rate(compiled_top_model(config, pixels.shape[1:], steps),
                                          in_memory, len(table), config.batch_size),
        "both": second_epoch_rate(compiled_top_model(config, pixels.shape[1:], steps), batches,
                                  len(table), config.batch_size),
    }
    device = f"{keras.backend.backend()} backend, {os.cpu_count()} cores"
    if keras.backend.backend() == "torch":
        import torch

        device += f", {torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}"
    click.echo(f"EfficientNet-Lite0, every block trained, {config.size} px, batch {config.batch_size},"
               f" {len(table)} images per epoch; {device}")
    click.echo("| what | images/s |\n| --- | --- |")
    for name, rate in rates.items():
        click.echo(f"| {name} | {rate:.1f} |")
    if plot_path:
        plot(rates, plot_path, f"training throughput ({device})")


if __name__ == "__main__":
    main()
