"""The inference thread: one loop serves the live episode of every robot, always its newest prefix.

Each round polls every robot's buffer once and scores the newest prefix of each robot that has
something new, all of them in one batched forward pass (up to `max_batch` at a time). So a robot
gets at most one prefix per round however fast its camera is (no robot starves another), a robot
whose camera stops is simply not in the round, and when inference is slower than the frame schedule
intermediate prefixes are skipped: the published values are never older than one round.

Only this thread touches the scorers and the episodes' online state, and only this thread closes an
episode (at a reset, or when it stops): a caller that stops the worker waits for the thread itself.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from topreward.online.buffer import EpisodeBuffer, EpisodeSnapshot
from topreward.online.episode import OnlineEpisode
from topreward.scoring.batch import score_batch
from topreward.scoring.scorer import StreamingScorer
from topreward.types import PrefixScore, Step, SuccessConfig

StepCallback = Callable[[int, str, Step, float], None]  # episode id, instruction, step, inference [s]
EpisodeEndCallback = Callable[[int, str, OnlineEpisode], None]


@dataclass
class FailureStats:
    """Failed inferences: per reason (the exception's type), in a row, and when the last one happened."""

    by_reason: Counter = field(default_factory=Counter)
    consecutive: int = 0
    last_time: float | None = None  # time.monotonic() of the latest failure
    halted: bool = False  # too many in a row: the episode is no longer scored until the next one


class EpisodeStream:
    """One robot as the worker sees it: its buffer and scorer, the live episode's online state, failures.

    `on_error(exc)` hears every failed inference; without it the exception ends the worker.
    """

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
        self._episode: OnlineEpisode | None = None
        self._episode_id: int | None = None
        self._generation = 0
        self._instruction = ""
        self._seen: tuple[int, int, int] | None = None

    @property
    def episode_id(self) -> int | None:
        """The episode the worker last saw on this robot (None before the first)."""
        return self._episode_id

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

    def end_episode(self) -> None:
        episode, self._episode = self._episode, None
        if episode is not None and episode.scores and self.on_episode_end is not None:
            self.on_episode_end(self._episode_id, self._instruction, episode)

    def poll(self) -> EpisodeSnapshot | None:
        """The newest snapshot if there is something to score in it, else None (never waits)."""
        snapshot = self.buffer.wait_for_change(self._seen, timeout=0.0)
        if snapshot is None:
            return None
        self._seen = snapshot.version
        if not snapshot.instruction or not self._follow(snapshot) or not len(snapshot.frames):
            return None
        return snapshot

    def _follow(self, snapshot: EpisodeSnapshot) -> bool:
        """Bring the scorer to the snapshot's episode; False if this episode is not scored (halted)."""
        if snapshot.episode_id != self._episode_id:
            self.end_episode()
            with self._lock:
                self._failures.consecutive, self._failures.halted = 0, False
            self._episode_id, self._instruction = snapshot.episode_id, snapshot.instruction
            self._episode = OnlineEpisode(self.success)
            self._generation = snapshot.frames.generation
            try:
                self.scorer.reset(snapshot.instruction, frames=snapshot.frames)
            except ValueError as exc:  # a task the prompt cannot hold: nothing of this episode is scored
                self.fail(exc, halt=True)
                return False
            return True
        if self._failures.halted:
            return False
        self.scorer.follow(snapshot.frames)
        return True

    def rebased(self, snapshot: EpisodeSnapshot) -> bool:
        """Whether the snapshot's frames were thinned out since the last scored prefix (a max_frames halving)."""
        return snapshot.frames.generation != self._generation

    def score_alone(self, snapshot: EpisodeSnapshot) -> tuple[Step, float] | None:
        """Score the snapshot's newest prefix on this robot alone; None if it failed (counted)."""
        n = len(snapshot.frames)
        start = time.perf_counter()
        try:
            if self.rebased(snapshot):
                # The online state is recomputed on the new sampling (see OnlineEpisode.rebase), once per halving.
                step = self._episode.rebase([self.scorer.score(k) for k in range(1, n + 1)])
                self._generation = snapshot.frames.generation
            else:
                step = self._episode.update(self.scorer.score(n))
        except Exception as exc:  # keep serving: a failed prefix must not take the node down
            self.fail(exc)
            return None
        return step, time.perf_counter() - start

    def scored_prefix(self, score: PrefixScore) -> Step | None:
        """The online step of a prefix scored in a batch with other robots; None if it failed (counted)."""
        try:
            return self._episode.update(score)
        except Exception as exc:  # after scoring as before it: counted, and the thread goes on
            self.fail(exc)
            return None

    def publish(self, snapshot: EpisodeSnapshot, step: Step, inference: float) -> None:
        """Hand the step to the publisher; a publisher that raises counts as a failed inference of this robot."""
        try:
            self.on_step(snapshot.episode_id, snapshot.instruction, step, inference)
        except Exception as exc:
            self.fail(exc)
            return
        self.last_inference = inference
        self.scored += 1
        with self._lock:
            self._failures.consecutive = 0

    def fail(self, exc: Exception, halt: bool = False) -> None:
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


MAX_BATCH_FAILURES = 3  # batched passes failing in a row before robots are scored one at a time until a reset
BatchFailureCallback = Callable[[Exception, int, bool], None]  # the error, robots in the batch, batching stopped


class InferenceWorker:
    """A dedicated thread between the robots' episode buffers and their publishers.

    The buffers must have been made with this worker's `wake` event (EpisodeBuffer(..., wake=...)), so
    that a new frame on any robot wakes the loop; without it a new frame is seen within 0.1 s.

    A batched pass that fails (out of memory: the stacked copy holds the caches about three times) costs a
    pass per robot on top, so each one is counted and told to `on_batch_failure`, and after
    MAX_BATCH_FAILURES in a row robots are scored one at a time until any robot starts a new episode.
    """

    def __init__(self, streams: Sequence[EpisodeStream], max_batch: int = 8,
                 wake: threading.Event | None = None, on_batch_failure: BatchFailureCallback | None = None) -> None:
        if not streams:
            raise ValueError("the worker needs at least one stream")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.streams = tuple(streams)
        self.max_batch = max_batch
        self.wake = wake or threading.Event()
        self.batches = 0  # batched forward passes of more than one robot
        self.batch_failures = 0  # batched passes that failed (each robot then scored alone)
        self.error: BaseException | None = None  # what ended the thread, if it ended by itself
        self.on_batch_failure = on_batch_failure
        self._batch_failures_in_a_row = 0
        self._unbatched_at: tuple[int | None, ...] | None = None  # the robots' episodes when batching stopped
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="topreward-inference", daemon=True)
        self._first = 0  # the robot served first in the next round: rotates, so nobody always waits longest

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Ask the thread to stop after the inference in flight; True once it has really ended.

        The thread closes every current episode itself on its way out. With a `timeout` that runs out
        the thread is still running (a long inference): the caller must not start another worker on
        the same scorers until `alive` is false.
        """
        self._stop.set()
        self.wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def scored(self) -> int:
        return sum(s.scored for s in self.streams)

    @property
    def batching(self) -> bool:
        """False while robots are scored one at a time after repeated batch failures."""
        return self._unbatched_at is None

    def _episodes(self) -> tuple[int | None, ...]:
        return tuple(stream.episode_id for stream in self.streams)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.wake.wait(0.1)
                self.wake.clear()  # before polling: a frame that arrives while polling sets it again
                self.run_round()
        except BaseException as exc:
            self.error = exc  # the owner reports it: see RewardNode.inference_error
            raise
        finally:
            for stream in self.streams:
                stream.end_episode()

    def run_round(self) -> None:
        """Poll every robot once and score what is ready: the thread's loop body (callable without the thread)."""
        n = len(self.streams)
        order = [self.streams[(self._first + i) % n] for i in range(n)]
        self._first = (self._first + 1) % n
        ready = []
        for stream in order:
            if self._stop.is_set():
                return
            snapshot = stream.poll()
            if snapshot is None:
                continue
            if stream.rebased(snapshot):
                self._score_alone(stream, snapshot)  # a rebase scores many prefixes: never held in a batch
            else:
                ready.append((stream, snapshot))
        if self._unbatched_at is not None and self._episodes() != self._unbatched_at:
            self._unbatched_at, self._batch_failures_in_a_row = None, 0  # a new episode: batching is tried again
        size = self.max_batch if self.batching else 1
        for i in range(0, len(ready), size):
            if self._stop.is_set():
                return
            self._score_together(ready[i:i + size])

    def _score_alone(self, stream: EpisodeStream, snapshot: EpisodeSnapshot) -> None:
        result = stream.score_alone(snapshot)
        if result is not None and not self._stop.is_set():
            stream.publish(snapshot, *result)

    def _score_together(self, group: list[tuple[EpisodeStream, EpisodeSnapshot]]) -> None:
        if len(group) == 1:
            self._score_alone(*group[0])
            return
        start = time.perf_counter()
        try:
            scores = score_batch([(stream.scorer, len(snapshot.frames)) for stream, snapshot in group])
        except Exception as exc:
            self._batch_failed(exc, len(group))
            # Which robot's prefix failed is unknown, and a batch leaves every cache as it was: each robot
            # is tried alone, so one robot's failure is counted against it and never against the others.
            for stream, snapshot in group:
                if not self._stop.is_set():
                    self._score_alone(stream, snapshot)
            return
        elapsed = time.perf_counter() - start
        self.batches += 1
        self._batch_failures_in_a_row = 0
        for (stream, snapshot), score in zip(group, scores, strict=True):
            step = stream.scored_prefix(score)
            if step is not None and not self._stop.is_set():
                stream.publish(snapshot, step, elapsed)

    def _batch_failed(self, exc: Exception, robots: int) -> None:
        self.batch_failures += 1
        self._batch_failures_in_a_row += 1
        stopped = self._batch_failures_in_a_row >= MAX_BATCH_FAILURES
        if stopped:
            self._unbatched_at = self._episodes()
        if self.on_batch_failure is not None:
            self.on_batch_failure(exc, robots, stopped)
