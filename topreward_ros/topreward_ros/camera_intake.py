"""Camera messages -> the episode buffer: stamp checks, conversion, tiling, per-reason rejection counts.

Runs in the camera callbacks and never waits for inference. A message that is rejected never moves
the camera's clock (only a frame the buffer keeps does; a rejected jump is only remembered as a candidate
for the next message), so one corrupt message, whatever its stamp, cannot make later good frames look old.

Only sampled frames are converted, each view straight to the size it takes in the frame. A tiled rig's
views of one sampled frame are converted in parallel (OpenCV releases the GIL), so with a free core per
view the callback takes about one view's time, not the sum.

Stamps (carried as exact integer nanoseconds):
- the header stamp is the capture time;
- a zero stamp means "not stamped": if the camera's first kept frame since activation was unstamped,
  the receive time on the node's clock is used for all its frames; on a stamped camera a zero stamp is
  rejected, since receive time is another clock (a recording or a simulation). The camera keeps its
  mode across resets (re-activate the node to switch), so one unstamped message arriving first after
  a reset cannot turn a stamped camera to receive time and get all its good frames rejected;
- stamps further than `max_stamp_lead` seconds ahead of the node's clock are rejected (a corrupt
  header); stamps in the past are fine (replayed recordings);
- on the primary camera a stamp at or before the newest kept frame is rejected, until the next episode;
  on a secondary view, a stamp before its newest message;
- a stamp more than `max_stamp_gap` seconds after the camera's previous one is rejected (`stamp_jump`)
  unless the message just before it jumped there too and it continues from that one (the camera really
  paused). One stray stamp (another clock, a replay, a corrupt header) is remembered as that candidate
  but never moves the camera's clock, so it cannot make the later good frames look old; after a real
  pause the first frame is lost.

Sizes: an image whose size differs from the camera's kept images of the episode is rejected
(`size_changed`) unless the camera's message before it had that size too (the camera was reconfigured:
its first image in the new size is lost). One odd message is never resized into the episode. A change of
encoding alone is converted exactly and kept.
"""
from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from topreward.frames.image_conversion import ImageConversionError, check_message, to_rgb
from topreward.frames.tiling import column_sizes, tile_views
from topreward.online.buffer import EpisodeBuffer
from topreward_ros.node_config import IntakeConfig

_RATE_WINDOW = 5.0  # [s] the camera rate in diagnostics is averaged over this long


class Confirmation:
    """A change one message alone cannot make (a stamp jump, a new image size): kept once the next confirms it.

    So that no single message, however stamped or shaped, silences the camera's later good frames.
    """

    def __init__(self) -> None:
        self.pending = None  # the value of the last message refused as a change

    def passes(self, value, changed: bool, continues: Callable[[object], bool]) -> bool:
        """Whether a message of `value` is kept: unchanged, or continuing the change the message before it made."""
        candidate, self.pending = self.pending, (value if changed else None)
        return not changed or (candidate is not None and continues(candidate))


@dataclass
class CameraState:
    """One camera's counters and its newest usable message (secondary views)."""

    topic: str
    received: int = 0
    rejected: Counter = field(default_factory=Counter)  # reason -> count
    receipts: deque = field(default_factory=lambda: deque(maxlen=2000))  # time.monotonic() of recent messages
    unstamped: bool | None = None  # whether its frames use receive time (None: no frame kept since activation)
    episode: int = -1  # the episode `latest` belongs to
    latest: tuple[object, int] | None = None  # (message, stamp [ns]) of a secondary view
    jump: Confirmation = field(default_factory=Confirmation)  # a stamp far after the previous frame's
    image_size: tuple[int, int] | None = None  # (width, height) of its newest kept image
    size_episode: int = -1  # the episode `image_size` belongs to
    resize: Confirmation = field(default_factory=Confirmation)  # an image size other than the episode's

    def rate(self, now: float) -> float:
        recent = sum(1 for t in self.receipts if now - t <= _RATE_WINDOW)
        return recent / _RATE_WINDOW

    def silent_for(self, now: float) -> float | None:
        return now - self.receipts[-1] if self.receipts else None


@dataclass(frozen=True)
class CameraReport:
    """A consistent copy of one camera's counters for diagnostics."""

    topic: str
    received: int
    rejected: dict[str, int]
    rate_hz: float
    silent_for: float | None  # [s] since the last message, None before the first


class Rejected(Exception):
    """A camera message that is dropped; `reason` is the counter it goes to."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class CameraIntake:
    """Turns the messages of the configured cameras into kept frames of the live episode."""

    def __init__(self, config: IntakeConfig, buffer: EpisodeBuffer, now_ns: Callable[[], int],
                 warn: Callable[[str], None]) -> None:
        self.config, self.buffer, self._now_ns, self._warn = config, buffer, now_ns, warn
        self.cameras = [CameraState(topic) for topic in config.scored_topics]
        self.frame_id = ""  # of the primary camera's newest kept frame
        self._lock = threading.Lock()  # counters are written by camera callbacks, read by diagnostics
        # Converts the secondary views while the callback converts the primary one. Never shut down: a
        # callback may still run while the node deactivates; the idle threads exit once the intake is gone.
        self._views = (ThreadPoolExecutor(len(self.cameras) - 1, thread_name_prefix="topreward_views")
                       if len(self.cameras) > 1 else None)

    def reports(self) -> list[CameraReport]:
        now = time.monotonic()
        with self._lock:
            return [CameraReport(c.topic, c.received, dict(c.rejected), c.rate(now), c.silent_for(now))
                    for c in self.cameras]

    def on_message(self, msg, index: int) -> None:
        camera = self.cameras[index]
        with self._lock:
            camera.received += 1
            camera.receipts.append(time.monotonic())
        try:
            self._take(msg, index, camera)
        except (Rejected, ImageConversionError) as exc:
            with self._lock:
                camera.rejected[exc.reason] += 1
            self._warn(f"{camera.topic}: frame dropped ({exc.reason}): {exc}")

    def _stamp_ns(self, msg, camera: CameraState, episode: int) -> tuple[int, bool]:
        """(capture stamp [ns], whether it is the receive time), or Rejected; changes no state."""
        stamp = msg.header.stamp
        stamp_ns = stamp.sec * 1_000_000_000 + stamp.nanosec
        unstamped = camera.unstamped  # not per episode: see the module docstring
        now = self._now_ns()
        if stamp_ns == 0:
            if unstamped is False:
                raise Rejected("zero_stamp", "zero stamp on a camera whose frames are stamped (receive time is "
                                             "another clock)")
            return now, True
        if unstamped is True:
            raise Rejected("mixed_stamps", "stamped frame on a camera whose frames are unstamped (receive "
                                           "time); re-activate the node to switch")
        lead = self.config.max_stamp_lead
        if lead > 0 and now > 0 and stamp_ns > now + lead * 1e9:  # now is 0 until /clock runs (sim time)
            raise Rejected("future_stamp", f"stamp {(stamp_ns - now) / 1e9:.1f} s ahead of the node's clock "
                                           f"(max_stamp_lead {lead:g} s)")
        return stamp_ns, False

    def _check_gap(self, camera: CameraState, previous_ns: int, stamp_ns: int) -> None:
        """Rejected as stamp_jump if `stamp_ns` is too far after `previous_ns` and does not continue a jump."""
        gap = self.config.max_stamp_gap * 1e9
        if gap <= 0:
            return
        with self._lock:  # on time, or the second message in a row on the new timeline: the camera moved on
            if camera.jump.passes(stamp_ns, stamp_ns - previous_ns > gap, lambda jumped: 0 < stamp_ns - jumped <= gap):
                return
        raise Rejected("stamp_jump", f"stamp {(stamp_ns - previous_ns) / 1e9:.1f} s after the previous frame "
                                     f"(max_stamp_gap {self.config.max_stamp_gap:g} s); kept once the next frame "
                                     "continues from it")

    def _check_image_size(self, camera: CameraState, image_size: tuple[int, int], episode: int) -> None:
        """Rejected as size_changed if the image's size is not the episode's on this camera.

        Unless the camera's message before it had this new size too: the camera was reconfigured.
        """
        kept = camera.image_size if camera.size_episode == episode else None
        with self._lock:
            if camera.resize.passes(image_size, kept is not None and image_size != kept, image_size.__eq__):
                return
        raise Rejected("size_changed", f"{image_size[0]}x{image_size[1]} image in an episode of {kept[0]}x{kept[1]} "
                                         "ones; kept once the next one has that size too")

    def _keep_image_size(self, camera: CameraState, image_size: tuple[int, int], episode: int) -> None:
        with self._lock:
            camera.image_size, camera.size_episode, camera.resize.pending = image_size, episode, None

    def _take(self, msg, index: int, camera: CameraState) -> None:
        episode = self.buffer.episode_id
        stamp_ns, unstamped = self._stamp_ns(msg, camera, episode)
        if index > 0:  # a secondary view: checked now, converted only when a primary frame is tiled with it
            image_size = check_message(msg, self.config.max_image_pixels)
            latest = camera.latest if camera.episode == episode else None
            if latest is not None and stamp_ns < latest[1]:
                raise Rejected("stamp_backwards", f"stamp went back {(latest[1] - stamp_ns) / 1e9:.3f} s")
            if latest is not None:
                self._check_gap(camera, latest[1], stamp_ns)
            self._check_image_size(camera, image_size, episode)
            self._keep_image_size(camera, image_size, episode)
            with self._lock:
                camera.episode, camera.latest = episode, (msg, stamp_ns)
                camera.unstamped = unstamped
            return
        last = self.buffer.last_stamp_ns()
        if last is not None and stamp_ns <= last:
            if stamp_ns == last:
                raise Rejected("duplicate_stamp", "same stamp as the previous kept frame")
            raise Rejected("stamp_backwards", f"stamp went back {(last - stamp_ns) / 1e9:.3f} s (replaying a "
                                              "recording? call ~/reset between episodes)")
        if last is not None:
            self._check_gap(camera, last, stamp_ns)
        t = stamp_ns / 1e9
        ticket = self.buffer.admit(t)  # the episode this frame is for, if it is sampled at all
        if ticket is None:
            if not self.buffer.instruction:
                self._warn("no instruction yet: publish one on ~/instruction")
            return
        image_size = check_message(msg, self.config.max_image_pixels)  # cheap: the header only
        # Each view is converted straight to the size it takes in the frame (cheaper, same pixels).
        size = self.buffer.config.frame_size
        columns = column_sizes(len(self.cameras), size)  # one camera: its column is the frame
        secondaries = [self._views.submit(self._secondary, c, stamp_ns, ticket, column)
                       for c, column in zip(self.cameras[1:], columns[1:], strict=True)]
        try:
            primary = to_rgb(msg, self.config.max_image_pixels, columns[0])
        finally:  # a rejected primary frame still waits for its views: they use the camera states
            views = [future.result() for future in secondaries]
        self._check_image_size(camera, image_size, ticket)  # after converting: a broken image is rejected for that
        frame = tile_views([primary, *views], size) if views else primary
        # Dropped if a reset came in meanwhile: a frame of the old episode never starts the next one.
        if self.buffer.offer(frame, t, ticket, stamp_ns):
            with self._lock:
                camera.episode, camera.unstamped = ticket, unstamped
            self._keep_image_size(camera, image_size, ticket)
            self.frame_id = msg.header.frame_id

    def _secondary(self, camera: CameraState, stamp_ns: int, episode: int,
                   size: tuple[int, int]) -> np.ndarray | None:
        latest = camera.latest if camera.episode == episode else None
        if latest is None or abs(latest[1] - stamp_ns) > self.config.max_view_skew * 1e9:
            self._warn(f"{camera.topic}: no frame within max_view_skew of the primary view; tiling a black view")
            return None
        try:
            return to_rgb(latest[0], self.config.max_image_pixels, size)
        except ImageConversionError as exc:
            with self._lock:
                camera.rejected[exc.reason] += 1
                camera.latest = None
            self._warn(f"{camera.topic}: frame dropped ({exc.reason}): {exc}")
            return None
