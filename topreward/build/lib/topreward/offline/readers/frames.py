"""Frame decoding shared by the readers: a time range of an mp4, and encoded images.

LeRobot v3 packs many episodes into one mp4; images come as PNG/JPEG bytes in a parquet column or a
CompressedImage.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from topreward.frames.video import open_video
from topreward.offline.episode import EpisodeError


def decode_image(data: bytes, what: str) -> np.ndarray:
    """RGB uint8 from PNG/JPEG/... bytes."""
    import cv2

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None:
        raise EpisodeError(f"{what}: cannot decode the image ({len(data or b'')} bytes)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def segment_frames(path: Path, start: float, count: int, fps: float) -> Iterator:
    """The `count` av.VideoFrames at `start + k / fps` (k = 0..count-1) of the file, matched by timestamp.

    Seeks to the keyframe before `start`, so an episode in the middle of a long file does not decode
    what comes before it. A frame is matched within half a frame period (LeRobot itself allows 1e-4 s);
    a missing one is an error rather than a silently shifted episode.
    """
    import av

    container, stream = open_video(path, EpisodeError)
    tolerance = 0.5 / fps
    with container:
        k = 0
        try:
            if start > 0 and stream.time_base:
                container.seek(int(max(0.0, start - tolerance) / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                if k == count:
                    return
                if frame.time is None:
                    raise EpisodeError(f"{path} has frames without timestamps")
                expected = start + k / fps
                if frame.time < expected - tolerance:
                    continue  # before the episode (decoded from the keyframe on)
                if frame.time > expected + tolerance:
                    raise EpisodeError(f"{path}: no frame at {expected:.3f} s (next is at {frame.time:.3f} s)")
                yield frame
                k += 1
        except av.error.FFmpegError as exc:
            raise EpisodeError(f"cannot decode {path}: {exc}") from None
        if k < count:
            raise EpisodeError(f"{path} ends after {k} of the episode's {count} frames "
                               f"(from {start:.3f} s at {fps:g} fps)")
