"""Calibration on a validation split: a softmax temperature and the melanoma alert threshold.

``dermscreen.bundle`` applies ``softmax(logits / temperature)``; the threshold is compared with
the melanoma probability after that scaling, so fit the temperature first::

    temperature = fit_temperature(val_logits, val_labels)
    probabilities = softmax(val_logits, temperature)
    threshold = threshold_for_sensitivity(probabilities[:, melanoma], val_labels == melanoma, 0.9)
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature minimising the validation negative log-likelihood (searched in [0.05, 20])."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)

    def nll(log_t: float) -> float:
        return -log_softmax(logits / np.exp(log_t), axis=1)[np.arange(len(labels)), labels].mean()

    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


def threshold_for_sensitivity(scores: np.ndarray, positive: np.ndarray, target: float = 0.9) -> float:
    """The highest threshold (``score >= threshold`` flags) whose sensitivity is >= ``target``.

    Kept strictly inside (0, 1) so that it is a valid bundle threshold; 0.5 when there are no
    positives to choose it from.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive_scores = np.sort(scores[np.asarray(positive, dtype=bool)])[::-1]
    if len(positive_scores) == 0:
        return 0.5
    needed = int(np.ceil(target * len(positive_scores)))
    threshold = positive_scores[max(needed, 1) - 1]
    return float(np.clip(threshold, 1e-6, 1 - 1e-6))
