import numpy as np
import pytest

from dermscreen.bundle import softmax
from dermscreen.training.calibration import fit_temperature, threshold_for_sensitivity
from dermscreen.training.metrics import calibration_error, screening_metrics

CLASSES = ["nevus", "melanoma"]


def two_class(melanoma_scores):
    scores = np.asarray(melanoma_scores, dtype=float)
    return np.stack([1 - scores, scores], axis=1)


def test_screening_metrics_on_known_inputs():
    # melanomas score 0.9, 0.6, 0.3; others 0.7, 0.2, 0.1, 0.05
    probabilities = two_class([0.9, 0.6, 0.3, 0.7, 0.2, 0.1, 0.05])
    labels = np.array([1, 1, 1, 0, 0, 0, 0])
    m = screening_metrics(probabilities, labels, CLASSES, threshold=0.5)
    # pairs (melanoma > other): 0.9 beats 4, 0.6 beats 3, 0.3 beats 3 -> 10 of 12
    assert m["melanoma_auc"] == pytest.approx(10 / 12)
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["missed_melanomas"] == 1 and m["flagged"] == 3
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 3 / 4) / 2)
    assert m["n"] == 7 and m["melanomas"] == 3
    assert m["confusion_matrix"] == [[3, 1], [1, 2]]


def test_calibration_error_of_known_bins():
    # all at confidence 0.8, half right: |0.5 - 0.8| = 0.3
    assert calibration_error(np.full(10, 0.8), np.arange(10) % 2 == 0) == pytest.approx(0.3)
    assert calibration_error(np.full(10, 0.5), np.arange(10) % 2 == 0) == pytest.approx(0.0)


def test_threshold_reaches_target_sensitivity():
    scores = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.01])
    positive = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0], dtype=bool)
    threshold = threshold_for_sensitivity(scores, positive, 0.9)
    assert threshold == pytest.approx(0.2)  # 9 of 10 positives at or above it
    assert (scores[positive] >= threshold).mean() >= 0.9


def test_fit_temperature_recovers_the_scaling():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, (4000, 3))
    labels = np.array([rng.choice(3, p=p) for p in softmax(true_logits)])
    temperature = fit_temperature(true_logits * 3.0, labels)  # over-confident by 3x
    assert temperature == pytest.approx(3.0, rel=0.1)
