"""Offline curves: TOPReward values of episodes at K prefixes each, normalized, with VOC and rewards."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from topreward.scoring.metrics import episode_values, success_score, value_order_correlation
from topreward.scoring.packed import score_prefixes
from topreward.scoring.scorer import StreamingScorer
from topreward.types import PrefixScore


@dataclass
class Curve:
    """One episode's scored prefixes: the JSON of `topreward score --out` and one line of `curves.jsonl`.

    One schema whichever command wrote it; the fields after `delta_max` say where the episode came from
    and how it was scored, and are left at their defaults where that does not apply.
    """

    model: str
    instruction: str
    sample_fps: float  # rate actually sampled (lower than requested if max_frames halved it)
    frame_times: list[float]  # [s] since the first frame, every sampled frame
    prefix_lengths: list[int]  # sampled frames in each scored prefix
    prefix_times: list[float]  # [s] since the first frame, newest frame of each prefix
    log_prob_true: list[float]
    log_prob_false: list[float]
    p_true: list[float]
    normalized: list[float]
    reward: list[float]
    voc: float
    tau: float
    delta_max: float
    success_score: float | None = None  # the paper's: mean raw log p(True) of the last 3 prefixes
    key: str | None = None  # the episode within its source (the resume key of `topreward eval`)
    episode_id: int | str | None = None  # the dataset's episode index where there is one
    source: str | None = None  # file (and offset or topic) the frames came from
    success: bool | None = None  # the recorded label, None when unknown
    settings: dict = field(default_factory=dict)  # scoring settings: prompt, frame size, fps asked, ...
    # --static-check: the same prefix lengths of a video of the first sampled frame repeated (length bias).
    static_log_prob_true: list[float] | None = None
    static_normalized: list[float] | None = None
    static_voc: float | None = None
    detected: bool | None = None  # node records: whether the node reported success online; None offline

    def to_json(self) -> dict:
        d = asdict(self)
        for name in ("voc", "static_voc"):  # JSON has no NaN
            if d[name] is not None and np.isnan(d[name]):
                d[name] = None
        return d

    @classmethod
    def from_json(cls, data: dict) -> Curve:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if values.get("voc") is None:
            values["voc"] = math.nan
        return cls(**values)


def prefix_lengths(num_frames: int, count: int | None = 15) -> list[int]:
    """`count` prefix lengths spread evenly over the sampled frames, distinct, ending at the full episode.

    None or 0 scores every sampled frame. Prefixes are defined over sampled frames, so no two see the
    same video (the reference spreads them over raw camera frames, where several can coincide).
    """
    if num_frames < 1:
        raise ValueError("no sampled frames")
    if not count or count >= num_frames:
        return list(range(1, num_frames + 1))
    if count == 1:
        return [num_frames]
    return sorted({int(round(x)) for x in np.linspace(1, num_frames, count)})


def score_curves(requests: Sequence[tuple[StreamingScorer, Sequence[int]]], tau: float = 2.0,
                 delta_max: float = 2.0, on_prefix: Callable[[int, int], None] | None = None,
                 max_tokens: int | None = None) -> list[Curve]:
    """The curves of the given prefixes of each scorer's frames (appended already), in that order.

    Packed passes (scoring/packed.py) with at most `max_tokens` tokens each (None: the device's default) where the
    model runs sdpa attention; with `max_tokens` 0, or flash attention or eager, one cached pass per prefix.
    `on_prefix(request, n)` hears each prefix once it is scored.
    """
    requests = [(scorer, list(lengths)) for scorer, lengths in requests]
    if not requests:
        return []
    if max_tokens != 0 and requests[0][0].backend.packs:
        scores = score_prefixes(requests, max_tokens, on_prefix)
    else:
        scores = []
        for k, (scorer, lengths) in enumerate(requests):
            scores.append([])
            for n in lengths:
                scores[-1].append(scorer.score(n))
                if on_prefix is not None:
                    on_prefix(k, n)
    return [_curve(scorer, values, tau, delta_max) for (scorer, _), values in zip(requests, scores, strict=True)]


def score_curve(scorer: StreamingScorer, lengths: Iterable[int], tau: float = 2.0, delta_max: float = 2.0,
                on_prefix: Callable[[int], None] | None = None, max_tokens: int | None = None) -> Curve:
    """Score the given prefixes of the frames already appended to `scorer`: score_curves for one episode."""
    heard = None if on_prefix is None else (lambda request, n: on_prefix(n))
    return score_curves([(scorer, list(lengths))], tau, delta_max, heard, max_tokens)[0]


def _curve(scorer: StreamingScorer, scores: list[PrefixScore], tau: float, delta_max: float) -> Curve:
    raw = [s.log_prob_true for s in scores]
    normalized, reward = episode_values(raw, tau, delta_max)
    schedule = scorer.schedule
    return Curve(
        model=scorer.backend.name, instruction=scorer.instruction,
        sample_fps=1.0 / schedule.interval, frame_times=schedule.relative_times(),
        prefix_lengths=[s.num_frames for s in scores], prefix_times=[s.elapsed for s in scores],
        log_prob_true=raw, log_prob_false=[s.log_prob_false for s in scores], p_true=[s.p_true for s in scores],
        normalized=normalized.tolist(), reward=reward.tolist(), voc=value_order_correlation(raw), tau=tau,
        delta_max=delta_max, success_score=success_score(raw),
    )
