"""Many prefixes in few forward passes: every complete frame pair once, then all the questions side by side.

The streaming scorer runs one pass per prefix: its new pairs, an odd last frame's self-pair, the question. Offline
every frame is known before scoring, and a prefix's question depends only on its own prefix, so the work of whole
curves (of one episode or several) can be laid out at once:

    [ pairs of episode A | pairs of B | A's question row for prefix 3 | A's for prefix 8 | B's for prefix 5 | ... ]

A pass is one sequence (batch 1) on top of a KV cache holding the pairs of earlier passes. A boolean mask gives every
token exactly the keys the streaming path shows it: the complete pairs of its own episode that come before it (for a
question row: those of its prefix) and the earlier tokens of its own segment. Each segment carries its own 3-D
rotary positions, so every value equals the streaming one (and full_recompute) within float rounding. The cache is
shared by all rows, never copied per row, and question rows are cropped off it after their pass.

Memory: no pass runs more than `max_tokens` tokens (a single segment longer than that runs alone), and the
episodes whose pairs share a cache fit in `max_tokens` together (one longer episode is scored alone, its pairs in
pieces), so the cache never holds more than max(max_tokens, one episode's pairs).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from topreward.model.packed_attention import segment_keys
from topreward.scoring.scorer import StreamingScorer, check_finite
from topreward.types import PrefixScore

# Tokens per packed pass unless told otherwise: on a CPU, passes of a few thousand tokens already run the matrix
# products at full speed, while the mask's and attention's cost grows with the square of the pass.
DEFAULT_MAX_TOKENS = {"cpu": 4096, "cuda": 16384}


def default_max_tokens(device: torch.device) -> int:
    return DEFAULT_MAX_TOKENS.get(device.type, DEFAULT_MAX_TOKENS["cuda"])


@dataclass
class _Segment:
    """Consecutive tokens of one request in a packed pass: a piece of its complete pairs, or one question row."""

    request: int
    ids: list[int]
    positions: torch.Tensor  # (3, len(ids)): the positions the streaming path gives these tokens
    frames: list[np.ndarray]  # to encode for the segment's video tokens, in pairs
    sees: int  # how many of the request's pair tokens (from its first) the segment's tokens see
    prefix: int | None = None  # a question row: the prefix it scores; None: pairs, kept in the cache

    @property
    def kept(self) -> bool:
        return self.prefix is None


def _segments(index: int, scorer: StreamingScorer, lengths: list[int],
              max_tokens: int) -> tuple[list[_Segment], list[_Segment]]:
    """A request's complete pairs (in pieces of at most `max_tokens`, at pair boundaries) and its question rows."""
    backend = scorer.backend
    height, width = scorer.schedule_config.frame_size
    full = max(lengths) // 2
    ids, pair_ends = scorer.complete_pairs(0, full)
    ends = [0] + pair_ends  # token offset after k complete pairs
    if full:
        positions = backend.chunk_positions(ids, 0, backend.pair_grid(full, height, width))
        starts = [0] + [int(positions[0, end - 1]) + 1 for end in pair_ends]  # every pair ends with a text token
    else:
        starts = [0]
    frames = scorer.schedule.frames
    pieces = []
    first = 0
    while first < full:
        last = first + 1
        while last < full and ends[last + 1] - ends[first] <= max_tokens:
            last += 1
        pieces.append(_Segment(index, ids[ends[first]:ends[last]], positions[:, ends[first]:ends[last]],
                               list(frames[2 * first:2 * last]), sees=ends[first]))
        first = last
    rows = []
    for n in sorted(set(lengths)):
        row, row_frames = scorer.question_row(n)
        grid = backend.pair_grid(1, height, width) if row_frames else None
        rows.append(_Segment(index, row, backend.chunk_positions(row, starts[n // 2], grid), row_frames,
                             sees=ends[n // 2], prefix=n))
    return pieces, rows


def _size(segments: Sequence[_Segment]) -> int:
    return sum(len(s.ids) for s in segments)


def _fill(items: list[_Segment], max_tokens: int) -> list[list[_Segment]]:
    """Consecutive items in passes of at most `max_tokens` tokens (an item longer than that alone)."""
    passes: list[list[_Segment]] = []
    for item in items:
        if passes and _size(passes[-1]) + len(item.ids) <= max_tokens:
            passes[-1].append(item)
        else:
            passes.append([item])
    return passes


class _SharedCache:
    """The KV cache of a group's complete pairs and, per cached token, whose pair token it is (request, offset)."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.kv = backend.new_cache()
        self.request = torch.empty(0, dtype=torch.long)
        self.offset = torch.empty(0, dtype=torch.long)

    def run(self, segments: list[_Segment]) -> torch.Tensor:
        """One packed pass (kept pieces first, then question rows); the logits before each row's answer token."""
        flags = [s.kept for s in segments]
        if flags != sorted(flags, reverse=True):  # the rows are cropped off the cache's end after the pass
            raise ValueError("a packed pass needs its pairs before its question rows")
        kept = _size([s for s in segments if s.kept])
        request = torch.cat([torch.full((len(s.ids),), s.request) for s in segments])
        offset = torch.cat([torch.arange(s.sees, s.sees + len(s.ids)) if s.kept else torch.full((len(s.ids),), -1)
                            for s in segments])
        cached = len(self.request)
        # A segment sees its own request's pair tokens before its `sees` (cached or earlier in the pass), then its
        # own tokens up to each query.
        key_request = torch.cat([self.request, torch.where(offset >= 0, request, -1)])
        key_offset = torch.cat([self.offset, offset])
        layout = []
        begin = 0
        for s in segments:
            seen = torch.nonzero((key_request == s.request) & (key_offset >= 0) & (key_offset < s.sees))[:, 0]
            layout.append(segment_keys(begin, begin + len(s.ids), seen, cached + begin))
            begin += len(s.ids)
        encoded = [self.backend.encode_pairs(s.frames) for s in segments if s.frames]
        pixels = torch.cat([p for p, _ in encoded]) if encoded else None
        grid = torch.cat([g for _, g in encoded]) if encoded else None
        ends = np.cumsum([len(s.ids) for s in segments])
        logits_at = [int(end) - 2 for s, end in zip(segments, ends, strict=True) if not s.kept]
        logits = self.backend.forward_packed([i for s in segments for i in s.ids],
                                             torch.cat([s.positions for s in segments], dim=1), layout, self.kv,
                                             pixels, grid, logits_at)
        rows = len(request) - kept
        if rows:
            self.kv.crop(-rows)  # the question rows leave; the pairs stay (transformers 5 crops by a negative count)
        self.request = torch.cat([self.request, request[:kept]])
        self.offset = torch.cat([self.offset, offset[:kept]])
        return logits


def score_prefixes(requests: Sequence[tuple[StreamingScorer, Sequence[int]]], max_tokens: int | None = None,
                   on_prefix: Callable[[int, int], None] | None = None) -> list[list[PrefixScore]]:
    """The values of each scorer's prefixes (lengths in sampled frames), in packed passes: what score(n) gives each.

    The scorers share one backend and hold their sampled frames; their own KV caches are neither read nor
    changed (their work counters grow). A prefix asked for twice is scored once. `on_prefix(request, n)` hears
    each prefix as its pass ends. Raises ValueError for scorers on different backends, a prefix a scorer has not
    sampled, a `max_tokens` below 1 (None: the device's default) or a backend that cannot pack (flash attention or
    eager: use score() per prefix), before any pass runs; NonFiniteScore for a NaN or infinite value.
    """
    requests = [(scorer, [scorer.prefix_length(n) for n in lengths]) for scorer, lengths in requests]
    if not requests:
        return []
    backend = requests[0][0].backend
    if any(scorer.backend is not backend for scorer, _ in requests):
        raise ValueError("packed scoring needs scorers that share one backend (one model)")
    if not backend.packs:
        raise ValueError("packed scoring needs sdpa attention (with flash attention or eager, score one prefix "
                         "per pass)")
    max_tokens = default_max_tokens(backend.device) if max_tokens is None else max_tokens
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    parts = [_segments(k, scorer, lengths, max_tokens) if lengths else ([], [])
             for k, (scorer, lengths) in enumerate(requests)]
    scores: dict[tuple[int, int], PrefixScore] = {}
    for group in _groups([_size(p) + _size(q) for p, q in parts], max_tokens):
        cache = _SharedCache(backend)
        items = [s for k in group for s in parts[k][0]] + [s for k in group for s in parts[k][1]]
        for segments in _fill(items, max_tokens):
            logits = cache.run(segments)
            rows = [s for s in segments if not s.kept]
            for request in {s.request for s in segments}:
                requests[request][0].work.forward_passes += 1
            for s in segments:
                work = requests[s.request][0].work
                work.tokens_prefilled += len(s.ids)
                work.frames_encoded += len(s.frames)
            for s, row_logits in zip(rows, logits, strict=True):
                scorer = requests[s.request][0]
                scores[s.request, s.prefix] = check_finite(scorer.prefix_score(s.prefix, row_logits))
                if on_prefix is not None:
                    on_prefix(s.request, s.prefix)
    return [[scores[k, n] for n in lengths] for k, (_, lengths) in enumerate(requests)]


def _groups(sizes: list[int], max_tokens: int) -> list[list[int]]:
    """Consecutive requests whose tokens fit in `max_tokens` together (a larger one alone)."""
    groups: list[list[int]] = []
    total = 0
    for k, size in enumerate(sizes):
        if groups and total + size <= max_tokens:
            groups[-1].append(k)
            total += size
        else:
            groups.append([k])
            total = size
    return groups
