"""Launch the TOPReward reward node with a robot profile.

  ros2 launch topreward_ros reward.launch.py robot:=so101 instruction:="place the doll in the box"

Parameters are layered: config/reward.yaml (all defaults) < config/<robot>.yaml < params_file <
the model / instruction / camera_topic arguments when given.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode

ROBOTS = ("none", "franka", "yam", "yam_bimanual", "so101")


def _node(context):
    share = get_package_share_directory("topreward_ros")
    value = {name: LaunchConfiguration(name).perform(context) for name in (
        "robot", "params_file", "model", "instruction", "camera_topic", "namespace", "log_level", "use_sim_time")}
    if value["robot"] not in ROBOTS:
        raise RuntimeError(f"robot:={value['robot']} is not one of {', '.join(ROBOTS)}")
    parameters = [os.path.join(share, "config", "reward.yaml")]
    if value["robot"] != "none":
        parameters.append(os.path.join(share, "config", f"{value['robot']}.yaml"))
    if value["params_file"]:
        parameters.append(value["params_file"])
    overrides = {"use_sim_time": value["use_sim_time"].lower() in ("true", "1")}
    if value["model"]:
        overrides["model"] = value["model"]
    if value["instruction"]:
        overrides["instruction"] = value["instruction"]
    if value["camera_topic"]:
        overrides["camera_topics"] = [value["camera_topic"]]
    parameters.append(overrides)
    return [LifecycleNode(
        package="topreward_ros", executable="reward_node", name="topreward", namespace=value["namespace"],
        parameters=parameters, output="screen", emulate_tty=True,
        arguments=["--ros-args", "--log-level", value["log_level"]],
    )]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument("robot", default_value="none", choices=list(ROBOTS),
                              description="robot profile: config/<robot>.yaml sets camera topics and views"),
        DeclareLaunchArgument("params_file", default_value="", description="extra parameter file (applied last)"),
        DeclareLaunchArgument("model", default_value="", description="Qwen3-VL hub id or local directory"),
        DeclareLaunchArgument("instruction", default_value="", description="task instruction"),
        DeclareLaunchArgument("camera_topic", default_value="", description="primary camera topic (overrides the "
                              "profile's camera_topics with this one topic)"),
        DeclareLaunchArgument("namespace", default_value="", description="node namespace: /<ns>/topreward/..."),
        DeclareLaunchArgument("log_level", default_value="info", description="debug, info, warn, error"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock"),
        OpaqueFunction(function=_node),
    ])
