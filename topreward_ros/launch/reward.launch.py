"""Launch the TOPReward reward node with a robot profile.

  ros2 launch topreward_ros reward.launch.py robot:=so101 instruction:="place the doll in the box"
  ros2 launch topreward_ros reward.launch.py robots:="arm1 arm2" params_file:=arms.yaml

Parameters are layered: config/reward.yaml (all defaults) < config/<robot>.yaml < params_file < the
arguments below that are given (an empty argument leaves the value of the files).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, RegisterEventHandler, Shutdown
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode

ROBOTS = ("none", "franka", "yam", "yam_bimanual", "so101")
LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")
BOOLEANS = ("true", "false")

# name: (default, description, choices). The launch argument table in docs/node.md is checked against this.
ARGUMENTS = {
    "robot": ("none", "robot profile: config/<robot>.yaml sets camera topics, tiling and frame size", ROBOTS),
    "params_file": ("", "extra parameter file, applied after the profile (e.g. a threshold.yaml)", None),
    "model": ("", "Qwen3-VL hub id or local checkpoint directory (default: the files' model)", None),
    "revision": ("", "hub branch, tag or commit of the model (default: the default branch)", None),
    "instruction": ("", "task instruction", None),
    "camera_topic": ("", "score this one camera alone: replaces the profile's camera_topics and sets "
                         "tile_views false, frame_size [256, 256]", None),
    "namespace": ("", "node namespace: topics become /<namespace>/topreward/...", None),
    "robots": ("", "serve several robots with one model: names separated by spaces (\"arm1 arm2\"); topics become "
                   "/<robot>/topreward/..., per-robot values <robot>.<name> come from params_file", None),
    "device": ("", "auto, cpu, cuda or cuda:N (default: the files' device, auto)", None),
    "dtype": ("", "auto, float32, bfloat16 or float16 (default: the files' dtype, auto)", None),
    "autostart": ("true", "configure and activate by itself; false: wait for a lifecycle manager or "
                          "`ros2 lifecycle set`", BOOLEANS),
    "log_level": ("info", "log level of the reward node's own logger (rcl and DDS stay at info)", LOG_LEVELS),
    "use_sim_time": ("false", "use /clock", BOOLEANS),
}


def node_logger_name(namespace: str) -> str:
    """The logger name rclpy gives the node in `namespace`: /arm1/left -> arm1.left.topreward."""
    return ".".join([part for part in namespace.strip("/").split("/") if part] + ["topreward"])


def _node(context):
    share = get_package_share_directory("topreward_ros")
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    parameters = [os.path.join(share, "config", "reward.yaml")]
    if value["robot"] != "none":
        parameters.append(os.path.join(share, "config", f"{value['robot']}.yaml"))
    if value["params_file"]:
        if not os.path.isfile(value["params_file"]):
            raise RuntimeError(f"params_file:={value['params_file']} does not exist")
        parameters.append(value["params_file"])
    overrides = {"use_sim_time": value["use_sim_time"] == "true", "autostart": value["autostart"] == "true"}
    for name in ("model", "revision", "instruction", "device", "dtype"):
        if value[name]:
            overrides[name] = value[name]
    if value["robots"]:
        if value["camera_topic"]:
            raise RuntimeError("camera_topic:= sets one camera for one robot; with robots:= give each robot its "
                               "<robot>.camera_topics in a params_file")
        overrides["robots"] = value["robots"].replace(",", " ").split()
    if value["camera_topic"]:
        overrides.update(camera_topics=[value["camera_topic"]], tile_views=False, frame_size=[256, 256])
    parameters.append(overrides)
    node = LifecycleNode(
        package="topreward_ros", executable="reward_node", name="topreward", namespace=value["namespace"],
        parameters=parameters, output="screen", emulate_tty=True,
        arguments=["--ros-args", "--log-level", f"{node_logger_name(value['namespace'])}:={value['log_level']}"],
    )
    # A node that ends by itself (a model that cannot load, with autostart) ends the launch too; during a
    # shutdown already under way (Ctrl-C) a second Shutdown would make launch_ros fail.
    return [node, RegisterEventHandler(OnProcessExit(
        target_action=node,
        on_exit=lambda event, ctx: None if ctx.is_shutdown else [Shutdown(reason="the reward node exited")]))]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        *(DeclareLaunchArgument(name, default_value=default, description=description,
                                **({"choices": list(choices)} if choices else {}))
          for name, (default, description, choices) in ARGUMENTS.items()),
        OpaqueFunction(function=_node),
    ])
