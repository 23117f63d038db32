"""The main job across processes: replay_video publishes the bundled episode, reward_node scores it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from ament_index_python.packages import get_package_share_directory

import topreward

pytestmark = pytest.mark.ros  # ROS-facing: CI runs these on every distro it covers

DATA = topreward.DATA_DIR
SHARE = Path(get_package_share_directory("topreward_ros"))


def test_replayed_episode_is_scored_by_a_separate_node_process(tiny_model_path, domain_id, tmp_path):
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain_id), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
           "ROS_HOME": str(tmp_path), "FASTDDS_DEFAULT_PROFILES_FILE": str(SHARE / "config" /
                                                                           "fastdds_localhost_shm.xml")}
    node = subprocess.Popen(
        [sys.executable, "-m", "topreward_ros.reward_node", "--ros-args", "--params-file",
         str(SHARE / "config" / "reward.yaml"), "-p", f"model:={tiny_model_path}", "-p", "device:=cpu",
         "-p", "instruction:=pick up the puck and place it at the goal", "-p", "camera_topics:=[/demo/image_raw]",
         "-p", "qos_reliability:=reliable", "-p", f"record_dir:={tmp_path}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        replay = subprocess.run(
            [sys.executable, "-m", "topreward_ros.replay_video", str(DATA / "demo_episode.mp4"), "--topic",
             "/demo/image_raw", "--loops", "2", "--speed", "3", "--wait", "120", "--linger", "2"],
            env=env, capture_output=True, text=True, timeout=240)
    finally:
        node.send_signal(signal.SIGINT)
        node_log = node.communicate(timeout=60)[0]
    assert replay.returncode == 0, replay.stdout + replay.stderr + node_log
    lines = [line for line in replay.stdout.splitlines() if line.startswith("episode")]
    assert any(line.startswith("episode  0") for line in lines) and any(line.startswith("episode  1") for line in lines)
    assert "Traceback" not in node_log and node.returncode == 0, node_log
    # Episode 0 was closed by the reset between the loops, episode 1 by the shutdown: both recorded.
    records = [json.loads(line) for line in (tmp_path / "episodes.jsonl").read_text().splitlines()]
    assert [r["episode_id"] for r in records] == [0, 1]
