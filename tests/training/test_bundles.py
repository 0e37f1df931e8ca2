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
