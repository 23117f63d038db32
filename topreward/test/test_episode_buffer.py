"""The episode buffer shared by camera callbacks and the inference worker."""
from __future__ import annotations

import threading

import numpy as np

from topreward.online.buffer import EpisodeBuffer
from topreward.types import ScheduleConfig

FRAME = np.zeros((32, 32, 3), np.uint8)


def test_frame_admitted_before_a_reset_never_enters_the_next_episode():
    buffer = EpisodeBuffer(ScheduleConfig(frame_size=(32, 32)), "open the drawer")
    ticket = buffer.admit(100.0)
    assert ticket == 0
    buffer.new_episode()  # the reset lands while the camera thread converts the frame
    assert not buffer.offer(FRAME, 100.0, ticket)
    assert len(buffer) == 0
    assert buffer.offer(FRAME, 3.0, buffer.admit(3.0)) and len(buffer) == 1


def test_no_frames_without_instruction():
    buffer = EpisodeBuffer(ScheduleConfig(frame_size=(32, 32)), "")
    assert buffer.admit(1.0) is None and not buffer.offer(FRAME, 1.0)
    buffer.new_episode("wipe the table")
    assert buffer.offer(FRAME, 1.0, buffer.admit(1.0))


def test_worker_wakes_on_new_frames_and_on_reset():
    buffer = EpisodeBuffer(ScheduleConfig(frame_size=(32, 32)), "stack")
    assert buffer.wait_for_change(None, timeout=0.05).version == (0, 0, 0)
    seen = (0, 0, 0)
    assert buffer.wait_for_change(seen, timeout=0.05) is None  # nothing new
    threading.Timer(0.05, lambda: buffer.offer(FRAME, 1.0)).start()
    snapshot = buffer.wait_for_change(seen, timeout=2.0)
    assert snapshot is not None and snapshot.version == (0, 0, 1)
    buffer.offer(FRAME, 1.5)
    assert len(snapshot.frames) == 1  # a snapshot does not change under the worker
    snapshot = buffer.wait_for_change(snapshot.version, timeout=2.0)
    assert snapshot.version == (0, 0, 2)
    threading.Timer(0.05, buffer.new_episode).start()
    snapshot = buffer.wait_for_change(snapshot.version, timeout=2.0)
    assert snapshot.episode_id == 1 and len(snapshot.frames) == 0
