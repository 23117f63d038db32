"""The reward node's parameters: names, defaults, descriptions, ranges and validation.

One table drives the declarations, config/reward.yaml and the parameter table of docs/node.md:
  python -m topreward_ros.parameters yaml > topreward_ros/config/reward.yaml
  python -m topreward_ros.parameters markdown     # the table in docs/node.md
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from topreward.scoring.prompt import DEFAULT_PREFIX, DEFAULT_SUFFIX
from topreward.types import DEFAULT_MODEL, SUCCESS_METRICS, frame_size_error, instruction_error


@dataclass(frozen=True)
class Param:
    """One declared parameter."""

    name: str
    default: object
    description: str
    range: tuple[float, float] | None = None


PARAMETERS: tuple[Param, ...] = (
    Param("model", DEFAULT_MODEL, "Qwen3-VL hub id or local checkpoint directory; 'tiny-random' = meaningless "
          "random weights for smoke tests"),
    Param("revision", "", "hub branch, tag or commit of model ('' = the default branch); the commit loaded is "
          "reported as model@commit in Progress, records and outputs"),
    Param("device", "auto", "auto (cuda if available), cpu, cuda or cuda:N"),
    Param("dtype", "auto", "auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16 or float16"),
    Param("attn_implementation", "auto", "auto (flash_attention_2 when installed, else sdpa), sdpa, eager, ..."),
    Param("trust_remote_code", False, "allow custom model code from the checkpoint (off: Qwen3-VL is in transformers)"),
    Param("allow_pickle_weights", False, "also load .bin/.pt (pickle) weights, which can run code when loaded (off: "
          "safetensors only)"),
    Param("instruction", "", "task instruction (at most 1000 characters, any language); a runtime change starts "
          "a new episode. Empty: frames are ignored until a task arrives on ~/instruction"),
    Param("camera_topics", ["/camera/camera/color/image_raw"], "camera topics; the first is the primary view. Each "
          "is subscribed with the type its publishers report (Image or CompressedImage); until one publishes, a last "
          "segment containing 'compressed' is taken for CompressedImage, and a wrong guess is corrected"),
    Param("tile_views", False, "score all camera_topics tiled side by side in one frame (else only the first)"),
    Param("max_view_skew", 0.5, "[s] a secondary view older than this relative to the primary frame is tiled black",
          (0.0, 60.0)),
    Param("max_image_pixels", 16_000_000, "[px] larger camera images (width x height) are rejected before "
          "decoding", (1, 1_000_000_000)),
    Param("max_stamp_lead", 10.0, "[s] frames stamped further ahead of the node's clock are rejected; 0: no check",
          (0.0, 1e9)),
    Param("max_stamp_gap", 10.0, "[s] a frame stamped further after the camera's previous one is rejected unless the "
          "next frame continues from it (a pause), so one stray stamp cannot make later frames look old; 0: no check",
          (0.0, 1e9)),
    Param("camera_timeout", 5.0, "[s] diagnostics WARN when a camera sends nothing for this long; 0: no check",
          (0.0, 3600.0)),
    Param("sample_fps", 2.0, "[Hz] frames per second given to the model (prefix-stable time grid)", (0.05, 30.0)),
    Param("frame_size", [256, 256], "[px] height, width every (tiled) frame is resized to; multiples of 32"),
    Param("max_frames", 64, "sampled frames kept per episode; beyond it the sampling rate halves", (2, 4096)),
    Param("prompt_prefix", DEFAULT_PREFIX, "text after the video, before the instruction"),
    Param("prompt_suffix", DEFAULT_SUFFIX, "text after the instruction, before the scored ' True'"),
    Param("chat_template", False, "wrap the question in the chat turn (the paper's ablation; worse)"),
    Param("success_metric", "log_prob_true", "log_prob_true (paper: mean raw log p(True) of the last 3 prefixes) "
          "or p_true (mean p(True)/(p(True)+p(False)) of the last 3)"),
    Param("success_threshold", -0.5, "success when the success score is at or above this (nats for log_prob_true, "
          "probability for p_true); also the causal progress ceiling for log_prob_true", (-100.0, 1.0)),
    Param("success_consecutive", 2, "evaluations in a row at or above the threshold before SuccessDetected",
          (1, 1000)),
    Param("min_episode_duration", 2.0, "[s] no success before this much of the episode was seen", (0.0, 3600.0)),
    Param("reset_service", "", "std_srvs/Trigger service called (without waiting) on success; empty: none"),
    Param("max_consecutive_failures", 5, "failed inferences in a row after which the episode is no longer "
          "scored (diagnostics ERROR) until a reset or a transition", (1, 1_000_000)),
    Param("record_dir", "", "directory for episodes.jsonl (one JSON line per finished episode); empty: off"),
    Param("record_video", False, "with record_dir: also write each episode's sampled frames (exactly what was "
          "scored) as record_dir/videos/<episode>.mp4, named in its record's video field (H.264, in the background)"),
    Param("debug_image", True, "publish ~/debug_image (the frame the model saw last with the episode's progress) "
          "while someone subscribes; false: no publisher at all"),
    Param("tau", 2.0, "Eq. 3 scale tau of the recorded dense weights", (0.0, 100.0)),
    Param("delta_max", 2.0, "Eq. 3 clip delta_max of the recorded dense weights", (0.0, 100.0)),
    Param("qos_reliability", "best_effort", "camera subscription reliability: best_effort (sensor data) or reliable"),
    Param("qos_depth", 20, "camera subscription queue depth; 20 rides out a 0.6 s stall of the node at 30 Hz",
          (1, 1000)),
    Param("max_batch", 8, "with several robots: at most this many robots' prefixes in one batched forward pass; "
          "1: one robot at a time", (1, 64)),
    Param("autostart", True, "configure and activate on start-up, without a lifecycle manager"),
)

# May change while the node is configured; the rest is read on configure.
RUNTIME_PARAMETERS = frozenset({"instruction", "record_dir", "max_view_skew"})
# One value for the whole node (the model is loaded once); every other parameter can also be given per
# robot as <robot>.<name>.
NODE_PARAMETERS = frozenset({"model", "revision", "device", "dtype", "attn_implementation", "trust_remote_code",
                             "allow_pickle_weights", "max_batch", "autostart"})
ROBOT_PARAMETERS = tuple(p for p in PARAMETERS if p.name not in NODE_PARAMETERS)
ROBOTS_DESCRIPTION = ("names of the robots this node serves, as a string array or one string of names: each gets "
                      "/<robot>/topreward/... topics and <robot>.<name> parameters; empty: one robot, "
                      "~/... topics. Read at start-up")


def base_name(name: str) -> str:
    """`arm1.instruction` -> `instruction`: per-robot parameters follow the rules of their top-level name."""
    return name.rsplit(".", 1)[-1]

_CHOICES = {
    "dtype": ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16"),
    "success_metric": SUCCESS_METRICS,
    "qos_reliability": ("best_effort", "reliable"),
}


def _descriptor(param: Param) -> ParameterDescriptor:
    d = ParameterDescriptor(description=param.description)
    if param.range is not None:
        low, high = param.range
        if isinstance(param.default, int) and not isinstance(param.default, bool):
            d.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=1)]
        else:
            d.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)]
    return d


_FLOATS = frozenset(p.name for p in PARAMETERS if isinstance(p.default, float))


def integers_as_floats(params: list) -> list:
    """`sample_fps: 2` (YAML) or `ros2 param set ... sample_fps 2` give an integer; a float parameter takes it."""
    from rclpy.parameter import Parameter

    return [Parameter(p.name, Parameter.Type.DOUBLE, float(p.value))
            if base_name(p.name) in _FLOATS and p.type_ == Parameter.Type.INTEGER else p for p in params]


def declare_parameters(node) -> tuple[str, ...]:
    """Declare the table, `robots`, and for each robot its `<robot>.<name>` parameters; returns the robots.

    A robot's parameter starts at the top-level value (a given `<robot>.<name>` override wins). Raises
    ConfigError for a bad `robots` value.
    """
    from topreward_ros.node_config import parse_robots

    # Start-up values do not pass through the pre-set callback: convert the overrides here.
    overrides = getattr(node, "_parameter_overrides", {})
    for name, given in list(overrides.items()):
        overrides[name] = integers_as_floats([given])[0]
    for param in PARAMETERS:
        node.declare_parameter(param.name, param.default, _descriptor(param))
    # Either a string array or one string: `robots:="arm1 arm2"` is the easy spelling on a command line.
    node.declare_parameter("robots", "", ParameterDescriptor(description=ROBOTS_DESCRIPTION, dynamic_typing=True,
                                                             read_only=True))
    robots = parse_robots(node.get_parameter("robots").value)
    for robot in robots:
        for param in ROBOT_PARAMETERS:
            node.declare_parameter(f"{robot}.{param.name}", node.get_parameter(param.name).value, _descriptor(param))
    return robots


def _name_error(name: str, service: bool = False) -> str | None:
    from rclpy.validate_topic_name import validate_topic_name

    try:
        validate_topic_name(name, is_service=service)
    except Exception as exc:  # rclpy's InvalidTopicNameException / InvalidServiceNameException
        return str(exc).splitlines()[0]
    return None


def values(node, robots: tuple[str, ...] = ()) -> dict[str, object]:
    """The node's current value of every parameter of the table, and of each robot's `<robot>.<name>`."""
    out = {p.name: node.get_parameter(p.name).value for p in PARAMETERS}
    for robot in robots:
        out.update({f"{robot}.{p.name}": node.get_parameter(f"{robot}.{p.name}").value for p in ROBOT_PARAMETERS})
    return out


def validate(name: str, value) -> str | None:
    """Why `value` is not acceptable for parameter `name`, or None. Ranges are enforced by the descriptors."""
    name = base_name(name)
    if name in _CHOICES and value not in _CHOICES[name]:
        return f"must be one of {', '.join(_CHOICES[name])}, got {value!r}"
    if name == "model" and not str(value).strip():
        return "must name a hub id or a directory"
    if name == "device":
        v = str(value)
        if not (v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit())):
            return f"must be auto, cpu, cuda or cuda:N, got {value!r}"
    if name == "instruction":
        return instruction_error(str(value))
    if name == "record_dir" and value and Path(value).expanduser().exists() and not Path(value).expanduser().is_dir():
        return f"{value} exists and is not a directory"
    if name == "camera_topics":
        if not value:
            return "needs at least one topic"
        for topic in value:
            if error := _name_error(topic):
                return error
    if name == "reset_service" and value and (error := _name_error(value, service=True)):
        return error
    if name == "frame_size" and (error := frame_size_error(value)):
        return error
    if name in ("prompt_suffix",) and not str(value).strip():
        return "must not be empty"
    return None


def _yaml_value(value) -> str:
    import json

    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


def _notes(param: Param, runtime: str, node_wide: str, range_format: str) -> str:
    notes = [runtime] if param.name in RUNTIME_PARAMETERS else []
    if param.name in NODE_PARAMETERS:
        notes.append(node_wide)
    if param.range is not None:
        low, high = (f"{v:g}" for v in param.range)
        notes.append(range_format.format(low=low, high=high))
    if not notes:
        return param.description
    return " ".join([param.description + ("" if param.description.endswith(".") else ".")] + notes)


def render_yaml() -> str:
    """config/reward.yaml: every parameter with its default and its description as a comment."""
    import textwrap

    lines = ["# topreward reward node: every parameter with its default (made by `python -m topreward_ros.parameters "
             "yaml`).",
             "# Use as --params-file; a robot profile (config/<robot>.yaml) overrides the camera part.",
             "# Read on configure unless marked [runtime]; ranges are enforced by the parameter descriptors.",
             "# Several robots on one model: robots: [arm1, arm2], then per robot e.g. arm1: {camera_topics: [...]}",
             "# (every parameter not marked node-wide); see docs/node.md.",
             "/**:", "  ros__parameters:"]
    for param in PARAMETERS:
        note = _notes(param, "[runtime]", "[node-wide]", "Range {low}..{high}.")
        lines += textwrap.wrap(note, 104, initial_indent="    # ", subsequent_indent="    # ")
        lines.append(f"    {param.name}: {_yaml_value(param.default)}")
    return "\n".join(lines) + "\n"


def render_markdown() -> str:
    """The parameter table of docs/node.md."""
    rows = ["| name | default | meaning |", "| --- | --- | --- |"]
    for param in PARAMETERS:
        default = "(paper's text)" if param.name.startswith("prompt_") else _yaml_value(param.default)
        notes = _notes(param, "Changeable at runtime.", "Node-wide (no per-robot value).", "Range {low} to {high}.")
        rows.append(f"| `{param.name}` | `{default}` | {notes} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    import sys

    print({"yaml": render_yaml, "markdown": render_markdown}[sys.argv[1]](), end="")
