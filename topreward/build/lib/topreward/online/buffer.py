"""The live episode's sampled frames, shared between camera callbacks and the inference worker.

Camera threads offer frames (cheap: a schedule check and a resize, under a short lock); the worker
waits for something new and takes a snapshot it can score without holding the lock.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from topreward.frames.schedule import FrameSchedule
from topreward.types import ScheduleConfig


@dataclass(frozen=True)
class EpisodeSnapshot:
    """What the worker scores: one episode's frames at one moment."""

    episode_id: int
    instruction: str
    frames: FrameSchedule

    @property
    def version(self) -> tuple[int, int, int]:
        return self.episode_id, self.frames.generation, len(self.frames)


class EpisodeBuffer:
    """Thread-safe frame schedule of the current episode, with its id and instruction."""

    def __init__(self, config: ScheduleConfig, instruction: str = "", wake: threading.Event | None = None,
                 first_episode_id: int = 0) -> None:
        """`wake` is set at every change, for a worker that waits on several buffers at once."""
        self.config = config
        self._cond = threading.Condition()
        self._wake = wake
        self._episode_id = first_episode_id
        self._instruction = instruction
        self._frames = FrameSchedule(config)

    @property
    def episode_id(self) -> int:
        with self._cond:
            return self._episode_id

    @property
    def instruction(self) -> str:
        with self._cond:
            return self._instruction

    def __len__(self) -> int:
        with self._cond:
            return len(self._frames)

    def admit(self, t: float) -> int | None:
        """The current episode's id if a frame captured at `t` would be kept, else None.

        Cheap: callers convert a frame only once it is admitted, then hand it to `offer` with this id.
        No frames are kept while there is no instruction.
        """
        with self._cond:
            return self._episode_id if self._instruction and self._frames.wants(t) else None

    def last_stamp_ns(self) -> int | None:
        """Capture stamp of the newest kept frame of the current episode, or None before its first."""
        with self._cond:
            return self._frames.stamps_ns[-1] if len(self._frames) else None

    def offer(self, frame: np.ndarray, t: float, episode_id: int | None = None, stamp_ns: int | None = None) -> bool:
        """Keep the frame if the schedule samples it; returns whether it was kept.

        With `episode_id`, the frame is kept only while that episode is still the current one, so a
        frame captured before a reset never starts the next episode.
        """
        with self._cond:
            if episode_id is not None and episode_id != self._episode_id:
                return False
            if not self._instruction or not self._frames.offer(frame, t, stamp_ns):
                return False
            self._changed()
            return True

    def new_episode(self, instruction: str | None = None) -> int:
        """End the current episode and start the next; returns the new episode id."""
        with self._cond:
            self._episode_id += 1
            if instruction is not None:
                self._instruction = instruction
            self._frames = FrameSchedule(self.config)
            self._changed()
            return self._episode_id

    def wait_for_change(self, seen: tuple[int, int, int] | None, timeout: float) -> EpisodeSnapshot | None:
        """A snapshot once the episode or its frames differ from `seen`, or None after `timeout` seconds."""
        with self._cond:
            def changed() -> bool:
                return self._snapshot_version() != seen and (
                    len(self._frames) > 0 or seen is None or seen[0] != self._episode_id)

            if not self._cond.wait_for(changed, timeout):
                return None
            return EpisodeSnapshot(self._episode_id, self._instruction, self._frames.copy())

    def _changed(self) -> None:
        self._cond.notify_all()
        if self._wake is not None:
            self._wake.set()

    def _snapshot_version(self) -> tuple[int, int, int]:
        return self._episode_id, self._frames.generation, len(self._frames)
