"""Several episodes (robots) on one model: their new prefixes scored in one batched forward pass.

Each robot keeps its own StreamingScorer (instruction, schedule, frame size, KV cache) on a shared backend.
score_batch leaves every scorer exactly as its own score(n) would: the same cache of complete pairs, pair
ends and work counters, and the same values within float rounding. The batched pass runs on a stacked
copy of the caches, and each scorer's cache is replaced only once the pass has succeeded, so a failure
leaves every scorer able to score alone (the caller's fallback).
"""
from __future__ import annotations

from collections.abc import Sequence

from topreward.model.backend import BatchRow
from topreward.scoring.scorer import StreamingScorer, check_finite
from topreward.types import PrefixScore


def _check_requests(scorers: list[StreamingScorer]) -> None:
    if len({id(s) for s in scorers}) != len(scorers):
        raise ValueError("the same scorer appears twice in one batch: score its prefixes one after the other")
    backend = scorers[0].backend
    if any(s.backend is not backend for s in scorers):
        raise ValueError("a batch needs scorers that share one backend (one model)")


def score_batch(requests: Sequence[tuple[StreamingScorer, int | None]]) -> list[PrefixScore]:
    """The values of each (scorer, num_frames) request, in order; num_frames None is all sampled frames.

    One request is scorer.score(num_frames). Raises ValueError for a scorer given twice, scorers on
    different backends or a prefix a scorer has not sampled, before any cache changes; an exception from
    the batched pass propagates with every cache as it was before the pass.
    """
    requests = list(requests)
    if not requests:
        return []
    scorers = [scorer for scorer, _ in requests]
    _check_requests(scorers)
    if len(requests) == 1:
        scorer, num_frames = requests[0]
        return [scorer.score(num_frames)]
    lengths = [scorer.prefix_length(num_frames) for scorer, num_frames in requests]  # all checked before any change
    chunks = [scorer.prepare(n) for scorer, n in zip(scorers, lengths, strict=True)]
    backend = scorers[0].backend
    rows = []
    for scorer, chunk in zip(scorers, chunks, strict=True):
        pixels, grid = backend.encode_pairs(chunk.frames) if chunk.frames else (None, None)
        # Pads sit right before the question: after the pairs the cache keeps, before the logits read.
        rows.append(BatchRow(ids=chunk.ids, start=chunk.start, cache=scorer.cache, pixels=pixels, grid=grid,
                             pad_at=chunk.question_at, keep=chunk.keep))
    outputs = backend.forward_batch(rows, logits_to_keep=2)
    # Every scorer takes its row before any value is refused: a NaN in one row leaves the others' caches sound.
    scores = [scorer.finish(chunk, out.logits, out.positions, out.cache)
              for scorer, chunk, out in zip(scorers, chunks, outputs, strict=True)]
    return [check_finite(score) for score in scores]
