"""One reward node serving several robots: real rclpy nodes and messages, the tiny random Qwen3-VL on the CPU."""
from __future__ import annotations

import json
import time

import pytest
from conftest import random_frames
from node_harness import RELIABLE, diagnostic_values, image_msg, offline_values, seconds_to_ns, wait_until
from rclpy.parameter import Parameter
from std_msgs.msg import String

from topreward_ros.node_config import ConfigError, parse_robots, robot_values
from topreward_ros.reward_node import RewardNode

pytestmark = pytest.mark.ros  # ROS-facing: CI runs these on every distro it covers

TASKS = {"arm1": "fold the towel", "arm2": "stack the red cups", "arm3": "open the top drawer"}


def robots_harness(harness, robots=("arm1", "arm2"), **params):
    per_robot = {}
    for robot in robots:
        per_robot[f"{robot}.camera_topics"] = [f"/{robot}/cam/image_raw"]
        per_robot[f"{robot}.instruction"] = TASKS[robot]
    return harness(robots=list(robots), **{**per_robot, **params})


def send(h, robot: str, frame, t: float) -> None:
    h.publish(image_msg(frame, seconds_to_ns(t)), f"/{robot}/cam/image_raw")


def stream(h, robots, frames, times, pause=0.02) -> None:
    """Every robot's k-th frame, then the next k: the robots stream at once."""
    for k in range(len(times)):
        for robot in robots:
            send(h, robot, frames[robot][k], times[k])
        time.sleep(pause)


def test_each_robot_gets_its_own_values_on_its_own_topics(harness, backend):
    robots = ("arm1", "arm2", "arm3")
    h = robots_harness(harness, robots)
    frames = {r: random_frames(7, seed=300 + i, size=(64, 64)) for i, r in enumerate(robots)}
    times = [20.0 + 0.5 * k for k in range(7)]
    stream(h, robots, frames, times)
    for robot in robots:
        assert wait_until(lambda r=robot: h.progress_of[r] and h.progress_of[r][-1].num_frames == 7), robot
    assert not h.progress, "nothing on the single-robot topic /topreward/progress"
    for robot in robots:
        reference = offline_values(backend, frames[robot], times, instruction=TASKS[robot])
        for msg in h.progress_of[robot]:
            assert msg.instruction == TASKS[robot] and msg.episode_id == 0
            assert abs(msg.log_prob_true - reference[msg.num_frames].log_prob_true) < 1e-4, robot
            assert abs(msg.log_prob_false - reference[msg.num_frames].log_prob_false) < 1e-4, robot
    assert h.node._worker.scored == sum(len(h.progress_of[r]) for r in robots)
    assert h.node._worker.batches > 0, "robots streaming at once share batched passes"
    # One model for all of them.
    assert len({id(c.scorer.backend) for c in h.node.channels}) == 1
    assert len({id(c.scorer) for c in h.node.channels}) == 3


def test_failing_batched_passes_are_reported_and_every_robot_still_scored_exactly(harness, backend):
    from topreward.testing import BatchOutOfMemory

    h = robots_harness(harness)
    model = BatchOutOfMemory(h.node.channels[0].scorer.backend)
    for channel in h.node.channels:
        channel.scorer.backend = model  # one object: batches are still formed, and then fail
    frames = {r: random_frames(30, seed=320 + i, size=(64, 64)) for i, r in enumerate(("arm1", "arm2"))}
    times = [40.0 + 0.5 * k for k in range(30)]
    worker = h.node._worker
    sent = 0
    while worker.batching and sent < 30:  # robots that stream at once share rounds; how many is up to timing
        stream(h, ("arm1", "arm2"), {r: f[sent:sent + 1] for r, f in frames.items()}, times[sent:sent + 1])
        sent += 1
        wait_until(lambda n=sent: all(h.progress_of[r] and h.progress_of[r][-1].num_frames == n for r in h.progress_of))
    assert not worker.batching and worker.batch_failures == 3 and worker.batches == 0
    assert wait_until(lambda: h.diagnostics_where(lambda s: "one at a time" in s.message) is not None)
    status = h.diagnostics_where(lambda s: "one at a time" in s.message)
    assert status.level == b"\x01" and diagnostic_values(status)["batched_pass_failures"] == "3"
    for robot in ("arm1", "arm2"):
        assert wait_until(lambda r=robot: h.progress_of[r][-1].num_frames == sent)
        reference = offline_values(backend, frames[robot][:sent], times[:sent], instruction=TASKS[robot])
        assert all(abs(m.log_prob_true - reference[m.num_frames].log_prob_true) < 1e-4 for m in h.progress_of[robot])


def test_reset_and_instruction_of_one_robot_leave_the_others_alone(harness, backend):
    h = robots_harness(harness)
    frames = {r: random_frames(8, seed=310 + i, size=(64, 64)) for i, r in enumerate(("arm1", "arm2"))}
    times = [30.0 + 0.5 * k for k in range(8)]
    stream(h, ("arm1", "arm2"), {r: f[:4] for r, f in frames.items()}, times[:4])
    assert wait_until(lambda: all(h.progress_of[r] and h.progress_of[r][-1].num_frames == 4 for r in h.progress_of))
    assert h.call("/arm1/topreward/reset").message == "episode 1 started"
    arm1, arm2 = h.node.channels
    assert arm1.buffer.episode_id == 1 and arm2.buffer.episode_id == 0 and len(arm2.buffer) == 4
    stream(h, ("arm1", "arm2"), {r: f[4:] for r, f in frames.items()}, times[4:])
    assert wait_until(lambda: h.progress_of["arm2"][-1].num_frames == 8)
    assert wait_until(lambda: h.progress_of["arm1"][-1].num_frames == 4 and h.progress_of["arm1"][-1].episode_id == 1)
    reference = offline_values(backend, frames["arm2"], times, instruction=TASKS["arm2"])
    assert all(m.episode_id == 0 and abs(m.log_prob_true - reference[m.num_frames].log_prob_true) < 1e-4
               for m in h.progress_of["arm2"])
    fresh = offline_values(backend, frames["arm1"][4:], times[4:], instruction=TASKS["arm1"])
    assert all(abs(m.log_prob_true - fresh[m.num_frames].log_prob_true) < 1e-4
               for m in h.progress_of["arm1"] if m.episode_id == 1)
    # A new task on arm2's own topic: arm2 starts episode 1 with it, arm1 keeps its task and episode.
    h.peer.create_publisher(String, "/arm2/topreward/instruction", 10).publish(String(data="wipe the table"))
    assert wait_until(lambda: arm2.buffer.episode_id == 1)
    assert h.node.get_parameter("arm2.instruction").value == "wipe the table" and arm2.buffer.instruction == \
        "wipe the table"
    assert arm1.buffer.instruction == TASKS["arm1"] and arm1.buffer.episode_id == 1


def test_success_reaches_only_the_robot_that_succeeded(harness):
    # arm1 succeeds at once (any value is at or above -100); arm2 keeps the harness's 1000 in a row.
    h = robots_harness(harness, **{"arm1.success_threshold": -100.0, "arm1.success_consecutive": 1})
    frames = {r: random_frames(3, seed=320 + i, size=(64, 64)) for i, r in enumerate(("arm1", "arm2"))}
    stream(h, ("arm1", "arm2"), frames, [5.0, 5.5, 6.0])
    assert wait_until(lambda: h.success_of["arm1"] and h.progress_of["arm2"]
                      and h.progress_of["arm2"][-1].num_frames == 3)
    assert len(h.success_of["arm1"]) == 1 and h.success_of["arm1"][0].instruction == TASKS["arm1"]
    assert not h.success_of["arm2"] and not h.success
    assert [c.success_count for c in h.node.channels] == [1, 0]


def test_bad_frames_on_one_robot_do_not_touch_the_other(harness, backend):
    h = robots_harness(harness)
    frames = {r: random_frames(5, seed=330 + i, size=(64, 64)) for i, r in enumerate(("arm1", "arm2"))}
    times = [40.0 + 0.5 * k for k in range(5)]
    for k, t in enumerate(times):
        send(h, "arm1", frames["arm1"][k], t)
        bad = image_msg(frames["arm2"][k], seconds_to_ns(t))
        bad.data = bytes(bad.data)[:100]  # truncated
        h.publish(bad, "/arm2/cam/image_raw")
        time.sleep(0.02)
    assert wait_until(lambda: h.progress_of["arm1"] and h.progress_of["arm1"][-1].num_frames == 5)
    arm1, arm2 = h.node.channels
    assert wait_until(lambda: sum(arm2.intake.cameras[0].rejected.values()) == 5)
    assert not arm1.intake.cameras[0].rejected and not h.progress_of["arm2"]
    reference = offline_values(backend, frames["arm1"], times, instruction=TASKS["arm1"])
    assert all(abs(m.log_prob_true - reference[m.num_frames].log_prob_true) < 1e-4 for m in h.progress_of["arm1"])
    # Diagnostics: one status per robot, each with its own cameras and counters.
    status = {}
    assert wait_until(lambda: len(status.update({s.name: s for _, s in h.diagnostics}) or status) >= 2)
    names = sorted(status)
    assert names == ["/topreward: reward arm1", "/topreward: reward arm2"]
    assert diagnostic_values(status[names[1]])["/arm2/cam/image_raw frames_rejected"] == "5"
    assert diagnostic_values(status[names[0]])["/arm1/cam/image_raw frames_rejected"] == "0"


def test_a_fast_camera_does_not_starve_a_slow_one(harness, backend):
    """arm1 floods frames; arm2 sends one every so often: each of arm2's frames is scored while arm1 streams."""
    h = robots_harness(harness, **{"arm1.sample_fps": 30.0, "arm1.max_frames": 4096})
    fast = random_frames(120, seed=340, size=(64, 64))
    slow = random_frames(4, seed=341, size=(64, 64))
    for k in range(120):
        send(h, "arm1", fast[k], 60.0 + k / 30.0)
        if k % 30 == 0:
            send(h, "arm2", slow[k // 30], 60.0 + k / 60.0)
            n = k // 30 + 1
            # Scored within a few rounds, while arm1 always has a newer frame waiting.
            assert wait_until(lambda n=n: h.progress_of["arm2"] and h.progress_of["arm2"][-1].num_frames == n, 20.0)
        time.sleep(0.005)
    assert h.progress_of["arm1"], "arm1 is scored too"
    assert arm1_scored_newest(h)


def arm1_scored_newest(h) -> bool:
    """arm1 ends on its newest prefix: intermediate prefixes may be skipped, the newest never is."""
    return wait_until(lambda: h.progress_of["arm1"][-1].num_frames == len(h.node.channels[0].buffer))


def test_records_per_robot(harness, tmp_path):
    h = robots_harness(harness, **{"arm1.record_dir": str(tmp_path / "arm1"), "arm2.record_dir": str(tmp_path)})
    frames = {r: random_frames(3, seed=350 + i, size=(64, 64)) for i, r in enumerate(("arm1", "arm2"))}
    stream(h, ("arm1", "arm2"), frames, [1.0, 1.5, 2.0])
    assert wait_until(lambda: all(h.progress_of[r] and h.progress_of[r][-1].num_frames == 3 for r in h.progress_of))
    h.call("/arm1/topreward/reset")
    h.call("/arm2/topreward/reset")
    for path, robot in ((tmp_path / "arm1" / "episodes.jsonl", "arm1"), (tmp_path / "episodes.jsonl", "arm2")):
        assert wait_until(path.exists)
        (record,) = [json.loads(line) for line in path.read_text().splitlines()]
        assert record["robot"] == robot and record["instruction"] == TASKS[robot] and record["episode_id"] == 0
        assert record["log_prob_true"] == pytest.approx([m.log_prob_true for m in h.progress_of[robot]], abs=1e-6)


def test_parameters_per_robot(harness):
    h = robots_harness(harness, max_batch=2)
    node = h.node
    # Top-level values are every robot's start-up default; <robot>.<name> overrides for that robot only.
    assert node.get_parameter("arm1.camera_topics").value == ["/arm1/cam/image_raw"]
    assert node.get_parameter("arm2.frame_size").value == node.get_parameter("frame_size").value
    assert node.configs["arm2"].intake.camera_topics == ("/arm2/cam/image_raw",)
    result = node.set_parameters([Parameter("instruction", value="something else")])[0]
    assert not result.successful and "arm1.instruction" in result.reason
    result = node.set_parameters([Parameter("arm1.max_view_skew", value=2.0)])[0]
    assert result.successful and node.channels[0].intake.config.max_view_skew == 2.0
    assert node.channels[1].intake.config.max_view_skew == 0.5
    result = node.set_parameters([Parameter("arm1.sample_fps", value=4.0)])[0]
    assert not result.successful and "read on configure" in result.reason
    result = node.set_parameters([Parameter("arm2.instruction", value="   ")])[0]
    assert not result.successful and "whitespace" in result.reason
    result = node.set_parameters([Parameter("robots", value=["arm1"])])[0]
    assert not result.successful  # read-only: the robots' parameters were declared at start-up
    assert node._worker.max_batch == 2


def test_robot_names_and_bad_per_robot_values_fail_at_start_up(ros_context, tiny_model_path):
    assert parse_robots("arm1 arm2,arm3") == ("arm1", "arm2", "arm3")
    assert parse_robots(["left"]) == ("left",) and parse_robots("") == ()
    for bad, why in (("arm1 arm1", "given twice"), ("1arm", "not a robot name"), (["a/b"], "not a robot name")):
        with pytest.raises(ConfigError, match=why):
            parse_robots(bad)
    assert robot_values({"tau": 2.0, "arm1.tau": 3.0, "arm2.tau": 4.0}, "arm1") == {"tau": 3.0}
    base = dict(model=str(tiny_model_path), device="cpu", autostart=False, robots=["arm1", "arm2"])
    cases = ({"robots": "arm1 9lives"}, {"arm2.frame_size": [64, 100]}, {"arm2.success_metric": "p_true"})
    reasons = ("not a robot name", "multiple of 32", "robot arm2: a p_true threshold")
    for extra, reason in zip(cases, reasons, strict=True):
        overrides = [Parameter(k, value=v) for k, v in {**base, **extra}.items()]
        with pytest.raises(Exception, match=reason):
            RewardNode(context=ros_context, parameter_overrides=overrides).destroy_node()


def test_no_robots_keeps_the_single_robot_topics(harness):
    h = harness()
    assert h.node.robots == () and [c.robot for c in h.node.channels] == [""]
    assert h.node.channels[0].progress_pub.topic_name == "/topreward/progress"
    services = {name for name, _ in h.node.get_service_names_and_types()}
    assert "/topreward/reset" in services and not any(name.startswith("/arm") for name in services)


def test_debug_image_per_robot_shows_that_robot_only_while_watched(harness):
    from sensor_msgs.msg import Image

    from topreward.overlay import PANEL_HEIGHT, VIDEO_HEIGHT, picture_size

    h = robots_harness(harness, **{"arm1.frame_size": [64, 192]})  # arm1 wide, as three tiled views are
    arm1, arm2 = (c.debug for c in h.node.channels)
    got = []
    h.peer.create_subscription(Image, "/arm1/topreward/debug_image", got.append, RELIABLE)
    assert wait_until(arm1.wanted)
    frames = {r: random_frames(4, seed=360 + i, size=(64, 64)) for i, r in enumerate(("arm1", "arm2"))}
    for k in range(4):
        stream(h, ("arm1", "arm2"), {r: f[k:k + 1] for r, f in frames.items()}, [1.0 + 0.5 * k])
        assert wait_until(lambda n=k + 1: all(h.progress_of[r] and h.progress_of[r][-1].num_frames == n
                                              for r in h.progress_of))
        assert wait_until(lambda: got and got[-1].header.stamp == h.progress_of["arm1"][-1].header.stamp)
    height, width = picture_size((64, 192))
    assert all((m.height, m.width) == (VIDEO_HEIGHT + PANEL_HEIGHT, width) for m in got) and height < VIDEO_HEIGHT
    stamps = {(m.header.stamp.sec, m.header.stamp.nanosec) for m in h.progress_of["arm1"]}
    assert all((m.header.stamp.sec, m.header.stamp.nanosec) in stamps for m in got)
    assert arm2.rendered == 0  # nobody watches arm2
