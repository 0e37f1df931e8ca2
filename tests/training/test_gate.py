"""Fitting a bundle's gate: the features output, the quality thresholds, the detectors, and what
it stops. Made-up data: textured 'lesions' as dermoscopy, drawn documents and gradients as the
outliers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dermscreen.bundle import load_bundle, validate_bundle
from dermscreen.gate import GATE_FILE, mask_corner
from dermscreen.training.gate import (GATE_HEADING, fit_gate, gate_report, must_stop_cases,
                                      synthetic_outliers)
from tests.factories import BLUE, RED, lesion_image, make_tiny_bundle
from tests.training.conftest import write_image

SIZE = (96, 96)  # above the gate's smallest side (64 px)


@pytest.fixture
def gated(tmp_path) -> Path:
    """A tiny bundle trained (so its metadata says) on a class folder of lesions, with its gate
    fitted against a folder of outliers."""
    lesions = tmp_path / "lesions"
    for index in range(40):
        write_image(lesions / ("melanoma" if index % 2 else "nevus") / f"ISIC_{index:07d}.jpg",
                    image=lesion_image(RED if index % 2 else BLUE, SIZE, seed=index))
    source = make_tiny_bundle(tmp_path / "tiny", with_onnx=True)
    metadata = json.loads((source / "metadata.json").read_text())
    metadata["training"] = {"train": [{"path": str(lesions)}]}
    (source / "metadata.json").write_text(json.dumps(metadata))
    ood = tmp_path / "ood"
    ood.mkdir()
    rows = []
    for index, image in enumerate(synthetic_outliers(40, seed=1)):
        image.save(ood / f"document_{index:04d}.jpg")
        rows.append({"image_id": f"document_{index:04d}", "kind": "document", "source": "drawn",
                     "group": f"g{index % 8}"})
    pd.DataFrame(rows).to_csv(ood / "labels.csv", index=False)
    out = tmp_path / "gated"
    fit_gate(source, out, "test-1-gate", ood, log=lambda line: None)
    return out


def test_a_fitted_gate_lives_in_the_bundle_and_stops_what_it_must(gated):
    bundle = load_bundle(gated, backend="onnx")
    validate_bundle(bundle)  # the rewritten model files and gate.npz match their hashes
    assert bundle.version == "test-1-gate" and (gated / GATE_FILE).is_file()
    logits, features = bundle.model_outputs(np.zeros((2, 32, 32, 3), np.float32))
    assert logits.shape == (2, 9) and features.shape == (2, 3)  # the tiny model pools RGB
    assert load_bundle(gated, backend="tensorflow").model_outputs(
        np.zeros((1, 32, 32, 3), np.float32))[1].shape == (1, 3)
    gate = bundle.metadata["gate"]
    assert gate["quality"]["min_side"] == 64
    assert set(gate["detectors"]) >= {"classifier_threshold", "distance_threshold"}
    stops = gate["measured"]["must stop"]
    assert stops["all black"].startswith("too dark") and stops["all white"].startswith("too bright")
    assert stops["uniform grey"].startswith("mostly a uniform field")
    assert stops["8x8"].startswith("too small: 8x8 px")
    assert gate["measured"]["check document"]["share"] >= 0.9
    assert gate["measured"]["check dermoscopy"]["share"] <= 0.1
    card = (gated / "README.md").read_text()
    assert card.count(GATE_HEADING) == 1


def test_a_gate_fitted_again_replaces_the_gate_section_of_the_card(gated, tmp_path):
    again = tmp_path / "gated-again"
    fit_gate(gated, again, "test-2-gate", tmp_path / "ood", log=lambda line: None)
    card = (again / "README.md").read_text()
    assert card.count(GATE_HEADING) == 1 and card.startswith("# ")
    assert "Stopped, check dermoscopy" in card.split(GATE_HEADING)[1]


def test_screen_scores_lesions_and_names_why_the_others_cannot_be_assessed(gated, tmp_path):
    bundle = load_bundle(gated)
    lesion = write_image(tmp_path / "lesion.jpg", image=lesion_image(RED, SIZE, seed=99))
    images = [lesion, *must_stop_cases().values(), synthetic_outliers(4, seed=7)[1]]  # a screenshot
    results = bundle.screen([bundle.prepare(image) for image in images])
    assert results[0].unassessable is None
    assert results[0].probabilities[bundle.melanoma_index] > 0.5  # red scores high, as before
    assert all(result.probabilities is None and result.unassessable for result in results[1:])
    assert results[-1].unassessable.startswith(("not a dermoscopic image", "unlike any"))


def test_evaluate_gate_counts_a_folder_by_reason(gated, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    write_image(folder / "lesion.png", image=lesion_image(BLUE, SIZE, seed=98))
    for name, image in must_stop_cases().items():
        image.save(folder / f"{name.replace(' ', '_')}.png")
    (folder / "broken.jpg").write_bytes(b"not an image")
    result = gate_report(load_bundle(gated), folder)
    assert (result["n"], result["stopped"], result["unreadable"]) == (5, 4, 1)
    assert result["by_reason"] == {"too dark": 1, "too bright": 1, "mostly a uniform field": 1,
                                   "too small": 1}


def test_the_logo_corner_is_masked_with_the_image_mean():
    pixels = np.zeros((100, 200, 3), np.float32)
    pixels[:50] = 200.0
    masked = mask_corner(pixels[None])[0]
    assert np.all(masked[60:, :90] == 100.0)  # bottom 40%, left 45%
    assert np.array_equal(masked[:60], pixels[:60]) and np.array_equal(masked[:, 90:], pixels[:, 90:])
