"""Feature cache of the frozen backbone bottom, and the fine-tuning pieces built on it."""

from __future__ import annotations

from dataclasses import asdict

import click
import numpy as np
import pandas as pd
import pytest

from dermscreen.bundle import to_model_input
from dermscreen.heatmap import feature_layer
from dermscreen.training.backbone.efficientnet_lite import copy_weights, efficientnet_lite0
from dermscreen.training.backbone.ensemble import check_split, ensemble_model
from dermscreen.training.backbone.finetune import (
    FinetuneConfig, _weighting_sources, classifier, image_model, load_config, sample_weights, top_model,
)
from dermscreen.training.datasets import CLASSES, acquisition
from dermscreen.training.features import CacheSpec, cache_features, load_cache
from tests.factories import BLUE, RED, lesion_image

SIZE = 32


@pytest.fixture
def backbone_weights(tmp_path):
    path = tmp_path / "lite0.weights.h5"
    efficientnet_lite0((SIZE, SIZE, 3)).save_weights(path)
    return str(path)


@pytest.fixture
def records(tmp_path):
    paths = []
    for index, color in enumerate([RED, BLUE, RED]):
        path = tmp_path / f"img{index}.png"
        lesion_image(color, size=(40, 48), seed=index).save(path)
        paths.append(str(path))
    return pd.DataFrame({"path": paths})


def test_cache_holds_plain_view_first_and_is_reproducible(tmp_path, records, backbone_weights):
    spec = CacheSpec(backbone_weights, size=SIZE, cut=3, views=3, seed=1)
    folder = cache_features(records, spec, tmp_path / "a", batch=2, progress=lambda _: None)
    cached, features = load_cache(folder)
    assert list(cached["path"]) == list(records["path"])
    bottom = efficientnet_lite0((SIZE, SIZE, 3), stop=3)
    copy_weights(_loaded(backbone_weights), bottom)
    assert features.shape == (3, 3, *bottom.output.shape[1:]) and features.dtype == np.float16
    plain = np.asarray(bottom(np.stack([to_model_input(p, (SIZE, SIZE)) for p in records["path"]])))
    scale = np.abs(plain).max()
    assert np.abs(features[:, 0] - plain).max() < 1e-2 * scale  # float16 storage
    for view in (1, 2):  # augmented views differ from the plain one
        assert np.abs(features[:, view] - plain).mean() > 1e-2 * np.abs(plain).mean()
    again = load_cache(cache_features(records, spec, tmp_path / "b", batch=2, progress=lambda _: None))[1]
    np.testing.assert_array_equal(features[:], again[:])


def test_interrupted_cache_resumes(tmp_path, records, backbone_weights):
    spec = CacheSpec(backbone_weights, size=SIZE, cut=2, views=2, seed=0)
    folder = cache_features(records, spec, tmp_path, batch=2, progress=lambda _: None)
    complete = np.array(load_cache(folder)[1])
    meta_path = folder / "meta.json"
    meta_path.write_text(meta_path.read_text().replace('"done": 3', '"done": 2'))
    with pytest.raises(RuntimeError):
        load_cache(folder)
    messages = []
    cache_features(records, spec, tmp_path, batch=2, progress=messages.append)
    assert len(messages) == 1  # only the last chunk was computed again
    np.testing.assert_array_equal(load_cache(folder)[1], complete)


def _loaded(path):
    model = efficientnet_lite0((SIZE, SIZE, 3))
    model.load_weights(path)
    return model


def test_sample_weights_balance_sources_then_classes():
    labels = np.array([0, 0, 0, 1, 0, 1])
    sources = np.array(["a", "a", "a", "a", "b", "b"])
    weights = sample_weights(labels, sources, "source-then-class")
    assert weights.mean() == pytest.approx(1.0)
    assert weights[labels == 0].sum() == pytest.approx(weights[labels == 1].sum())
    # Within a class, source b's images (fewer) weigh more than source a's.
    assert weights[4] > weights[0] and weights[5] > weights[3]
    plain = sample_weights(labels, sources, "class")
    assert plain[labels == 0].sum() == pytest.approx(plain[labels == 1].sum())
    with pytest.raises(ValueError, match="balance"):
        sample_weights(labels, sources, "sources")


def test_sample_weights_balance_classes_within_each_acquisition():
    labels = np.array([0, 0, 0, 1, 0, 1, 1, 1, 2])
    sources = np.array(["a", "a", "a", "a", "b", "b", "b", "b", "b"])
    weights = sample_weights(labels, sources, "class-within-acquisition")
    assert weights.mean() == pytest.approx(1.0)
    a, b = sources == "a", sources == "b"
    assert weights[a].sum() == pytest.approx(weights[b].sum())
    # The class mix is even inside each acquisition, so the acquisition tells nothing of it.
    assert weights[a & (labels == 0)].sum() == pytest.approx(weights[a & (labels == 1)].sum())
    for label in (0, 1, 2):
        assert weights[b & (labels == label)].sum() == pytest.approx(weights[b].sum() / 3)
    # Two stray images in a collection of their own do not take half of the loss.
    many = np.concatenate([np.zeros(100, int), np.ones(100, int), [0, 0]])
    stray = sample_weights(many, np.array(["a"] * 200 + ["c"] * 2), "class-within-acquisition")
    assert stray[-2:].sum() < 0.2 * stray.sum()  # uncapped: half


def test_class_within_source_weighs_each_source_of_a_collection_apart():
    records = pd.DataFrame({"image_id": ["ISIC_0000139", "ISIC_0000140", "ISIC_0000141", "ISIC_0024306"],
                            "source": ["isic9", "isic9", "isic2017", "isic9"]})
    assert _weighting_sources(records, "class-within-source").tolist() == [
        "isic-archive/isic9", "isic-archive/isic9", "isic-archive/isic2017", "ham10000/isic9"]
    assert _weighting_sources(records, "class-within-acquisition").tolist() == [
        "isic-archive", "isic-archive", "isic-archive", "ham10000"]


def test_acquisition_reads_the_collection_from_isic_ids():
    records = pd.DataFrame({"image_id": ["ISIC_0024306", "ISIC_0034320", "ISIC_0000139",
                                         "ISIC_0034321", "ISIC_0025509(1)", "lesion-7"],
                            "source": ["isic9", "isic9", "isic9", "ham10000", "isic9", "clinic"]})
    assert acquisition(records).tolist() == ["ham10000", "ham10000", "isic-archive",
                                             "isic-archive", "ham10000", "clinic"]


def test_shipped_model_equals_bottom_then_trained_top(backbone_weights):
    config = FinetuneConfig(backbone_weights=backbone_weights, size=SIZE, cut=12, dropout=0.0)
    bottom = efficientnet_lite0((SIZE, SIZE, 3), stop=12)
    copy_weights(_loaded(backbone_weights), bottom)
    top = top_model(config, bottom.output.shape[1:])
    dense = top.get_layer("logits")
    dense.set_weights([np.random.default_rng(0).normal(size=w.shape).astype(np.float32)
                       for w in dense.get_weights()])
    images = np.random.default_rng(1).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    shipped = image_model(config, top)
    np.testing.assert_allclose(np.asarray(shipped(images)), np.asarray(top(bottom(images))),
                               rtol=1e-4, atol=1e-4)
    assert not any(layer.trainable for layer in top.layers if "bn" in layer.name)
    assert classifier(efficientnet_lite0((SIZE, SIZE, 3)), 0.1).output.shape[-1] == 9


@pytest.mark.parametrize("preset", ["efficientnet_lite0.yaml", "efficientnet_lite0_gpu.yaml"])
def test_preset_loads_with_overrides(preset):
    config = load_config(f"dermscreen/training/presets/{preset}", ["epochs=1", "views=2"])
    assert config.epochs == 1 and config.views == 2
    assert {spec.get("split") for spec in config.train} == {None, "train", "val"}
    # The training pool never reads a test split or a Test folder; the test sets are all reported.
    assert all(spec.get("split") != "test" and not spec["path"].endswith("Test") for spec in config.train)
    assert set(config.test) == {"isic2017_test", "isic9_test"}
    assert config.test["isic2017_test"]["split"] == "test"


def _member(backbone_weights, cut, seed):
    """A fine-tuned member as finetune builds it: converted bottom, its own top and classifier."""
    config = FinetuneConfig(backbone_weights=backbone_weights, size=SIZE, cut=cut, dropout=0.0)
    top = top_model(config, efficientnet_lite0((SIZE, SIZE, 3), stop=cut).output.shape[1:])
    rng = np.random.default_rng(seed)
    for layer in top.layers:
        if layer.weights and "bn" not in layer.name:
            layer.set_weights([w + rng.normal(0, 0.05, w.shape).astype(np.float32)
                               for w in layer.get_weights()])
    return image_model(config, top)


def test_ensemble_is_the_mean_of_its_members_logits(backbone_weights):
    members = [_member(backbone_weights, cut, seed) for cut, seed in ((12, 1), (10, 2))]
    model = ensemble_model(members, [12, 10], SIZE)
    images = np.random.default_rng(3).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    expected = np.mean([np.asarray(member(images)) for member in members], axis=0)
    np.testing.assert_allclose(np.asarray(model(images)), expected, rtol=1e-4, atol=1e-4)
    assert feature_layer(model).name == "member_maps"  # Grad-CAM explains the joint map
    other = efficientnet_lite0((SIZE, SIZE, 3))  # another backbone: the bottoms differ
    other.get_layer("stem_conv").set_weights([np.ones_like(w) for w in other.get_layer("stem_conv").get_weights()])
    with pytest.raises(click.UsageError, match="frozen layer"):
        ensemble_model([members[0], classifier(other, 0.0)], [12, 12], SIZE)


def test_ensemble_refuses_members_trained_on_another_split():
    split = FinetuneConfig(train=[{"path": "pool"}], seed=0)
    member = {"name": "m", "version": "1", "training": {**asdict(split), "seed": 1}}
    with pytest.raises(click.UsageError, match="seed"):
        check_split([member], split)
    check_split([{**member, "training": asdict(split)}], split)


def test_validation_row_measures_auc_within_each_collection():
    from dermscreen.training.backbone.finetune import validation_row

    melanoma = CLASSES.index("melanoma")
    labels = np.array([melanoma, 0, melanoma, 0])
    logits = np.zeros((4, len(CLASSES)))
    # Ranked right inside each collection, but the HAM melanoma scores below the archive nevus.
    logits[:, melanoma] = [1.0, 0.0, 3.0, 2.0]
    collections = np.array(["ham10000", "ham10000", "isic-archive", "isic-archive"])
    row = validation_row(logits, labels, np.array(["a"] * 4), collections)
    assert row["val_auc_within_ham10000"] == row["val_auc_within_isic-archive"] == 1.0
    assert row["val_auc_within"] == 1.0
    assert row["val_auc"] == 0.75
