"""Bundle round trip, and every shipped bundle checked against its metadata."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from dermscreen.bundle import load_bundle, validate_bundle
from dermscreen.config import PACKAGE_DIR
from tests.factories import BLUE, RED, lesion_image, make_tiny_bundle

SHIPPED = sorted(path.parent for path in (PACKAGE_DIR / "bundles").glob("*/metadata.json"))


def test_tiny_bundle_round_trip(tmp_path):
    bundle = load_bundle(make_tiny_bundle(tmp_path / "tiny", threshold=0.4))
    validate_bundle(bundle)
    assert bundle.threshold == 0.4 and bundle.input_size == (32, 32)
    probabilities = bundle.predict([lesion_image(RED), lesion_image(BLUE)])
    assert probabilities.shape == (2, 9)
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    red, blue = probabilities[:, bundle.melanoma_index]
    assert red > bundle.threshold > blue


def test_validate_bundle_rejects_a_tampered_model(tmp_path):
    path = make_tiny_bundle(tmp_path / "tiny")
    metadata = json.loads((path / "metadata.json").read_text())
    metadata["files"]["model.keras"] = "0" * 64
    (path / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(ValueError):
        validate_bundle(load_bundle(path))


@pytest.mark.parametrize("path", SHIPPED, ids=[path.name for path in SHIPPED])
def test_shipped_bundle_matches_its_metadata(path: Path):
    bundle = load_bundle(path, backend="tensorflow")
    validate_bundle(bundle)
    height, width = bundle.input_size
    probabilities = bundle.predict(np.zeros((1, height, width, 3), np.float32))
    assert probabilities.shape == (1, len(bundle.classes))
    metadata = bundle.metadata
    assert metadata["version"] and metadata["changelog"] and metadata["frameworks"]
    assert metadata["metrics"], "a shipped bundle says what it was measured on"
    for name, metrics in metadata["metrics"].items():
        assert metrics["data"], name
    ids_file = path / metadata["training_data"]["ids_file"]
    ids = sorted(ids_file.read_text().split())
    assert hashlib.sha256("\n".join(ids).encode()).hexdigest() == metadata["training_data"]["ids_sha256"]


def _flat_bundle(path: Path, output: dict) -> Path:
    """A bundle whose logits depend on where pixels are (a dense layer on the flattened image),
    so that flipped views give other logits."""
    import keras

    from dermscreen.bundle import save_bundle
    from tests.factories import CLASSES

    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, keras.layers.Dense(len(CLASSES))(keras.layers.Flatten()(inputs)))
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.01, w.shape).astype(np.float32) for w in model.get_weights()])
    metadata = {"name": "flat", "version": "1", "changelog": ["test"], "input": {"height": 4, "width": 4},
                "output": {"classes": CLASSES, "alert_threshold": 0.5, **output}, "metrics": {}}
    return save_bundle(path, model, metadata)


def test_views_average_flipped_logits_and_calibration_applies_temperature_and_biases(tmp_path):
    bias = np.linspace(-1, 1, 9)
    bundle = load_bundle(_flat_bundle(tmp_path / "b", {"views": ["identity", "flip_left_right"],
                                                       "temperature": 2.0, "class_bias": bias.tolist()}))
    validate_bundle(bundle)
    images = np.random.default_rng(1).uniform(0, 255, (3, 4, 4, 3)).astype(np.float32)
    plain, flipped = bundle.model_logits(images), bundle.model_logits(images[:, :, ::-1])
    assert not np.allclose(plain, flipped)
    np.testing.assert_allclose(bundle.logits(images), (plain + flipped) / 2, rtol=1e-5, atol=1e-6)
    expected = np.exp((plain + flipped) / 4 + bias)
    np.testing.assert_allclose(bundle.predict(images), expected / expected.sum(axis=1, keepdims=True),
                               rtol=1e-4)


def test_a_format_1_bundle_loads_with_the_plain_view_and_no_biases(tmp_path):
    path = _flat_bundle(tmp_path / "b", {})
    metadata = json.loads((path / "metadata.json").read_text())
    assert metadata["format"] == "dermscreen-bundle/2"
    metadata["format"] = "dermscreen-bundle/1"
    (path / "metadata.json").write_text(json.dumps(metadata))
    bundle = load_bundle(path)
    assert bundle.views == ["identity"] and not bundle.class_bias.any()
    images = np.zeros((1, 4, 4, 3), np.float32)
    np.testing.assert_allclose(bundle.logits(images), bundle.model_logits(images))


def test_validate_bundle_rejects_unknown_views_and_misshapen_biases(tmp_path):
    with pytest.raises(ValueError, match="views"):
        validate_bundle(load_bundle(_flat_bundle(tmp_path / "a", {"views": ["transpose"]})))
    with pytest.raises(ValueError, match="class_bias"):
        validate_bundle(load_bundle(_flat_bundle(tmp_path / "b", {"class_bias": [0.0, 1.0]})))
