"""Normalization, Eq. 3 and VOC."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from topreward_ros.core.curve import prefix_lengths
from topreward_ros.core.metrics import dense_rewards, minmax_normalize, success_score, value_order_correlation


def test_minmax_normalize():
    np.testing.assert_allclose(minmax_normalize([-3.0, -1.0, -2.0]), [0.0, 1.0, 0.5])


@pytest.mark.parametrize("values", [[-4.2], [-1.5, -1.5, -1.5]])
def test_minmax_single_prefix_and_constant_curve_are_ones(values):
    np.testing.assert_array_equal(minmax_normalize(values), np.ones(len(values)))


def test_dense_reward_hand_computed():
    s = [0.0, 0.5, 0.25, 1.0]
    # tau * exp(s_k - s_{k-1}) with s_{-1} = 0, clipped to [0, delta_max].
    expected = [1.0 * math.exp(0.0), 1.0 * math.exp(0.5), 1.0 * math.exp(-0.25), 1.0 * math.exp(0.75)]
    np.testing.assert_allclose(dense_rewards(s, tau=1.0, delta_max=10.0), expected)
    np.testing.assert_allclose(dense_rewards(s, tau=1.0, delta_max=1.5), [1.0, 1.5, math.exp(-0.25), 1.5])
    np.testing.assert_allclose(dense_rewards(s), [2.0, 2.0, 2.0 * math.exp(-0.25), 2.0])


@pytest.mark.parametrize("seed", range(5))
def test_voc_matches_scipy_spearman(seed):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=15).round(1)  # rounding makes ties
    assert value_order_correlation(values) == pytest.approx(spearmanr(values, np.arange(15)).statistic, abs=1e-12)


def test_voc_extremes_and_undefined():
    assert value_order_correlation([1, 2, 3, 4]) == pytest.approx(1.0)
    assert value_order_correlation([4, 3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(value_order_correlation([2.0]))
    assert math.isnan(value_order_correlation([2.0, 2.0, 2.0]))


def test_success_score_is_mean_of_last_three():
    assert success_score([-9.0, -1.0, -2.0, -3.0]) == pytest.approx(-2.0)
    assert success_score([-5.0]) == -5.0


def test_prefix_lengths_distinct_and_end_at_full_episode():
    assert prefix_lengths(64, 15)[0] == 1 and prefix_lengths(64, 15)[-1] == 64
    assert len(set(prefix_lengths(64, 15))) == 15
    assert prefix_lengths(5, 15) == [1, 2, 3, 4, 5]
    assert prefix_lengths(7, None) == list(range(1, 8))
