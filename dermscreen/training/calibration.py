"""Calibration on a validation split: temperature, class biases and the melanoma alert threshold.

``dermscreen.bundle`` applies ``softmax(logits / temperature + class_bias)``; the threshold is
compared with the melanoma probability after that scaling, so fit the calibration first::

    temperature, bias = fit_temperature_and_bias(val_logits, val_labels)
    probabilities = softmax(val_logits, temperature, bias)
    threshold = threshold_within_every_group(probabilities[:, melanoma], val_labels == melanoma,
                                             collections, 0.9)

Balanced sample weights shift the model's class priors away from the data's; a temperature
alone cannot move them back, the biases can.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import log_softmax

from dermscreen.bundle import softmax
from dermscreen.training.metrics import calibration_error

TEMPERATURE_BOUNDS = (0.05, 20.0)
BIAS_BOUND = 10.0


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature minimising the validation negative log-likelihood (searched in [0.05, 20])."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)

    def nll(log_t: float) -> float:
        return -log_softmax(logits / np.exp(log_t), axis=1)[np.arange(len(labels)), labels].mean()

    result = minimize_scalar(nll, bounds=np.log(TEMPERATURE_BOUNDS), method="bounded")
    return float(np.exp(result.x))


def fit_temperature_and_bias(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Temperature and one bias per class minimising the validation negative log-likelihood of
    ``softmax(logits / T + b)``; the biases are centred (softmax ignores a common shift)."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    rows = np.arange(len(labels))

    def nll(params: np.ndarray) -> float:
        return -log_softmax(logits / np.exp(params[0]) + params[1:], axis=1)[rows, labels].mean()

    classes = logits.shape[1]
    bounds = [tuple(np.log(TEMPERATURE_BOUNDS))] + [(-BIAS_BOUND, BIAS_BOUND)] * classes
    result = minimize(nll, np.zeros(classes + 1), method="L-BFGS-B", bounds=bounds)
    bias = result.x[1:] - result.x[1:].mean()
    return float(np.exp(result.x[0])), bias


def cross_fitted_ece(logits: np.ndarray, labels: np.ndarray, half: np.ndarray) -> float:
    """Top-label ECE of each half's probabilities under the calibration fitted on the other
    half (``half`` is a boolean mask): the in-sample ECE without the fit's optimism."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    probabilities = np.zeros_like(logits)
    for part in (half, ~half):
        temperature, bias = fit_temperature_and_bias(logits[~part], labels[~part])
        probabilities[part] = softmax(logits[part], temperature, bias)
    return calibration_error(probabilities.max(axis=1), probabilities.argmax(axis=1) == labels)


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


def threshold_for_specificity(scores: np.ndarray, positive: np.ndarray, target: float = 0.8) -> float:
    """The lowest threshold (``score >= threshold`` flags) whose specificity is >= ``target``,
    placed halfway to the next negative's score, so that a rounding difference in a later
    scoring of the same image cannot flag it; 0.5 when there are no negatives."""
    scores = np.asarray(scores, dtype=np.float64)
    negative_scores = np.sort(scores[~np.asarray(positive, dtype=bool)])
    if len(negative_scores) == 0:
        return 0.5
    needed = max(int(np.ceil(target * len(negative_scores))), 1)
    above = negative_scores[needed] if needed < len(negative_scores) else 1.0
    threshold = (negative_scores[needed - 1] + above) / 2
    return float(np.clip(threshold, 1e-6, 1 - 1e-6))


def specificity_threshold_within_every_group(scores: np.ndarray, positive: np.ndarray,
                                             groups: np.ndarray, target: float = 0.8) -> float:
    """The lowest threshold whose specificity is >= ``target`` within every group that has
    negatives: no group (an image collection, a source) gets more than its share of alerts."""
    scores, positive, groups = np.asarray(scores), np.asarray(positive, dtype=bool), np.asarray(groups)
    per_group = [threshold_for_specificity(scores[groups == g], positive[groups == g], target)
                 for g in np.unique(groups[~positive])]
    return max(per_group, default=0.5)


def threshold_within_every_group(scores: np.ndarray, positive: np.ndarray, groups: np.ndarray,
                                 target: float = 0.9) -> float:
    """The highest threshold whose sensitivity is >= ``target`` within every group that has
    positives (e.g. every image collection): a threshold fitted on the mix can fall short in
    the smaller group."""
    scores, positive, groups = np.asarray(scores), np.asarray(positive, dtype=bool), np.asarray(groups)
    per_group = [threshold_for_sensitivity(scores[groups == g], positive[groups == g], target)
                 for g in np.unique(groups[positive])]
    return min(per_group, default=0.5)
