"""The in-process facade: episodes, skipped frames, tiled views, and what bad input gets."""
from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import random_frames

from topreward import TOPReward
from topreward.frames.tiling import tile_views
from topreward.scoring.scorer import StreamingScorer
from topreward.types import ScheduleConfig, SuccessConfig

TASK = "stack the red block on the blue one"
SCHEDULE = ScheduleConfig(2.0, (64, 64), 16)


@pytest.fixture
def reward(backend):
    return TOPReward(backend, SCHEDULE, SuccessConfig(-100.0, 2, 1.0))


def test_steps_are_the_scorer_values_with_causal_progress_and_one_success(reward, backend):
    frames = random_frames(5, seed=1, size=(64, 64))
    plain = TOPReward(backend, SCHEDULE)  # the default threshold: the tiny model's values stay far below it
    assert plain.reset(TASK) == 0 and reward.reset(TASK) == 0
    steps = [plain.observe(frame, 10.0 + 0.5 * k) for k, frame in enumerate(frames)]
    scorer = StreamingScorer(backend, TASK, SCHEDULE)
    for k, frame in enumerate(frames):
        scorer.append(frame, 10.0 + 0.5 * k)
    assert [s.log_prob_true for s in steps] == pytest.approx([scorer.score(n).log_prob_true for n in range(1, 6)],
                                                             abs=1e-5)
    assert [s.num_frames for s in steps] == [1, 2, 3, 4, 5] and steps[0].progress == 0.0
    assert sum(s.reward for s in steps) == pytest.approx(steps[-1].progress)  # rewards are progress changes
    assert all(0.0 <= s.progress < 1.0 for s in steps) and steps[2].stamp_ns == 11_000_000_000
    assert not any(s.success for s in steps)
    # Threshold -100 nats: every value is over it; min_episode_duration 1 s and 2 in a row: the event fires
    # once, at the first prefix that ends 1 s into the episode.
    fired = [reward.observe(frame, 10.0 + 0.5 * k) for k, frame in enumerate(frames)]
    assert [s.num_frames for s in fired if s.success] == [3]
    assert steps[0].model == backend.name and steps[0].instruction == TASK


def test_skipped_frames_resets_and_tiled_views(reward):
    frames = random_frames(4, seed=2, size=(48, 80))
    reward.reset(TASK)
    assert reward.observe(frames[0], 1.0) is not None
    assert reward.observe(frames[1], 1.2) is None  # within the same 0.5 s cell of the 2 fps grid
    assert reward.reset("open the drawer") == 1 and reward.instruction == "open the drawer"
    assert reward.last_episode[0] == 0 and len(reward.last_episode[2].scores) == 1
    step = reward.observe(frames[2], 0.5)  # a new episode may start earlier on the caller's clock
    assert step.episode_id == 1 and step.num_frames == 1 and step.elapsed == 0.0
    tiled = reward.observe([frames[3], frames[0]], 1.0)  # two cameras, tiled as the node tiles them
    assert tiled.num_frames == 2
    assert reward.reset() == 2 and reward.instruction == "open the drawer"  # None keeps the task


def test_the_tiled_frame_is_what_the_node_tiles(reward):
    views = random_frames(2, seed=3, size=(64, 64))
    reward.reset(TASK)
    reward.observe(views, 1.0)
    kept = reward._buffer.wait_for_change(None, 0.0).frames.frames[0]
    assert np.array_equal(kept, tile_views(views, SCHEDULE.frame_size))


@pytest.mark.parametrize("case, error, match", [
    ("before_reset", RuntimeError, "reset"),
    ("time_back", ValueError, "not after"),
    ("nan_time", ValueError, "finite"),
    ("gray_frame", ValueError, "RGB uint8"),
    ("float_frame", ValueError, "RGB uint8"),
    ("empty_task", ValueError, "must not be empty"),
    ("long_task", ValueError, "at most 1000"),
    ("first_reset_without_task", ValueError, "needs an instruction"),
])
def test_bad_input_is_refused_with_a_reason_and_the_episode_goes_on(backend, case, error, match):
    reward = TOPReward(backend, SCHEDULE)
    frame = random_frames(1, seed=4, size=(64, 64))[0]
    if case not in ("before_reset", "first_reset_without_task"):
        reward.reset(TASK)
        reward.observe(frame, 2.0)
    with pytest.raises(error, match=match):
        if case == "before_reset":
            reward.observe(frame, 1.0)
        elif case == "time_back":
            reward.observe(frame, 1.5)
        elif case == "nan_time":
            reward.observe(frame, math.nan)
        elif case == "gray_frame":
            reward.observe(frame[..., 0], 3.0)
        elif case == "float_frame":
            reward.observe(frame.astype(np.float32), 3.0)
        elif case == "empty_task":
            reward.reset("   ")
        elif case == "long_task":
            reward.reset("x" * 1001)
        else:
            reward.reset()
    if reward.episode_id >= 0:  # nothing was lost: the next good frame is scored in the same episode
        step = reward.observe(frame, 3.0)
        assert step is not None and step.episode_id == 0 and step.num_frames == 2


def test_load_tiny_random_warns_and_scores(caplog):
    reward = TOPReward.load("tiny-random", device="cpu", dtype="float32", frame_size=(64, 64))
    assert "random" in caplog.text.lower()
    reward.reset(TASK)
    step = reward.observe(random_frames(1, seed=5, size=(64, 64))[0], 0.0)
    assert step is not None and math.isfinite(step.log_prob_true)
