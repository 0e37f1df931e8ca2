"""A bundle's operating point, fitted on validation images through the bundle's own image path:
its test-time views, its calibration (temperature and class biases) and its alert threshold.

``calibrate_bundle(path, validation, target_sensitivity)`` does all three and writes them into
the bundle's metadata:

1. views: the mean logits of the four flips (``bundle.VIEWS``) are kept if they raise the mean of
   the melanoma AUCs within each image collection over the plain view;
2. temperature and class biases by validation NLL (``calibration.fit_temperature_and_bias``),
   with the expected calibration error also cross-fitted between two grouped halves;
3. the highest threshold that keeps ``target_sensitivity`` within every collection
   (``datasets.acquisition``: HAM10000 crops, ISIC archive frames), not only over the mix, and
   within every source inside a collection (``datasets.sources_within_collections``) that holds
   ``MIN_SOURCE_MELANOMAS`` validation melanomas (``threshold_within_large_sources``): a source
   is an image pipeline (isic9's 180-px copies and isic2017's 256-px frames are both archive
   frames), and a hospital's scanner is another.

Within-collection AUCs are the measure that a model's knowledge of which collection an image
comes from cannot raise (the seed set's melanomas are all archive frames, its other classes
mostly HAM10000 crops).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from dermscreen.bundle import MELANOMA, VIEWS, load_bundle, softmax, write_metadata
from dermscreen.measured import fmt
from dermscreen.training.calibration import (
    cross_fitted_ece, fit_temperature_and_bias, threshold_within_every_group,
)
from dermscreen.training.datasets import CLASSES, acquisition, sources_within_collections
from dermscreen.training.metrics import calibration_errors, proportion_interval, screening_metrics
from dermscreen.training.splits import grouped_split

MELANOMA_INDEX = CLASSES.index(MELANOMA)
# At a 90% target, the fewest melanomas at which the threshold may miss two.
MIN_SOURCE_MELANOMAS = 20
CLASS_INDEX = {name: i for i, name in enumerate(CLASSES)}


def melanoma_auc(logits: np.ndarray, labels: np.ndarray) -> float:
    """Melanoma AUC of uncalibrated ``logits`` against integer ``labels``; nan with one class."""
    positive = labels == MELANOMA_INDEX
    if positive.all() or not positive.any():
        return float("nan")
    return float(roc_auc_score(positive, softmax(logits)[:, MELANOMA_INDEX]))


def collection_aucs(logits: np.ndarray, labels: np.ndarray, collections: np.ndarray) -> dict:
    """Melanoma AUC overall (``all``), within each collection that holds both classes, and the
    mean of those (``within_collection_mean``)."""
    out = {"all": melanoma_auc(logits, labels)}
    for name in sorted(set(collections)):
        mine = collections == name
        auc = melanoma_auc(logits[mine], labels[mine])
        if auc == auc:
            out[name] = auc
    within = [out[name] for name in sorted(set(collections)) if name in out]
    out["within_collection_mean"] = float(np.mean(within)) if within else float("nan")
    return out


def threshold_within_large_sources(score: np.ndarray, positive: np.ndarray, sources: np.ndarray,
                                   target: float) -> float:
    """The highest threshold with ``target`` sensitivity within every source that holds at least
    ``MIN_SOURCE_MELANOMAS`` melanomas; 1.0 (no bound) when none does."""
    counts = pd.Series(sources[positive]).value_counts()
    large = np.isin(sources, counts.index[counts >= MIN_SOURCE_MELANOMAS])
    if not large.any():
        return 1.0
    return threshold_within_every_group(score[large], positive[large], sources[large], target)


def group_operating_points(score: np.ndarray, positive: np.ndarray, groups: np.ndarray,
                           threshold: float) -> dict:
    """Melanoma sensitivity and specificity at ``threshold`` within each group (image collection
    or source)."""
    out = {}
    for name in sorted(set(groups)):
        melanomas, others = (groups == name) & positive, (groups == name) & ~positive
        hits, passes = int((score[melanomas] >= threshold).sum()), int((score[others] < threshold).sum())
        n_melanomas, n_others = int(melanomas.sum()), int(others.sum())
        out[name] = {
            "melanomas": n_melanomas, "others": n_others,
            "sensitivity": hits / n_melanomas if n_melanomas else None,
            "specificity": passes / n_others if n_others else None,
            "ci95": {"sensitivity": proportion_interval(hits, n_melanomas),
                     "specificity": proportion_interval(passes, n_others)}}
    return out


def calibrated_metrics(logits, labels, temperature: float, bias, threshold: float, data: str) -> dict:
    """Screening metrics after calibration, with the calibration error before it."""
    calibrated = screening_metrics(softmax(logits, temperature, bias), labels, CLASSES, threshold)
    raw = calibration_errors(softmax(logits), labels, CLASSES)
    return {**calibrated, "ece_uncalibrated": raw["ece"],
            "melanoma_ece_uncalibrated": raw["melanoma_ece"], "data": data}


def view_logits(bundle, paths, batch: int = 64) -> dict[str, np.ndarray]:
    """The model's logits for every view in ``VIEWS`` of the images at ``paths``."""
    paths = list(paths)
    parts = {name: [] for name in VIEWS}
    for start in range(0, len(paths), batch):
        images = bundle.batch(paths[start:start + batch])
        for name, view in VIEWS.items():
            parts[name].append(bundle.model_logits(view(images)))
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def calibrate_bundle(path, validation: pd.DataFrame, target_sensitivity: float, log=print) -> dict:
    """Fit views, calibration and threshold on the ``validation`` table (with ``path``, ``label``,
    ``image_id``, ``source`` and ``group``), write them into the bundle at ``path`` and return
    the validation metrics (also stored as its ``metrics.validation``)."""
    bundle = load_bundle(path, backend="onnx")
    labels = validation["label"].map(CLASS_INDEX).to_numpy()
    collections = acquisition(validation).to_numpy()
    per_view = view_logits(bundle, validation["path"])
    candidates = {"identity": per_view["identity"],
                  "flips": np.mean([per_view[name] for name in VIEWS], axis=0)}
    aucs = {name: collection_aucs(logits, labels, collections) for name, logits in candidates.items()}
    flips = aucs["flips"]["within_collection_mean"] > aucs["identity"]["within_collection_mean"]
    views, logits = (list(VIEWS), candidates["flips"]) if flips else (["identity"], candidates["identity"])
    temperature, bias = fit_temperature_and_bias(logits, labels)
    score = softmax(logits, temperature, bias)[:, MELANOMA_INDEX]
    positive = labels == MELANOMA_INDEX
    sources = sources_within_collections(validation)
    by_collections_alone = threshold_within_every_group(score, positive, collections, target_sensitivity)
    threshold = min(by_collections_alone,
                    threshold_within_large_sources(score, positive, sources, target_sensitivity))
    half = grouped_split(validation, validation["group"], 0.5, seed=0) == "val"
    metrics = {
        **calibrated_metrics(logits, labels, temperature, bias, threshold,
                             f"validation fold: {validation['source'].value_counts().to_dict()}"),
        "ece_cross_fitted": cross_fitted_ece(logits, labels, half),
        "by_collection": group_operating_points(score, positive, collections, threshold),
        "by_source": group_operating_points(score, positive, sources, threshold),
        # the threshold that the collections alone would give, for hospitals that prefer it
        "collections_alone": {"threshold": by_collections_alone, **group_operating_points(
            score, positive, np.full(len(score), "all"), by_collections_alone)["all"]},
        "melanoma_auc_by_views": aucs,
        # the score that ships: calibration's class biases re-rank images, so its AUCs differ
        "melanoma_auc_calibrated": collection_aucs(logits / temperature + bias, labels, collections),
    }
    metadata = bundle.metadata
    metadata["output"].update(views=views, temperature=temperature, class_bias=bias.tolist(),
                              alert_threshold=threshold)
    metadata.setdefault("metrics", {})["validation"] = metrics
    write_metadata(path, metadata)
    means = {name: aucs[name]["within_collection_mean"] for name in candidates}
    log(f"views {views} (validation within-collection AUC mean: plain {means['identity']:.4f},"
        f" flips {means['flips']:.4f});"
        f" temperature {temperature:.3f}, class biases {np.round(bias, 3).tolist()}; threshold"
        f" {threshold:.4f}; ECE {metrics['ece_uncalibrated']:.4f} -> {metrics['ece']:.4f}"
        f" (cross-fitted {metrics['ece_cross_fitted']:.4f}; collections alone {by_collections_alone:.4f});"
        f" by collection {metrics['by_collection']}; by source {metrics['by_source']}")
    return metrics


def calibration_lines(metadata: dict, target_sensitivity: float) -> list[str]:
    """Model card lines: views, calibration, threshold and its operating points per collection."""
    out, validation = metadata["output"], metadata["metrics"]["validation"]
    views = out.get("views", ["identity"])
    means = {name: aucs["within_collection_mean"]
             for name, aucs in validation.get("melanoma_auc_by_views", {}).items()}
    compared = (f" (validation within-collection melanoma AUC: plain {means['identity']:.4f}, mean of"
                f" the flips {means['flips']:.4f})" if means else "")
    shipped = validation.get("melanoma_auc_calibrated")
    lines = [
        f"- Test-time views: {', '.join(views)}; mean logits"
        + (", kept because they scored higher" if len(views) > 1 else "") + compared + ".",
        f"- Calibration: temperature {out['temperature']:.3f} and class biases"
        f" {', '.join(f'{b:+.2f}' for b in out.get('class_bias', [0.0] * len(CLASSES)))} fitted on"
        f" validation NLL; top-label ECE {validation['ece_uncalibrated']:.3f} before,"
        f" {validation['ece']:.3f} after"
        + (f" ({validation['ece_cross_fitted']:.3f} cross-fitted between two halves)."
           if "ece_cross_fitted" in validation else "."),
        *(["- Validation melanoma AUC of the calibrated score, within each collection: "
           + ", ".join(f"{name} {auc:.4f}" for name, auc in shipped.items()
                       if name not in ("all", "within_collection_mean"))
           + f" (mean {shipped['within_collection_mean']:.4f}; all {shipped['all']:.4f})."] if shipped else []),
        f"- Alert threshold {out['alert_threshold']:.4f} on the calibrated melanoma probability: the"
        f" highest with >= {target_sensitivity:.0%} melanoma sensitivity on validation within every"
        " image collection" + (f" and every source within one that holds at least {MIN_SOURCE_MELANOMAS}"
                               " validation melanomas (an image pipeline each)." if "by_source" in validation else "."),
    ]
    for key, what in (("by_collection", "image collection"), ("by_source", "source")):
        if validation.get(key):
            lines.append(f"- At that threshold, validation by {what}: " + "; ".join(
                f"{name} sensitivity {fmt(p['sensitivity'], p.get('ci95', {}).get('sensitivity'))},"
                f" specificity {fmt(p['specificity'], p.get('ci95', {}).get('specificity'))}"
                f" ({p['melanomas']} melanomas, {p['others']} others)" for name, p in validation[key].items()) + ".")
    alone = validation.get("collections_alone")
    if alone and alone["threshold"] != out["alert_threshold"]:
        lines.append(f"- Within the collections alone the threshold would be {alone['threshold']:.4f}"
                     f" (validation sensitivity {fmt(alone['sensitivity'])}, specificity"
                     f" {fmt(alone['specificity'])}): fewer alerts, more missed melanomas on the"
                     " weaker source; a hospital may set it in the admin pages.")
    return lines
