"""topreward_msgs round trip between two real rclpy nodes, and the installed package's share files."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros  # ROS-facing: CI runs these on every distro it covers


def round_trip(context, msg_type, msg):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    talker = rclpy.create_node("talker", context=context)
    listener = rclpy.create_node("listener", context=context)
    received = []
    listener.create_subscription(msg_type, "/topreward/test", received.append, 10)
    pub = talker.create_publisher(msg_type, "/topreward/test", 10)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(talker)
    executor.add_node(listener)
    deadline = time.monotonic() + 10
    while not received and time.monotonic() < deadline:
        if pub.get_subscription_count():
            pub.publish(msg)
        executor.spin_once(timeout_sec=0.05)
    executor.shutdown()
    talker.destroy_node()
    listener.destroy_node()
    assert received, "no message arrived"
    return received[0]


def test_progress_round_trip(ros_context):
    from topreward_msgs.msg import Progress

    msg = Progress()
    msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id = 1700000000, 123456789, "wrist_cam"
    msg.episode_id, msg.instruction, msg.num_frames, msg.elapsed = 7, "fold the towel", 13, 6.25
    msg.log_prob_true, msg.log_prob_false, msg.p_true = -0.75, -2.5, 0.875  # exact in float32
    msg.progress, msg.reward, msg.latency, msg.model = 0.625, 0.125, 0.5, "Qwen/Qwen3-VL-8B-Instruct"
    got = round_trip(ros_context, Progress, msg)
    assert got == msg  # generated __eq__ compares every field
    assert (got.header.stamp.sec, got.header.stamp.nanosec, got.header.frame_id) == (1700000000, 123456789, "wrist_cam")
    assert (got.episode_id, got.instruction, got.num_frames, got.elapsed) == (7, "fold the towel", 13, 6.25)
    assert (got.log_prob_true, got.log_prob_false, got.p_true) == (-0.75, -2.5, 0.875)
    assert (got.progress, got.reward, got.latency, got.model) == (0.625, 0.125, 0.5, "Qwen/Qwen3-VL-8B-Instruct")


def test_success_detected_round_trip(ros_context):
    from topreward_msgs.msg import SuccessDetected

    msg = SuccessDetected()
    msg.header.stamp.sec, msg.header.frame_id = 42, "scene_cam"
    msg.episode_id, msg.instruction, msg.score, msg.threshold = 3, "open the drawer", -0.25, -0.5
    msg.consecutive, msg.elapsed = 2, 11.5
    got = round_trip(ros_context, SuccessDetected, msg)
    assert got == msg
    assert (got.episode_id, got.instruction, got.score, got.threshold, got.consecutive, got.elapsed) == (
        3, "open the drawer", -0.25, -0.5, 2, 11.5)


def test_message_fields_are_the_contract():
    from topreward_msgs.msg import Progress, SuccessDetected

    assert list(Progress.get_fields_and_field_types()) == [
        "header", "episode_id", "instruction", "num_frames", "elapsed", "log_prob_true", "log_prob_false",
        "p_true", "progress", "reward", "latency", "model"]
    assert list(SuccessDetected.get_fields_and_field_types()) == [
        "header", "episode_id", "instruction", "score", "threshold", "consecutive", "elapsed"]
    from topreward_msgs.srv import StartEpisode

    assert StartEpisode.Request.get_fields_and_field_types() == {"instruction": "string", "previous_outcome": "uint8"}
    assert (StartEpisode.Request.OUTCOME_UNKNOWN, StartEpisode.Request.OUTCOME_SUCCESS,
            StartEpisode.Request.OUTCOME_FAILURE) == (0, 1, 2)
    assert StartEpisode.Response.get_fields_and_field_types() == {"success": "boolean", "message": "string",
                                                                  "episode_id": "uint32"}


def test_ament_index_finds_share_files():
    from ament_index_python.packages import get_package_share_directory

    share = Path(get_package_share_directory("topreward_ros"))
    assert (share / "package.xml").is_file()
    assert (share / "launch" / "reward.launch.py").is_file()
    assert (share / "config" / "reward.yaml").is_file()
    assert Path(get_package_share_directory("topreward_msgs"), "msg", "Progress.msg").is_file()


@pytest.mark.parametrize("script", ["reward_node", "replay_video"])
def test_executables_are_where_ros2_run_and_launch_look(script):
    # <prefix>/lib/<package>/, as colcon installs them (setup.cfg): found in any install space, not only a venv.
    from ament_index_python.packages import get_package_prefix

    executable = Path(get_package_prefix("topreward_ros")) / "lib" / "topreward_ros" / script
    assert os.access(executable, os.X_OK), executable


def test_the_topreward_command_comes_from_the_core_package_install_space():
    # The core is an ament_python package without a script dir: its command lands in <prefix>/bin, which the
    # sourced install space puts on PATH (a pip install puts it in the venv's bin/ the same way).
    from ament_index_python.packages import get_package_prefix

    found = shutil.which("topreward")
    assert found is not None and Path(found).parent == Path(get_package_prefix("topreward")) / "bin", found
