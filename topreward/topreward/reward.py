"""`TOPReward`: the reward node's online semantics in-process, for learners, notebooks and dataset pipelines.

The same code as the node scores each robot with: an `EpisodeBuffer` samples the frames on the node's
schedule (with its `max_frames` halving), and an `EpisodeStream` turns each new prefix into causal
progress, a dense reward and at most one success event per episode (`online/`). The node runs that
stream on an inference thread and publishes; here `observe` runs one round of it in the caller's
thread and returns the step.

    reward = TOPReward.load("Qwen/Qwen3-VL-8B-Instruct")
    reward.reset("fold the towel")
    step = reward.observe(frame, t)   # None when the schedule skips the frame
    if step is not None and step.success:
        ...
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from topreward.frames.tiling import tile_views
from topreward.online.buffer import EpisodeBuffer
from topreward.online.episode import OnlineEpisode
from topreward.online.worker import EpisodeStream, InferenceWorker
from topreward.scoring.prompt import PromptConfig
from topreward.scoring.scorer import StreamingScorer
from topreward.types import (
    DEFAULT_MODEL,
    ModelConfig,
    RewardStep,
    ScheduleConfig,
    Step,
    SuccessConfig,
    instruction_error,
)

__all__ = ["RewardStep", "TOPReward"]


class TOPReward:
    """Dense reward and success detection for one live episode at a time, from camera frames.

    Not thread-safe: one caller observes and resets. A failed inference raises (a NaN from float16
    raises `NonFiniteScore`); the episode goes on with the next frame.
    """

    def __init__(self, backend, schedule: ScheduleConfig = ScheduleConfig(), success: SuccessConfig = SuccessConfig(),
                 prompt: PromptConfig = PromptConfig()) -> None:
        """Serve episodes with a loaded `Qwen3VLBackend` (see `load` to load one)."""
        self.backend = backend
        self.schedule, self.success = schedule, success
        self._scorer = StreamingScorer(backend, "(no instruction yet)", schedule, prompt)
        # Episode ids start at 0 with the first reset, as the node's do.
        self._buffer = EpisodeBuffer(schedule, first_episode_id=-1)
        self._stream = EpisodeStream(self._scorer, self._buffer, success, self._on_step, self._on_episode_end,
                                     max_consecutive_failures=1 << 30)
        self._round = InferenceWorker([self._stream], max_batch=1)  # its loop body only: no thread is started
        self._step: RewardStep | None = None
        self.last_episode: tuple[int, str, OnlineEpisode] | None = None  # the latest ended episode, whole

    @classmethod
    def load(cls, model: str = DEFAULT_MODEL, *, device: str = "auto", dtype: str = "auto", revision: str = "",
             sample_fps: float = 2.0, frame_size: tuple[int, int] = (256, 256), max_frames: int = 64,
             success_threshold: float = -0.5, success_metric: str = "log_prob_true", success_consecutive: int = 3,
             min_episode_duration: float = 2.0, prompt: PromptConfig = PromptConfig(),
             attn_implementation: str = "auto", trust_remote_code: bool = False,
             allow_pickle_weights: bool = False) -> TOPReward:
        """Load Qwen3-VL (a hub id or a local directory) and return a reward ready for `reset`.

        The keywords are the node's parameters of the same names, with the same defaults and checks.
        `model="tiny-random"` builds a tiny model with random weights: meaningless values, for smoke tests.
        """
        from topreward.model.backend import load_model

        schedule = ScheduleConfig(sample_fps, tuple(frame_size), max_frames)
        success = SuccessConfig(success_threshold, success_consecutive, min_episode_duration, success_metric)
        backend = load_model(ModelConfig(model, device, dtype, attn_implementation, trust_remote_code,
                                         allow_pickle_weights, revision))
        return cls(backend, schedule, success, prompt)

    @property
    def episode_id(self) -> int:
        """The current episode (-1 before the first reset)."""
        return self._buffer.episode_id

    @property
    def instruction(self) -> str:
        return self._buffer.instruction

    def reset(self, instruction: str | None = None) -> int:
        """End the current episode and start the next, with a new task or (None) the same; returns its id."""
        if instruction is not None:
            instruction = instruction.strip()
            if error := instruction_error(instruction) or (None if instruction else "must not be empty"):
                raise ValueError(f"instruction {error}")
            self._scorer.prompt.question(instruction)  # a task the prompt cannot hold fails here, not mid-episode
        elif not self.instruction:
            raise ValueError("the first reset needs an instruction")
        episode = self._buffer.new_episode(instruction)
        self._round.run_round()  # the ended episode is closed now (last_episode), not at the next frame
        return episode

    def wants(self, t: float) -> bool:
        """Whether a frame captured at `t` would be scored: lets a caller skip rendering or decoding the rest."""
        return self.episode_id >= 0 and self._buffer.admit(t) is not None

    def observe(self, frame: np.ndarray | Sequence[np.ndarray], t: float,
                stamp_ns: int | None = None) -> RewardStep | None:
        """Offer a frame captured at `t` [s]; the step of the prefix it ends, or None if the schedule skips it.

        `frame` is an RGB uint8 image (H, W, 3) of any size, or several camera views (primary first) that
        are tiled side by side as the node tiles them. `t` must increase within an episode. `stamp_ns`
        is carried through unchanged (default: `t` in nanoseconds) so that steps match observations exactly.
        """
        if self.episode_id < 0:
            raise RuntimeError("call reset(instruction) before the first observe")
        if not math.isfinite(t):
            raise ValueError(f"frame time must be finite, got {t}")
        stamp = round(t * 1e9) if stamp_ns is None else int(stamp_ns)
        last = self._buffer.last_stamp_ns()
        if last is not None and stamp <= last:  # else the schedule would skip it, and every later frame, silently
            raise ValueError(f"frame time {t} s is not after the episode's previous sampled frame")
        if not isinstance(frame, np.ndarray):
            frame = tile_views(list(frame), self.schedule.frame_size)
        if not self._buffer.offer(frame, t, stamp_ns=stamp):
            return None
        self._step = None
        self._round.run_round()
        step, self._step = self._step, None
        return step

    def _on_step(self, episode_id: int, instruction: str, step: Step, inference: float) -> None:
        self._step = RewardStep.of(episode_id, instruction, step, inference, self.backend.name)

    def _on_episode_end(self, episode_id: int, instruction: str, episode: OnlineEpisode) -> None:
        self.last_episode = (episode_id, instruction, episode)
