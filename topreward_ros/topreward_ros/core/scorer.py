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

from .backend import Qwen3VLBackend
from .prompt import PromptConfig, PromptTokens
from .schedule import FrameSchedule
from .types import PrefixScore, ScheduleConfig


@dataclass
class ScorerWork:
    """What the scorer has fed the model so far: counted, not timed, so benchmarks can compare it to the limit."""

    forward_passes: int = 0
    tokens_prefilled: int = 0  # LLM tokens run through the model (cached tokens are not counted again)
    frames_encoded: int = 0  # frames through the vision encoder (an odd frame's self-pair counts 2)


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

    def _chunk(self, n: int) -> tuple[list[int], list[np.ndarray], list[int]]:
        """What prefix `n` needs on top of the cache: ids, frames to encode, chunk offsets of new pairs' ends.

        The new complete pairs, then an odd trailing frame paired with itself, then the question: one
        forward pass for all of it.
        """
        have, full = len(self._pair_ends) - 1, n // 2
        ids: list[int] = []
        pair_ends: list[int] = []
        for k in range(have, full):
            ids += self._pair_ids(k, 2 * k + 1)
            pair_ends.append(len(ids))
        frames = list(self.schedule.frames[2 * have:2 * full])
        if n % 2:
            ids += self._pair_ids(full, n - 1)
            frames += [self.schedule.frames[n - 1]] * 2
        return ids + self._question, frames, pair_ends

    def score(self, num_frames: int | None = None) -> PrefixScore:
        """Values of the prefix of the first `num_frames` sampled frames (default: all so far)."""
        n = self.num_frames if num_frames is None else num_frames
        if not 1 <= n <= self.num_frames:
            raise ValueError(f"prefix of {n} frames requested, {self.num_frames} sampled")
        try:
            return self._score(n)
        except BaseException:
            # A forward pass that failed half-way (out of memory, say) leaves the cache in an unknown
            # state: start it over rather than score on top of it.
            self._drop_cache()
            raise

    def _score(self, n: int) -> PrefixScore:
        if self._cache_generation != self.schedule.generation:
            self._drop_cache()  # frames were thinned out: rebuild once
        full = n // 2
        if len(self._pair_ends) - 1 > full:  # an earlier prefix than the cache holds
            self._crop_cache(self._pair_ends[full][0])
            del self._pair_ends[full + 1:]
        ids, frames, pair_ends = self._chunk(n)
        pixels, grid = self.backend.encode_pairs(frames) if frames else (None, None)
        cache_len, start = self._pair_ends[-1]
        logits, positions = self.backend.forward(ids, start, self._cache, pixels, grid, logits_to_keep=2)
        for end in pair_ends:
            # Every pair ends with <|vision_end|>, a text token: the next position follows it.
            self._pair_ends.append((cache_len + end, int(positions[0, end - 1]) + 1))
        # Keep the new complete pairs; the question and an odd frame's self-pair are cropped off.
        self._crop_cache(self._pair_ends[full][0])
        self.work.forward_passes += 1
        self.work.tokens_prefilled += len(ids)
        self.work.frames_encoded += len(frames)
        # logits_to_keep=2: the last two positions; the answer is predicted from the one before it.
        return self._prefix_score(n, logits[-2])

    def _prefix_score(self, n: int, logits: torch.Tensor) -> PrefixScore:
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
        n = self.num_frames if num_frames is None else num_frames
        frames = list(self.schedule.frames[:n]) + ([self.schedule.frames[n - 1]] if n % 2 else [])
        ids = []
        for k in range(len(frames) // 2):
            ids += self._pair_ids(k, min(2 * k + 1, n - 1))
        ids += self._question
        pixels, grid = self.backend.encode_pairs(frames)
        logits = self.backend.forward_uncached(ids, pixels, grid)
        return self._prefix_score(n, logits)
