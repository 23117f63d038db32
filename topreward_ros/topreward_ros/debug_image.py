"""`~/debug_image`: the frame the model saw last, enlarged, with the episode's progress so far (topreward.overlay).

Rendered on a thread of its own, never on the inference thread, and only while someone subscribes. Only the
newest scored prefix waits to be drawn: a step that arrives while the previous one is still being drawn
replaces the one waiting, so the picture never falls behind the scores. Each image's header is its
Progress message's header.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
from sensor_msgs.msg import Image

from topreward.overlay import ProgressPainter, Trace


@dataclass(frozen=True)
class DebugFrame:
    """One scored prefix to draw: what the model saw, the episode so far, and the Progress header."""

    frame: np.ndarray  # RGB, exactly the prefix's newest frame as scored (tiled views as tiled)
    trace: Trace
    threshold: float | None
    success_at: float | None  # [s] when this episode's success was reported, if it was
    header: object  # std_msgs/Header of the Progress message
    caption: str


class DebugImagePublisher:
    """Draws and publishes DebugFrames on its own thread; `offer` costs a subscriber check and a copy of refs."""

    def __init__(self, publisher, on_error) -> None:
        self.publisher = publisher
        self.rendered = 0  # images drawn (and published) since start
        self.render_seconds = 0.0  # time spent drawing them
        self._on_error = on_error
        self._pending: DebugFrame | None = None
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="topreward-debug-image", daemon=True)
        self._thread.start()

    def wanted(self) -> bool:
        """Whether anyone subscribes: nothing is drawn otherwise."""
        return self.publisher.get_subscription_count() > 0

    def offer(self, item: DebugFrame) -> None:
        with self._cond:
            self._pending = item  # replaces one not drawn yet: never queued behind scoring
            self._cond.notify()

    def close(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stop or self._pending is not None)
                if self._stop:
                    return
                item, self._pending = self._pending, None
            try:
                self.publisher.publish(self.render(item))
            except Exception as exc:  # a drawing bug must not end the thread: logged (throttled), next one drawn
                self._on_error(exc)

    def render(self, item: DebugFrame) -> Image:
        start = time.perf_counter()
        trace = item.trace
        painter = ProgressPainter(trace, item.frame.shape[:2], item.threshold, item.success_at,
                                  duration=trace.times[-1], caption=item.caption, bgr=True)
        picture = painter.paint(item.frame, trace.times[-1])
        msg = Image(height=picture.shape[0], width=picture.shape[1], encoding="bgr8", step=picture.shape[1] * 3)
        msg.header = item.header
        msg.data = picture.tobytes()
        self.rendered += 1
        self.render_seconds += time.perf_counter() - start
        return msg
