"""TOPReward values of video prefixes, with a KV cache that grows one frame pair at a time.

r = log p(answer | video prefix, question) is read from the logits at the position before the
answer token. The cache holds complete frame pairs only. A prefix costs one forward pass of exactly
the tokens it needs on top of the cache: its new complete pairs, an odd trailing frame paired with
itself (as the reference does), and the question; the pass's tail (question and self-pair) is then
cropped off again. So the work for a new prefix is proportional to the new pair's tokens plus the
question, not to the episode's length.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from topreward.frames.schedule import FrameSchedule
from topreward.model.backend import Qwen3VLBackend
from topreward.scoring.prompt import PromptConfig, PromptTokens
from topreward.types import PrefixScore, ScheduleConfig


class NonFiniteScore(ValueError):
    """The model gave a NaN or infinite log-probability (float16 overflows in Qwen models do)."""


def check_finite(score: PrefixScore) -> PrefixScore:
    """The score, if its log-probabilities are finite; a NaN or infinity is a failed inference, never a value."""
    if not score.finite:
        raise NonFiniteScore(f"non-finite log-probabilities (True {score.log_prob_true}, False "
                             f"{score.log_prob_false}) for the prefix of {score.num_frames} frames: "
                             "float16 overflows in Qwen3-VL; use bfloat16 or float32")
    return score


@dataclass
class ScorerWork:
    """What the scorer has fed the model so far: counted, not timed, so benchmarks can compare it to the limit."""

    forward_passes: int = 0
    tokens_prefilled: int = 0  # LLM tokens run through the model (cached tokens are not counted again)
    frames_encoded: int = 0  # frames through the vision encoder (an odd frame's self-pair counts 2)


@dataclass
class PrefixChunk:
    """One forward pass's worth of a prefix on top of the cache: its ids, frames and where it sits."""

    num_frames: int  # the prefix scored
    ids: list[int]  # new complete pairs, an odd frame's self-pair, then the question
    question_at: int  # offset of the question in `ids` (nothing after it is kept in the cache)
    frames: list[np.ndarray]  # frames to encode, in pairs (an odd frame twice)
    pair_ends: list[int]  # offsets in `ids` just past each new complete pair
    start: int  # position of the chunk's first token
    cache_len: int  # cached tokens the chunk follows

    @property
    def keep(self) -> int:
        """The chunk's tokens that stay in the cache: its new complete pairs."""
        return self.pair_ends[-1] if self.pair_ends else 0


class StreamingScorer:
    """One episode: the schedule's sampled frames plus the KV cache of their complete pairs."""

    def __init__(self, backend: Qwen3VLBackend, instruction: str,
                 schedule: ScheduleConfig = ScheduleConfig(), prompt: PromptConfig = PromptConfig()) -> None:
        backend.check_frame_size(*schedule.frame_size)
        self.backend = backend
        self.schedule_config = schedule
        self.prompt = PromptTokens(backend.tokenizer, prompt)
        self._tokens_per_pair = backend.tokens_per_frame_pair(*schedule.frame_size)
        self.work = ScorerWork()  # cumulative over episodes: callers take differences
        self.reset(instruction)

    def reset(self, instruction: str | None = None, frames: FrameSchedule | None = None) -> None:
        """Start a new episode, optionally with a new instruction and frames sampled elsewhere."""
        if instruction is not None:
            if not instruction.strip():
                raise ValueError("instruction must not be empty")
            self.instruction = instruction
            self._question = self.prompt.question(instruction)
        if frames is not None and frames.config != self.schedule_config:
            raise ValueError("frames were sampled with another schedule configuration")
        self.schedule = frames if frames is not None else FrameSchedule(self.schedule_config)
        self._drop_cache()

    def _drop_cache(self) -> None:
        self._cache = self.backend.new_cache()
        self._cache_generation = self.schedule.generation
        # (cache length, next position) after 0, 1, 2, ... committed pairs.
        self._pair_ends: list[tuple[int, int]] = [(0, 0)]

    def _crop_cache(self, length: int) -> None:
        extra = self._cache.get_seq_length() - length
        if extra > 0:
            self._cache.crop(-extra)  # transformers 5 crops by a negative count of tokens to remove

    def follow(self, frames: FrameSchedule) -> None:
        """Score from a newer snapshot of the same episode's frames.

        The cache stays valid while frames were only added; a halving is seen in the generation and
        rebuilds the cache once.
        """
        if frames.times[:1] != self.schedule.times[:1] and len(self.schedule):
            raise ValueError("follow() needs a snapshot of the same episode; use reset() for a new one")
        self.schedule = frames

    def append(self, frame: np.ndarray, t: float) -> bool:
        """Offer a camera frame (RGB uint8) captured at `t` seconds; returns whether it was sampled."""
        return self.schedule.offer(frame, t)

    @property
    def num_frames(self) -> int:
        return len(self.schedule)

    def _pair_timestamp(self, first: int, second: int) -> float:
        t = self.schedule.times
        return (t[first] + t[second]) / 2.0 - t[0]

    def _pair_ids(self, index: int, second: int) -> list[int]:
        return self.prompt.pair(index, self._pair_timestamp(2 * index, second), self._tokens_per_pair)

    def _prepare(self, n: int) -> PrefixChunk:
        """What prefix `n` needs on top of the cache, after bringing the cache to a state it can extend.

        A halving (new generation) drops the cache; an earlier prefix than the cache holds crops it to that
        prefix's pairs. Both leave a consistent cache, so a pass that then fails changes nothing more.
        The chunk: the new complete pairs, then an odd trailing frame paired with itself, then the question,
        for one forward pass.
        """
        if self._cache_generation != self.schedule.generation:
            self._drop_cache()  # frames were thinned out: rebuild once
        full = n // 2
        if len(self._pair_ends) - 1 > full:  # an earlier prefix than the cache holds
            self._crop_cache(self._pair_ends[full][0])
            del self._pair_ends[full + 1:]
        have = len(self._pair_ends) - 1
        ids, pair_ends = self.complete_pairs(have, full)
        tail, tail_frames = self.question_row(n)
        cache_len, start = self._pair_ends[-1]
        return PrefixChunk(num_frames=n, ids=ids + tail, question_at=len(ids) + len(tail) - len(self._question),
                           frames=list(self.schedule.frames[2 * have:2 * full]) + tail_frames, pair_ends=pair_ends,
                           start=start, cache_len=cache_len)

    def complete_pairs(self, begin: int, end: int) -> tuple[list[int], list[int]]:
        """Ids of the complete pairs begin..end-1 (frames 2k and 2k+1), and the offsets just past each pair."""
        ids: list[int] = []
        pair_ends: list[int] = []
        for k in range(begin, end):
            ids += self._pair_ids(k, 2 * k + 1)
            pair_ends.append(len(ids))
        return ids, pair_ends

    def question_row(self, n: int) -> tuple[list[int], list[np.ndarray]]:
        """What prefix `n` needs after its complete pairs: an odd last frame paired with itself, then the question.

        Returns the ids and the frames to encode for them (none for an even prefix).
        """
        if n % 2 == 0:
            return list(self._question), []
        return self._pair_ids(n // 2, n - 1) + self._question, [self.schedule.frames[n - 1]] * 2

    # Scoring in two phases, for a forward pass the scorer does not run itself (score_batch runs several
    # scorers' chunks in one): prepare() says what the pass must compute, finish() takes its results.
    def prepare(self, num_frames: int | None = None) -> PrefixChunk:
        """Phase 1: the chunk of prefix `num_frames` (default: all) to run on top of `cache`.

        Raises ValueError for a prefix that was not sampled. May drop or crop the cache first (a halving, an
        earlier prefix), always to a consistent state, so a pass that then fails leaves the scorer usable.
        """
        return self._prepare(self.prefix_length(num_frames))

    @property
    def cache(self):
        """The KV cache of the complete pairs scored so far: read it, never change it (finish() replaces it)."""
        return self._cache

    def finish(self, chunk: PrefixChunk, logits: torch.Tensor, positions: torch.Tensor, cache) -> PrefixScore:
        """Phase 2: adopt `cache` (the old one grown by the chunk), record the chunk's pairs; the prefix's values.

        `logits` are the chunk's last two positions, `positions` its (3, L) positions (no padding): what
        Qwen3VLBackend.forward returns, or one row of forward_batch. A non-finite value is returned as it is,
        for the caller to refuse (check_finite), with the cache dropped: whatever the pass wrote is suspect.
        """
        self._cache = cache
        score = self._finish(chunk, logits, positions)
        if not score.finite:
            self._drop_cache()
        return score

    def _finish(self, chunk: PrefixChunk, logits: torch.Tensor, positions: torch.Tensor) -> PrefixScore:
        for end in chunk.pair_ends:
            # Every pair ends with <|vision_end|>, a text token: the next position follows it.
            self._pair_ends.append((chunk.cache_len + end, int(positions[0, end - 1]) + 1))
        # Keep the new complete pairs; the question and an odd frame's self-pair are cropped off.
        self._crop_cache(self._pair_ends[chunk.num_frames // 2][0])
        self.work.forward_passes += 1
        self.work.tokens_prefilled += len(chunk.ids)
        self.work.frames_encoded += len(chunk.frames)
        # The last two positions; the answer is predicted from the one before it.
        return self.prefix_score(chunk.num_frames, logits[-2])

    def prefix_length(self, num_frames: int | None) -> int:
        """The prefix `num_frames` names (None: all sampled frames); ValueError if it was not sampled."""
        n = self.num_frames if num_frames is None else num_frames
        if not 1 <= n <= self.num_frames:
            raise ValueError(f"prefix of {n} frames requested, {self.num_frames} sampled")
        return n

    def score(self, num_frames: int | None = None) -> PrefixScore:
        """Values of the prefix of the first `num_frames` sampled frames (default: all so far)."""
        n = self.prefix_length(num_frames)
        try:
            return check_finite(self._score(n))
        except BaseException:
            # A forward pass that failed half-way (out of memory, say) leaves the cache in an unknown
            # state: start it over rather than score on top of it.
            self._drop_cache()
            raise

    def _score(self, n: int) -> PrefixScore:
        chunk = self._prepare(n)
        pixels, grid = self.backend.encode_pairs(chunk.frames) if chunk.frames else (None, None)
        logits, positions = self.backend.forward(chunk.ids, chunk.start, self._cache, pixels, grid, logits_to_keep=2)
        return self.finish(chunk, logits, positions, self._cache)  # forward() grew the cache in place

    def prefix_score(self, n: int, logits: torch.Tensor) -> PrefixScore:
        """Prefix `n`'s values from the logits at the position before its answer token."""
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        times = self.schedule.times
        return PrefixScore(
            num_frames=n, time=times[n - 1], elapsed=times[n - 1] - times[0],
            log_prob_true=float(log_probs[self.prompt.answer_id]),
            log_prob_false=float(log_probs[self.prompt.negative_id]), stamp_ns=self.schedule.stamps_ns[n - 1],
        )

    def full_recompute(self, num_frames: int | None = None) -> PrefixScore:
        """Score a prefix with one fresh forward pass: no cache, positions computed by the model itself.

        Slow; it is the reference the cached path is checked against.
        """
        n = self.prefix_length(num_frames)
        ids, _ = self.complete_pairs(0, n // 2)
        tail, tail_frames = self.question_row(n)
        pixels, grid = self.backend.encode_pairs(list(self.schedule.frames[:n - n % 2]) + tail_frames)
        ids += tail
        logits = self.backend.forward_uncached(ids, pixels, grid)
        return check_finite(self.prefix_score(n, logits))
