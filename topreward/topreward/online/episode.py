"""Causal progress, step reward and success detection for a live episode (no ROS).

Offline, the paper min-max normalizes over the whole episode. Online only the prefixes so far are
known, so progress is the min-max over the prefixes so far of the success metric (raw log p(True), or
p_true), with the upper end never below the success threshold: an episode reaches 1 only once it
looks successful, instead of every new maximum reading as "complete".
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from topreward.scoring.metrics import episode_values, success_score
from topreward.types import PrefixScore, Step, SuccessConfig, SuccessEvent


@dataclass
class OnlineEpisode:
    """Progress and success state of one live episode, updated once per scored prefix."""

    success: SuccessConfig = field(default_factory=SuccessConfig)
    scores: list[PrefixScore] = field(default_factory=list)
    progress: float = 0.0
    consecutive: int = 0
    event: SuccessEvent | None = None

    def _metric(self, score: PrefixScore) -> float:
        return score.log_prob_true if self.success.metric == "log_prob_true" else score.p_true

    def _causal_progress(self, values: list[float]) -> float:
        low, high = min(values), max(max(values), self.success.threshold)
        if high <= low:  # the first value already at or above the threshold
            return 1.0
        return float(np.clip((values[-1] - low) / (high - low), 0.0, 1.0))

    def _advance(self, score: PrefixScore) -> tuple[float, float]:
        """Append a score; returns (causal progress, success score) and updates the consecutive count."""
        self.scores.append(score)
        values = [self._metric(s) for s in self.scores]
        value = success_score(values, self.success.window)
        self.consecutive = self.consecutive + 1 if value >= self.success.threshold else 0
        return self._causal_progress(values), value

    def _step(self, score: PrefixScore, progress: float, value: float) -> Step:
        reward, self.progress = progress - self.progress, progress
        fired = None
        if (self.event is None and self.consecutive >= self.success.consecutive
                and score.elapsed >= self.success.min_episode_duration):
            fired = self.event = SuccessEvent(value, self.success.threshold, self.consecutive, score.elapsed,
                                              score.num_frames)
        return Step(score, progress, reward, fired)

    def update(self, score: PrefixScore) -> Step:
        return self._step(score, *self._advance(score))

    def rebase(self, scores: list[PrefixScore]) -> Step:
        """Replace the history by the same episode's values on a new sampling; the step of the newest one.

        After a max_frames halving the kept frames are what sampling at the halved rate from the start
        gives, and every earlier value saw frames that are gone. Mixing both samplings in the causal
        min-max, the success window and the consecutive count would compare values of two different
        videos, so all three are recomputed from `scores` (every prefix of the new sampling, oldest
        first). Only the published progress carries over, so that the reward stays its change. A success
        already reported stays reported: an episode fires at most once.
        """
        if not scores:
            raise ValueError("rebase needs at least one score")
        self.scores, self.consecutive = [], 0
        for score in scores[:-1]:
            self._advance(score)
        return self._step(scores[-1], *self._advance(scores[-1]))

    def record(self, episode_id: int, instruction: str, model: str, tau: float = 2.0, delta_max: float = 2.0) -> dict:
        """The whole curve as one JSON-ready dict: ready for offline relabeling."""
        raw = [s.log_prob_true for s in self.scores]
        normalized, weights = episode_values(raw, tau, delta_max)
        return {
            "episode_id": episode_id, "instruction": instruction, "model": model,
            "time": [s.time for s in self.scores], "elapsed": [s.elapsed for s in self.scores],
            "num_frames": [s.num_frames for s in self.scores],
            "log_prob_true": raw, "log_prob_false": [s.log_prob_false for s in self.scores],
            "normalized": normalized.tolist(), "weights": weights.tolist(),
            "success": None if self.event is None else asdict(self.event),
        }
