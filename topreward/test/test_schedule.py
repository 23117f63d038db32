"""Prefix-stable frame sampling, fixed frame size and the max_frames halving policy."""
from __future__ import annotations

import numpy as np
import pytest

from topreward.frames.schedule import FrameSchedule
from topreward.types import ScheduleConfig

FRAME = np.zeros((48, 64, 3), np.uint8)


def sampled_times(times, **config) -> list[float]:
    s = FrameSchedule(ScheduleConfig(**config))
    for t in times:
        s.offer(FRAME, t)
    return s.times


@pytest.mark.parametrize("camera_fps", [30.0, 15.0, 7.0])
def test_samples_at_sample_fps_whatever_the_camera_rate(camera_fps):
    times = [k / camera_fps for k in range(int(10 * camera_fps))]
    got = sampled_times(times, sample_fps=2.0, max_frames=100)
    assert len(got) == 20
    # Each kept frame is the first at or after its grid point k / 2 s.
    for k, t in enumerate(got):
        assert k / 2.0 - 1e-9 <= t < k / 2.0 + 1.0 / camera_fps
    assert got[0] == 0.0


def test_prefix_stability():
    rng = np.random.default_rng(1)
    times = np.cumsum(rng.uniform(0.01, 0.2, 300)).tolist()
    full = sampled_times(times, sample_fps=2.0, max_frames=1000)
    for cut in (17, 80, 150, 299):
        shorter = sampled_times(times[:cut], sample_fps=2.0, max_frames=1000)
        assert full[:len(shorter)] == shorter


def test_irregular_timestamps_and_gaps():
    times = [0.0, 0.05, 0.61, 0.62, 2.9, 3.05, 3.6]  # a 2.3 s dropout between 0.62 and 2.9
    assert sampled_times(times, sample_fps=2.0) == [0.0, 0.61, 2.9, 3.05, 3.6]


def test_out_of_order_and_duplicate_times_are_dropped():
    s = FrameSchedule(ScheduleConfig(sample_fps=2.0))
    assert s.offer(FRAME, 1.0) and s.offer(FRAME, 1.6)
    assert not s.offer(FRAME, 1.2) and not s.offer(FRAME, 1.6)
    with pytest.raises(ValueError):
        s.offer(FRAME, float("nan"))


def test_frames_resized_to_fixed_size_whatever_their_count():
    s = FrameSchedule(ScheduleConfig(frame_size=(64, 96), max_frames=8))
    for k in range(40):
        s.offer(np.full((480, 640, 3), k, np.uint8), k * 0.5)
        assert all(f.shape == (64, 96, 3) for f in s.frames)


def test_halving_equals_sampling_at_half_rate_from_the_start():
    times = [k / 30.0 for k in range(30 * 50)]  # 50 s at 30 fps
    s = FrameSchedule(ScheduleConfig(sample_fps=2.0, max_frames=16))
    for t in times:
        s.offer(FRAME, t)
        assert len(s) <= 16
    assert s.generation == 3 and s.interval == 4.0
    assert s.times == sampled_times(times, sample_fps=0.25, max_frames=10_000)
    # The whole episode stays in view: the last sampled frame is near the end.
    assert s.times[-1] >= times[-1] - s.interval


@pytest.mark.parametrize("bad", [dict(sample_fps=0), dict(frame_size=(16, 16)), dict(max_frames=1)])
def test_invalid_config(bad):
    with pytest.raises(ValueError):
        ScheduleConfig(**bad)


@pytest.mark.parametrize("camera_fps", [1.0, 0.25])
def test_cap_holds_for_a_camera_slower_than_sample_fps(camera_fps):
    s = FrameSchedule(ScheduleConfig(sample_fps=2.0, max_frames=4))
    generations = []
    for k in range(40):
        s.offer(FRAME, k / camera_fps)
        assert len(s) <= 4
        generations.append(s.generation)
    # The cache is invalidated only when frames are dropped, never by a halving that drops nothing.
    drops = sum(1 for a, b in zip(generations, generations[1:], strict=False) if b > a)
    assert s.generation == drops <= s.halvings
