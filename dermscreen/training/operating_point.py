"""A bundle's operating point, fitted on validation images through the bundle's own image path:
its test-time views, its calibration (temperature and class biases) and its two tiers.

``calibrate_bundle(path, validation, target_sensitivity)`` does all three and writes them into
the bundle's metadata, with the validation curve the admin pages draw (``operating_curve``):

1. views: the mean logits of the four flips (``bundle.VIEWS``) are kept if they raise the mean of
   the melanoma AUCs within each image collection over the plain view;
2. temperature and class biases by validation NLL (``calibration.fit_temperature_and_bias``),
   with the expected calibration error also cross-fitted between two grouped halves;
3. the tiers (``tier_thresholds``): the *alert* threshold (notifies dermatologists) is the lowest
   that keeps ``ALERT_SPECIFICITY`` within every collection and every source, so that no image
   pipeline is flooded; the *review* threshold (listed, no notification) is the highest that
   keeps ``target_sensitivity`` within every collection (``datasets.acquisition``: HAM10000
   crops, ISIC archive frames) and within every source inside a collection
   (``datasets.sources_within_collections``) that holds ``MIN_SOURCE_MELANOMAS`` validation
   melanomas: a source is an image pipeline (isic9's 180-px copies and isic2017's 256-px
   frames are both archive frames), and a hospital's scanner is another.

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
    cross_fitted_ece, fit_temperature_and_bias, specificity_threshold_within_every_group,
    threshold_within_every_group,
)
from dermscreen.training.datasets import CLASSES, acquisition, sources_within_collections
from dermscreen.training.metrics import calibration_errors, proportion_interval, screening_metrics
from dermscreen.training.splits import grouped_split

MELANOMA_INDEX = CLASSES.index(MELANOMA)
# At a 90% target, the fewest melanomas at which the threshold may miss two.
MIN_SOURCE_MELANOMAS = 20
# The alert tier's specificity on validation, within every collection and every source.
ALERT_SPECIFICITY = 0.80
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


def tier_point(score: np.ndarray, positive: np.ndarray, threshold: float) -> dict:
    """Sensitivity, specificity and the share of images at or above ``threshold``, with 95%
    Wilson intervals."""
    hits, n_melanomas = int((score[positive] >= threshold).sum()), int(positive.sum())
    passes, n_others = int((score[~positive] < threshold).sum()), int((~positive).sum())
    flagged = int((score >= threshold).sum())
    return {"threshold": float(threshold), "n": len(score), "melanomas": n_melanomas,
            "sensitivity": hits / n_melanomas if n_melanomas else None,
            "specificity": passes / n_others if n_others else None,
            "share": flagged / len(score) if len(score) else None,
            "ci95": {"sensitivity": proportion_interval(hits, n_melanomas),
                     "specificity": proportion_interval(passes, n_others),
                     "share": proportion_interval(flagged, len(score))}}


def operating_curve(score: np.ndarray, positive: np.ndarray, points: int = 160) -> list[dict]:
    """The validation curve a hospital chooses its alert threshold from: sensitivity,
    specificity and share of images alerted at thresholds spread evenly over the images'
    ranks (every ``len/points``-th score), by rising threshold."""
    thresholds = np.unique(np.quantile(score, np.linspace(0.0, 1.0, points)))
    return [{"threshold": float(t),
             "sensitivity": float((score[positive] >= t).mean()) if positive.any() else None,
             "specificity": float((score[~positive] < t).mean()) if (~positive).any() else None,
             "alert_share": float((score >= t).mean())} for t in thresholds]


def tier_thresholds(score: np.ndarray, positive: np.ndarray, collections: np.ndarray,
                    sources: np.ndarray, target_sensitivity: float,
                    alert_specificity: float) -> tuple[float, float]:
    """(alert, review) thresholds on validation scores: the alert threshold is the lowest with
    ``alert_specificity`` within every collection and every source; the review threshold the
    highest with ``target_sensitivity`` within every collection and every source of
    ``MIN_SOURCE_MELANOMAS`` melanomas."""
    groups = np.concatenate([collections, sources])
    alert = specificity_threshold_within_every_group(np.tile(score, 2), np.tile(positive, 2),
                                                     groups, alert_specificity)
    review = min(threshold_within_every_group(score, positive, collections, target_sensitivity),
                 threshold_within_large_sources(score, positive, sources, target_sensitivity))
    return alert, review


def calibrate_bundle(path, validation: pd.DataFrame, target_sensitivity: float,
                     alert_specificity: float = ALERT_SPECIFICITY, log=print) -> dict:
    """Fit views, calibration and the two tiers' thresholds on the ``validation`` table (with
    ``path``, ``label``, ``image_id``, ``source`` and ``group``), write them and the validation
    curve into the bundle at ``path`` and return the validation metrics (also stored as its
    ``metrics.validation``)."""
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
    alert, review = tier_thresholds(score, positive, collections, sources, target_sensitivity,
                                    alert_specificity)
    half = grouped_split(validation, validation["group"], 0.5, seed=0) == "val"
    metrics = {
        **calibrated_metrics(logits, labels, temperature, bias, alert,
                             f"validation fold: {validation['source'].value_counts().to_dict()}"),
        "ece_cross_fitted": cross_fitted_ece(logits, labels, half),
        "tiers": {"alert": tier_point(score, positive, alert),
                  "review": tier_point(score, positive, review)},
        "by_collection": group_operating_points(score, positive, collections, alert),
        "by_source": group_operating_points(score, positive, sources, alert),
        "review_by_source": group_operating_points(score, positive, sources, review),
        "melanoma_auc_by_views": aucs,
        # the score that ships: calibration's class biases re-rank images, so its AUCs differ
        "melanoma_auc_calibrated": collection_aucs(logits / temperature + bias, labels, collections),
    }
    metadata = bundle.metadata
    metadata["output"].update(views=views, temperature=temperature, class_bias=bias.tolist(),
                              alert_threshold=alert, review_threshold=review)
    metadata["operating_curve"] = {
        "data": f"validation fold: {len(score)} images, {int(positive.sum())} melanomas",
        "points": operating_curve(score, positive)}
    metadata.setdefault("metrics", {})["validation"] = metrics
    write_metadata(path, metadata)
    means = {name: aucs[name]["within_collection_mean"] for name in candidates}
    tiers = metrics["tiers"]
    log(f"views {views} (validation within-collection AUC mean: plain {means['identity']:.4f},"
        f" flips {means['flips']:.4f});"
        f" temperature {temperature:.3f}, class biases {np.round(bias, 3).tolist()};"
        f" alert {alert:.4f} (sensitivity {tiers['alert']['sensitivity']:.3f}, specificity"
        f" {tiers['alert']['specificity']:.3f}, share {tiers['alert']['share']:.3f});"
        f" review {review:.4f} (sensitivity {tiers['review']['sensitivity']:.3f}, specificity"
        f" {tiers['review']['specificity']:.3f}, share {tiers['review']['share']:.3f});"
        f" ECE {metrics['ece_uncalibrated']:.4f} -> {metrics['ece']:.4f}"
        f" (cross-fitted {metrics['ece_cross_fitted']:.4f}); by source {metrics['by_source']}")
    return metrics


def tier_lines(out: dict, validation: dict, target_sensitivity: float) -> list[str]:
    """Model card lines for the tiers' thresholds and what they give on validation."""
    tiers = validation.get("tiers")
    if not tiers:  # bundles before the two tiers: one threshold, fitted for sensitivity
        return [f"- Alert threshold {out['alert_threshold']:.4f} on the calibrated melanoma"
                f" probability: the highest with >= {target_sensitivity:.0%} melanoma sensitivity"
                " on validation within every image collection."]
    rules = {"alert": f"the lowest with >= {ALERT_SPECIFICITY:.0%} specificity within every image"
                      " collection and every source; notifies dermatologists",
             "review": f"the highest with >= {target_sensitivity:.0%} sensitivity within every"
                       f" image collection and every source of {MIN_SOURCE_MELANOMAS}+ validation"
                       " melanomas; listed for review, no notification"}
    return [f"- {name.capitalize()} tier at melanoma probability >= {point['threshold']:.4f} ({rules[name]}):"
            f" validation sensitivity {fmt(point['sensitivity'], point['ci95']['sensitivity'])},"
            f" specificity {fmt(point['specificity'], point['ci95']['specificity'])}, share of"
            f" images {fmt(point['share'], point['ci95']['share'])}." for name, point in tiers.items()]


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
        *tier_lines(out, validation, target_sensitivity),
    ]
    for key, what in (("by_collection", "image collection"), ("by_source", "source")):
        if validation.get(key):
            lines.append(f"- At the alert threshold, validation by {what}: " + "; ".join(
                f"{name} sensitivity {fmt(p['sensitivity'], p.get('ci95', {}).get('sensitivity'))},"
                f" specificity {fmt(p['specificity'], p.get('ci95', {}).get('specificity'))}"
                f" ({p['melanomas']} melanomas, {p['others']} others)" for name, p in validation[key].items()) + ".")
    return lines
