"""A bundle's operating point fitted on validation images: views, calibration, threshold."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from dermscreen.bundle import FORMAT, load_bundle, validate_bundle
from dermscreen.training.backbone.finetune import FinetuneConfig, prepare_data, recalibrate
from dermscreen.training.datasets import acquisition, read_dataset
from dermscreen.training.evaluate import evaluate, record_metrics
from dermscreen.training.operating_point import (
    ALERT_SPECIFICITY, MIN_SOURCE_MELANOMAS, calibrate_bundle, threshold_within_large_sources,
)
from dermscreen.training.calibration import (
    specificity_threshold_within_every_group, threshold_within_every_group,
)
from tests.factories import BLUE, RED, make_tiny_bundle
from tests.training.conftest import write_image


def _mixed(redness: float) -> tuple:
    return tuple(int(r * redness + b * (1 - redness)) for r, b in zip(RED, BLUE))


@pytest.fixture
def collections_dataset(tmp_path) -> Path:
    """``Train/`` and ``Test/`` class folders of ISIC-named images from both collections
    (HAM10000 ids and older archive ids); melanomas are redder than nevi, with overlap."""
    rng = np.random.default_rng(0)
    root = tmp_path / "pool"
    for split, number in (("Train", 24), ("Test", 6)):
        for collection, first in (("ham", 24400), ("archive", 100)):
            for index in range(number):
                melanoma = index % 2 == 0
                redness = rng.uniform(0.35, 1.0) if melanoma else rng.uniform(0.0, 0.65)
                label = "melanoma" if melanoma else "nevus"
                number_id = first + index + (500 if split == "Test" else 0)
                write_image(root / split / label / f"ISIC_{number_id:07d}.jpg", _mixed(redness))
    return root


def test_calibrate_bundle_writes_an_operating_point_that_holds_in_every_collection(tmp_path, collections_dataset):
    path = make_tiny_bundle(tmp_path / "tiny", with_onnx=True)
    validation = read_dataset(collections_dataset / "Train")
    validation["group"] = validation["image_id"]
    metrics = calibrate_bundle(path, validation, target_sensitivity=0.9, log=lambda line: None)

    bundle = load_bundle(path)
    validate_bundle(bundle)
    assert bundle.metadata["format"] == FORMAT
    # The tiny model pools the whole image, so flips give the same logits and are not kept.
    assert bundle.views == ["identity"]
    assert bundle.class_bias.shape == (9,) and bundle.temperature > 0
    assert bundle.metadata["metrics"]["validation"]["by_collection"] == metrics["by_collection"]
    assert set(metrics["by_collection"]) == {"ham10000", "isic-archive"}
    # The review threshold keeps >= 90% sensitivity in each collection through the bundle itself.
    score = bundle.predict(list(validation["path"]))[:, bundle.melanoma_index]
    collections = acquisition(validation).to_numpy()
    melanoma = (validation["label"] == "melanoma").to_numpy()
    for name in ("ham10000", "isic-archive"):
        mine = melanoma & (collections == name)
        assert (score[mine] >= bundle.review_threshold).mean() >= 0.9
        others = ~melanoma & (collections == name)  # the AUC of what ships, recorded as measured
        assert metrics["melanoma_auc_calibrated"][name] == pytest.approx(
            roc_auc_score(np.r_[np.ones(mine.sum()), np.zeros(others.sum())], np.r_[score[mine], score[others]]),
            abs=1e-3)
        point = metrics["by_collection"][name]  # at the alert threshold
        assert point["specificity"] >= ALERT_SPECIFICITY
        low, high = point["ci95"]["sensitivity"]  # a handful of melanomas: a wide interval
        assert low < point["sensitivity"] < high and high - low > 0.3
    assert 0 <= metrics["ece_cross_fitted"] <= 1
    # One source per collection here, 12 melanomas each: too few to bound the threshold alone.
    assert set(metrics["by_source"]) == {"ham10000/pool", "isic-archive/pool"}
    # The alert tier keeps >= 80% specificity in every collection; the review tier (lower) is the
    # sensitivity threshold.
    assert bundle.review_threshold == metrics["tiers"]["review"]["threshold"] <= bundle.threshold
    for name in ("ham10000", "isic-archive"):
        others = ~melanoma & (collections == name)
        assert (score[others] < bundle.threshold).mean() >= ALERT_SPECIFICITY
        assert (score[melanoma & (collections == name)] >= bundle.review_threshold).mean() >= 0.9
    alert = metrics["tiers"]["alert"]
    assert alert["share"] == pytest.approx((score >= bundle.threshold).mean(), abs=1e-6)
    assert alert["ci95"]["share"][0] < alert["share"] < alert["ci95"]["share"][1]
    # The curve the admin page draws: rising thresholds, falling sensitivity and alert share.
    curve = bundle.operating_curve
    assert len(curve) > 10
    assert [p["threshold"] for p in curve] == sorted(p["threshold"] for p in curve)
    assert np.all(np.diff([p["alert_share"] for p in curve]) <= 0)
    assert np.all(np.diff([p["sensitivity"] for p in curve]) <= 0)


def test_the_alert_threshold_keeps_its_specificity_in_every_group():
    groups = np.array(["a"] * 100 + ["b"] * 100)
    score = np.r_[np.linspace(0.0, 0.5, 100), np.linspace(0.3, 0.9, 100)]
    positive = np.zeros(200, dtype=bool)
    threshold = specificity_threshold_within_every_group(score, positive, groups, 0.8)
    assert (score[groups == "b"] < threshold).mean() >= 0.8  # the group with higher scores binds
    assert (score[groups == "b"] < threshold - 0.01).mean() < 0.8  # and it is the lowest that does
    assert (score[groups == "a"] < threshold).mean() == 1.0


def test_the_threshold_holds_in_a_weaker_source_that_the_collection_hides():
    melanoma_scores = {"archive/a": np.linspace(0.90, 0.99, 20), "archive/b": np.linspace(0.10, 0.29, 20),
                       "archive/c": np.full(MIN_SOURCE_MELANOMAS - 1, 0.95)}
    sources = np.concatenate([[name] * len(v) for name, v in melanoma_scores.items()] + [["archive/a"] * 50])
    score = np.concatenate([*melanoma_scores.values(), np.linspace(0.0, 0.5, 50)])
    positive = np.arange(len(score)) < len(score) - 50
    collections = np.full(len(score), "archive")
    by_collection = threshold_within_every_group(score, positive, collections, 0.9)
    by_source = threshold_within_large_sources(score, positive, sources, 0.9)
    assert (score[positive & (sources == "archive/b")] >= by_collection).mean() < 0.9  # hidden by a
    assert (score[positive & (sources == "archive/b")] >= by_source).mean() >= 0.9
    assert by_source < by_collection
    # a source with fewer melanomas bounds nothing alone (its collection still counts it)
    assert threshold_within_large_sources(score, positive & (sources == "archive/c"), sources, 0.9) == 1.0


def test_recalibrate_copies_a_finetuned_bundle_with_a_new_operating_point(tmp_path, collections_dataset):
    config = FinetuneConfig(train=[{"path": str(collections_dataset / "Train")}],
                            test={"held_out": {"path": str(collections_dataset / "Test")}},
                            val_fraction=0.5, version="1.0.0")
    _, _, data_info = prepare_data(config, log=lambda line: None)
    original = make_tiny_bundle(tmp_path / "tiny", with_onnx=True)
    metadata = json.loads((original / "metadata.json").read_text())
    metadata["training"] = {**asdict(config), "best_epoch": 1}
    metadata["training_data"] = {**data_info, "ids_file": "training_ids.txt", "ids_count": 48,
                                 "ids_sha256": "0" * 64}
    (original / "metadata.json").write_text(json.dumps(metadata))

    out = recalibrate(original, tmp_path / "again", "1.0.1", "re-calibrated", log=lambda line: None)
    bundle = load_bundle(out)
    validate_bundle(bundle)  # model files copied unchanged: their hashes still match
    assert bundle.version == "1.0.1" and bundle.metadata["changelog"][-1] == "re-calibrated"
    assert set(bundle.metadata["metrics"]) == {"validation", "held_out"}
    assert bundle.metadata["metrics"]["held_out"]["n"] == 12
    card = (out / "README.md").read_text()
    assert "sensitivity within every image collection and every source of 20+ validation" in card
    assert "Alert tier at melanoma probability" in card and "Review tier at" in card
    assert "validation by source: ham10000/pool sensitivity" in card
    assert json.loads((original / "metadata.json").read_text())["version"] == "test-1"  # untouched

    # evaluate --record adds a row to this bundle's own card (not the seed CNN's)
    result, _ = evaluate(bundle, read_dataset(collections_dataset / "Test"), "held out again")
    record_metrics(bundle, "again", result)
    card = (out / "README.md").read_text()
    assert "Test-time views" in card and "| held out again; dropped 0 training ids" in card


def test_recalibrate_refuses_a_bundle_from_another_trainer(tmp_path):
    with pytest.raises(click.UsageError, match="efficientnet-finetune"):
        recalibrate(make_tiny_bundle(tmp_path / "tiny"), tmp_path / "out", "2", "x")
