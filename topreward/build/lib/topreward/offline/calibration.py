"""Success detection on labelled episodes: ROC curve, ROC-AUC and the threshold that best separates them.

The score is the paper's success score (mean raw log p(True) of the last 3 prefixes), which is what the
node compares with `success_threshold` when `success_metric` is log_prob_true.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from topreward.scoring.metrics import ranks

CRITERION = "Youden's J (max TPR - FPR)"


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve: the probability that a random success outscores a random failure (ties 1/2).

    The Mann-Whitney U statistic over mid-ranks, the same number as scikit-learn's roc_auc_score.
    """
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, bool)
    positives, negatives = int(y.sum()), int((~y).sum())
    if not positives or not negatives:
        raise ValueError("ROC-AUC needs at least one success and one failure")
    r = ranks(s)
    return float((r[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def roc_points(scores: Sequence[float], labels: Sequence[bool]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, cut) for "success if score >= cut" at every distinct score, highest cut first, from (0, 0)."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, bool)
    cuts = np.unique(s)[::-1]
    tpr = np.array([0.0] + [float((s[y] >= c).mean()) for c in cuts])
    fpr = np.array([0.0] + [float((s[~y] >= c).mean()) for c in cuts])
    return fpr, tpr, np.concatenate([[np.inf], cuts])


@dataclass(frozen=True)
class Threshold:
    """The suggested success_threshold and what it does on the labelled episodes."""

    threshold: float  # success when score >= threshold
    tpr: float  # successes detected
    fpr: float  # failures wrongly called successes
    youden_j: float
    criterion: str = CRITERION


def suggest_threshold(scores: Sequence[float], labels: Sequence[bool]) -> Threshold:
    """The cut with the largest TPR - FPR (the higher cut on ties), placed midway to the next lower score.

    Midway, so that a new episode scoring a little under the lowest accepted success still passes: on
    the labelled episodes it classifies exactly as the cut itself does.
    """
    if not (np.asarray(labels, bool).any() and not np.asarray(labels, bool).all()):
        raise ValueError("a threshold needs at least one success and one failure")
    fpr, tpr, cuts = roc_points(scores, labels)
    j = tpr - fpr
    best = int(np.argmax(j[1:])) + 1  # skip the (0, 0) point: its cut is +inf
    cut = float(cuts[best])
    lower = cuts[best + 1] if best + 1 < len(cuts) else None
    threshold = cut if lower is None else float((cut + lower) / 2.0)
    return Threshold(threshold=threshold, tpr=float(tpr[best]), fpr=float(fpr[best]), youden_j=float(j[best]))


def threshold_yaml(threshold: Threshold, model: str, episodes: int) -> str:
    """A ROS 2 parameters file the node loads with --params-file."""
    return (
        f"# success_threshold calibrated by `topreward eval` on {episodes} labelled episodes with {model}.\n"
        f"# Criterion: {threshold.criterion}; on those episodes TPR {threshold.tpr:.3f}, FPR {threshold.fpr:.3f}.\n"
        "# Success score: mean raw log p(True) of the last 3 prefixes (success_metric log_prob_true).\n"
        "# Use: reward_node --ros-args --params-file config/reward.yaml --params-file threshold.yaml\n"
        "/**:\n"
        "  ros__parameters:\n"
        "    success_metric: \"log_prob_true\"\n"
        f"    success_threshold: {min(threshold.threshold, 0.0):.6f}\n"
    )
