"""Screening metrics from class probabilities, computed with scikit-learn.

``screening_metrics(probabilities, labels, classes, threshold)`` returns the numbers every report
uses: accuracy and balanced accuracy of the arg-max class, melanoma AUC, and melanoma
sensitivity and specificity when an image is flagged at ``probability >= threshold``.
``ece`` is the top-label expected calibration error (15 equal-width confidence bins);
``melanoma_ece`` the same for the melanoma probability alone.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score, balanced_accuracy_score, confusion_matrix, recall_score, roc_auc_score,
)

from dermscreen.bundle import MELANOMA

ECE_BINS = 15


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
        "ece": calibration_error(probabilities.max(axis=1), predicted == labels),
        "melanoma_ece": calibration_error(scores, is_melanoma),
        "confusion_matrix": confusion_matrix(labels, predicted, labels=range(len(classes))).tolist(),
    }


def fmt(value) -> str:
    """A metric for a report or model card: three decimals, ``n/a`` for None or nan."""
    return "n/a" if value is None or value != value else f"{value:.3f}"
