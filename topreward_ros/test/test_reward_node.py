"""The reward node in-process: real rclpy nodes and messages, the tiny random Qwen3-VL on the CPU."""
from __future__ import annotations

import json
import threading
import time

import av
import cv2
import numpy as np
import pytest
from conftest import random_frames
from node_harness import (
    RELIABLE,
    TASK,
    compressed_msg,
    diagnostic_values,
    offline_values,
    seconds_to_ns,
    stamp,
    stamp_ns,
    wait_until,
)
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from topreward.frames.tiling import tile_views
from topreward_ros.reward_node import RewardNode

pytestmark = pytest.mark.ros  # ROS-facing: CI runs these on every distro it covers


def test_progress_equals_offline_values(harness, backend):
    h = harness()
    base = time.time() - 5.0  # stamped like a live camera that is a few seconds behind
    frames, times = random_frames(8, seed=11), [base + 0.5 * k for k in range(8)]
    for frame, t in zip(frames, times, strict=True):
        h.send(frame, t)
        time.sleep(0.05)
    assert wait_until(lambda: h.progress and h.progress[-1].num_frames == 8)
    reference = offline_values(backend, frames, times)
    stamps = [stamp(m) for m in h.progress]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    for msg in h.progress:
        ref = reference[msg.num_frames]
        assert msg.episode_id == 0 and msg.instruction == TASK and msg.header.frame_id == "cam"
        assert abs(msg.log_prob_true - ref.log_prob_true) < 1e-4
        assert abs(msg.log_prob_false - ref.log_prob_false) < 1e-4
        assert msg.p_true == pytest.approx(ref.p_true, abs=1e-4)
        assert stamp(msg) == pytest.approx(times[msg.num_frames - 1], abs=1e-6)
        assert msg.elapsed == pytest.approx(times[msg.num_frames - 1] - times[0], abs=1e-6)
        assert 0.0 <= msg.progress <= 1.0 and msg.model == h.node._backend.name
        assert 0.0 < msg.latency < time.time() - stamp(msg) + 0.1  # capture to publication, before arrival
    # reward is the change of progress since the previous message (potential-based shaping).
    progress = [0.0] + [m.progress for m in h.progress]
    for k, msg in enumerate(h.progress):
        assert msg.reward == pytest.approx(progress[k + 1] - progress[k], abs=1e-6)


def test_frames_between_grid_points_are_not_scored(harness):
    h = harness()
    for k in range(12):  # a 10 fps camera: only every fifth frame is sampled at 2 fps
        h.send(random_frames(1, seed=k)[0], 50.0 + 0.1 * k)
    assert wait_until(lambda: h.progress and h.progress[-1].num_frames == 3)
    assert len(h.node.channels[0].buffer) == 3


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_compressed_input(harness, backend, ext):
    h = harness(camera_topics=["/cam/image_raw/compressed"])
    frames, times = random_frames(3, seed=12), [10.0, 10.5, 11.0]
    for frame, t in zip(frames, times, strict=True):
        h.send_compressed(frame, t, "/cam/image_raw/compressed", ext)
    assert wait_until(lambda: h.progress and h.progress[-1].num_frames == 3)
    if ext == ".png":  # lossless: values equal the offline ones on the same pixels
        ref = offline_values(backend, frames, times)[3]
        assert abs(h.progress[-1].log_prob_true - ref.log_prob_true) < 1e-4


def test_raw_encodings_are_converted(harness, backend):
    h = harness()
    frames, times = random_frames(4, seed=13), [0.5, 1.0, 1.5, 2.0]
    for frame, t, enc in zip(frames, times, ["rgb8", "bgr8", "rgb8", "bgr8"], strict=True):
        h.send(frame if enc == "rgb8" else np.ascontiguousarray(frame[..., ::-1]), t, encoding=enc)
    assert wait_until(lambda: h.progress and h.progress[-1].num_frames == 4)
    ref = offline_values(backend, frames, times)[4]
    assert abs(h.progress[-1].log_prob_true - ref.log_prob_true) < 1e-4


def test_two_cameras_tiled(harness, backend):
    h = harness(camera_topics=["/front/image_raw", "/wrist/image_raw"], tile_views=True, frame_size=[64, 128])
    front, wrist = random_frames(4, seed=14), random_frames(4, seed=15, size=(48, 48))
    times = [3.0, 3.5, 4.0, 4.5]
    for f, w, t in zip(front, wrist, times, strict=True):
        h.send(w, t, topic="/wrist/image_raw")
        time.sleep(0.05)  # the secondary view must be there before the primary frame
        h.send(f, t, topic="/front/image_raw")
        time.sleep(0.05)
    assert wait_until(lambda: h.progress and h.progress[-1].num_frames == 4)
    tiled = [tile_views([f, w], (64, 128)) for f, w in zip(front, wrist, strict=True)]
    ref = offline_values(backend, tiled, times, frame_size=(64, 128))[4]
    assert abs(h.progress[-1].log_prob_true - ref.log_prob_true) < 1e-4


def test_three_views_converted_in_parallel_equal_offline_tiling_and_a_corrupt_view_goes_black(harness):
    """Three views, two converted on the intake's view threads, each straight to its column size.

    The kept frame must equal tiling the full-size views as the offline path does, and a secondary view
    that fails to decode there is counted against its own camera and tiled black.
    """
    topics = ["/front/image_raw", "/left/compressed", "/right/image_raw"]
    h = harness(camera_topics=topics, tile_views=True, frame_size=[64, 96])
    front, left, right = (random_frames(2, seed=s, size=(90, 120)) for s in (30, 31, 32))
    truncated = compressed_msg(left[1], seconds_to_ns(4.0))
    truncated.data = bytes(truncated.data)[:200]  # its header passes the intake's check; the decode fails
    for k, t in enumerate([3.5, 4.0]):
        h.send(right[k], t, topic="/right/image_raw", encoding="bgr8")
        h.publish(truncated if k else compressed_msg(left[k], seconds_to_ns(t)), "/left/compressed")
        time.sleep(0.1)  # the secondary views must be there before the primary frame
        h.send(front[k], t, topic="/front/image_raw")
        time.sleep(0.1)
    buffer = h.node.channels[0].buffer
    assert wait_until(lambda: len(buffer) == 2)
    kept = buffer.wait_for_change(None, 1.0).frames.frames
    decoded = cv2.cvtColor(cv2.imdecode(np.frombuffer(compressed_msg(left[0], 0).data, np.uint8),
                                        cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(kept[0], tile_views([front[0], decoded, right[0][..., ::-1]], (64, 96)))
    np.testing.assert_array_equal(kept[1], tile_views([front[1], None, right[1][..., ::-1]], (64, 96)))
    assert h.rejected(1) == {"decode_failed": 1} and h.rejected(0) == {} and h.rejected(2) == {}


def test_bad_frames_dropped_node_keeps_running(harness):
    h = harness()
    good = random_frames(3, seed=16)
    bad = Image(height=64, width=64, encoding="32FC1", step=256, data=bytes(64 * 256))
    bad.header.stamp.sec = 1
    h.publisher("/cam/image_raw").publish(bad)
    short = Image(height=64, width=64, encoding="rgb8", step=192, data=bytes(100))
    short.header.stamp.sec = 2
    h.publisher("/cam/image_raw").publish(short)
    assert wait_until(lambda: sum(h.node.channels[0].intake.cameras[0].rejected.values()) == 2)
    for k, frame in enumerate(good):
        h.send(frame, 3.0 + 0.5 * k)
    assert wait_until(lambda: h.progress and h.progress[-1].num_frames == 3)
    assert h.node._worker.alive


def test_reset_never_publishes_old_episode(harness):
    h = harness(frame_size=[256, 256])  # larger frames: inference is in flight when the reset comes
    published = h.spy_publications()
    for cycle in range(4):
        frames = random_frames(5, seed=20 + cycle, size=(256, 256))
        for k in range(3):
            h.send(frames[k], 1.0 + 200.0 * cycle + 0.5 * k)
        assert wait_until(lambda c=cycle: any(e == c for e, _ in published))
        for k in range(3, 5):  # new frames: the worker starts scoring them, and the reset comes now
            h.send(frames[k], 1.0 + 200.0 * cycle + 0.5 * k)
        response = h.call("/topreward/reset")
        assert response.success and f"episode {cycle + 1}" in response.message
    time.sleep(0.5)
    assert {episode for episode, _ in published} >= {0, 1, 2, 3}
    stale = [(e, current) for e, current in published if e != current]
    assert not stale, f"published for an episode that had already ended: {stale}"


def test_stale_result_dropped_after_reset(harness):
    """The guard itself: a step computed for episode 0 and delivered after the reset is not published."""
    h = harness()
    for k, frame in enumerate(random_frames(2, seed=30)):
        h.send(frame, 1.0 + 0.5 * k)
    assert wait_until(lambda: h.progress and h.progress[-1].num_frames == 2)
    step_of_episode_0 = h.node._worker.streams[0]._episode.scores[-1]
    h.call("/topreward/reset")
    before = len(h.progress)
    from topreward.types import Step

    h.node.channels[0].on_step(0, TASK, Step(step_of_episode_0, 0.5, 0.1, None), 0.01)
    time.sleep(0.3)
    assert len(h.progress) == before


def test_success_once_per_episode_and_reset_service_called(harness):
    calls = []
    h = harness(success_threshold=-100.0, success_consecutive=2, reset_service="/robot/reset")
    h.peer.create_service(Trigger, "/robot/reset", lambda req, res: (calls.append(1), res)[1])
    assert wait_until(lambda: h.node.channels[0].reset_client.service_is_ready())
    for episode in range(2):
        for k, frame in enumerate(random_frames(6, seed=40 + episode)):
            h.send(frame, 1.0 + 100.0 * episode + 0.5 * k)
            time.sleep(0.1)
        assert wait_until(lambda e=episode: any(m.episode_id == e and m.num_frames == 6 for m in h.progress))
        h.call("/topreward/reset")
    time.sleep(0.3)
    assert [m.episode_id for m in h.success] == [0, 1]
    assert all(m.threshold == -100.0 and m.consecutive == 2 and m.instruction == TASK for m in h.success)
    assert len(calls) == 2


def test_min_episode_duration_delays_success(harness):
    h = harness(success_threshold=-100.0, success_consecutive=1, min_episode_duration=1.5)
    for k, frame in enumerate(random_frames(5, seed=50)):
        h.send(frame, 1.0 + 0.5 * k)
        time.sleep(0.1)
    assert wait_until(lambda: h.success and h.progress and h.progress[-1].num_frames == 5)
    assert len(h.success) == 1 and h.success[0].elapsed >= 1.5


def test_invalid_parameters_rejected_with_reason(harness):
    h = harness()
    cases = {"sample_fps": -1.0, "frame_size": [100, 100], "device": "tpu", "qos_reliability": "sometimes",
             "success_metric": "vibes", "camera_topics": [""], "max_frames": 1}
    for name, value in cases.items():
        result = h.node.set_parameters([Parameter(name, value=value)])[0]
        assert not result.successful, name
        assert "read on configure" not in result.reason, f"{name}: rejected for its value, not its timing"
    result = h.node.set_parameters([Parameter("frame_size", value=[100, 100])])[0]
    assert "multiple of 32" in result.reason
    result = h.node.set_parameters([Parameter("device", value="tpu")])[0]
    assert "cuda:N" in result.reason
    result = h.node.set_parameters([Parameter("model", value="other/model")])[0]
    assert not result.successful and "read on configure" in result.reason
    assert h.node.lifecycle_state == "active"


def test_invalid_startup_parameter_raises(ros_context, tiny_model_path):
    from rclpy.exceptions import InvalidParameterValueException

    with pytest.raises(InvalidParameterValueException):
        RewardNode(context=ros_context, parameter_overrides=[Parameter("device", value="quantum")])


def test_instruction_change_starts_new_episode(harness):
    h = harness()
    for k, frame in enumerate(random_frames(2, seed=60)):
        h.send(frame, 1.0 + 0.5 * k)
    assert wait_until(lambda: h.progress and h.progress[-1].num_frames == 2)
    assert h.node.set_parameters([Parameter("instruction", value="open the drawer")])[0].successful
    for k, frame in enumerate(random_frames(2, seed=61)):
        h.send(frame, 10.0 + 0.5 * k)
    assert wait_until(lambda: h.progress[-1].episode_id == 1 and h.progress[-1].num_frames == 2)
    assert h.progress[-1].instruction == "open the drawer"
    pub = h.peer.create_publisher(String, "/topreward/instruction", 10)
    assert wait_until(lambda: pub.get_subscription_count() > 0)
    pub.publish(String(data="close the drawer"))
    assert wait_until(lambda: h.node.channels[0].buffer.episode_id == 2)
    assert h.node.get_parameter("instruction").value == "close the drawer"
    h.send(random_frames(1, seed=62)[0], 20.0)
    assert wait_until(lambda: h.progress[-1].episode_id == 2)
    assert h.progress[-1].instruction == "close the drawer"


def test_no_instruction_no_frames(harness):
    h = harness(instruction="")
    h.send(random_frames(1)[0], 1.0)
    assert wait_until(lambda: h.diagnostics_where(lambda s: s.message.startswith("no instruction")) is not None)
    status = h.diagnostics_where(lambda s: s.message.startswith("no instruction"))
    assert status.level == b"\x01" and diagnostic_values(status)["instruction"] == ""
    assert not h.progress and len(h.node.channels[0].buffer) == 0
    pub = h.peer.create_publisher(String, "/topreward/instruction", 10)
    assert wait_until(lambda: pub.get_subscription_count() > 0)
    pub.publish(String(data="wipe the table"))
    assert wait_until(lambda: h.node.channels[0].buffer.instruction == "wipe the table")
    h.send(random_frames(1)[0], 2.0)
    assert wait_until(lambda: bool(h.progress))
    assert h.progress[0].instruction == "wipe the table" and h.progress[0].episode_id == 1
    since = time.monotonic()
    assert wait_until(lambda: h.diagnostics_where(lambda s: True, since) is not None)
    assert diagnostic_values(h.diagnostics_where(lambda s: True, since))["instruction"] == "wipe the table"



def test_episode_records_written(harness, tmp_path):
    h = harness(record_dir=str(tmp_path), success_threshold=-100.0, success_consecutive=1)
    for k, frame in enumerate(random_frames(4, seed=70)):
        h.send(frame, 1.0 + 0.5 * k)
        time.sleep(0.1)
    assert wait_until(lambda: h.progress and h.progress[-1].num_frames == 4)
    h.call("/topreward/reset")
    h.send(random_frames(1, seed=71)[0], 9.0)  # the worker notices the new episode and closes the old one
    path = tmp_path / "episodes.jsonl"
    assert wait_until(path.exists)
    record = json.loads(path.read_text().splitlines()[0])
    assert record["episode_id"] == 0 and record["instruction"] == TASK
    n = len(record["log_prob_true"])
    assert n == len({m.num_frames for m in h.progress if m.episode_id == 0})
    assert record["log_prob_true"] == pytest.approx([m.log_prob_true for m in h.progress if m.episode_id == 0],
                                                    abs=1e-6)
    assert len(record["normalized"]) == len(record["weights"]) == len(record["time"]) == n
    assert min(record["normalized"]) == 0.0 and max(record["normalized"]) == 1.0
    assert record["success"]["consecutive"] == 1


def test_diagnostics(harness):
    from diagnostic_msgs.msg import DiagnosticArray

    h = harness()
    got = []
    h.peer.create_subscription(DiagnosticArray, "/diagnostics", got.append, 10)
    for k, frame in enumerate(random_frames(2, seed=80)):
        h.send(frame, 1.0 + 0.5 * k)
    assert wait_until(lambda: any(m.num_frames == 2 for m in h.progress))
    assert wait_until(lambda: any(dict((kv.key, kv.value) for kv in s.values).get("prefixes_scored", "0") != "0"
                                  for m in got for s in m.status), 5.0)
    values = {kv.key: kv.value for kv in got[-1].status[0].values}
    assert values["model_state"] == "active" and values["device"] == "cpu"
    assert values["frames_buffered"] == "2"
    assert {"/cam/image_raw rate_hz", "/cam/image_raw frames_rejected", "inference_latency_s"} <= set(values)


def test_lifecycle_cleanup_frees_model(harness):
    from rclpy.lifecycle import TransitionCallbackReturn

    h = harness()
    assert h.node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert not h.node._worker.alive and h.node.lifecycle_state == "inactive"
    h.node.trigger_cleanup()
    assert h.node._backend is None and h.node.lifecycle_state == "unconfigured"
    assert h.node.set_parameters([Parameter("frame_size", value=[32, 32])])[0].successful


def test_zero_stamp_falls_back_to_receive_time(harness):
    h = harness()
    before = time.time()
    for frame in random_frames(2, seed=90):
        h.send(frame, 0.0)
        time.sleep(0.6)  # receive times half a second apart: both land on the 2 fps grid
    assert wait_until(lambda: h.progress and h.progress[-1].num_frames == 2)
    assert before <= stamp(h.progress[-1]) <= time.time()


def test_stamp_going_back_is_rejected_until_reset(harness):
    h = harness()
    for k, frame in enumerate(random_frames(2, seed=91)):
        h.send(frame, 50.0 + 0.5 * k)
    assert wait_until(lambda: h.progress and h.progress[-1].num_frames == 2)
    h.send(random_frames(1, seed=92)[0], 10.0)  # a recording started over without a reset
    assert wait_until(lambda: sum(h.node.channels[0].intake.cameras[0].rejected.values()) == 1)
    h.call("/topreward/reset")
    h.send(random_frames(1, seed=93)[0], 10.0)
    assert wait_until(lambda: h.progress[-1].episode_id == 1)


def test_unusual_encodings_converted_and_garbage_survived(harness, backend):
    h = harness()
    frames = random_frames(3, seed=94, size=(64, 64))  # the size of the yuv422 frame below: one episode, one size
    h.send(frames[0], 1.0, encoding="RGB8")  # upper case, as some drivers write it
    uyvy = Image(height=64, width=64, encoding="yuv422", step=128, data=bytes(64 * 128))
    uyvy.header.stamp.sec = 2
    h.publisher("/cam/image_raw").publish(uyvy)
    odd = Image(height=64, width=64, encoding="mono8", step=64, data=bytes(64 * 64 - 1))  # one byte short
    odd.header.stamp.sec = 3
    h.publisher("/cam/image_raw").publish(odd)
    h.send(frames[2], 3.5)
    assert wait_until(lambda: h.progress and h.progress[-1].num_frames == 3)
    assert sum(h.node.channels[0].intake.cameras[0].rejected.values()) == 1 and h.node._worker.alive


def test_reactivation_starts_a_new_episode_and_success_stays_once(harness):
    from rclpy.lifecycle import TransitionCallbackReturn

    h = harness(success_threshold=-100.0, success_consecutive=1)
    for k, frame in enumerate(random_frames(2, seed=95)):
        h.send(frame, 1.0 + 0.5 * k)
    assert wait_until(lambda: h.success and h.progress and h.progress[-1].num_frames == 2)
    assert h.node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert h.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    for k, frame in enumerate(random_frames(2, seed=96)):
        h.send(frame, 5.0 + 0.5 * k)
    assert wait_until(lambda: h.progress[-1].episode_id == 1 and h.progress[-1].num_frames == 2)
    time.sleep(0.3)
    assert [m.episode_id for m in h.success] == [0, 1]


def test_whitespace_instruction_and_bad_names_rejected(harness):
    h = harness()
    for name, value, reason in [("instruction", "   ", "whitespace"), ("camera_topics", ["bad topic"], "topic name"),
                                ("reset_service", "bad name!", "name")]:
        result = h.node.set_parameters([Parameter(name, value=value)])[0]
        assert not result.successful and reason in result.reason, (name, result.reason)


def test_configure_failure_is_reported_and_recoverable(ros_context, tiny_model_path, tmp_path):
    from rclpy.lifecycle import TransitionCallbackReturn

    node = RewardNode(context=ros_context, parameter_overrides=[
        Parameter("model", value=str(tmp_path / "missing")), Parameter("autostart", value=False),
        Parameter("device", value="cpu"), Parameter("instruction", value=TASK), Parameter("sample_fps", value=1)])
    try:
        assert node.get_parameter("sample_fps").value == 1.0  # an integer given for a float parameter
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert node.lifecycle_state == "unconfigured" and node._backend is None
        assert node.set_parameters([Parameter("model", value=str(tiny_model_path))])[0].successful
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node._backend is not None
    finally:
        node.destroy_node()


def test_reward_node_bad_startup_parameter_is_one_line(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "topreward_ros.reward_node", "--ros-args", "-p", "device:=quantum"],
                            capture_output=True, text=True, timeout=120, env={**__import__("os").environ,
                                                                              "ROS_HOME": str(tmp_path)})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "reward_node: error:" in result.stderr
    assert "cuda:N" in result.stderr


def start_episode(h, instruction: str = "", outcome: int = 0):
    from topreward_msgs.srv import StartEpisode

    request = StartEpisode.Request(instruction=instruction, previous_outcome=outcome)
    return h.call("/topreward/start_episode", request, StartEpisode)


def records(path) -> list[dict]:
    return [json.loads(line) for line in (path / "episodes.jsonl").read_text().splitlines()]


def test_start_episode_reports_the_outcome_sets_the_task_and_returns_the_new_id(harness, tmp_path):
    from topreward_msgs.srv import StartEpisode

    h = harness(record_dir=str(tmp_path))
    frames = random_frames(6, seed=80)
    for k in range(2):
        h.send(frames[k], 1.0 + 0.5 * k)
    assert wait_until(lambda: h.progress and h.progress[-1].num_frames == 2)
    # Refused, and nothing changes: a task the prompt cannot hold, an outcome that does not exist.
    for instruction, outcome, reason in (("x" * 1001, 1, "instruction rejected"), ("", 7, "previous_outcome")):
        response = start_episode(h, instruction, outcome)
        assert not response.success and reason in response.message and response.episode_id == 0
    assert h.node.get_parameter("instruction").value == TASK and h.node.channels[0].buffer.episode_id == 0
    response = start_episode(h, "close the drawer", StartEpisode.Request.OUTCOME_SUCCESS)
    assert response.success and response.episode_id == 1 and response.message == "episode 1 started"
    assert h.node.get_parameter("instruction").value == "close the drawer"
    h.send(frames[2], 5.0)
    assert wait_until(lambda: h.progress[-1].episode_id == 1)
    assert h.progress[-1].instruction == "close the drawer"
    # The same task again, a failure this time.
    response = start_episode(h, "", StartEpisode.Request.OUTCOME_FAILURE)
    assert response.success and response.episode_id == 2
    h.send(frames[3], 7.0)
    assert wait_until(lambda: h.progress[-1].episode_id == 2)  # scored: an episode without values has no record
    assert wait_until(lambda: (tmp_path / "episodes.jsonl").exists() and len(records(tmp_path)) == 2)
    written = records(tmp_path)
    assert [(r["episode_id"], r["instruction"], r["outcome"]) for r in written] == [
        (0, TASK, "success"), (1, "close the drawer", "failure")]
    assert h.call("/topreward/reset").success  # Trigger still works; nobody said what happened
    h.send(frames[4], 9.0)
    assert wait_until(lambda: len(records(tmp_path)) == 3)
    assert records(tmp_path)[2]["outcome"] == "unknown"


def test_episode_ids_continue_from_the_records_after_a_restart(harness, tmp_path):
    first = harness(record_dir=str(tmp_path))
    for k, frame in enumerate(random_frames(2, seed=81)):
        first.send(frame, 1.0 + 0.5 * k)
    assert wait_until(lambda: first.progress and first.progress[-1].num_frames == 2)
    assert first.call("/topreward/reset").message == "episode 1 started"
    first.send(random_frames(1, seed=82)[0], 3.0)
    assert wait_until(lambda: (tmp_path / "episodes.jsonl").exists())
    first.close()
    second = harness(record_dir=str(tmp_path))  # the node restarted on the same record_dir
    second.send(random_frames(1, seed=83)[0], 1.0)
    assert wait_until(lambda: bool(second.progress))
    assert second.progress[0].episode_id == 1 + max(r["episode_id"] for r in records(tmp_path))


def test_activation_never_shows_the_process_watch_a_worker_not_yet_started(harness, monkeypatch):
    # main() ends the process when inference_error() names a dead thread; a worker not yet started is not alive.
    from topreward.online.worker import InferenceWorker

    h = harness(autostart=False)
    seen = []
    real_start = InferenceWorker.start

    def start(worker):
        seen.append(h.node.inference_error())  # what the watch reads while activation starts the thread
        real_start(worker)

    monkeypatch.setattr(InferenceWorker, "start", start)
    assert h.node.trigger_configure() == TransitionCallbackReturn.SUCCESS and \
        h.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert seen == [None] and h.node.inference_error() is None


def test_camera_type_comes_from_the_graph_not_the_name(harness):
    # image_transport's republish names its raw output .../image_decompressed: an Image despite the name.
    topic = "/cam/image_decompressed"
    h = harness(camera_topics=[topic], autostart=False)
    early = h.peer.create_publisher(Image, topic, 10)  # published before the node subscribes
    assert h.node.trigger_configure() == TransitionCallbackReturn.SUCCESS and \
        h.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert wait_until(lambda: early.get_subscription_count() > 0)
    assert h.node.channels[0].camera_types()[0] is Image
    h.send(random_frames(1, seed=84)[0], 1.0, topic=topic)
    assert wait_until(lambda: bool(h.progress))


# A camera that starts after the node: Image on a topic whose name says compressed. It publishes two frames
# once the node has subscribed with the right type, then waits for its stdin to close.
LATE_CAMERA = '''
import sys
import time

import numpy as np
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

rclpy.init()
node = rclpy.create_node("late_camera")
pub = node.create_publisher(Image, sys.argv[1], QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
deadline = time.monotonic() + 120
while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
    time.sleep(0.05)
if pub.get_subscription_count() == 0:
    sys.exit(3)
print("subscribed", flush=True)
rng = np.random.default_rng(85)
for k in range(2):
    msg = Image(height=64, width=64, encoding="rgb8", step=192)
    msg.data = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8).tobytes()
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1, 500_000_000 * k
    pub.publish(msg)
sys.stdin.read()
node.destroy_node()
rclpy.try_shutdown()
'''


def test_a_wrong_guess_from_the_name_is_corrected_once_the_topic_is_published(harness, ros_context, tmp_path):
    import os
    import subprocess
    import sys

    topic = "/late/image_compressed_view"  # the name says compressed; the camera publishes Image, later
    h = harness(camera_topics=[topic])
    assert h.node.channels[0].camera_types() == [CompressedImage]  # a guess: nobody publishes yet
    # The camera in a process of its own, as cameras are (one DDS participant cannot hold both types on a topic).
    script = tmp_path / "late_camera.py"
    script.write_text(LATE_CAMERA)
    env = {**os.environ, "ROS_DOMAIN_ID": str(ros_context.get_domain_id()), "ROS_HOME": str(tmp_path),
           "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    camera = subprocess.Popen([sys.executable, str(script), topic], env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert camera.stdout.readline().strip() == "subscribed", camera.stdout.read()  # subscribed again, as Image
        assert h.node.channels[0].camera_types() == [Image]
        assert wait_until(lambda: h.progress and h.progress[-1].num_frames == 2)
    finally:
        camera.stdin.close()
        camera.wait(30)
    assert camera.returncode == 0


def test_record_dir_is_an_eval_source_values_as_scored_outcomes_as_labels(harness, tmp_path, capsys):
    from sklearn.metrics import roc_auc_score

    from topreward.cli import main
    from topreward_msgs.srv import StartEpisode

    records_dir = tmp_path / "records"
    h = harness(record_dir=str(records_dir))
    success, failure = StartEpisode.Request.OUTCOME_SUCCESS, StartEpisode.Request.OUTCOME_FAILURE
    outcomes = [success, failure, success, failure, StartEpisode.Request.OUTCOME_UNKNOWN]
    for episode, outcome in enumerate(outcomes):
        for k, frame in enumerate(random_frames(4, seed=90 + episode)):
            h.send(frame, 1.0 + 10.0 * episode + 0.5 * k)
        assert wait_until(lambda e=episode: h.progress and h.progress[-1].episode_id == e and
                          h.progress[-1].num_frames == 4)
        assert start_episode(h, "", outcome).success
    h.close()  # records the last episode that was scored; the empty one the last start_episode began is not
    assert len(records(records_dir)) == 5
    out = tmp_path / "eval"
    # The default model is never loaded: nothing is scored again (the hub is offline in tests).
    assert main(["eval", str(records_dir), "--out", str(out), "-q"]) == 0, capsys.readouterr().err
    curves = [json.loads(line) for line in (out / "curves.jsonl").read_text().splitlines()]
    assert [c["key"] for c in curves] == [f"episode {k}" for k in range(5)]
    for curve, record in zip(curves, records(records_dir), strict=True):
        assert curve["log_prob_true"] == record["log_prob_true"]  # the values as published, not rescored
        assert curve["prefix_lengths"] == record["num_frames"] and curve["model"] == record["model"]
        assert curve["success_score"] == pytest.approx(np.mean(record["log_prob_true"][-3:]))
    assert [c["success"] for c in curves] == [True, False, True, False, None]
    summary = json.loads((out / "summary.json").read_text())
    detection = summary["success_detection"]
    assert summary["format"] == "records" and detection["labelled"] == 4 and detection["successes"] == 2
    labelled = curves[:4]
    assert detection["roc_auc"] == pytest.approx(roc_auc_score([c["success"] for c in labelled],
                                                               [c["success_score"] for c in labelled]))
    assert (out / "threshold.yaml").exists() and (out / "roc.png").exists()
    assert summary["online_detection"]["labelled"] == 4


def test_the_facade_publishes_what_the_node_publishes_for_the_same_frames(harness, backend):
    """TOPReward in-process and the node share one implementation: same values, halvings, success and resets."""
    from topreward import TOPReward
    from topreward.types import ScheduleConfig, SuccessConfig

    h = harness(max_frames=4, success_threshold=-100.0, success_consecutive=2)
    reward = TOPReward(backend, ScheduleConfig(2.0, (64, 64), 4), SuccessConfig(-100.0, 2, 0.0))
    episodes = [random_frames(9, seed=120, size=(64, 64)), random_frames(3, seed=121, size=(64, 64))]
    steps = []
    for episode, frames in enumerate(episodes):
        if episode:
            assert h.call("/topreward/reset").success
        assert reward.reset(TASK if not episode else None) == episode
        for k, frame in enumerate(frames):
            t = 1.0 + 0.5 * k
            count, received = len(h.progress), h.received()
            step = reward.observe(frame, t)
            h.send(frame, t)  # one frame at a time, so that the node scores every prefix as the facade does
            if step is None:  # the schedule skips it (after a halving): the node's schedule too
                assert wait_until(lambda r=received: h.received() == r + 1)
            else:
                steps.append(step)
                assert wait_until(lambda c=count: len(h.progress) == c + 1)
    assert wait_until(lambda: h.received() == 12)
    assert len(h.progress) == len(steps) == 10  # 9 frames at 2 fps, max_frames 4: 2 of the last 4 skipped
    assert [s.num_frames for s in steps] == [1, 2, 3, 4, 3, 4, 3, 1, 2, 3]  # halved at the 5th frame and the 9th
    for step, msg in zip(steps, h.progress, strict=True):
        assert (step.episode_id, step.num_frames, step.instruction) == (msg.episode_id, msg.num_frames,
                                                                         msg.instruction)
        assert step.stamp_ns == stamp_ns(msg) and step.elapsed == pytest.approx(msg.elapsed)
        for name in ("log_prob_true", "log_prob_false", "p_true", "progress", "reward"):
            assert getattr(step, name) == pytest.approx(getattr(msg, name), rel=1e-5, abs=1e-6), name
    fired = [(s.episode_id, s.num_frames) for s in steps if s.success]
    assert fired == [(0, 2), (1, 2)]
    assert wait_until(lambda: len(h.success) == 2)
    assert [m.episode_id for m in h.success] == [0, 1]
    assert [m.score for m in h.success] == pytest.approx([s.success.score for s in steps if s.success], rel=1e-5)
    assert reward.last_episode[0] == 0 and len(reward.last_episode[2].scores) == 3  # the history after halving


def test_debug_image_shows_the_frame_scored_with_its_progress_header_only_while_watched(harness):
    from topreward.overlay import MIN_WIDTH, PANEL_HEIGHT, VIDEO_HEIGHT, display_resize

    h = harness()
    debug = h.node.channels[0].debug
    frames = random_frames(6, seed=130, size=(64, 64))
    for k in range(2):  # nobody subscribes: nothing is drawn
        h.send(frames[k], 1.0 + 0.5 * k)
        assert wait_until(lambda n=k: len(h.progress) == n + 1)
    assert debug.rendered == 0
    got = []
    h.peer.create_subscription(Image, "/topreward/debug_image", got.append, RELIABLE)
    assert wait_until(debug.wanted)
    for k in range(2, 6):
        h.send(frames[k], 1.0 + 0.5 * k)
        assert wait_until(lambda n=k: len(h.progress) == n + 1)
        # Each prefix's picture shows that prefix (one at a time here: none is replaced by a newer one).
        assert wait_until(lambda n=k: got and got[-1].header.stamp == h.progress[n].header.stamp)
    headers = {(m.header.stamp.sec, m.header.stamp.nanosec, m.header.frame_id) for m in h.progress}
    for image in got:
        assert (image.encoding, image.height, image.width) == ("bgr8", VIDEO_HEIGHT + PANEL_HEIGHT, MIN_WIDTH)
        assert (image.header.stamp.sec, image.header.stamp.nanosec, image.header.frame_id) in headers
    # The picture is the frame the model scored last, enlarged (below the instruction's line of text).
    picture = np.frombuffer(got[-1].data, np.uint8).reshape(got[-1].height, got[-1].width, 3)
    left = (MIN_WIDTH - VIDEO_HEIGHT) // 2
    expected = cv2.cvtColor(display_resize(frames[5], (VIDEO_HEIGHT, VIDEO_HEIGHT)), cv2.COLOR_RGB2BGR)
    assert np.array_equal(picture[40:VIDEO_HEIGHT, left:left + VIDEO_HEIGHT], expected[40:])
    assert debug.rendered == len(got) == 4


def test_debug_image_off_creates_no_publisher(harness):
    h = harness(debug_image=False)
    assert h.node.channels[0].debug is None
    names = {name for name, _ in h.node.get_publisher_names_and_types_by_node("topreward", "/")}
    assert "/topreward/progress" in names and "/topreward/debug_image" not in names


def test_record_video_writes_what_was_scored_and_eval_rescores_it(harness, tmp_path, tiny_model_path):
    from topreward.cli import main
    from topreward_msgs.srv import StartEpisode

    records_dir = tmp_path / "records"
    h = harness(record_dir=str(records_dir), record_video=True)
    ramp = np.linspace(0, 160, 64, dtype=np.float32)
    # Smooth pictures, each its own: a codec keeps them close (random noise would not survive 4:2:0 chroma).
    rows, columns = np.meshgrid(ramp, ramp, indexing="ij")
    frames = [np.stack([rows + 9 * k, columns, np.full((64, 64), 25.0 * k)], axis=-1).clip(0, 255).astype(np.uint8)
              for k in range(10)]
    for episode, outcome in enumerate((StartEpisode.Request.OUTCOME_SUCCESS, StartEpisode.Request.OUTCOME_FAILURE)):
        for k in range(5):
            h.send(frames[5 * episode + k], 1.0 + 10 * episode + 0.5 * k)
            assert wait_until(lambda e=episode, n=k + 1: h.progress and h.progress[-1].episode_id == e and
                              h.progress[-1].num_frames == n)
        assert start_episode(h, "", outcome).success
    h.send(frames[0], 50.0)  # the worker notices the new episode and closes the last one
    assert wait_until(lambda: (records_dir / "episodes.jsonl").exists() and len(records(records_dir)) == 2)
    written = records(records_dir)
    assert [r["video"] for r in written] == ["videos/episode_000000.mp4", "videos/episode_000001.mp4"]
    assert wait_until(lambda: all((records_dir / r["video"]).exists() for r in written))
    for episode, record in enumerate(written):
        with av.open(str(records_dir / record["video"])) as container:
            decoded = [(f.time, f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
        assert [t for t, _ in decoded] == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0], abs=2e-3)  # the sampled times
        for (_, image), sent in zip(decoded, frames[5 * episode:5 * episode + 5], strict=True):
            assert image.shape == (64, 64, 3) and np.abs(image.astype(int) - sent).mean() < 4  # H.264, crf 23
    h.close()
    out = tmp_path / "rescored"
    assert main(["eval", str(records_dir), "--rescore", "--out", str(out), "--model", str(tiny_model_path),
                 "--frame-size", "64", "--prefixes", "all", "-q"]) == 0
    curves = [json.loads(line) for line in (out / "curves.jsonl").read_text().splitlines()]
    assert [(c["key"], c["success"], c["prefix_lengths"]) for c in curves] == [
        ("episode 0", True, [1, 2, 3, 4, 5]), ("episode 1", False, [1, 2, 3, 4, 5])]


def test_a_slow_debug_image_never_holds_up_scoring(harness, monkeypatch):
    from topreward_ros.debug_image import DebugImagePublisher

    h = harness()
    debug = h.node.channels[0].debug
    entered, release, drawn = threading.Event(), threading.Event(), []
    render = DebugImagePublisher.render

    def stuck(self, item):  # the first picture takes until the test lets it go
        entered.set()
        release.wait(30.0)
        drawn.append(item.header.stamp.sec * 10**9 + item.header.stamp.nanosec)
        return render(self, item)

    monkeypatch.setattr(DebugImagePublisher, "render", stuck)
    got = []
    h.peer.create_subscription(Image, "/topreward/debug_image", got.append, RELIABLE)
    assert wait_until(debug.wanted)
    frames = random_frames(5, seed=150, size=(64, 64))
    for k, frame in enumerate(frames):
        h.send(frame, 1.0 + 0.5 * k)
        assert wait_until(lambda n=k: len(h.progress) == n + 1)  # scoring goes on while the picture is stuck
        if k == 0:
            assert entered.wait(20.0)  # the first picture is being drawn (and stuck) from here on
    release.set()
    assert wait_until(lambda: len(got) == 2)
    # The stuck picture, then only the newest: the three in between were replaced, never queued.
    assert drawn == [stamp_ns(h.progress[0]), stamp_ns(h.progress[-1])]
