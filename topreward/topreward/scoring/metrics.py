"""Per-episode normalization, the paper's dense reward (Eq. 3) and value-order correlation."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def minmax_normalize(values: Sequence[float]) -> np.ndarray:
    """s_k = (r_k - min r) / (max r - min r), the paper's per-episode normalization.

    Needs the whole episode, so it is an offline quantity. As in the reference code, a constant
    curve (including a single prefix) maps to all ones.
    """
    r = np.asarray(values, dtype=np.float64)
    if r.size == 0:
        return r
    span = r.max() - r.min()
    if span == 0:
        return np.ones_like(r)
    return (r - r.min()) / span


def dense_rewards(normalized: Sequence[float], tau: float = 2.0, delta_max: float = 2.0) -> np.ndarray:
    """delta_k = clip(tau * exp(s_k - s_{k-1}), 0, delta_max) (paper Eq. 3), with s_{-1} = 0."""
    s = np.asarray(normalized, dtype=np.float64)
    previous = np.concatenate([[0.0], s[:-1]])
    return np.clip(tau * np.exp(s - previous), 0.0, delta_max)


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks starting at 1, ties get the mean of the ranks they span."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def episode_values(log_prob_true: Sequence[float], tau: float = 2.0,
                   delta_max: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """The paper's values of a whole episode: min-max normalized progress and its Eq. 3 dense rewards."""
    normalized = minmax_normalize(log_prob_true)
    return normalized, dense_rewards(normalized, tau, delta_max)


def value_order_correlation(values: Sequence[float]) -> float:
    """VOC: Spearman rank correlation between values and their time order, in [-1, 1].

    NaN when it is undefined: fewer than two values, or all values equal.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2 or np.all(v == v[0]):
        return math.nan
    a = ranks(v) - (v.size + 1) / 2.0
    b = np.arange(1, v.size + 1, dtype=np.float64) - (v.size + 1) / 2.0
    return float(np.dot(a, b) / math.sqrt(np.dot(a, a) * np.dot(b, b)))


def success_score(log_prob_true: Sequence[float], last: int = 3) -> float:
    """The paper's success score: mean raw log p(True) over the last `last` scored prefixes."""
    r = list(log_prob_true)[-last:]
    if not r:
        raise ValueError("no scored prefix yet")
    return float(np.mean(r))
