"""The Gymnasium wrapper on a real MetaWorld environment rendering rgb_array frames (MuJoCo, offscreen EGL)."""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")  # offscreen rendering, no display
try:
    import gymnasium
    import metaworld  # noqa: F401 (registers the Meta-World environments)
except ImportError:
    if os.environ.get("CI"):
        raise
    pytest.skip("the gym extra and MetaWorld are not installed (requirements/common.txt has them)",
                allow_module_level=True)

from topreward import TOPReward
from topreward.gym import TOPRewardWrapper
from topreward.types import ScheduleConfig, SuccessConfig

TASK = "reach the red goal position"


def make_env(render_mode: str | None = "rgb_array"):
    return gymnasium.make("Meta-World/MT1", env_name="reach-v3", render_mode=render_mode, width=64, height=64, seed=0)


@pytest.fixture
def reward(backend):
    # 8 fps on MetaWorld's 12.5 ms steps: a frame every 10th step. Threshold -100 nats: the tiny random
    # model's values are all over it, so success is detected at the second scored frame after 0.2 s.
    return TOPReward(backend, ScheduleConfig(8.0, (64, 64), 32), SuccessConfig(-100.0, 2, 0.2))


def rollout(env, steps: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    out = []
    for _ in range(steps):
        out.append(env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)))
        if out[-1][2] or out[-1][3]:
            break
    return out


@pytest.mark.parametrize("mode", ["add", "replace"])
def test_dense_reward_and_success_end_the_episode(reward, mode):
    wrapped = TOPRewardWrapper(make_env(), reward, TASK, mode=mode)
    plain = make_env(render_mode=None)
    try:
        got, raw = rollout(wrapped, 60), rollout(plain, 60)
    finally:
        wrapped.close()
        plain.close()
    steps = [info["topreward"] for *_, info in got]
    scored = [k for k, step in enumerate(steps) if step is not None]
    # The reset's frame at 0 s, then only the frames the schedule wants (every 10th step) are rendered and
    # scored; at the one of 0.25 s the success window (2 in a row, 0.2 s in) is met and the episode ends.
    assert scored == [9, 19]
    assert all(step.instruction == TASK for step in steps if step is not None)
    for (obs, r, *_), (raw_obs, raw_r, *_), step in zip(got, raw, steps, strict=False):
        assert np.allclose(obs, raw_obs)  # the environment itself is untouched
        dense = step.reward if step is not None else 0.0
        assert r == pytest.approx(dense if mode == "replace" else raw_r + dense)
    fired = [k for k, step in enumerate(steps) if step is not None and step.success]
    assert fired == [19] == [len(got) - 1] and got[-1][2] is True  # terminated on detected success
    assert len(got) < len(raw)


def test_bad_setups_are_refused_with_the_reason(reward):
    env = make_env(render_mode=None)
    try:
        with pytest.raises(ValueError, match="render_mode='rgb_array'"):
            TOPRewardWrapper(env, reward, TASK)
    finally:
        env.close()
    env = make_env()
    try:
        with pytest.raises(ValueError, match="mode must be one of add, replace"):
            TOPRewardWrapper(env, reward, TASK, mode="multiply")
    finally:
        env.close()
