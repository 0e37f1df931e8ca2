import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from dermscreen.bundle import softmax
from dermscreen.training.calibration import (
    cross_fitted_ece, fit_temperature, fit_temperature_and_bias, threshold_for_sensitivity,
    threshold_within_every_group,
)
from dermscreen.training.metrics import (
    auc_difference_interval, calibration_error, confidence_intervals, ranked_auc, screening_metrics,
)

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


def test_the_ranked_auc_is_scikit_learns_with_ties_counting_half():
    rng = np.random.default_rng(0)
    melanomas, others = rng.integers(0, 5, 40) / 4, rng.integers(0, 4, 90) / 4  # many ties
    expected = roc_auc_score(np.r_[np.ones(40), np.zeros(90)], np.r_[melanomas, others])
    assert ranked_auc(melanomas, others) == pytest.approx(expected)
    batched = ranked_auc(np.stack([melanomas, melanomas[::-1]]), np.stack([others, others]))
    np.testing.assert_allclose(batched, [expected, expected])  # the AUC of every row


def test_intervals_of_sensitivity_and_specificity_are_wilsons():
    # 8 of 10 melanomas flagged, 45 of 50 others not: Wilson 95% intervals from the literature
    intervals = confidence_intervals(np.r_[np.ones(8), np.zeros(2)], np.r_[np.zeros(45), np.ones(5)],
                                     threshold=0.5)
    np.testing.assert_allclose(intervals["sensitivity"], [0.4902, 0.9433], atol=5e-4)
    np.testing.assert_allclose(intervals["specificity"], [0.7864, 0.9565], atol=5e-4)
    assert confidence_intervals(np.array([]), np.ones(3), 0.5)["melanoma_auc"] is None


def test_auc_intervals_cover_the_true_auc_about_95_percent_of_the_time():
    # scores N(1, 1) against N(0, 1): the true AUC is Phi(1 / sqrt 2) = 0.760
    rng = np.random.default_rng(1)
    true_auc = norm.cdf(1 / np.sqrt(2))
    covered, widths = 0, []
    for seed in range(60):
        melanomas, others = rng.normal(1, 1, 40), rng.normal(0, 1, 80)
        low, high = confidence_intervals(melanomas, others, 0.5, seed=seed)["melanoma_auc"]
        assert low < ranked_auc(melanomas, others) < high
        covered += low <= true_auc <= high
        widths.append(high - low)
    assert covered >= 51  # 57 expected; 51 of 60 is below 95% coverage by 2.5 standard errors
    assert 0.10 < np.mean(widths) < 0.25  # about 4 standard errors of an AUC on 40 and 80 images


def test_the_difference_of_two_models_aucs_is_measured_on_the_same_images():
    rng = np.random.default_rng(2)
    melanomas, others = rng.normal(1, 1, 60), rng.normal(0, 1, 200)
    assert auc_difference_interval((melanomas, melanomas), (others, others)) == [0.0, 0.0]
    # b: a with a little noise of its own; most of the images' difficulty is shared
    melanomas_b, others_b = melanomas + rng.normal(0, 0.3, 60), others + rng.normal(0, 0.3, 200)
    low, high = auc_difference_interval((melanomas, melanomas_b), (others, others_b))
    difference = ranked_auc(melanomas, others) - ranked_auc(melanomas_b, others_b)
    assert low < difference < high
    single_low, single_high = confidence_intervals(melanomas, others, 0.5)["melanoma_auc"]
    assert high - low < (single_high - single_low) / 2  # unpaired it would be wider than either


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


def test_fit_temperature_and_bias_recovers_a_shifted_prior():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, (6000, 3))
    labels = np.array([rng.choice(3, p=p) for p in softmax(true_logits)])
    shift = np.array([1.5, -0.5, -1.0])  # what balanced sample weights do to a model's priors
    temperature, bias = fit_temperature_and_bias(true_logits * 2.0 + shift, labels)
    assert temperature == pytest.approx(2.0, rel=0.1)
    np.testing.assert_allclose(bias, -(shift - shift.mean()) / temperature, atol=0.15)
    # a temperature alone cannot undo the shift: its fit is worse
    shifted = true_logits * 2.0 + shift
    alone = softmax(shifted, fit_temperature(shifted, labels))
    both = softmax(shifted, temperature, bias)
    nll = lambda p: -np.log(p[np.arange(len(labels)), labels]).mean()  # noqa: E731
    assert nll(both) < nll(alone) - 0.01


def test_cross_fitted_ece_is_small_for_a_calibrated_model_and_large_for_a_broken_one():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, (4000, 3))
    labels = np.array([rng.choice(3, p=p) for p in softmax(logits)])
    half = rng.random(4000) < 0.5
    assert cross_fitted_ece(logits, labels, half) < 0.03
    # Halves that disagree (labels drawn from another model in one half) cannot be fixed by a
    # calibration fitted on the other half.
    flipped = labels.copy()
    flipped[half] = (labels[half] + 1) % 3
    assert cross_fitted_ece(logits, flipped, half) > 0.2


def test_threshold_within_every_group_keeps_the_target_in_the_weaker_group():
    # group a: melanomas score high; group b: its melanomas score lower
    scores = np.array([0.9, 0.85, 0.8, 0.75, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    positive = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0], dtype=bool)
    groups = np.array(["a"] * 5 + ["b"] * 7)
    threshold = threshold_within_every_group(scores, positive, groups, 0.8)
    for group in "ab":
        mine = (groups == group) & positive
        assert (scores[mine] >= threshold).mean() >= 0.8
    assert threshold == pytest.approx(0.3)  # b needs 4 of its 5 melanomas: 0.6, 0.5, 0.4, 0.3
    assert threshold < threshold_for_sensitivity(scores, positive, 0.8)  # the pooled one is higher
