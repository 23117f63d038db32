"""The inference thread: owns the scorer and always scores the newest prefix of the live episode.

When inference is slower than the frame schedule, intermediate prefixes are skipped: each round
takes a fresh snapshot, so the published values are never older than one inference.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .episode_buffer import EpisodeBuffer
from .online import OnlineEpisode
from .scorer import StreamingScorer
from .types import Step, SuccessConfig

StepCallback = Callable[[int, str, Step, float], None]  # episode id, instruction, step, inference [s]
EpisodeEndCallback = Callable[[int, str, OnlineEpisode], None]


class InferenceWorker:
    """A dedicated thread between the episode buffer and the publishers."""

    def __init__(self, scorer: StreamingScorer, buffer: EpisodeBuffer, success: SuccessConfig,
                 on_step: StepCallback, on_episode_end: EpisodeEndCallback | None = None,
                 on_error: Callable[[Exception], None] | None = None) -> None:
        self.scorer, self.buffer, self.success = scorer, buffer, success
        self.on_step, self.on_episode_end, self.on_error = on_step, on_episode_end, on_error
        self.last_inference: float | None = None  # [s] of the latest scored prefix
        self.scored = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="topreward-inference", daemon=True)
        self._episode: OnlineEpisode | None = None
        self._episode_id: int | None = None
        self._instruction = ""

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the inference in flight and close the current episode."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._end_episode()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _end_episode(self) -> None:
        episode, self._episode = self._episode, None
        if episode is not None and episode.scores and self.on_episode_end is not None:
            self.on_episode_end(self._episode_id, self._instruction, episode)

    def _run(self) -> None:
        seen = None
        while not self._stop.is_set():
            snapshot = self.buffer.wait_for_change(seen, timeout=0.1)
            if snapshot is None:
                continue
            seen = snapshot.version
            if not snapshot.instruction:
                continue  # nothing to score against until a task is given
            try:
                if snapshot.episode_id != self._episode_id:
                    self._end_episode()
                    self.scorer.reset(snapshot.instruction, frames=snapshot.frames)  # may reject the task
                    self._episode_id, self._instruction = snapshot.episode_id, snapshot.instruction
                    self._episode = OnlineEpisode(self.success)
                else:
                    self.scorer.follow(snapshot.frames)
                if not len(snapshot.frames):
                    continue
                start = time.perf_counter()
                score = self.scorer.score()
                self.last_inference = time.perf_counter() - start
                self.scored += 1
                step = self._episode.update(score)
                self.on_step(snapshot.episode_id, snapshot.instruction, step, self.last_inference)
            except Exception as exc:  # keep serving: a failed prefix must not take the node down
                if self.on_error is None:
                    raise
                self.on_error(exc)
