"""A frame with TOPReward's progress under it: the picture of a progress video and of the node's debug image.

The panel shows the raw log p(True) of the prefixes scored so far against time, the success threshold as a
line, the moment of success, a progress bar and the current values. OpenCV drawing: about a millisecond.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

VIDEO_HEIGHT = 360  # [px] of the source picture's area in the output; the panel adds PANEL_HEIGHT below it
PANEL_HEIGHT = 160
MIN_WIDTH = 480  # [px] a narrow picture is centred on a panel this wide, so the values stay readable
MAX_WIDTH = 768  # [px] a wide picture (tiled views) is shrunk to this width and centred in the area's height
_PLOT_TOP = VIDEO_HEIGHT + 58  # the curve's area in the panel, under two lines of text and the progress bar


def picture_size(frame_shape: tuple[int, int]) -> tuple[int, int]:
    """(height, width) of a frame in the picture: VIDEO_HEIGHT high, or MAX_WIDTH wide if that is narrower.

    Even sizes: H.264's 4:2:0 chroma needs them.
    """
    h, w = frame_shape
    if w * VIDEO_HEIGHT <= MAX_WIDTH * h:
        return VIDEO_HEIGHT, 2 * round(w * VIDEO_HEIGHT / h / 2)
    return 2 * round(h * MAX_WIDTH / w / 2), MAX_WIDTH


def display_resize(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A frame at `size` for looking at: bilinear, the cheapest resize that does not show blocks when enlarged."""
    if frame.shape[:2] == size:
        return frame
    return cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


@dataclass(frozen=True)
class Trace:
    """An episode's scored prefixes, oldest first: what the panel draws."""

    instruction: str
    times: Sequence[float]  # [s] since the episode's first frame, newest frame of each prefix
    log_prob_true: Sequence[float]
    p_true: Sequence[float]
    progress: Sequence[float]  # normalized (offline) or causal (online) progress in [0, 1]


class ProgressPainter:
    """Draws one picture: the frame, then a panel with the trace's values up to time `t` and its current ones."""

    def __init__(self, trace: Trace, frame_shape: tuple[int, int], threshold: float | None,
                 success_at: float | None, duration: float, caption: str = "", bgr: bool = False) -> None:
        self.bgr = bgr  # paint in BGR order (a ROS bgr8 image) rather than RGB: no conversion of the whole picture
        self.picture_size = picture_size(frame_shape)
        self.width = max(self.picture_size[1], MIN_WIDTH)
        self.height = VIDEO_HEIGHT + PANEL_HEIGHT
        self.trace, self.threshold, self.success_at, self.caption = trace, threshold, success_at, caption
        self.duration = max(duration, trace.times[-1] if len(trace.times) else 0.0, 1e-6)
        values = list(trace.log_prob_true) + ([threshold] if threshold is not None else [])
        low, high = min(values), max(values)
        margin = max(high - low, 1e-3) * 0.1
        self.low, self.high = low - margin, high + margin
        self.times = np.asarray(trace.times)

    def _xy(self, t: float, value: float) -> tuple[int, int]:
        left, right, top, bottom = 10, self.width - 10, _PLOT_TOP, VIDEO_HEIGHT + PANEL_HEIGHT - 10
        x = left + (right - left) * t / self.duration
        y = bottom - (bottom - top) * (value - self.low) / (self.high - self.low)
        return int(round(x)), int(round(y))

    def _points(self, count: int) -> np.ndarray:
        """Pixel positions of the first `count` prefixes' values, as _xy places them (vectorized)."""
        left, right, top, bottom = 10, self.width - 10, _PLOT_TOP, VIDEO_HEIGHT + PANEL_HEIGHT - 10
        x = left + (right - left) * self.times[:count] / self.duration
        y = bottom - (bottom - top) * (np.asarray(self.trace.log_prob_true[:count]) - self.low) / (self.high - self.low)
        return np.stack([x, y], axis=1).round().astype(np.int32)

    def paint(self, frame: np.ndarray, t: float) -> np.ndarray:
        out = np.zeros((VIDEO_HEIGHT + PANEL_HEIGHT, self.width, 3), np.uint8)
        h, w = self.picture_size
        y0, x0 = (VIDEO_HEIGHT - h) // 2, (self.width - w) // 2
        picture = display_resize(frame, self.picture_size)
        out[y0:y0 + h, x0:x0 + w] = cv2.cvtColor(picture, cv2.COLOR_RGB2BGR) if self.bgr else picture
        out[VIDEO_HEIGHT:] = 32
        order = (lambda rgb: rgb[::-1]) if self.bgr else (lambda rgb: rgb)
        white, gray, green, amber, blue = (order(c) for c in ((255, 255, 255), (150, 150, 150), (80, 220, 80),
                                                            (255, 190, 40), (90, 160, 255)))
        cv2.putText(out, self.trace.instruction[:90], (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3,
                    cv2.LINE_AA)
        cv2.putText(out, self.trace.instruction[:90], (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, white, 1, cv2.LINE_AA)
        if self.threshold is not None:
            y = self._xy(0.0, self.threshold)[1]
            cv2.line(out, (10, y), (self.width - 10, y), amber, 1, cv2.LINE_AA)
        seen = int(np.searchsorted(self.times, t + 1e-9))  # prefixes whose newest frame is not after t
        points = self._points(seen)
        if len(points) > 1:
            cv2.polylines(out, [points], False, blue, 2, cv2.LINE_AA)
        for x, y in points[-32:].tolist():  # a dot per scored prefix, the last 32 (more would blur into the line)
            cv2.circle(out, (x, y), 3, blue, -1)
        now_x = self._xy(min(t, self.duration), self.low)[0]
        cv2.line(out, (now_x, _PLOT_TOP - 4), (now_x, VIDEO_HEIGHT + PANEL_HEIGHT - 5), gray, 1)
        lines = [f"t {t:5.1f} s", ""]
        if seen:
            k = seen - 1
            lines = [f"t {t:5.1f} s   progress {self.trace.progress[k]:.2f}   {self.caption}",
                     f"log p(True) {self.trace.log_prob_true[k]:.2f}   p_true {self.trace.p_true[k]:.2f}"]
            bar = int(round((self.width - 20) * min(max(self.trace.progress[k], 0.0), 1.0)))
            cv2.rectangle(out, (10, VIDEO_HEIGHT + 44), (10 + bar, VIDEO_HEIGHT + 50), green, -1)
        for row, line in enumerate(lines):
            cv2.putText(out, line, (10, VIDEO_HEIGHT + 17 + 18 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.45, white, 1,
                        cv2.LINE_AA)
        if self.success_at is not None and t >= self.success_at:
            x = self._xy(self.success_at, self.low)[0]
            cv2.line(out, (x, _PLOT_TOP - 4), (x, VIDEO_HEIGHT + PANEL_HEIGHT - 5), green, 2)
            cv2.putText(out, "SUCCESS", (self.width - 95, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, green, 2, cv2.LINE_AA)
        return out
