"""A Gymnasium wrapper that gives any environment that renders `rgb_array` TOPReward's dense reward.

    env = TOPRewardWrapper(gymnasium.make(..., render_mode="rgb_array"), TOPReward.load(...),
                           instruction="pick up the puck and place it at the goal")

Each step renders the environment when the frame schedule wants a frame at the step's simulated time,
adds the change of causal progress to the environment's reward (or replaces it: `mode="replace"`), and
ends the episode (`terminated`) when TOPReward detects success. The step's values are in
`info["topreward"]` (a `RewardStep`, or None when no frame was scored at that step). Needs the `gym`
extra: `pip install "./topreward[gym]"`.
"""
from __future__ import annotations

import gymnasium

from topreward.reward import TOPReward

MODES = ("add", "replace")


class TOPRewardWrapper(gymnasium.Wrapper):
    """Dense reward from the rendered frames; success ends the episode."""

    def __init__(self, env: gymnasium.Env, reward: TOPReward, instruction: str, mode: str = "add",
                 scale: float = 1.0, terminate_on_success: bool = True, seconds_per_step: float | None = None) -> None:
        """`seconds_per_step`: simulated time per step (default: the environment's `dt`, else 1 / render_fps)."""
        super().__init__(env)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if env.render_mode != "rgb_array":
            raise ValueError(f"the environment must render rgb_array frames (make it with render_mode='rgb_array'), "
                             f"its render_mode is {env.render_mode!r}")
        if seconds_per_step is None:
            seconds_per_step = getattr(env.unwrapped, "dt", None)
        if seconds_per_step is None and env.metadata.get("render_fps"):
            seconds_per_step = 1.0 / env.metadata["render_fps"]
        if not seconds_per_step or seconds_per_step <= 0:
            raise ValueError("the environment reports no time step (dt or render_fps): give seconds_per_step")
        self.reward_model, self.instruction, self.mode, self.scale = reward, instruction, mode, scale
        self.terminate_on_success = terminate_on_success
        self.seconds_per_step = float(seconds_per_step)
        self._t = 0.0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.reward_model.reset(self.instruction)
        self._t = 0.0
        info["topreward"] = self._observe()
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._t += self.seconds_per_step
        step = self._observe()
        dense = self.scale * step.reward if step is not None else 0.0
        reward = dense if self.mode == "replace" else reward + dense
        if step is not None and step.success and self.terminate_on_success:
            terminated = True
        info["topreward"] = step
        return obs, reward, terminated, truncated, info

    def _observe(self):
        if not self.reward_model.wants(self._t):
            return None  # the schedule would skip this frame: not even rendered
        return self.reward_model.observe(self.env.render(), self._t)
