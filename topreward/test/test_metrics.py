"""Normalization, Eq. 3 and VOC."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from topreward.scoring.curve import prefix_lengths
from topreward.scoring.metrics import dense_rewards, minmax_normalize, success_score, value_order_correlation


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
    assert prefix_lengths(9, 1) == [9]  # one prefix: the whole episode


def test_causal_progress_on_p_true_is_capped_by_the_threshold():
    from topreward.online.episode import OnlineEpisode
    from topreward.types import PrefixScore, SuccessConfig

    episode = OnlineEpisode(SuccessConfig(threshold=0.8, metric="p_true", consecutive=1, min_episode_duration=0))
    steps = []
    for k, (lt, lf) in enumerate([(-5.0, -0.01), (-4.0, -0.02), (-6.0, -0.01), (-0.01, -5.0)]):
        steps.append(episode.update(PrefixScore(k + 1, float(k), float(k), lt, lf)))
    assert steps[0].progress == 0.0 and steps[1].progress < 0.05  # failing so far: far from 1
    assert steps[-1].progress == 1.0  # p_true 0.993 >= 0.8
    # The success score is the mean p_true of the last 3 prefixes: (0.0025 + 0.0025 + 0.993) / 3 < 0.8.
    assert all(s.success is None for s in steps)


def test_causal_progress_on_log_prob_true():
    from topreward.online.episode import OnlineEpisode
    from topreward.types import PrefixScore, SuccessConfig

    episode = OnlineEpisode(SuccessConfig(threshold=-1.0, consecutive=2, min_episode_duration=1.0))
    values = [-5.0, -3.0, -4.0, -0.5, -0.2, -0.1]
    steps = [episode.update(PrefixScore(k + 1, k * 0.5, k * 0.5, v, -1.0)) for k, v in enumerate(values)]
    # min-max over the values so far, the top never below the threshold: -3 is (−3+5)/(−1+5) = 0.5
    assert [round(s.progress, 3) for s in steps[:3]] == [0.0, 0.5, 0.25]
    assert steps[3].progress == 1.0
    assert sum(s.reward for s in steps) == pytest.approx(steps[-1].progress)
    # mean of the last 3: -2.5 (k=3), -1.567 (k=4), -0.267 (k=5): 1st at or above -1 at k=5; needs 2 in a row
    fired = [k for k, s in enumerate(steps) if s.success is not None]
    assert fired == [] and episode.consecutive == 1
