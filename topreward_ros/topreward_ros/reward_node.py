"""The TOPReward reward node: camera topics in, Progress and SuccessDetected out.

camera callbacks -> image conversion (+ tiling) -> EpisodeBuffer -> InferenceWorker (owns the model)
-> OnlineEpisode (progress, reward, success) -> publishers. Callbacks never wait for inference.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from topreward_msgs.msg import Progress, SuccessDetected

from .core.backend import ModelLoadError, Qwen3VLBackend
from .core.episode_buffer import EpisodeBuffer
from .core.online import OnlineEpisode
from .core.prompt import PromptConfig
from .core.scorer import StreamingScorer
from .core.tiling import tile_views
from .core.tiny_model import TINY_MODEL_NAME, TINY_WARNING
from .core.types import ModelConfig, ScheduleConfig, Step, SuccessConfig
from .core.worker import InferenceWorker
from .image_conversion import compressed_to_rgb, image_to_rgb
from .parameters import RUNTIME_PARAMETERS, declare_parameters, validate

NODE_NAME = "topreward"


def is_compressed_topic(topic: str) -> bool:
    """CompressedImage when the topic's last name segment says so (`.../compressed`, `.../image_compressed`)."""
    return "compressed" in topic.rstrip("/").rsplit("/", 1)[-1]


def stamp_seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


@dataclass
class CameraStats:
    """Per-camera counters for diagnostics."""

    topic: str
    received: int = 0
    rejected: int = 0
    window_start: float = field(default_factory=time.monotonic)
    window_count: int = 0
    episode: int = -1  # episode the stamps below belong to
    latest: object = None  # newest message; secondary views are converted only when tiled
    latest_time: float = float("-inf")

    def rate(self) -> float:
        now = time.monotonic()
        rate = self.window_count / max(now - self.window_start, 1e-6)
        self.window_start, self.window_count = now, 0
        return rate


class RewardNode(LifecycleNode):
    """Managed node: the model loads on configure and is freed on cleanup."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._backend: Qwen3VLBackend | None = None
        self._buffer: EpisodeBuffer | None = None
        self._worker: InferenceWorker | None = None
        self._cameras: list[CameraStats] = []
        self._subscriptions_list = []
        self._publish_lock = threading.Lock()  # orders publications against episode resets
        self._frame_id = ""
        self._zero_stamp_warned = False
        self._success_count = 0
        self._state = "unconfigured"
        self._io_group = MutuallyExclusiveCallbackGroup()
        # Registered before declaring, so that start-up values are validated too.
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        declare_parameters(self)
        if self.get_parameter("autostart").value:
            self._autostart_timer = self.create_timer(0.0, self._autostart, callback_group=self._io_group)

    # ---------------------------------------------------------------- parameters
    def _p(self, name: str):
        return self.get_parameter(name).value

    def _validate_parameters(self, params):
        from rcl_interfaces.msg import SetParametersResult

        configured = self._state != "unconfigured"
        for param in params:
            reason = validate(param.name, param.value)
            if reason:
                return SetParametersResult(successful=False, reason=f"{param.name}: {reason}")
            if configured and param.name not in RUNTIME_PARAMETERS:
                return SetParametersResult(successful=False, reason=(
                    f"{param.name} is read on configure: deactivate and clean up the node, set it, then configure"))
        return SetParametersResult(successful=True)

    def _apply_parameters(self, params) -> None:
        for param in params:
            if param.name == "instruction" and self._buffer is not None and param.value != self._buffer.instruction:
                self._new_episode(param.value)

    def _schedule_config(self) -> ScheduleConfig:
        h, w = self._p("frame_size")
        return ScheduleConfig(self._p("sample_fps"), (h, w), self._p("max_frames"))

    def _success_config(self) -> SuccessConfig:
        return SuccessConfig(self._p("success_threshold"), self._p("success_consecutive"),
                             self._p("min_episode_duration"), self._p("success_metric"))

    # ---------------------------------------------------------------- lifecycle
    def _autostart(self) -> None:
        self.destroy_timer(self._autostart_timer)
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        model = self._p("model")
        if model == TINY_MODEL_NAME:
            self.get_logger().warning(TINY_WARNING)
        self.get_logger().info(f"loading {model} (device {self._p('device')}, dtype {self._p('dtype')})")
        try:
            self._backend = Qwen3VLBackend.load(ModelConfig(model, self._p("device"), self._p("dtype"),
                                                            self._p("attn_implementation"),
                                                            self._p("trust_remote_code")))
            prompt = PromptConfig(prefix=self._p("prompt_prefix"), suffix=self._p("prompt_suffix"),
                                  chat_template=self._p("chat_template"))
            instruction = self._p("instruction")
            schedule = self._schedule_config()
            # The scorer needs some task; the worker resets it with the real one before scoring.
            self._scorer = StreamingScorer(self._backend, instruction or "(no instruction yet)", schedule, prompt)
            self._success = self._success_config()
        except Exception as exc:  # rclpy would turn it into an unlogged ERROR transition
            self.get_logger().error(f"configure failed: {exc if isinstance(exc, ModelLoadError) else repr(exc)}")
            self._backend = self._scorer = None
            return TransitionCallbackReturn.FAILURE
        self._buffer = EpisodeBuffer(schedule, instruction)
        if not instruction:
            self.get_logger().warning("no instruction: frames are ignored until one arrives on ~/instruction "
                                      "or the instruction parameter is set")
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self._progress_pub = self.create_lifecycle_publisher(Progress, "~/progress", reliable)
        self._success_pub = self.create_lifecycle_publisher(SuccessDetected, "~/success", reliable)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._reset_srv = self.create_service(Trigger, "~/reset", self._on_reset, callback_group=self._io_group)
        self._instruction_sub = self.create_subscription(String, "~/instruction", self._on_instruction, 10,
                                                         callback_group=self._io_group)
        self._reset_client = None
        if self._p("reset_service"):
            self._reset_client = self.create_client(Trigger, self._p("reset_service"), callback_group=self._io_group)
        self._diag_timer = self.create_timer(1.0, self._publish_diagnostics, callback_group=self._io_group)
        self._state = "inactive"
        self.get_logger().info(f"configured: {self._backend.name} on {self._backend.device} ({self._backend.dtype})")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._start_cameras_and_worker()
        except Exception as exc:  # rclpy would turn it into an unlogged ERROR transition
            self.get_logger().error(f"activate failed: {exc!r}")
            self._stop_cameras_and_worker()
            return TransitionCallbackReturn.FAILURE
        self._state = "active"
        return super().on_activate(state)

    def _start_cameras_and_worker(self) -> None:
        qos = QoSProfile(depth=self._p("qos_depth"), history=HistoryPolicy.KEEP_LAST,
                         reliability=ReliabilityPolicy.RELIABLE if self._p("qos_reliability") == "reliable"
                         else ReliabilityPolicy.BEST_EFFORT)
        topics = list(self._p("camera_topics"))
        if len(topics) > 1 and not self._p("tile_views"):
            self.get_logger().warning(f"{len(topics)} camera topics but tile_views is false: only {topics[0]} is "
                                      "scored")
            topics = topics[:1]
        group = MutuallyExclusiveCallbackGroup()
        self._cameras = [CameraStats(topic) for topic in topics]
        for index, topic in enumerate(topics):
            msg_type = CompressedImage if is_compressed_topic(topic) else Image
            self._subscriptions_list.append(self.create_subscription(
                msg_type, topic, lambda msg, i=index: self._on_image(msg, i), qos, callback_group=group))
            self.get_logger().info(f"camera {index}: {topic} ({msg_type.__name__})")
        self._worker = InferenceWorker(self._scorer, self._buffer, self._success, self._on_step,
                                       self._on_episode_end, self._on_worker_error)
        self._worker.start()

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_cameras_and_worker()
        # Deactivation ends the episode: after activation progress and success start afresh, so an
        # episode can never report success twice.
        self._new_episode(None)
        self._state = "inactive"
        return super().on_deactivate(state)

    def _stop_cameras_and_worker(self) -> None:
        for sub in self._subscriptions_list:
            self.destroy_subscription(sub)
        self._subscriptions_list.clear()
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.destroy_lifecycle_publisher(self._progress_pub)
        self.destroy_lifecycle_publisher(self._success_pub)
        self.destroy_publisher(self._diag_pub)
        self.destroy_service(self._reset_srv)
        self.destroy_subscription(self._instruction_sub)
        self.destroy_timer(self._diag_timer)
        if self._reset_client is not None:
            self.destroy_client(self._reset_client)
        self._scorer = self._backend = self._buffer = None
        _free_accelerator_memory()
        self._state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_cameras_and_worker()
        return TransitionCallbackReturn.SUCCESS

    # ---------------------------------------------------------------- inputs
    def _capture_time(self, msg) -> float:
        t = stamp_seconds(msg.header.stamp)
        if t == 0.0:
            if not self._zero_stamp_warned:
                self._zero_stamp_warned = True
                self.get_logger().warning("camera header stamp is zero: using receive time as capture time")
            t = self.get_clock().now().nanoseconds * 1e-9
        return t

    def _to_rgb(self, msg):
        return compressed_to_rgb(msg) if isinstance(msg, CompressedImage) else image_to_rgb(msg)

    def _reject(self, camera: CameraStats, reason: str) -> None:
        camera.rejected += 1
        self.get_logger().warning(f"{camera.topic}: frame dropped: {reason}", throttle_duration_sec=5.0)

    def _on_image(self, msg, index: int) -> None:
        camera = self._cameras[index]
        camera.received += 1
        camera.window_count += 1
        t = self._capture_time(msg)
        episode = self._buffer.episode_id
        if camera.episode != episode:  # stamps may start over with a new episode (a replayed recording)
            camera.episode, camera.latest, camera.latest_time = episode, None, float("-inf")
        if t < camera.latest_time:
            self._reject(camera, f"stamp went back {camera.latest_time - t:.3f} s (replaying a recording? call "
                                 "~/reset between episodes)")
            return
        camera.latest, camera.latest_time = msg, t
        if index > 0:
            return
        ticket = self._buffer.admit(t)  # the episode this frame is for, if it is sampled at all
        if ticket is None:
            if not self._buffer.instruction:
                self.get_logger().warning("no instruction yet: publish one on ~/instruction",
                                          throttle_duration_sec=10.0)
            return
        try:
            frame = self._to_rgb(msg)
            if len(self._cameras) > 1:
                frame = tile_views([frame] + [self._secondary_view(c, t) for c in self._cameras[1:]],
                                   self._buffer.config.frame_size)
        except Exception as exc:  # whatever a message holds, a bad frame must not stop the executor
            self._reject(camera, str(exc))
            return
        self._frame_id = msg.header.frame_id
        # Dropped if a reset came in meanwhile: a frame of the old episode never starts the next one.
        self._buffer.offer(frame, t, ticket)

    def _secondary_view(self, camera: CameraStats, t: float):
        if camera.latest is None or abs(camera.latest_time - t) > self._p("max_view_skew"):
            self.get_logger().warning(f"{camera.topic}: no frame within max_view_skew of the primary view; "
                                      "tiling a black view", throttle_duration_sec=5.0)
            return None
        try:
            return self._to_rgb(camera.latest)
        except Exception as exc:
            self._reject(camera, str(exc))
            return None

    def _on_instruction(self, msg: String) -> None:
        text = msg.data.strip()
        if not text:
            self.get_logger().warning("ignored an empty instruction on ~/instruction")
            return
        if self._buffer is not None and text == self._buffer.instruction:
            self._new_episode(None)  # same task again: still a new episode
            return
        # Through the parameter, so that `instruction` always reads the current task.
        result = self.set_parameters([Parameter("instruction", value=text)])[0]
        if not result.successful:
            self.get_logger().warning(f"instruction rejected: {result.reason}")

    def _on_reset(self, request, response):
        if self._buffer is None:
            response.success, response.message = False, "node is not configured"
            return response
        episode = self._new_episode(None)
        response.success, response.message = True, f"episode {episode} started"
        return response

    def _new_episode(self, instruction: str | None) -> int:
        with self._publish_lock:  # a result of the old episode can no longer be published after this
            episode = self._buffer.new_episode(instruction)
        self.get_logger().info(f"episode {episode} started: {self._buffer.instruction!r}")
        return episode

    # ---------------------------------------------------------------- outputs (worker thread)
    def _on_step(self, episode_id: int, instruction: str, step: Step, inference: float) -> None:
        score = step.score
        msg = Progress()
        msg.header.stamp = _stamp(score.time)
        msg.header.frame_id = self._frame_id
        msg.episode_id, msg.instruction, msg.num_frames = episode_id, instruction, score.num_frames
        msg.elapsed = score.elapsed
        msg.log_prob_true, msg.log_prob_false, msg.p_true = score.log_prob_true, score.log_prob_false, score.p_true
        msg.progress, msg.reward, msg.model = step.progress, step.reward, self._backend.name
        with self._publish_lock:
            if episode_id != self._buffer.episode_id:
                return  # the episode was reset while this prefix was being scored
            msg.latency = self.get_clock().now().nanoseconds * 1e-9 - score.time
            self._progress_pub.publish(msg)
            if step.success is not None:
                self._publish_success(episode_id, instruction, step)

    def _publish_success(self, episode_id: int, instruction: str, step: Step) -> None:
        event = step.success
        msg = SuccessDetected()
        msg.header.stamp = _stamp(step.score.time)
        msg.header.frame_id = self._frame_id
        msg.episode_id, msg.instruction = episode_id, instruction
        msg.score, msg.threshold, msg.consecutive, msg.elapsed = (event.score, event.threshold, event.consecutive,
                                                                  event.elapsed)
        self._success_pub.publish(msg)
        self._success_count += 1
        self.get_logger().info(f"episode {episode_id}: success (score {event.score:.3f} >= {event.threshold:.3f})")
        if self._reset_client is not None:
            if self._reset_client.service_is_ready():
                self._reset_client.call_async(Trigger.Request())  # never waited on: the executor stays free
            else:
                self.get_logger().warning(f"reset service {self._p('reset_service')} is not available")

    def _on_episode_end(self, episode_id: int, instruction: str, episode: OnlineEpisode) -> None:
        record_dir = self._p("record_dir")
        if not record_dir:
            return
        path = Path(record_dir).expanduser()
        try:
            path.mkdir(parents=True, exist_ok=True)
            record = episode.record(episode_id, instruction, self._backend.name if self._backend else "",
                                    self._p("tau"), self._p("delta_max"))
            with open(path / "episodes.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as exc:
            self.get_logger().error(f"cannot write episode record to {path}: {exc}")

    def _on_worker_error(self, exc: Exception) -> None:
        self.get_logger().error(f"inference failed: {type(exc).__name__}: {exc}", throttle_duration_sec=5.0)

    def _publish_diagnostics(self) -> None:
        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: reward", hardware_id=str(
            self._backend.device) if self._backend else "")
        worker = self._worker
        values = {
            "model": self._backend.name if self._backend else "", "model_state": self._state,
            "device": str(self._backend.device) if self._backend else "",
            "episode_id": self._buffer.episode_id if self._buffer else 0,
            "frames_buffered": len(self._buffer) if self._buffer else 0,
            "inference_latency_s": f"{worker.last_inference:.3f}" if worker and worker.last_inference else "n/a",
            "prefixes_scored": worker.scored if worker else 0, "successes": self._success_count,
        }
        for camera in self._cameras:
            values[f"{camera.topic} rate_hz"] = f"{camera.rate():.1f}"
            values[f"{camera.topic} frames_rejected"] = camera.rejected
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        if self._state == "active" and worker is not None and not worker.alive:
            status.level, status.message = DiagnosticStatus.ERROR, "inference thread stopped"
        elif self._state == "active" and self._cameras and self._cameras[0].received == 0:
            status.level, status.message = DiagnosticStatus.WARN, f"no frames on {self._cameras[0].topic}"
        else:
            status.level, status.message = DiagnosticStatus.OK, self._state
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)


def _stamp(seconds: float):
    from builtin_interfaces.msg import Time

    sec = int(seconds // 1)
    return Time(sec=sec, nanosec=min(int(round((seconds - sec) * 1e9)), 999_999_999))


def _free_accelerator_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def main(args: list[str] | None = None) -> int:
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

    rclpy.init(args=args)
    try:
        node = RewardNode()
    except (InvalidParameterValueException, InvalidParameterTypeException) as exc:
        print(f"reward_node: error: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    executor = MultiThreadedExecutor(num_threads=3)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node._stop_cameras_and_worker()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
