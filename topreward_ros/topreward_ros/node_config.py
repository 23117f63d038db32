"""The reward node's whole configuration as one object, built by keyword from its parameter values.

Built and validated (each value and the rules between them) before the model loads, so that a bad
combination fails in milliseconds instead of after minutes of loading an 8B model. Imports neither
torch nor rclpy.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from topreward.scoring.prompt import PromptConfig
from topreward.types import ModelConfig, ScheduleConfig, SuccessConfig

_ROBOT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")  # one ROS name token: it becomes a namespace and a prefix


class ConfigError(ValueError):
    """The parameters do not make a usable configuration; the message says why in one line."""


@dataclass(frozen=True)
class IntakeConfig:
    """Camera topics and what the node accepts from them."""

    camera_topics: tuple[str, ...]
    tile_views: bool = False
    max_view_skew: float = 0.5  # [s]
    max_image_pixels: int = 16_000_000
    max_stamp_lead: float = 10.0  # [s] stamps further ahead of the node's clock are rejected; 0: no check
    max_stamp_gap: float = 10.0  # [s] a lone stamp this far after the camera's previous one is rejected; 0: no check
    camera_timeout: float = 5.0  # [s] diagnostics WARN after this long without a message; 0: no check
    qos_reliability: str = "best_effort"
    qos_depth: int = 20

    @property
    def scored_topics(self) -> tuple[str, ...]:
        """The topics whose frames reach the model: all when tiled, else the primary only."""
        return self.camera_topics if self.tile_views else self.camera_topics[:1]


@dataclass(frozen=True)
class NodeConfig:
    """Everything the node reads on configure."""

    model: ModelConfig
    schedule: ScheduleConfig
    prompt: PromptConfig
    success: SuccessConfig
    intake: IntakeConfig
    instruction: str = ""
    reset_service: str = ""
    record_dir: str = ""
    tau: float = 2.0
    delta_max: float = 2.0
    max_consecutive_failures: int = 5
    debug_image: bool = True
    record_video: bool = False

    @classmethod
    def from_parameters(cls, p: Mapping[str, object]) -> NodeConfig:
        """The configuration of the parameter values `p` (name -> value); raises ConfigError."""
        try:
            return cls(
                model=ModelConfig(model=p["model"], revision=p["revision"], device=p["device"], dtype=p["dtype"],
                                  attn_implementation=p["attn_implementation"],
                                  trust_remote_code=p["trust_remote_code"],
                                  allow_pickle_weights=p["allow_pickle_weights"]),
                schedule=ScheduleConfig(sample_fps=p["sample_fps"], frame_size=tuple(p["frame_size"]),
                                        max_frames=p["max_frames"]),
                prompt=PromptConfig(prefix=p["prompt_prefix"], suffix=p["prompt_suffix"],
                                    chat_template=p["chat_template"]),
                success=SuccessConfig(threshold=p["success_threshold"], consecutive=p["success_consecutive"],
                                      min_episode_duration=p["min_episode_duration"], metric=p["success_metric"]),
                intake=IntakeConfig(camera_topics=tuple(p["camera_topics"]), tile_views=p["tile_views"],
                                    max_view_skew=p["max_view_skew"], max_image_pixels=p["max_image_pixels"],
                                    max_stamp_lead=p["max_stamp_lead"], max_stamp_gap=p["max_stamp_gap"],
                                    camera_timeout=p["camera_timeout"],
                                    qos_reliability=p["qos_reliability"], qos_depth=p["qos_depth"]),
                instruction=p["instruction"], reset_service=p["reset_service"], record_dir=p["record_dir"],
                tau=p["tau"], delta_max=p["delta_max"], max_consecutive_failures=p["max_consecutive_failures"],
                debug_image=p["debug_image"], record_video=p["record_video"],
            )
        except ValueError as exc:  # each config dataclass validates itself, cross-field rules included
            raise ConfigError(str(exc)) from None

    def warnings(self) -> list[str]:
        """Combinations that work but are probably not what was meant."""
        topics, out = self.intake.camera_topics, []
        if len(topics) > 1 and not self.intake.tile_views:
            out.append(f"{len(topics)} camera topics but tile_views is false: only {topics[0]} is scored")
        height, width = self.schedule.frame_size
        if self.intake.tile_views and len(topics) == 1:
            out.append(f"tile_views is true with one camera topic: nothing to tile ({topics[0]} is scored alone)")
        if len(self.intake.scored_topics) == 1 and width >= 2 * height:
            out.append(f"frame_size {height}x{width} is wide for one view: the camera image is stretched "
                       "(a tiled profile with one camera_topic?); set frame_size: [256, 256]")
        return out


def parse_robots(value: object) -> tuple[str, ...]:
    """The `robots` parameter as names: a string array, or one string of names split on spaces or commas.

    Unset or empty: () (one robot, today's topics). Raises ConfigError for a name that cannot be a ROS
    namespace or a parameter prefix, and for a name given twice.
    """
    if value is None or value == "":
        return ()
    names = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    for name in names:
        if not isinstance(name, str) or not _ROBOT_NAME.fullmatch(name):
            raise ConfigError(f"robots: {name!r} is not a robot name (a letter, then letters, digits or '_'; it "
                              "becomes the namespace /<name>/topreward/...)")
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        raise ConfigError(f"robots: {', '.join(dupes)} given twice")
    return tuple(names)


def robot_values(p: Mapping[str, object], robot: str) -> dict[str, object]:
    """One robot's parameter values: `<robot>.<name>` where given, else the top-level `<name>`."""
    if not robot:
        return dict(p)
    prefix = f"{robot}."
    own = {name[len(prefix):]: value for name, value in p.items() if name.startswith(prefix)}
    return {name: own.get(name, value) for name, value in p.items() if "." not in name}


def fleet_configs(p: Mapping[str, object], robots: tuple[str, ...]) -> dict[str, NodeConfig]:
    """Each robot's configuration (robot name -> NodeConfig; the one robot of a plain node is named '').

    Raises ConfigError naming the robot whose values do not make a configuration.
    """
    configs = {}
    for robot in robots or ("",):
        try:
            configs[robot] = NodeConfig.from_parameters(robot_values(p, robot))
        except ConfigError as exc:
            raise ConfigError(f"robot {robot}: {exc}" if robot else str(exc)) from None
    return configs


def fleet_warnings(configs: Mapping[str, NodeConfig]) -> list[str]:
    """Per-robot warnings, and camera topics that several robots score."""
    out = [f"{robot}: {w}" if robot else w for robot, config in configs.items() for w in config.warnings()]
    owners: dict[str, list[str]] = {}
    for robot, config in configs.items():
        for topic in config.intake.scored_topics:
            owners.setdefault(topic, []).append(robot)
    out += [f"robots {', '.join(names)} all score {topic}: give each its own <robot>.camera_topics"
            for topic, names in owners.items() if len(names) > 1]
    return out
