"""CPU inference speed of a model bundle: TensorFlow and ONNX Runtime paths side by side.

    python benchmarks/inference_speed.py [--model BUNDLE] [--batch 1 --batch 32] [--images 256] [--plot speed.png]

Both paths go through ``dermscreen.bundle.load_bundle(path, backend=...).predict`` on the same
random input arrays (decoding excluded), after one warm-up batch, with the bundle's test-time
views (each image runs once per view) and, for a bundle with several, with the plain view alone,
so that the cost of the views is measured in the same run. For a bundle with a gate, the ONNX
path is also measured as the workers run it, ``Bundle.screen``: quality statistics, the
detectors' masked forward pass, then the views. It prints images/s per batch size and the
largest probability difference between the two paths; ``--plot`` also draws it.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import replace

import click
import numpy as np

from dermscreen.bundle import Prepared, load_bundle

BACKENDS = ("tensorflow", "onnx")
GATED = "onnx, with the gate"


def variants(model) -> dict:
    """The bundle on each backend, and with the plain view alone when it has several views."""
    out = {}
    for backend in BACKENDS:
        bundle = out[backend] = load_bundle(model, backend=backend)
        if len(bundle.views) > 1:
            plain = copy.deepcopy(bundle.metadata)
            plain["output"]["views"] = ["identity"]
            out[f"{backend}, plain view"] = replace(bundle, metadata=plain)
    if out["onnx"].gate:
        out[GATED] = load_bundle(model, backend="onnx")
    return out


def images_per_second(bundle, images: np.ndarray, batch: int, gated: bool = False) -> float:
    height, width = bundle.input_size

    def run(chunk: np.ndarray) -> None:
        if gated:
            bundle.screen([Prepared(pixels, (width, height)) for pixels in chunk])
        else:
            bundle.predict(chunk)

    run(images[:batch])  # warm-up: graph tracing, session start
    start = time.perf_counter()
    for first in range(0, len(images), batch):
        run(images[first:first + batch])
    return len(images) / (time.perf_counter() - start)


def draw(results: dict, batches, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(results)
    for i, (label, speeds) in enumerate(results.items()):
        positions = np.arange(len(batches)) + i * width
        bars = axis.bar(positions, [speeds[b] for b in batches], width, label=label)
        axis.bar_label(bars, fmt="%.1f")
    axis.set_xticks(np.arange(len(batches)) + width * (len(results) - 1) / 2,
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
    bundles = variants(model)
    first = bundles["onnx"]
    height, width = first.input_size
    data = np.random.default_rng(0).uniform(0, 255, (images, height, width, 3)).astype(np.float32)
    difference = np.abs(bundles["onnx"].predict(data[:16]) - bundles["tensorflow"].predict(data[:16])).max()
    results = {label: {b: images_per_second(bundle, data, b, gated=label == GATED) for b in batches}
               for label, bundle in bundles.items()}
    click.echo(f"{first.metadata.get('name', first.path.name)} {first.version}: {height}x{width}, "
               f"{images} random images, {len(first.views)} test-time view(s) each, {os.cpu_count()} CPUs")
    width = max(len(label) for label in results) + 6
    click.echo(f"{'batch':>6} | " + " | ".join(f"{label + ' img/s':>{width}}" for label in results)
               + " | onnx speed-up")
    for b in batches:
        click.echo(f"{b:>6} | " + " | ".join(f"{speeds[b]:>{width}.1f}" for speeds in results.values())
                   + f" | {results['onnx'][b] / results['tensorflow'][b]:>12.1f}x")
    click.echo(f"max probability difference onnx vs tensorflow: {difference:.2e}")
    if plot:
        draw(results, batches, plot, f"{first.metadata.get('name', '')} {first.version}:"
             f" {len(first.views)} test-time view(s) unless plain")
        click.echo(f"wrote {plot}")


if __name__ == "__main__":
    main()
