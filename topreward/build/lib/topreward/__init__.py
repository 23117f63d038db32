"""TOPReward without ROS: task progress read zero-shot from a video VLM's token probabilities.

`TOPReward` serves a learner in-process (the node's online semantics), `topreward.gym` wraps a Gymnasium
environment, and the `topreward` command scores recorded episodes. The folders follow the data:
`frames/` (images, videos, the sampling schedule) -> `model/` (loading Qwen3-VL) -> `scoring/` (prompt,
streaming scorer, metrics, curves) -> `online/` (live episodes: progress, success, the inference worker,
records) and `offline/` (recorded sources, evaluation, calibration, labels) -> `cli/`. Nothing here imports
rclpy; the ROS 2 node (package topreward_ros) is built on this package.
"""
from __future__ import annotations

from pathlib import Path

__version__ = "0.2.0"

DATA_DIR = Path(__file__).parent / "data"
DEMO_EPISODE = DATA_DIR / "demo_episode.mp4"  # 26 KB, MetaWorld; its task is in demo_episode.json


def __getattr__(name: str):
    # `import topreward` stays light (no torch) until the facade is used.
    if name in ("TOPReward", "RewardStep"):
        from . import reward

        return getattr(reward, name)
    raise AttributeError(f"module 'topreward' has no attribute {name!r}")


__all__ = ["DATA_DIR", "DEMO_EPISODE", "RewardStep", "TOPReward", "__version__"]
