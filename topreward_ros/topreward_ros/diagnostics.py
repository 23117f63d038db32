"""The node's health as one diagnostic_msgs/DiagnosticStatus, from plain copies of its counters.

Levels: ERROR when the inference thread died or stopped scoring the episode after too many failures in a
row; WARN without an instruction, while batched passes are off after repeated failures, on a failure in
the last RECENT_FAILURE seconds, a camera silent for longer than camera_timeout, or no frame yet; OK
otherwise.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from topreward.online.worker import FailureStats
from topreward_ros.camera_intake import CameraReport

RECENT_FAILURE = 10.0  # [s]


@dataclass(frozen=True)
class BatchHealth:
    """The inference thread's batched passes over several robots (the same for every robot of the node)."""

    failures: int = 0
    batching: bool = True  # False: robots scored one at a time after repeated failures, until a reset


@dataclass(frozen=True)
class Health:
    """Everything the status is made of, copied once per publication (no live object is read twice)."""

    name: str
    state: str  # lifecycle state label
    instruction: str = ""  # the live episode's task; empty: frames are ignored until one arrives
    model: str = ""
    device: str = ""
    episode_id: int = 0
    frames_buffered: int = 0
    worker_alive: bool | None = None  # None: no worker (not active)
    prefixes_scored: int = 0
    inference_latency: float | None = None
    failures: FailureStats = field(default_factory=FailureStats)
    successes: int = 0
    instructions_rejected: int = 0
    cameras: tuple[CameraReport, ...] = ()
    camera_timeout: float = 0.0
    batch: BatchHealth = BatchHealth()


def _level(h: Health, now: float) -> tuple[int, str]:
    if h.state != "active":
        return DiagnosticStatus.OK, h.state
    if h.worker_alive is False:
        return DiagnosticStatus.ERROR, "inference thread stopped"
    if h.failures.halted:
        return DiagnosticStatus.ERROR, (f"episode {h.episode_id} no longer scored after {h.failures.consecutive} "
                                        "failed inferences in a row; reset or re-activate")
    if not h.instruction:
        return DiagnosticStatus.WARN, "no instruction: frames are ignored until one arrives on ~/instruction"
    if not h.batch.batching:
        return DiagnosticStatus.WARN, (f"batched passes failed ({h.batch.failures} in all): robots are scored one "
                                       "at a time until one starts a new episode")
    if h.failures.last_time is not None and now - h.failures.last_time < RECENT_FAILURE:
        return DiagnosticStatus.WARN, f"inference failed recently ({sum(h.failures.by_reason.values())} in all)"
    for camera in h.cameras:
        if camera.silent_for is None:
            return DiagnosticStatus.WARN, f"no frames on {camera.topic}"
        if h.camera_timeout > 0 and camera.silent_for > h.camera_timeout:
            return DiagnosticStatus.WARN, f"{camera.topic} silent for {camera.silent_for:.1f} s"
    return DiagnosticStatus.OK, "active"


def reward_status(h: Health, now: float | None = None) -> DiagnosticStatus:
    now = time.monotonic() if now is None else now
    level, message = _level(h, now)
    values = {
        "model": h.model, "model_state": h.state, "device": h.device, "episode_id": h.episode_id,
        "instruction": h.instruction,
        "frames_buffered": h.frames_buffered,
        "inference_latency_s": "n/a" if h.inference_latency is None else f"{h.inference_latency:.3f}",
        "prefixes_scored": h.prefixes_scored, "successes": h.successes,
        "inference_failures": sum(h.failures.by_reason.values()),
        "inference_failures_in_a_row": h.failures.consecutive,
        "instructions_rejected": h.instructions_rejected,
        "batched_pass_failures": h.batch.failures,
    }
    for reason, count in sorted(h.failures.by_reason.items()):
        values[f"inference_failures {reason}"] = count
    for camera in h.cameras:
        values[f"{camera.topic} rate_hz"] = f"{camera.rate_hz:.1f}"
        values[f"{camera.topic} frames_received"] = camera.received
        values[f"{camera.topic} frames_rejected"] = sum(camera.rejected.values())
        for reason, count in sorted(camera.rejected.items()):
            values[f"{camera.topic} rejected {reason}"] = count
    return DiagnosticStatus(level=level, name=h.name, message=message, hardware_id=h.device,
                            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
