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

import cv2
import numpy as np

from topreward.frames.image_conversion import resize_image
from topreward.online.episode import OnlineEpisode
from topreward.output_files import SOFTWARE, OutputError, claim
from topreward.scoring.curve import Curve
from topreward.types import PrefixScore, SuccessConfig

VIDEO_HEIGHT = 360  # [px] of the source picture in the output; the panel adds PANEL_HEIGHT below it
PANEL_HEIGHT = 160
MIN_WIDTH = 480  # [px] a narrow picture is centred on a panel this wide, so the values stay readable
_PLOT_TOP = VIDEO_HEIGHT + 58  # the curve's area in the panel, under two lines of text and the progress bar
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


class ProgressPainter:
    """Draws one output frame: the picture, then the curve panel up to time `t`."""

    def __init__(self, curve: Curve, frame_shape: tuple[int, int], threshold: float | None,
                 success_at: float | None, duration: float) -> None:
        h, w = frame_shape
        self.picture_width = 2 * round(w * VIDEO_HEIGHT / h / 2)  # even sizes: H.264's 4:2:0 chroma needs them
        self.width = max(self.picture_width, MIN_WIDTH)
        self.curve, self.threshold, self.success_at = curve, threshold, success_at
        self.duration = max(duration, curve.prefix_times[-1], 1e-6)
        values = list(curve.log_prob_true) + ([threshold] if threshold is not None else [])
        low, high = min(values), max(values)
        margin = max(high - low, 1e-3) * 0.1
        self.low, self.high = low - margin, high + margin
        self.times = np.asarray(curve.prefix_times)

    def _xy(self, t: float, value: float) -> tuple[int, int]:
        left, right, top, bottom = 10, self.width - 10, _PLOT_TOP, VIDEO_HEIGHT + PANEL_HEIGHT - 10
        x = left + (right - left) * t / self.duration
        y = bottom - (bottom - top) * (value - self.low) / (self.high - self.low)
        return int(round(x)), int(round(y))

    def paint(self, frame: np.ndarray, t: float) -> np.ndarray:
        out = np.zeros((VIDEO_HEIGHT + PANEL_HEIGHT, self.width, 3), np.uint8)
        x0 = (self.width - self.picture_width) // 2
        out[:VIDEO_HEIGHT, x0:x0 + self.picture_width] = resize_image(frame, (VIDEO_HEIGHT, self.picture_width))
        out[VIDEO_HEIGHT:] = 32
        white, gray, green, amber = (255, 255, 255), (150, 150, 150), (80, 220, 80), (255, 190, 40)
        cv2.putText(out, self.curve.instruction[:90], (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3,
                    cv2.LINE_AA)
        cv2.putText(out, self.curve.instruction[:90], (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, white, 1, cv2.LINE_AA)
        if self.threshold is not None:
            y = self._xy(0.0, self.threshold)[1]
            cv2.line(out, (10, y), (self.width - 10, y), amber, 1, cv2.LINE_AA)
        seen = int(np.searchsorted(self.times, t + 1e-9))  # prefixes whose newest frame is not after t
        points = [self._xy(pt, v) for pt, v in zip(self.times[:seen], self.curve.log_prob_true[:seen], strict=True)]
        if len(points) > 1:
            cv2.polylines(out, [np.asarray(points, np.int32)], False, (90, 160, 255), 2, cv2.LINE_AA)
        for point in points:
            cv2.circle(out, point, 3, (90, 160, 255), -1, cv2.LINE_AA)
        now_x = self._xy(min(t, self.duration), self.low)[0]
        cv2.line(out, (now_x, _PLOT_TOP - 4), (now_x, VIDEO_HEIGHT + PANEL_HEIGHT - 5), gray, 1)
        lines = [f"t {t:5.1f} s", ""]
        if seen:
            k = seen - 1
            lines = [f"t {t:5.1f} s   progress {self.curve.normalized[k]:.2f}",
                     f"log p(True) {self.curve.log_prob_true[k]:.2f}   p_true {self.curve.p_true[k]:.2f}"]
            bar = int(round((self.width - 20) * min(max(self.curve.normalized[k], 0.0), 1.0)))
            cv2.rectangle(out, (10, VIDEO_HEIGHT + 44), (10 + bar, VIDEO_HEIGHT + 50), green, -1)
        for row, line in enumerate(lines):
            cv2.putText(out, line, (10, VIDEO_HEIGHT + 17 + 18 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.45, white, 1,
                        cv2.LINE_AA)
        if self.success_at is not None and t >= self.success_at:
            x = self._xy(self.success_at, self.low)[0]
            cv2.line(out, (x, _PLOT_TOP - 4), (x, VIDEO_HEIGHT + PANEL_HEIGHT - 5), green, 2)
            cv2.putText(out, "SUCCESS", (self.width - 95, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, green, 2, cv2.LINE_AA)
        return out


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
                painter = ProgressPainter(curve, frame.shape[:2], threshold, success_at, duration)
                stream = container.add_stream("libx264", rate=30)
                stream.width, stream.height, stream.pix_fmt = painter.width, VIDEO_HEIGHT + PANEL_HEIGHT, "yuv420p"
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
