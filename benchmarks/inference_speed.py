"""CPU inference speed of a model bundle: TensorFlow and ONNX Runtime paths side by side.

    python benchmarks/inference_speed.py [--model BUNDLE] [--batch 1 --batch 32] [--images 256] [--plot speed.png]

Both paths go through ``dermscreen.bundle.load_bundle(path, backend=...).predict`` on the same
random input arrays (decoding excluded), after one warm-up batch, with the bundle's test-time
views (each image runs once per view). It prints images/s per batch size and the largest
probability difference between the two paths; ``--plot`` also draws it.
"""

from __future__ import annotations

import os
import time

import click
import numpy as np

from dermscreen.bundle import load_bundle

BACKENDS = ("tensorflow", "onnx")


def images_per_second(bundle, images: np.ndarray, batch: int) -> float:
    bundle.predict(images[:batch])  # warm-up: graph tracing, session start
    start = time.perf_counter()
    for first in range(0, len(images), batch):
        bundle.predict(images[first:first + batch])
    return len(images) / (time.perf_counter() - start)


def draw(results: dict, batches, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    width = 0.8 / len(BACKENDS)
    for i, backend in enumerate(BACKENDS):
        positions = np.arange(len(batches)) + i * width
        bars = axis.bar(positions, [results[backend][b] for b in batches], width, label=backend)
        axis.bar_label(bars, fmt="%.1f")
    axis.set_xticks(np.arange(len(batches)) + width * (len(BACKENDS) - 1) / 2,
                    [f"batch {b}" for b in batches])
    axis.set(ylabel="images / s (CPU)", title=title)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


@click.command()
@click.option("--model", default=None, help="Bundle directory (default: the default bundle).")
@click.option("--batch", "batches", type=int, multiple=True, default=(1, 32), show_default=True)
@click.option("--images", type=int, default=256, show_default=True, help="Images per measurement.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Also draw the table as a PNG.")
def main(model, batches, images, plot):
    """Print images/s of the TensorFlow and ONNX Runtime paths of a bundle."""
    bundles = {backend: load_bundle(model, backend=backend) for backend in BACKENDS}
    first = bundles["onnx"]
    height, width = first.input_size
    data = np.random.default_rng(0).uniform(0, 255, (images, height, width, 3)).astype(np.float32)
    difference = np.abs(bundles["onnx"].predict(data[:16]) - bundles["tensorflow"].predict(data[:16])).max()
    results = {backend: {b: images_per_second(bundles[backend], data, b) for b in batches}
               for backend in BACKENDS}
    click.echo(f"{first.metadata.get('name', first.path.name)} {first.version}: {height}x{width}, "
               f"{images} random images, {len(first.views)} test-time view(s) each, {os.cpu_count()} CPUs")
    click.echo(f"{'batch':>6} | " + " | ".join(f"{b + ' img/s':>17}" for b in BACKENDS) + " | onnx speed-up")
    for b in batches:
        row = [results[backend][b] for backend in BACKENDS]
        click.echo(f"{b:>6} | " + " | ".join(f"{value:>17.1f}" for value in row)
                   + f" | {row[1] / row[0]:>12.1f}x")
    click.echo(f"max probability difference onnx vs tensorflow: {difference:.2e}")
    if plot:
        draw(results, batches, plot, f"{first.metadata.get('name', '')} {first.version}")
        click.echo(f"wrote {plot}")


if __name__ == "__main__":
    main()
