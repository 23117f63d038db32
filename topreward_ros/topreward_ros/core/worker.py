"""The inference thread: owns the scorer and always scores the newest prefix of the live episode.

When inference is slower than the frame schedule, intermediate prefixes are skipped: each round
takes a fresh snapshot, so the published values are never older than one inference.

Only this thread touches the scorer and the episode's online state, and only this thread closes an
episode (at a reset, or when it stops): a caller that stops the worker waits for the thread itself.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from .episode_buffer import EpisodeBuffer, EpisodeSnapshot
from .online import OnlineEpisode
from .scorer import StreamingScorer
from .types import Step, SuccessConfig

StepCallback = Callable[[int, str, Step, float], None]  # episode id, instruction, step, inference [s]
EpisodeEndCallback = Callable[[int, str, OnlineEpisode], None]


@dataclass
class FailureStats:
    """Failed inferences: per reason (the exception's type), in a row, and when the last one happened."""

    by_reason: Counter = field(default_factory=Counter)
    consecutive: int = 0
    last_time: float | None = None  # time.monotonic() of the latest failure
    halted: bool = False  # too many in a row: the episode is no longer scored until the next one


class InferenceWorker:
    """A dedicated thread between the episode buffer and the publishers."""

    def __init__(self, scorer: StreamingScorer, buffer: EpisodeBuffer, success: SuccessConfig,
                 on_step: StepCallback, on_episode_end: EpisodeEndCallback | None = None,
                 on_error: Callable[[Exception], None] | None = None, max_consecutive_failures: int = 5,
                 on_halt: Callable[[str], None] | None = None) -> None:
        self.scorer, self.buffer, self.success = scorer, buffer, success
        self.on_step, self.on_episode_end, self.on_error, self.on_halt = on_step, on_episode_end, on_error, on_halt
        self.max_consecutive_failures = max_consecutive_failures
        self.last_inference: float | None = None  # [s] of the latest scored prefix
        self.scored = 0
        self._lock = threading.Lock()  # guards the failure statistics, read by diagnostics
        self._failures = FailureStats()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="topreward-inference", daemon=True)
        self._episode: OnlineEpisode | None = None
        self._episode_id: int | None = None
        self._generation = 0
        self._instruction = ""

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Ask the thread to stop after the inference in flight; True once it has really ended.

        The thread closes the current episode itself on its way out. With a `timeout` that runs out
        the thread is still running (a long inference): the caller must not start another worker on
        the same scorer until `alive` is false.
        """
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def failures(self) -> FailureStats:
        """A copy of the failure statistics (safe to read from any thread)."""
        with self._lock:
            f = self._failures
            return FailureStats(Counter(f.by_reason), f.consecutive, f.last_time, f.halted)

    def episode_copy(self) -> tuple[int | None, str, OnlineEpisode | None]:
        """The live episode's state as it is now, for a record written while the thread cannot finish."""
        episode = self._episode
        if episode is None:
            return self._episode_id, self._instruction, None
        return self._episode_id, self._instruction, OnlineEpisode(episode.success, list(episode.scores),
                                                                  episode.progress, episode.consecutive,
                                                                  episode.event)

    def _end_episode(self) -> None:
        episode, self._episode = self._episode, None
        if episode is not None and episode.scores and self.on_episode_end is not None:
            self.on_episode_end(self._episode_id, self._instruction, episode)

    def _run(self) -> None:
        try:
            seen = None
            while not self._stop.is_set():
                snapshot = self.buffer.wait_for_change(seen, timeout=0.1)
                if snapshot is None:
                    continue
                seen = snapshot.version
                if snapshot.instruction:  # nothing to score against until a task is given
                    self._round(snapshot)
        finally:
            self._end_episode()

    def _round(self, snapshot: EpisodeSnapshot) -> None:
        if snapshot.episode_id != self._episode_id:
            self._end_episode()
            with self._lock:
                self._failures.consecutive, self._failures.halted = 0, False
            self._episode_id, self._instruction = snapshot.episode_id, snapshot.instruction
            self._episode = OnlineEpisode(self.success)
            self._generation = snapshot.frames.generation
            try:
                self.scorer.reset(snapshot.instruction, frames=snapshot.frames)
            except ValueError as exc:  # a task the prompt cannot hold: nothing of this episode is scored
                self._fail(exc, halt=True)
                return
        elif self._failures.halted:
            return
        else:
            self.scorer.follow(snapshot.frames)
        n = len(snapshot.frames)
        if not n:
            return
        start = time.perf_counter()
        try:
            if snapshot.frames.generation != self._generation:
                # A max_frames halving: the online state is recomputed on the new sampling (see
                # OnlineEpisode.rebase), once per halving.
                step = self._episode.rebase([self.scorer.score(k) for k in range(1, n + 1)])
                self._generation = snapshot.frames.generation
            else:
                step = self._episode.update(self.scorer.score())
        except Exception as exc:  # keep serving: a failed prefix must not take the node down
            self._fail(exc)
            return
        self.last_inference = time.perf_counter() - start
        self.scored += 1
        with self._lock:
            self._failures.consecutive = 0
        if not self._stop.is_set():
            self.on_step(snapshot.episode_id, snapshot.instruction, step, self.last_inference)

    def _fail(self, exc: Exception, halt: bool = False) -> None:
        with self._lock:
            f = self._failures
            f.by_reason[type(exc).__name__] += 1
            f.consecutive += 1
            f.last_time = time.monotonic()
            newly_halted = not f.halted and (halt or f.consecutive >= self.max_consecutive_failures)
            f.halted = f.halted or newly_halted
        if self.on_error is None:
            raise exc
        self.on_error(exc)
        if newly_halted and self.on_halt is not None:
            self.on_halt(f"{f.consecutive} failed inference(s) in a row, last: {type(exc).__name__}: {exc}")
