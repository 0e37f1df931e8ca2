"""Model bundles: the one format that training writes and the service runs.

A bundle is a directory::

    model.keras     Keras model: float32 RGB images in [0, 255] of the input size -> class logits.
                    Normalisation lives inside the model, so serving cannot drift from training.
    model.onnx      optional ONNX export of the same model (fast CPU inference)
    metadata.json   version, changelog, frameworks, input and output spec (classes, test-time
                    views, calibration temperature and class biases, alert threshold), metrics
                    with the data they were measured on, training config and a hash of the
                    training data list
    README.md       the human-readable model card

``to_model_input`` is the only image preprocessing there is: training, evaluation and serving
call it. ``load_bundle(path).predict(images)`` returns calibrated class probabilities:
``softmax(logits / temperature + class_bias)``, where the logits are the mean over the bundle's
test-time ``views`` (flips of the input; the plain image alone by default).

Format 2 added ``views`` and ``class_bias``; format 1 bundles (neither) still load.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterable, Union

import numpy as np
from PIL import Image

from dermscreen.gate import Gate, load_gate, mask_corner

FORMAT = "dermscreen-bundle/2"
READABLE_FORMATS = {"dermscreen-bundle/1", FORMAT}
MELANOMA = "melanoma"
KERAS_FILE = "model.keras"
ONNX_FILE = "model.onnx"
METADATA_FILE = "metadata.json"
CARD_FILE = "README.md"

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]


class BundleError(ValueError):
    """A bundle directory is missing files or disagrees with its metadata."""


def to_model_input(image: ImageLike, size: tuple[int, int]) -> np.ndarray:
    """Decode one image to the model's input: float32 RGB, shape (height, width, 3), range [0, 255].

    The whole frame is resized (bilinear, no crop). Paths and file objects are opened with Pillow;
    arrays are taken as RGB pixels.
    """
    height, width = size
    if isinstance(image, np.ndarray):
        image = Image.fromarray(np.asarray(image, dtype=np.uint8))
    elif not isinstance(image, Image.Image):
        with Image.open(image) as opened:
            opened.load()
            image = opened.copy()
    image = image.convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32)


# Test-time views: transforms of an NHWC batch whose logits are averaged.
VIEWS = {
    "identity": lambda batch: batch,
    "flip_left_right": lambda batch: batch[:, :, ::-1],
    "flip_up_down": lambda batch: batch[:, ::-1],
    "rotate_180": lambda batch: batch[:, ::-1, ::-1],
}


def softmax(logits: np.ndarray, temperature: float = 1.0, bias=None) -> np.ndarray:
    """``softmax(logits / temperature + bias)``, row-wise."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    if bias is not None:
        scaled = scaled + np.asarray(bias, dtype=np.float64)
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def onnx_providers(available: list[str]) -> list[str]:
    """ONNX Runtime's execution providers for serving, best first: CUDA where the installed
    runtime has it (``onnxruntime-gpu``, on the GPU image), then the CPU, always there."""
    return [name for name in ("CUDAExecutionProvider",) if name in available] + [
        "CPUExecutionProvider"]


@dataclass
class Prepared:
    """One decoded image: the model's input pixels and the image's own (width, height)."""

    pixels: np.ndarray
    size: tuple[int, int]


@dataclass
class Screening:
    """What ``Bundle.screen`` says of one image: calibrated class probabilities, or (None and)
    why the image cannot be assessed."""

    probabilities: np.ndarray | None
    unassessable: str | None = None


@dataclass
class Bundle:
    """A loaded model bundle. ``predict`` is all the worker needs."""

    path: Path
    metadata: dict
    backend: str = "auto"
    threads: int = 0  # ONNX Runtime's intra-op threads (0: one per core)
    _session: object = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.backend == "auto":
            # Serving runs the ONNX export on CPU and GPU alike; TensorFlow only without one.
            self.backend = "onnx" if (self.path / ONNX_FILE).exists() else "tensorflow"
        if self.backend not in {"onnx", "tensorflow"}:
            raise BundleError(f"unknown backend {self.backend!r}")

    # --- metadata -------------------------------------------------------------------------
    @property
    def version(self) -> str:
        return self.metadata["version"]

    @property
    def classes(self) -> list[str]:
        return list(self.metadata["output"]["classes"])

    @property
    def melanoma_index(self) -> int:
        return self.classes.index(MELANOMA)

    @property
    def input_size(self) -> tuple[int, int]:
        spec = self.metadata["input"]
        return int(spec["height"]), int(spec["width"])

    @property
    def threshold(self) -> float:
        """Melanoma probability at or above which an image is flagged."""
        return float(self.metadata["output"]["alert_threshold"])

    @property
    def review_threshold(self) -> float:
        """Melanoma probability at or above which an image is listed for review (no alert); the
        alert threshold when the bundle has no review tier."""
        return float(self.metadata["output"].get("review_threshold", self.threshold))

    @property
    def operating_curve(self) -> list[dict]:
        """The validation curve the thresholds were chosen on: points ``{threshold, sensitivity,
        specificity, alert_share}`` by rising threshold; empty when the bundle recorded none."""
        return list((self.metadata.get("operating_curve") or {}).get("points", []))

    @property
    def temperature(self) -> float:
        return float(self.metadata["output"].get("temperature", 1.0))

    @property
    def class_bias(self) -> np.ndarray:
        return np.asarray(self.metadata["output"].get("class_bias", [0.0] * len(self.classes)))

    @property
    def views(self) -> list[str]:
        """Test-time views whose logits are averaged (``VIEWS``)."""
        return list(self.metadata["output"].get("views", ["identity"]))

    # --- inference ------------------------------------------------------------------------
    @cached_property
    def keras_model(self):
        import keras

        return keras.saving.load_model(self.path / KERAS_FILE, compile=False)

    @cached_property
    def _onnx(self):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        return onnxruntime.InferenceSession(
            str(self.path / ONNX_FILE), options,
            providers=onnx_providers(onnxruntime.get_available_providers()))

    def batch(self, images: Iterable[ImageLike]) -> np.ndarray:
        """Stack images into one model input array."""
        arrays = [to_model_input(image, self.input_size) for image in images]
        if not arrays:
            height, width = self.input_size
            return np.zeros((0, height, width, 3), dtype=np.float32)
        return np.stack(arrays)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Uncalibrated logits for an input array from ``batch``: the mean over ``views``."""
        if len(batch) == 0:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        return np.mean([self.model_logits(VIEWS[name](batch)) for name in self.views], axis=0)

    def model_logits(self, batch: np.ndarray) -> np.ndarray:
        """The model's logits for ``batch`` as it is (no views)."""
        return self.model_outputs(batch)[0]

    def model_outputs(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The model's logits for ``batch`` as it is (no views), and its pooled features when the
        model has that second output (bundles with a gate), else None."""
        if self.backend == "onnx":
            session = self._onnx
            names = [output.name for output in session.get_outputs()]
            wanted = [name for name in ("logits", "features") if name in names] or names[:1]
            outputs = session.run(wanted, {session.get_inputs()[0].name: batch.astype(np.float32)})
        else:
            outputs = self.keras_model(batch, training=False)
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        outputs = [np.asarray(output) for output in outputs]
        return outputs[0], (outputs[1] if len(outputs) > 1 else None)

    @cached_property
    def gate(self) -> Gate | None:
        """The bundle's gate (``dermscreen.gate``), or None for a bundle without one."""
        return load_gate(self.path, self.metadata)

    def prepare(self, image: ImageLike) -> Prepared:
        """Decode one image for ``screen``; raises OSError or ValueError when it is unreadable."""
        if isinstance(image, np.ndarray):
            height, width = image.shape[:2]
        elif isinstance(image, Image.Image):
            width, height = image.size
        else:
            with Image.open(image) as opened:
                opened.load()
                image = opened.copy()
            width, height = image.size
        return Prepared(to_model_input(image, self.input_size), (width, height))

    def screen(self, prepared: list[Prepared]) -> list[Screening]:
        """Gate, then score: calibrated probabilities for the images the gate lets through, the
        gate's reason for the others. Bundles without a gate score every image."""
        results = [Screening(None) for _ in prepared]
        passed = []
        for index, item in enumerate(prepared):
            reason = self.gate.quality_reason(item.pixels, item.size) if self.gate else None
            if reason:
                results[index].unassessable = reason
            else:
                passed.append(index)
        if not passed:
            return results
        batch = np.stack([prepared[i].pixels for i in passed])
        probabilities = self.calibrated(self.logits(batch))
        if self.gate and self.gate.detectors:
            reasons = self.gate.feature_reasons(self.model_outputs(mask_corner(batch))[1])
        else:
            reasons = [None] * len(passed)
        for row, index in enumerate(passed):
            if reasons[row]:
                results[index].unassessable = reasons[row]
            else:
                results[index].probabilities = probabilities[row]
        return results

    def predict(self, images: Iterable[ImageLike] | np.ndarray) -> np.ndarray:
        """Calibrated class probabilities, shape (n, len(classes)).

        ``images`` is an iterable of paths, PIL images or RGB arrays, or an already built input
        array of shape (n, height, width, 3).
        """
        if isinstance(images, np.ndarray) and images.ndim == 4:
            batch = images.astype(np.float32)
        else:
            batch = self.batch(images)
        return self.calibrated(self.logits(batch))

    def calibrated(self, logits: np.ndarray) -> np.ndarray:
        """Class probabilities from ``logits``, with the bundle's temperature and class biases."""
        return softmax(logits, self.temperature, self.class_bias)


def load_bundle(path: str | os.PathLike | None = None, backend: str = "auto",
                threads: int = 0) -> Bundle:
    """Load a bundle directory (the default bundle when ``path`` is None) and check it;
    ``threads``: ONNX Runtime's (0: one per core)."""
    from dermscreen.config import DEFAULT_BUNDLE

    path = Path(path or DEFAULT_BUNDLE)
    metadata_path = path / METADATA_FILE
    if not metadata_path.is_file():
        raise BundleError(f"{path} is not a model bundle: no {METADATA_FILE}")
    metadata = json.loads(metadata_path.read_text())
    if metadata.get("format") not in READABLE_FORMATS:
        raise BundleError(f"{path}: unsupported bundle format {metadata.get('format')!r}")
    if not (path / KERAS_FILE).is_file():
        raise BundleError(f"{path}: no {KERAS_FILE}")
    if MELANOMA not in metadata["output"]["classes"]:
        raise BundleError(f"{path}: classes do not include {MELANOMA!r}")
    return Bundle(path=path, metadata=metadata, backend=backend, threads=threads)


def validate_bundle(bundle: Bundle) -> None:
    """Check the model's shapes and files against the metadata; raise BundleError on a mismatch."""
    height, width = bundle.input_size
    model = bundle.keras_model
    input_shape = tuple(model.inputs[0].shape)
    if input_shape[1:] != (height, width, 3):
        raise BundleError(f"model input {input_shape} != metadata ({height}, {width}, 3)")
    output_shape = tuple(model.outputs[0].shape)
    if output_shape[1:] != (len(bundle.classes),):
        raise BundleError(f"model output {output_shape} != {len(bundle.classes)} classes")
    for name, digest in bundle.metadata.get("files", {}).items():
        if file_sha256(bundle.path / name) != digest:
            raise BundleError(f"{name} does not match the sha256 in {METADATA_FILE}")
    if not 0.0 < bundle.threshold < 1.0:
        raise BundleError(f"alert threshold {bundle.threshold} is not a probability")
    if not bundle.views or set(bundle.views) - set(VIEWS):
        raise BundleError(f"test-time views {bundle.views} are not a non-empty subset of"
                          f" {sorted(VIEWS)}")
    if bundle.class_bias.shape != (len(bundle.classes),):
        raise BundleError(f"class_bias has {bundle.class_bias.size} values for"
                          f" {len(bundle.classes)} classes")


def save_bundle(
    path: str | os.PathLike,
    model,
    metadata: dict,
    card: str | None = None,
    onnx_bytes: bytes | None = None,
) -> Path:
    """Write ``model`` and its metadata as a bundle directory and return its path.

    ``metadata`` must hold ``version``, ``input`` (height, width) and ``output`` (classes,
    alert_threshold, optional temperature, class_bias and views). The format tag, input
    dtype/range and file hashes are filled in here. ``card`` is the model card's markdown (a
    minimal one is written otherwise).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save(path / KERAS_FILE)
    files = [KERAS_FILE]
    if onnx_bytes is not None:
        (path / ONNX_FILE).write_bytes(onnx_bytes)
        files.append(ONNX_FILE)
    metadata = {
        "format": FORMAT,
        **metadata,
        "input": {"dtype": "float32", "range": [0, 255], "color": "RGB", "layout": "NHWC",
                  "resize": "whole frame, bilinear", **metadata["input"]},
        "files": {name: file_sha256(path / name) for name in files},
    }
    metadata["output"].setdefault("temperature", 1.0)
    return write_metadata(path, metadata, card)


def write_metadata(path: str | os.PathLike, metadata: dict, card: str | None = None) -> Path:
    """Rewrite a bundle's metadata and model card, its model files untouched (e.g. after
    re-calibration)."""
    path = Path(path)
    metadata = {"format": FORMAT, **{key: value for key, value in metadata.items()
                                     if key != "format"}}
    (path / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=False) + "\n")
    (path / CARD_FILE).write_text(card or _minimal_card(metadata))
    return path


def _minimal_card(metadata: dict) -> str:
    out = metadata["output"]
    return (
        f"# Model card: {metadata.get('name', 'dermscreen model')} {metadata['version']}\n\n"
        f"Classes: {', '.join(out['classes'])}.\n\n"
        f"Input: {metadata['input']['height']}x{metadata['input']['width']} RGB, [0, 255].\n\n"
        f"Alert threshold (melanoma probability): {out['alert_threshold']}.\n"
    )
