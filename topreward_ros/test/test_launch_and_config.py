"""Launch file, robot profiles and the default parameter file."""
from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest
import yaml
from ament_index_python.packages import get_package_share_directory

from topreward_ros.parameters import PARAMETERS, validate

pytestmark = pytest.mark.ros  # ROS-facing: CI runs these on every distro it covers

SHARE = Path(get_package_share_directory("topreward_ros"))
LAUNCH = SHARE / "launch" / "reward.launch.py"


def launch_argument_names() -> set[str]:
    """The keys of ARGUMENTS in the launch file, read without importing launch."""
    tree = ast.parse(LAUNCH.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "ARGUMENTS":
            return {key.value for key in node.value.keys}
    raise AssertionError("ARGUMENTS not found in the launch file")


def launch_robots() -> tuple[str, ...]:
    """ROBOTS as written in the launch file, read without importing launch."""
    tree = ast.parse(LAUNCH.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "ROBOTS":
            return ast.literal_eval(node.value)
    raise AssertionError("ROBOTS not found in the launch file")


def load_params(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    return data["/**"]["ros__parameters"]


def test_reward_yaml_lists_every_parameter_with_its_default():
    from topreward_ros.parameters import render_yaml

    params = load_params(SHARE / "config" / "reward.yaml")
    assert params == {p.name: p.default for p in PARAMETERS}
    assert (SHARE / "config" / "reward.yaml").read_text() == render_yaml(), \
        "regenerate: python -m topreward_ros.parameters yaml > topreward_ros/config/reward.yaml"


@pytest.mark.parametrize("robot", [r for r in launch_robots() if r != "none"])
def test_robot_profiles_are_valid(robot):
    params = load_params(SHARE / "config" / f"{robot}.yaml")
    declared = {p.name for p in PARAMETERS}
    assert set(params) <= declared, set(params) - declared
    for name, value in params.items():
        assert validate(name, value) is None, (name, value)
    # A profile describes the robot: a made-up task would be scored whenever a user forgets instruction:=.
    assert params["camera_topics"] and "instruction" not in params
    if len(params["camera_topics"]) > 1:
        assert params["tile_views"] is True


def test_launch_file_compiles_and_declares_what_the_readme_tells_users_to_pass():
    compile(LAUNCH.read_text(), str(LAUNCH), "exec")
    assert {"robot", "params_file", "model", "instruction", "camera_topic", "namespace", "log_level",
            "use_sim_time", "autostart", "device", "dtype"} <= launch_argument_names()


def test_launch_description_with_launch_ros():
    pytest.importorskip("launch_ros", reason="launch_ros is not installable from PyPI; this runs on a ROS 2 install")
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch_ros.actions import LifecycleNode

    spec = importlib.util.spec_from_file_location("reward_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    declared = [e for e in description.entities if isinstance(e, DeclareLaunchArgument)]
    assert {a.name for a in declared} == launch_argument_names()
    context = LaunchContext()
    for argument in declared:
        context.launch_configurations[argument.name] = argument.default_value[0].perform(context) \
            if argument.default_value else ""
    context.launch_configurations.update(robot="so101", instruction="place the doll in the box")
    opaque = next(e for e in description.entities if isinstance(e, OpaqueFunction))
    actions = opaque.execute(context)
    assert isinstance(actions[0], LifecycleNode)
    assert actions[0].node_package == "topreward_ros" and actions[0].node_executable == "reward_node"
    context.launch_configurations["params_file"] = "/no/such/file.yaml"
    with pytest.raises(RuntimeError, match="does not exist"):
        opaque.execute(context)
    assert module.node_logger_name("") == "topreward" and module.node_logger_name("/arm1/left") == "arm1.left.topreward"


def test_the_node_reference_documents_every_parameter_and_message_field():
    from topreward_ros.parameters import render_markdown

    readme = (Path(__file__).resolve().parents[2] / "docs" / "node.md").read_text()
    assert render_markdown() in readme, ("docs/node.md parameter table: paste "
                                         "`python -m topreward_ros.parameters markdown`")
    from topreward_msgs.msg import Progress, SuccessDetected

    for field in Progress.get_fields_and_field_types():
        assert f"| `{field}` |" in readme, field
    for field in SuccessDetected.get_fields_and_field_types():
        assert f"`{field}`" in readme, field
