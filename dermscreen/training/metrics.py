"""Screening metrics from class probabilities, computed with scikit-learn.

``screening_metrics(probabilities, labels, classes, threshold)`` returns the numbers every report
uses: accuracy and balanced accuracy of the arg-max class, melanoma AUC, and melanoma
sensitivity and specificity when an image is flagged at ``probability >= threshold``.
``ece`` is the top-label expected calibration error (15 equal-width confidence bins);
``melanoma_ece`` the same for the melanoma probability alone. ``ci95`` holds 95% confidence
intervals (``confidence_intervals``): a test set of 117 melanomas measures sensitivity to
about +-0.08, and a report that hides that invites reading noise as progress.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest, bootstrap, rankdata
from sklearn.metrics import (
    accuracy_score, balanced_accuracy_score, confusion_matrix, recall_score, roc_auc_score,
)

from dermscreen.bundle import MELANOMA

ECE_BINS = 15
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000


def calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: bin-size-weighted |accuracy - mean confidence| per bin."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    if len(confidence) == 0:
        return float("nan")
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    total = 0.0
    for b in np.unique(which):
        members = which == b
        total += members.sum() * abs(correct[members].mean() - confidence[members].mean())
    return float(total / len(confidence))


def calibration_errors(probabilities: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict:
    """``ece`` of the arg-max class's probability and ``melanoma_ece`` of the melanoma one."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    melanoma = classes.index(MELANOMA)
    return {"ece": calibration_error(probabilities.max(axis=1), probabilities.argmax(axis=1) == labels),
            "melanoma_ece": calibration_error(probabilities[:, melanoma], labels == melanoma)}


def screening_metrics(probabilities: np.ndarray, labels: np.ndarray, classes: list[str],
                      threshold: float) -> dict:
    """Metrics of ``probabilities`` (n x classes) against integer ``labels`` (n)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    melanoma = classes.index(MELANOMA)
    predicted = probabilities.argmax(axis=1)
    is_melanoma = labels == melanoma
    scores = probabilities[:, melanoma]
    flagged = scores >= threshold
    both_present = 0 < is_melanoma.sum() < len(labels)
    return {
        "n": int(len(labels)),
        "melanomas": int(is_melanoma.sum()),
        "accuracy": float(accuracy_score(labels, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(labels, predicted)),
        "melanoma_auc": float(roc_auc_score(is_melanoma, scores)) if both_present else None,
        "threshold": float(threshold),
        "sensitivity": float(recall_score(is_melanoma, flagged, pos_label=True, zero_division=np.nan)),
        "specificity": float(recall_score(is_melanoma, flagged, pos_label=False, zero_division=np.nan)),
        "flagged": int(flagged.sum()),
        "missed_melanomas": int((is_melanoma & ~flagged).sum()),
        **calibration_errors(probabilities, labels, classes),
        "confusion_matrix": confusion_matrix(labels, predicted, labels=range(len(classes))).tolist(),
        "ci95": confidence_intervals(scores[is_melanoma], scores[~is_melanoma], threshold),
    }


def confidence_intervals(melanoma_scores: np.ndarray, other_scores: np.ndarray, threshold: float,
                         seed: int = 0) -> dict:
    """95% intervals of the melanoma AUC (percentile bootstrap, melanomas and other images
    resampled apart so that each resample keeps both), and of sensitivity and specificity at
    ``threshold`` (Wilson score intervals); None where a group is empty. Images count as
    independent: where one lesion has several images, the true intervals are wider (the
    project's test sets and validation fold hold almost one image per group; see
    docs/default_model.md)."""
    out = {"melanoma_auc": None}
    if len(melanoma_scores) and len(other_scores):
        result = bootstrap((melanoma_scores, other_scores), ranked_auc, confidence_level=CONFIDENCE,
                           n_resamples=BOOTSTRAP_RESAMPLES, method="percentile",
                           rng=np.random.default_rng(seed))
        out["melanoma_auc"] = [float(result.confidence_interval.low),
                               float(result.confidence_interval.high)]
    out["sensitivity"] = proportion_interval(int((melanoma_scores >= threshold).sum()), len(melanoma_scores))
    out["specificity"] = proportion_interval(int((other_scores < threshold).sum()), len(other_scores))
    return out


def auc_difference_interval(melanoma_scores: tuple[np.ndarray, np.ndarray],
                            other_scores: tuple[np.ndarray, np.ndarray], seed: int = 0) -> list[float]:
    """The 95% interval of AUC(model a) - AUC(model b) on the same images (percentile bootstrap:
    each resample draws melanomas and other images apart and scores both models on it, so that
    what the images share cancels out). ``melanoma_scores`` and ``other_scores`` hold the two
    models' scores, a's then b's, in the same image order."""
    (melanoma_a, melanoma_b), (other_a, other_b) = melanoma_scores, other_scores

    def difference(melanomas, others, axis=-1):  # resampled indices, one row each; scipy passes axis
        return (ranked_auc(melanoma_a[melanomas], other_a[others])
                - ranked_auc(melanoma_b[melanomas], other_b[others]))

    result = bootstrap((np.arange(len(melanoma_a)), np.arange(len(other_a))), difference,
                       confidence_level=CONFIDENCE, n_resamples=BOOTSTRAP_RESAMPLES,
                       method="percentile", rng=np.random.default_rng(seed))
    return [float(result.confidence_interval.low), float(result.confidence_interval.high)]


def proportion_interval(hits: int, n: int) -> list[float] | None:
    """The 95% Wilson score interval of ``hits`` out of ``n``; None when ``n`` is 0."""
    if not n:
        return None
    interval = binomtest(hits, n).proportion_ci(CONFIDENCE, "wilson")
    return [float(interval.low), float(interval.high)]


def ranked_auc(melanoma_scores: np.ndarray, other_scores: np.ndarray, axis: int = -1) -> np.ndarray:
    """The AUC of every row (ties count half): the Mann-Whitney statistic over its maximum."""
    both = np.concatenate([melanoma_scores, other_scores], axis=axis)
    ranks = rankdata(both, axis=axis)
    n_melanoma, n_other = melanoma_scores.shape[axis], other_scores.shape[axis]
    rank_sum = np.take(ranks, np.arange(n_melanoma), axis=axis).sum(axis=axis)
    return (rank_sum - n_melanoma * (n_melanoma + 1) / 2) / (n_melanoma * n_other)
