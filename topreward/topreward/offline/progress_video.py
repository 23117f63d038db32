"""Progress videos: an episode's own video at its own frame times, with TOPReward's curve drawn up to each frame.

Each output frame is the source frame (views tiled side by side), and under it the raw log p(True) of the
prefixes scored up to that frame's time, the success threshold as a line, the moment the node would have
reported success (the node's own rule, replayed on the curve), and the current values. H.264 through
PyAV, timestamps copied from the source, so a variable frame rate stays as it was.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np

from topreward.online.episode import OnlineEpisode
from topreward.output_files import SOFTWARE, OutputError, claim
from topreward.overlay import ProgressPainter, Trace
from topreward.scoring.curve import Curve
from topreward.types import PrefixScore, SuccessConfig

_TIME_BASE = Fraction(1, 1000)  # output timestamps in milliseconds


def video_ours(path: Path) -> bool:
    """A video this package wrote: its container comment names the software (see output_files)."""
    import av

    try:
        with av.open(str(path)) as container:
            return container.metadata.get("comment") == SOFTWARE
    except (av.error.FFmpegError, OSError):
        return False


def success_time(curve: Curve, success: SuccessConfig) -> float | None:
    """When the node would have reported success on this curve [s since its first frame], or None.

    The node's rule itself (OnlineEpisode) replayed on the curve's prefixes, so the mark means what a
    SuccessDetected would have meant. Offline prefixes are sparser than the node's, so the count of
    evaluations in a row differs from a live run's: the mark is an estimate of the live moment.
    """
    episode = OnlineEpisode(success)
    for n, t, raw, false in zip(curve.prefix_lengths, curve.prefix_times, curve.log_prob_true, curve.log_prob_false,
                                strict=True):
        step = episode.update(PrefixScore(n, t, t, raw, false))
        if step.success is not None:
            return step.success.elapsed
    return None


def write_progress_video(path: Path, frames: Iterable[tuple[np.ndarray, float]], curve: Curve, duration: float,
                         threshold: float | None = None, success: SuccessConfig | None = None,
                         on_frame: Callable[[], None] | None = None) -> int:
    """Write the progress video of `frames` (RGB, time [s] on the source's clock); returns the frames written.

    `duration` is the episode's length [s] (the x axis). With a `threshold` the line is drawn and the moment
    the node would have reported success is marked (`success`: the rest of the node's rule, default its
    defaults). Never through a symbolic link or over a file this package did not write.
    """
    import av

    success_at = None
    if threshold is not None:
        config = success or SuccessConfig()
        success_at = success_time(curve, SuccessConfig(threshold, config.consecutive, config.min_episode_duration,
                                                       config.metric, config.window))
    claim(path, video_ours)
    path.parent.mkdir(parents=True, exist_ok=True)
    painter, written, first, last_pts = None, 0, None, -1
    try:
        container = av.open(str(path), "w", format="mp4")
    except (av.error.FFmpegError, OSError) as exc:
        raise OutputError(f"cannot write {path}: {exc}") from None
    with container:
        container.metadata["comment"] = SOFTWARE
        stream = None
        for frame, t in frames:
            first = t if first is None else first
            if painter is None:
                trace = Trace(curve.instruction, curve.prefix_times, curve.log_prob_true, curve.p_true,
                              curve.normalized)
                painter = ProgressPainter(trace, frame.shape[:2], threshold, success_at, duration)
                stream = container.add_stream("libx264", rate=30)
                stream.width, stream.height, stream.pix_fmt = painter.width, painter.height, "yuv420p"
                stream.codec_context.time_base = _TIME_BASE
            picture = av.VideoFrame.from_ndarray(painter.paint(frame, t - first), format="rgb24")
            last_pts = max(round((t - first) / _TIME_BASE), last_pts + 1)  # a repeated stamp: 1 ms later
            picture.pts, picture.time_base = last_pts, _TIME_BASE
            for packet in stream.encode(picture):
                container.mux(packet)
            written += 1
            if on_frame is not None:
                on_frame()
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    if not written:
        path.unlink(missing_ok=True)
        raise OutputError(f"{path}: the episode has no frames to draw")
    return written
