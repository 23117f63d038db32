"""Shared by the node tests: a real reward node in-process, a peer node that talks to it, and backend doubles.

The doubles wrap the real Qwen3VLBackend and only add a fault (an exception, a delay) on demand; every
value they return is the real model's.
"""
from __future__ import annotations

import threading
import time

import cv2
import numpy as np
from conftest import random_frames
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_srvs.srv import Trigger

from topreward.scoring.scorer import StreamingScorer
from topreward.types import ScheduleConfig
from topreward_msgs.msg import Progress, SuccessDetected
from topreward_ros.reward_node import RewardNode
from topreward_ros.spinning import BackgroundSpin

RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
TASK = "put the cube in the bowl"
INFERENCE_THREAD = "topreward-inference"


def wait_until(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def stamp(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def set_stamp(msg, t_ns: int) -> None:
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(t_ns), 1_000_000_000)


def seconds_to_ns(t: float) -> int:
    return int(t) * 1_000_000_000 + int(round((t % 1) * 1e9))


def image_msg(frame: np.ndarray, t_ns: int, encoding: str = "rgb8", frame_id: str = "cam") -> Image:
    msg = Image(height=frame.shape[0], width=frame.shape[1], encoding=encoding, step=frame.shape[1] * 3)
    msg.data = frame.tobytes()
    msg.header.frame_id = frame_id
    set_stamp(msg, t_ns)
    return msg


def compressed_msg(frame: np.ndarray, t_ns: int, ext: str = ".jpg") -> CompressedImage:
    ok, data = cv2.imencode(ext, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    assert ok
    msg = CompressedImage(format=f"rgb8; {ext[1:]} compressed bgr8", data=data.tobytes())
    set_stamp(msg, t_ns)
    return msg


def diagnostic_values(status) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


class Harness:
    """A reward node plus a test node that publishes frames and records what the reward node sends."""

    def __init__(self, context, model_path, **params):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray

        defaults = dict(model=str(model_path), device="cpu", dtype="float32", instruction=TASK,
                        camera_topics=["/cam/image_raw"], frame_size=[64, 64], sample_fps=2.0,
                        qos_reliability="reliable", qos_depth=50, success_threshold=-100.0,
                        success_consecutive=1000, min_episode_duration=0.0)
        defaults.update(params)
        overrides = [Parameter(k, value=v) for k, v in defaults.items()]
        self.node = RewardNode(context=context, parameter_overrides=overrides)
        self.peer = rclpy.create_node("peer", context=context)
        self.progress: list[Progress] = []
        self.success: list[SuccessDetected] = []
        self.diagnostics: list = []  # (time.monotonic() of arrival, DiagnosticStatus), oldest first
        self.peer.create_subscription(Progress, "/topreward/progress", self.progress.append, RELIABLE)
        self.peer.create_subscription(SuccessDetected, "/topreward/success", self.success.append, RELIABLE)
        # With several robots: each robot's messages as they arrive on /<robot>/topreward/...
        robots = defaults.get("robots", [])
        self.progress_of: dict[str, list[Progress]] = {r: [] for r in robots}
        self.success_of: dict[str, list[SuccessDetected]] = {r: [] for r in robots}
        for robot in robots:
            self.peer.create_subscription(Progress, f"/{robot}/topreward/progress", self.progress_of[robot].append,
                                          RELIABLE)
            self.peer.create_subscription(SuccessDetected, f"/{robot}/topreward/success",
                                          self.success_of[robot].append, RELIABLE)
        self.peer.create_subscription(DiagnosticArray, "/diagnostics",
                                      lambda m: self.diagnostics.extend((time.monotonic(), s) for s in m.status), 10)
        self.publishers = {}
        self.executor = MultiThreadedExecutor(num_threads=4, context=context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.peer)
        self.spinner = BackgroundSpin(self.executor, "harness-executor")
        if defaults.get("autostart", True):
            # Activation loads the model: on a loaded 2-core machine that took past 20 s (seen beside two CPU hogs).
            assert wait_until(lambda: self.node.lifecycle_state == "active", timeout=120), "node did not activate"

    def publisher(self, topic, msg_type=Image):
        if topic not in self.publishers:
            pub = self.peer.create_publisher(msg_type, topic, RELIABLE)
            self.publishers[topic] = pub
            assert wait_until(lambda: pub.get_subscription_count() > 0)
        return self.publishers[topic]

    def publish(self, msg, topic="/cam/image_raw") -> None:
        self.publisher(topic, type(msg)).publish(msg)

    def send(self, frame: np.ndarray, t: float, topic="/cam/image_raw", encoding="rgb8"):
        self.publish(image_msg(frame, seconds_to_ns(t), encoding), topic)

    def send_compressed(self, frame: np.ndarray, t: float, topic: str, ext=".jpg"):
        self.publish(compressed_msg(frame, seconds_to_ns(t), ext), topic)

    def call(self, service: str, request=None, srv_type=Trigger, timeout=10.0):
        """The response of `service` (of `srv_type`) to `request` (default: an empty request)."""
        client = self.peer.create_client(srv_type, service)
        assert client.wait_for_service(timeout)
        future = client.call_async(srv_type.Request() if request is None else request)
        assert wait_until(future.done, timeout)
        return future.result()

    def received(self, index: int = 0) -> int:
        """Messages the node's intake has seen on camera `index` (rejected ones included)."""
        return self.node.channels[0].intake.cameras[index].received

    def rejected(self, index: int = 0) -> dict[str, int]:
        return dict(self.node.channels[0].intake.cameras[index].rejected)

    def diagnostics_where(self, predicate, after: float = 0.0):
        """The newest status that arrived after monotonic time `after` and satisfies `predicate`, or None."""
        for seen, status in reversed(list(self.diagnostics)):
            if seen > after and predicate(status):
                return status
        return None

    def spy_publications(self) -> list[tuple[int, int]]:
        """(message's episode, node's current episode) at the moment of each Progress publication.

        A spy on the real publisher, so that DDS delivery order across topics plays no part.
        """
        published = []
        publish = self.node.channels[0].progress_pub.publish

        def spy(msg):
            published.append((msg.episode_id, self.node.channels[0].buffer.episode_id))
            publish(msg)

        self.node.channels[0].progress_pub.publish = spy
        return published

    def slow_inference_in_flight(self, delay: float, seed: int) -> SlowBackend:
        """One prefix scored normally, then the next one's inference held for `delay` s (returns once it is in)."""
        slow = self.node.channels[0].scorer.backend = SlowBackend(self.node.channels[0].scorer.backend, delay=delay)
        frames = random_frames(2, seed=seed, size=(64, 64))
        self.send(frames[0], 1.0)
        assert wait_until(lambda: len(self.progress) == 1)
        slow.armed = True
        self.send(frames[1], 1.5)
        assert slow.entered.wait(10.0)
        return slow

    def close(self):
        self.spinner.stop()
        if self.node._worker is not None:
            self.node._worker.stop()
        self.node.destroy_node()
        self.peer.destroy_node()


def offline_values(backend, frames, times, instruction=TASK, frame_size=(64, 64), max_frames=64):
    scorer = StreamingScorer(backend, instruction, ScheduleConfig(2.0, frame_size, max_frames))
    for frame, t in zip(frames, times, strict=True):
        scorer.append(frame, t)
    return {n: scorer.score(n) for n in range(1, scorer.num_frames + 1)}


def inference_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == INFERENCE_THREAD and t.is_alive()]


class _WrappedBackend:
    """The real backend with every attribute passed through; subclasses change `forward` only."""

    def __init__(self, real) -> None:
        self._real = real
        self.forward_calls = 0

    def __getattr__(self, name):
        return getattr(self._real, name)


class FailingBackend(_WrappedBackend):
    """Real Qwen3VLBackend whose forward raises on demand: the next `fail_next` calls, or all while `always`."""

    def __init__(self, real, exc_type: type[Exception] = RuntimeError) -> None:
        super().__init__(real)
        self.exc_type = exc_type
        self.fail_next = 0
        self.always = False
        self.failed = 0

    def forward(self, *args, **kwargs):
        self.forward_calls += 1
        if self.always or self.fail_next > 0:
            self.fail_next = max(self.fail_next - 1, 0)
            self.failed += 1
            raise self.exc_type("CUDA out of memory (injected by FailingBackend)")
        return self._real.forward(*args, **kwargs)


class SlowBackend(_WrappedBackend):
    """Real Qwen3VLBackend whose forward first sleeps `delay` seconds while armed; `entered` is set then."""

    def __init__(self, real, delay: float) -> None:
        super().__init__(real)
        self.delay = delay
        self.armed = False
        self.entered = threading.Event()
        self.left = threading.Event()

    def forward(self, *args, **kwargs):
        self.forward_calls += 1
        if self.armed:
            self.entered.set()
            time.sleep(self.delay)
            self.left.set()
        return self._real.forward(*args, **kwargs)
