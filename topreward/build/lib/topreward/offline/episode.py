"""Plain data passed from the readers to the evaluation: recorded episodes, and the ones that could not be read."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

# Offered a capture time [s], says whether the frame is wanted: lets a reader skip converting the rest.
WantsFn = Callable[[float], bool]
# One sampled instant: the camera views (primary first; None = no view at that time) and its capture time [s].
ViewsAt = tuple[list[np.ndarray | None], float]


class EpisodeError(Exception):
    """One episode cannot be used; the message says why in one line. The run goes on without it."""


class SourceError(Exception):
    """The whole source cannot be read (missing path, unsupported version, ...): one line, exit status 2."""


@dataclass(frozen=True)
class Episode:
    """One recorded episode, frames read lazily so that nothing is decoded before it is scored."""

    key: str  # unique and stable within the source: the resume key, e.g. "episode 3" or "row 2"
    source: str  # where it lives, e.g. "videos/.../file-000.mp4@12.40s" or "bags/run1"
    read: Callable[[WantsFn], Iterator[ViewsAt]] = field(repr=False)  # raises EpisodeError
    instruction: str | None = None
    success: bool | None = None
    episode_id: int | str | None = None  # the dataset's episode index where there is one
    num_frames: int | None = None  # recorded frames (LeRobot), for per-frame labels
    fps: float | None = None  # recorded frame rate (LeRobot), to map prefix times back to frame numbers
    first_index: int | None = None  # global dataset index of the episode's frame 0 (LeRobot)


@dataclass(frozen=True)
class Skipped:
    """An episode a reader found unusable before reading any frame (bad manifest row, missing topic, ...)."""

    key: str
    source: str
    reason: str
    episode_id: int | str | None = None
