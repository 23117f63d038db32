"""Prefix-stable frame sampling: which camera frames the model sees, resized once to a fixed size.

A frame is kept when it is the first one at or after the next point of a fixed time grid
(t0, t0 + 1/fps, t0 + 2/fps, ...), so the decision depends only on earlier frames and the frames of a
shorter prefix are exactly the first frames of a longer one. Every kept frame is resized to one size
that never depends on how many frames there are, which keeps a prefix's KV cache valid forever.

Long episodes: when more than `max_frames` frames would be kept, the grid interval doubles and only
the first frame of each new grid cell stays. The result is exactly what sampling at the halved rate
from the start would have kept, the whole episode stays in view, and the scorer rebuilds its cache
once per halving (amortized constant cost per frame).
"""
from __future__ import annotations

import math

import numpy as np

from topreward.frames.image_conversion import check_rgb, resize_image
from topreward.types import ScheduleConfig

# Grid tolerance, in grid intervals: 30 fps timestamps like 0.4999999 still land in the 0.5 s cell.
_EPS = 1e-6



class FrameSchedule:
    """The sampled frames of one episode, with their capture times."""

    def __init__(self, config: ScheduleConfig = ScheduleConfig()) -> None:
        self.config = config
        self.frames: list[np.ndarray] = []
        self.times: list[float] = []  # capture times [s], as given
        self.stamps_ns: list[int] = []  # the same capture times as exact integer nanoseconds (camera stamps)
        self._cells: list[int] = []
        self.halvings = 0  # the grid interval is 2**halvings / sample_fps
        # Increases whenever kept frames are dropped, so a scorer knows its cache is stale.
        self.generation = 0

    def copy(self) -> FrameSchedule:
        """A snapshot: later offers to either schedule do not show in the other (frames are shared, read-only)."""
        other = FrameSchedule(self.config)
        other.frames, other.times, other._cells = list(self.frames), list(self.times), list(self._cells)
        other.stamps_ns = list(self.stamps_ns)
        other.generation, other.halvings = self.generation, self.halvings
        return other

    def __len__(self) -> int:
        return len(self.frames)

    def relative_times(self) -> list[float]:
        """Seconds since the episode's first frame, the clock the model's timestamps use."""
        return [t - self.times[0] for t in self.times]

    def _cell(self, t: float) -> int:
        # Cells of the base grid, merged in pairs once per halving: exactly consistent across halvings.
        base = math.floor((t - self.times[0]) * self.config.sample_fps + _EPS)
        return base >> self.halvings

    def wants(self, t: float) -> bool:
        """Whether a frame captured at `t` would be kept (cheap: lets callers skip decoding the rest)."""
        return not self.times or (t > self.times[-1] and self._cell(t) > self._cells[-1])

    def offer(self, frame: np.ndarray, t: float, stamp_ns: int | None = None) -> bool:
        """Keep the frame if the schedule samples it; returns whether it was kept.

        `stamp_ns` is the exact capture stamp (a camera header's), carried through to the scores so that
        a learner can match them to observations by equality; by default it is `t` rounded to nanoseconds.
        """
        if not math.isfinite(t):
            raise ValueError(f"frame time must be finite, got {t}")
        if not self.wants(t):
            return False
        self.frames.append(resize_image(check_rgb(frame), self.config.frame_size))
        self.times.append(float(t))
        self.stamps_ns.append(round(t * 1e9) if stamp_ns is None else int(stamp_ns))
        self._cells.append(self._cell(t))
        while len(self.frames) > self.config.max_frames:  # a slow camera may need several halvings
            self._halve_rate()
        return True

    @property
    def interval(self) -> float:
        """Current grid interval [s]: 1 / sample_fps, doubled at each halving."""
        return (1 << self.halvings) / self.config.sample_fps

    def _halve_rate(self) -> None:
        keep = [i for i, c in enumerate(self._cells) if i == 0 or c // 2 != self._cells[i - 1] // 2]
        if len(keep) < len(self.frames):
            self.generation += 1
        self.frames = [self.frames[i] for i in keep]
        self.times = [self.times[i] for i in keep]
        self.stamps_ns = [self.stamps_ns[i] for i in keep]
        self._cells = [self._cells[i] // 2 for i in keep]
        self.halvings += 1
