"""Episode videos: the sampled frames of an episode (exactly what was scored) as one small H.264 file.

Written on a thread of its own, never on a camera callback or the inference thread: `submit` hands over
references to the frames (they are never changed once sampled) and returns at once. The file keeps the
frames' capture times, so reading it back gives the same frames at the same times as the model saw them
(up to the codec's loss), and `topreward eval RECORD_DIR --rescore` can score it again.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from topreward.output_files import SOFTWARE, OutputError

_TIME_BASE = Fraction(1, 1000)
QUALITY_CRF = 23  # x264's default: visually lossless enough to look at and to re-score


def write_episode_video(path: Path, frames: Sequence[np.ndarray], times: Sequence[float]) -> int:
    """The frames (RGB, same size) at their times [s] as H.264 in `path` (.mp4); returns the bytes written."""
    import av

    if not frames:
        raise OutputError(f"{path}: no frames")
    h, w = frames[0].shape[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.part")
    try:
        with av.open(str(temporary), "w", format="mp4") as container:
            container.metadata["comment"] = SOFTWARE
            stream = container.add_stream("libx264", rate=2, options={"crf": str(QUALITY_CRF)})
            stream.width, stream.height, stream.pix_fmt = w + w % 2, h + h % 2, "yuv420p"
            stream.codec_context.time_base = _TIME_BASE
            last = -1
            for frame, t in zip(frames, times, strict=True):
                if frame.shape[0] % 2 or frame.shape[1] % 2:  # 4:2:0 chroma needs even sizes
                    frame = np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)))
                picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                last = max(round((t - times[0]) / _TIME_BASE), last + 1)
                picture.pts, picture.time_base = last, _TIME_BASE
                for packet in stream.encode(picture):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        temporary.replace(path)
    except (av.error.FFmpegError, OSError) as exc:
        temporary.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {exc}") from None
    return path.stat().st_size


class EpisodeVideoWriter:
    """A thread that writes submitted episodes one after the other; `on_error` hears each failure."""

    def __init__(self, on_error: Callable[[Path, Exception], None]) -> None:
        self._jobs: queue.Queue = queue.Queue()
        self._on_error = on_error
        self.written = 0  # videos finished
        self._thread = threading.Thread(target=self._run, name="topreward-episode-video", daemon=True)
        self._thread.start()

    def submit(self, path: Path, frames: Sequence[np.ndarray], times: Sequence[float]) -> None:
        self._jobs.put((path, list(frames), list(times)))

    def close(self, timeout: float = 30.0) -> bool:
        """Finish the videos already submitted (up to `timeout`), then stop; True if all were written."""
        self._jobs.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            path, frames, times = job
            try:
                write_episode_video(path, frames, times)
                self.written += 1
            except Exception as exc:  # a full disk must not end the thread: reported, the next one tried
                self._on_error(path, exc)
