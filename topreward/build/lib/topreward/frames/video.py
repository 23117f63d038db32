"""Decoding recorded videos with PyAV: RGB frames with their container timestamps."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np


class VideoReadError(RuntimeError):
    """The video cannot be read; the message says why in one line."""


def open_video(path: str | Path, error: type[Exception] = VideoReadError):
    """(container, its first video stream), decoding on all cores; `error` with one line if it cannot be read."""
    import av

    path = Path(path)
    if not path.is_file():
        raise error(f"video {path} does not exist")
    if path.stat().st_size == 0:
        raise error(f"video {path} is empty (0 bytes)")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise error(f"cannot open {path} as a video: {exc}") from None
    if not container.streams.video:
        container.close()
        raise error(f"{path} has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return container, stream


def read_frames(path: str | Path,
                wants: Callable[[float], bool] = lambda t: True) -> Iterator[tuple[np.ndarray, float]]:
    """Yield (RGB uint8 frame, time [s]) for each frame of the first video stream.

    Frames for which `wants(time)` is false are decoded but not converted, which is most of them when
    a 30 fps video is sampled at 2 fps.
    """
    import av

    container, stream = open_video(path)
    with container:
        try:
            for index, frame in enumerate(container.decode(stream)):
                t = frame.time
                if t is None:  # no timestamps in the container: fall back to the nominal rate
                    t = index / float(stream.average_rate or 30)
                if wants(t):
                    yield frame.to_ndarray(format="rgb24"), float(t)
        except av.error.FFmpegError as exc:
            raise VideoReadError(f"cannot decode {path}: {exc}") from exc
