"""Success-detection metrics against scikit-learn, and the suggested threshold on constructed labelled scores."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from topreward.offline.calibration import roc_auc, suggest_threshold, threshold_yaml


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_equals_scikit_learn_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(40) < 0.4
    scores = np.round(rng.normal(labels * 0.8, 1.0), 1)  # rounding makes ties
    assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_threshold_maximises_youden_j_as_scikit_learn_roc_does(seed):
    rng = np.random.default_rng(100 + seed)
    labels = rng.random(30) < 0.5
    scores = rng.normal(labels * 1.0, 1.0) - 3.0
    fpr, tpr, cuts = roc_curve(labels, scores, drop_intermediate=False)
    best = int(np.argmax(tpr - fpr))
    choice = suggest_threshold(scores, labels)
    assert choice.youden_j == pytest.approx(tpr[best] - fpr[best])
    assert (choice.tpr, choice.fpr) == pytest.approx((tpr[best], fpr[best]))
    # The threshold classifies the labelled scores exactly as scikit-learn's best cut does.
    np.testing.assert_array_equal(scores >= choice.threshold, scores >= cuts[best])


def test_threshold_on_separable_scores_lies_between_the_classes():
    failures = [-9.0, -8.0, -7.5]
    successes = [-3.0, -2.0, -1.0]
    choice = suggest_threshold(failures + successes, [False] * 3 + [True] * 3)
    assert choice.threshold == pytest.approx((-7.5 + -3.0) / 2)  # midway between the closest pair
    assert (choice.tpr, choice.fpr, choice.youden_j) == (1.0, 0.0, 1.0)


def test_threshold_with_overlap_trades_one_false_positive():
    # A success at -6 below a failure at -5: J = 1 - 1/3 at the cut -6 beats J = 2/3 at -4.
    scores = [-9.0, -8.0, -5.0, -6.0, -4.0, -1.0]
    labels = [False, False, False, True, True, True]
    choice = suggest_threshold(scores, labels)
    assert choice.threshold == pytest.approx(-7.0)
    assert (choice.tpr, choice.fpr) == pytest.approx((1.0, 1 / 3))


def test_threshold_yaml_is_a_ros_params_file():
    import yaml

    text = threshold_yaml(suggest_threshold([-3.0, -1.0], [False, True]), "tiny-random", 2)
    params = yaml.safe_load(text)["/**"]["ros__parameters"]
    assert params == {"success_metric": "log_prob_true", "success_threshold": -2.0}


def test_needs_both_classes():
    with pytest.raises(ValueError):
        roc_auc([1.0, 2.0], [True, True])
    with pytest.raises(ValueError):
        suggest_threshold([1.0, 2.0], [False, False])
