"""The TOPReward reward node: camera topics in, Progress and SuccessDetected out.

camera callbacks -> CameraIntake (conversion, tiling, stamps) -> EpisodeBuffer -> InferenceWorker (owns the
model) -> OnlineEpisode (progress, reward, success) -> publishers. Callbacks never wait for inference.
This file is wiring: the lifecycle, the parameter gate, episode control and the outputs.
"""
from __future__ import annotations

import os
import signal
import sys
import threading

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from topreward_msgs.msg import Progress, SuccessDetected

from .camera_intake import CameraIntake
from .core.backend import ModelLoadError, Qwen3VLBackend
from .core.episode_buffer import EpisodeBuffer
from .core.online import OnlineEpisode
from .core.scorer import StreamingScorer
from .core.tiny_model import TINY_MODEL_NAME, TINY_WARNING
from .core.types import Step
from .core.worker import FailureStats, InferenceWorker
from .diagnostics import Health, reward_status
from .episode_records import RecordError, append_record
from .node_config import ConfigError, NodeConfig
from .parameters import RUNTIME_PARAMETERS, declare_parameters, integers_as_floats, validate, values

NODE_NAME = "topreward"
WORKER_STOP_TIMEOUT = 60.0  # [s] a transition waits this long for the inference in flight
SHUTDOWN_TIMEOUT = 3.0  # [s] on SIGINT/SIGTERM: then the process ends whatever the inference does


def is_compressed_topic(topic: str) -> bool:
    """CompressedImage when the topic's last name segment says so (`.../compressed`, `.../image_compressed`)."""
    return "compressed" in topic.rstrip("/").rsplit("/", 1)[-1]


def _stamp(stamp_ns: int):
    from builtin_interfaces.msg import Time

    return Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)


class RewardNode(LifecycleNode):
    """Managed node: the model loads on configure and is freed on cleanup."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.config: NodeConfig | None = None
        self.exit_code: int | None = None  # set when the process should end (autostart failed, signal)
        self._backend: Qwen3VLBackend | None = None
        self._scorer: StreamingScorer | None = None
        self._buffer: EpisodeBuffer | None = None
        self._worker: InferenceWorker | None = None
        self._intake: CameraIntake | None = None
        self._camera_subs = []
        self._publish_lock = threading.Lock()  # orders publications against episode resets and shutdown
        self._closing = False
        self._success_count = 0
        self._instructions_rejected = 0
        # Episodes end in increasing id order; close() writes the record of an inference it gave up on, and
        # that worker, ending later, would write the same episode again.
        self._record_lock = threading.Lock()
        self._last_recorded = -1
        self.worker_stop_timeout = WORKER_STOP_TIMEOUT
        self._io_group = MutuallyExclusiveCallbackGroup()
        # Registered before declaring, so that start-up values are validated too.
        self.add_pre_set_parameters_callback(integers_as_floats)
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self._declared = False
        declare_parameters(self)
        self._declared = True
        NodeConfig.from_parameters(values(self))  # start-up values together: ConfigError ends the process
        self._autostart = self.get_parameter("autostart").value
        if self._autostart:
            self._autostart_timer = self.create_timer(0.0, self._run_autostart, callback_group=self._io_group)

    @property
    def lifecycle_state(self) -> str:
        """The lifecycle's own state label: unconfigured, configuring, inactive, active, ..."""
        return self._state_machine.current_state[1]

    # ---------------------------------------------------------------- parameters
    def _validate_parameters(self, params) -> SetParametersResult:
        for param in params:
            if reason := validate(param.name, param.value):
                return SetParametersResult(successful=False, reason=f"{param.name}: {reason}")
            # Whatever is read on configure is frozen from the start of configuring, not only after it.
            if self.lifecycle_state != "unconfigured" and param.name not in RUNTIME_PARAMETERS:
                return SetParametersResult(successful=False, reason=(
                    f"{param.name} is read on configure: deactivate and clean up the node, set it, then configure"))
        if self._declared:  # the rules between parameters, on the values as they would be
            proposed = {**values(self), **{p.name: p.value for p in params}}
            try:
                NodeConfig.from_parameters(proposed)
            except ConfigError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _apply_parameters(self, params) -> None:
        for param in params:
            if param.name == "instruction" and self._buffer is not None and param.value != self._buffer.instruction:
                self._new_episode(param.value)

    # ---------------------------------------------------------------- lifecycle
    def _run_autostart(self) -> None:
        self.destroy_timer(self._autostart_timer)
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            self.exit_code = 1  # no lifecycle manager will retry: end the process
        elif self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            self.exit_code = 1

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:  # every cheap check first: a bad combination fails before minutes of loading
            config = NodeConfig.from_parameters(values(self))
        except ConfigError as exc:
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.get_logger().debug(f"configuration: {config}")
        for warning in config.warnings():
            self.get_logger().warning(warning)
        if config.model.model == TINY_MODEL_NAME:
            self.get_logger().warning(TINY_WARNING)
        self.get_logger().info(f"loading {config.model.model} (device {config.model.device}, dtype "
                               f"{config.model.dtype})")
        try:
            self._backend = Qwen3VLBackend.load(config.model)
            # The scorer needs some task; the worker resets it with the real one before scoring.
            self._scorer = StreamingScorer(self._backend, config.instruction or "(no instruction yet)",
                                           config.schedule, config.prompt)
        except Exception as exc:  # rclpy would turn it into an unlogged ERROR transition
            self.get_logger().error(f"configure failed: {exc if isinstance(exc, ModelLoadError) else repr(exc)}")
            self._backend = self._scorer = None
            _free_accelerator_memory()
            return TransitionCallbackReturn.FAILURE
        self.config = config
        self._buffer = EpisodeBuffer(config.schedule, config.instruction)
        self._last_recorded = -1  # a new buffer numbers its episodes from 0 again
        if not config.instruction:
            self.get_logger().warning("no instruction: frames are ignored until one arrives on ~/instruction "
                                      "or the instruction parameter is set")
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self._progress_pub = self.create_lifecycle_publisher(Progress, "~/progress", reliable)
        self._success_pub = self.create_lifecycle_publisher(SuccessDetected, "~/success", reliable)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # A deep request queue: with the services default (keep last 10) a burst of resets from several
        # clients drops requests on the floor, and their callers wait for a reply that never comes.
        requests = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        self._reset_srv = self.create_service(Trigger, "~/reset", self._on_reset, callback_group=self._io_group,
                                              qos_profile=requests)
        self._instruction_sub = self.create_subscription(String, "~/instruction", self._on_instruction, 10,
                                                         callback_group=self._io_group)
        self._reset_client = None
        if config.reset_service:
            self._reset_client = self.create_client(Trigger, config.reset_service, callback_group=self._io_group)
        self._diag_timer = self.create_timer(1.0, self._publish_diagnostics, callback_group=self._io_group)
        self.get_logger().info(f"configured: {self._backend.name} on {self._backend.device} ({self._backend.dtype})")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._worker is not None and self._worker.alive:
            self.get_logger().error("activate failed: the previous inference thread is still running; try again "
                                    "once its inference has ended")
            return TransitionCallbackReturn.FAILURE
        intake = self.config.intake
        self._intake = CameraIntake(intake, self._buffer, lambda: self.get_clock().now().nanoseconds,
                                    lambda text: self.get_logger().warning(text, throttle_duration_sec=5.0))
        qos = QoSProfile(depth=intake.qos_depth, history=HistoryPolicy.KEEP_LAST,
                         reliability=ReliabilityPolicy.RELIABLE if intake.qos_reliability == "reliable"
                         else ReliabilityPolicy.BEST_EFFORT)
        group = MutuallyExclusiveCallbackGroup()
        for index, topic in enumerate(intake.scored_topics):
            msg_type = CompressedImage if is_compressed_topic(topic) else Image
            self._camera_subs.append(self.create_subscription(
                msg_type, topic, lambda msg, i=index: self._intake.on_message(msg, i), qos, callback_group=group))
            self.get_logger().info(f"camera {index}: {topic} ({msg_type.__name__})")
        self._worker = InferenceWorker(self._scorer, self._buffer, self.config.success, self._on_step,
                                       self._on_episode_end, self._on_worker_error,
                                       self.config.max_consecutive_failures, self._on_worker_halt)
        self._worker.start()
        self.get_logger().info(f"activated: scoring {', '.join(intake.scored_topics)}; progress on "
                               f"{self._progress_pub.topic_name}")
        return super().on_activate(state)

    def _stop_cameras_and_worker(self, timeout: float | None) -> bool:
        """Unsubscribe and stop the worker; False if its inference was still running after `timeout`."""
        for sub in self._camera_subs:
            self.destroy_subscription(sub)
        self._camera_subs.clear()
        if self._worker is None:
            return True
        return self._worker.stop(timeout)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if not self._stop_cameras_and_worker(self.worker_stop_timeout):
            # It publishes nothing more (the worker is stopping); activate and cleanup wait for it to end.
            self.get_logger().warning(f"the inference in flight outlasted {self.worker_stop_timeout:g} s; the "
                                      "node is inactive, its thread ends after that inference")
        # Deactivation ends the episode: after activation progress and success start afresh, so an
        # episode can never report success twice.
        self._new_episode(None)
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._worker is not None and self._worker.alive:
            self.get_logger().error("cleanup failed: the inference thread is still running and holds the model")
            return TransitionCallbackReturn.FAILURE
        self._worker = self._intake = None
        self._destroy_interfaces()
        self._scorer = self._backend = self._buffer = self.config = None
        _free_accelerator_memory()
        return TransitionCallbackReturn.SUCCESS

    def _destroy_interfaces(self) -> None:
        self.destroy_lifecycle_publisher(self._progress_pub)
        self.destroy_lifecycle_publisher(self._success_pub)
        self.destroy_publisher(self._diag_pub)
        self.destroy_service(self._reset_srv)
        self.destroy_subscription(self._instruction_sub)
        self.destroy_timer(self._diag_timer)
        if self._reset_client is not None:
            self.destroy_client(self._reset_client)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_cameras_and_worker(self.worker_stop_timeout)
        return TransitionCallbackReturn.SUCCESS

    def close(self, timeout: float = SHUTDOWN_TIMEOUT) -> bool:
        """End for good (SIGINT/SIGTERM): nothing is published after this; the episode record is written.

        Returns False if the inference in flight was still running after `timeout`: its record was then
        written from here, and the caller must not wait for that thread.
        """
        with self._publish_lock:
            self._closing = True
        if self._stop_cameras_and_worker(timeout):
            return True  # the worker wrote the record on its way out
        episode_id, instruction, episode = self._worker.episode_copy()
        if episode is not None and episode.scores:
            self._on_episode_end(episode_id, instruction, episode)
        return False

    # ---------------------------------------------------------------- episodes
    def _on_instruction(self, msg: String) -> None:
        text = msg.data.strip()
        reason = "empty" if not text else validate("instruction", text)
        if reason:
            self._instructions_rejected += 1
            self.get_logger().warning(f"instruction on ~/instruction ignored: {reason}")
            return
        if self._buffer is not None and text == self._buffer.instruction:
            self._new_episode(None)  # same task again: still a new episode
            return
        # Through the parameter, so that `instruction` always reads the current task.
        result = self.set_parameters([Parameter("instruction", value=text)])[0]
        if not result.successful:
            self._instructions_rejected += 1
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
        msg.header.stamp = _stamp(score.stamp_ns)
        msg.header.frame_id = self._intake.frame_id
        msg.episode_id, msg.instruction, msg.num_frames = episode_id, instruction, score.num_frames
        msg.elapsed = score.elapsed
        msg.log_prob_true, msg.log_prob_false, msg.p_true = score.log_prob_true, score.log_prob_false, score.p_true
        msg.progress, msg.reward, msg.model = step.progress, step.reward, self._backend.name
        with self._publish_lock:
            if self._closing or episode_id != self._buffer.episode_id:
                return  # shutting down, or the episode was reset while this prefix was being scored
            msg.latency = (self.get_clock().now().nanoseconds - score.stamp_ns) * 1e-9
            self._progress_pub.publish(msg)
            if step.success is not None:
                self._publish_success(episode_id, instruction, step)

    def _publish_success(self, episode_id: int, instruction: str, step: Step) -> None:
        event = step.success
        msg = SuccessDetected()
        msg.header.stamp = _stamp(step.score.stamp_ns)
        msg.header.frame_id = self._intake.frame_id
        msg.episode_id, msg.instruction = episode_id, instruction
        msg.score = event.score
        msg.threshold = event.threshold
        msg.consecutive = event.consecutive
        msg.elapsed = event.elapsed
        self._success_pub.publish(msg)
        self._success_count += 1
        self.get_logger().info(f"episode {episode_id}: success (score {event.score:.3f} >= {event.threshold:.3f})")
        if self._reset_client is not None:
            if self._reset_client.service_is_ready():
                self._reset_client.call_async(Trigger.Request())  # never waited on: the executor stays free
            else:
                self.get_logger().warning(f"reset service {self.config.reset_service} is not available")

    def _on_episode_end(self, episode_id: int, instruction: str, episode: OnlineEpisode) -> None:
        record_dir = self.get_parameter("record_dir").value  # changeable at runtime
        if not record_dir or self._backend is None:
            return
        with self._record_lock:
            if episode_id <= self._last_recorded:
                return
            self._last_recorded = episode_id
        record = episode.record(episode_id, instruction, self._backend.name, self.config.tau, self.config.delta_max)
        try:
            append_record(record_dir, record)
        except RecordError as exc:
            self.get_logger().error(f"episode {episode_id} not recorded: {exc}")

    def _on_worker_error(self, exc: Exception) -> None:
        self.get_logger().error(f"inference failed: {type(exc).__name__}: {exc}", throttle_duration_sec=5.0)

    def _on_worker_halt(self, why: str) -> None:
        self.get_logger().error(f"episode {self._buffer.episode_id} is no longer scored ({why}); call ~/reset or "
                                "re-activate to try again")

    def _publish_diagnostics(self) -> None:
        backend, worker, buffer, intake = self._backend, self._worker, self._buffer, self._intake
        if backend is None or buffer is None:  # cleaned up meanwhile
            return
        active = worker is not None and not worker.stopping
        health = Health(
            name=f"{self.get_fully_qualified_name()}: reward", state=self.lifecycle_state, model=backend.name,
            device=str(backend.device), episode_id=buffer.episode_id, frames_buffered=len(buffer),
            worker_alive=worker.alive if active else None, prefixes_scored=worker.scored if worker else 0,
            inference_latency=worker.last_inference if worker else None,
            failures=worker.failures() if active else FailureStats(),
            successes=self._success_count, instructions_rejected=self._instructions_rejected,
            cameras=tuple(intake.reports()) if intake and active else (),
            camera_timeout=self.config.intake.camera_timeout if self.config else 0.0,
        )
        array = DiagnosticArray(status=[reward_status(health)])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)


def _free_accelerator_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def _quiet_model_loading() -> None:
    """No progress bars from the model loaders: under `ros2 launch` they show as blank, half-drawn lines."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def _catch_signals(stop: threading.Event) -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())


def main(args: list[str] | None = None) -> int:
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
    from rclpy.signals import SignalHandlerOptions

    _quiet_model_loading()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    # Our own signal handling, installed after rclpy.init (which resets the handlers at the C level):
    # Ctrl-C in a terminal reaches the node twice (from the terminal and again from ros2 launch); both
    # only ask for one orderly end, never an exit by the signal itself.
    stop = threading.Event()
    _catch_signals(stop)
    try:
        node = RewardNode()
    except (InvalidParameterValueException, InvalidParameterTypeException, ConfigError) as exc:
        print(f"reward_node: error: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    executor = MultiThreadedExecutor(num_threads=3)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, name="topreward-executor", daemon=True)
    spinner.start()
    while not stop.wait(0.1) and node.exit_code is None and spinner.is_alive():
        pass
    node.get_logger().info("shutting down" if stop.is_set() else f"exiting with status {node.exit_code}")
    finished = node.close()
    executor.shutdown(timeout_sec=1.0)
    node.destroy_node()
    rclpy.try_shutdown()
    # try_shutdown restored the default handlers, and interpreter exit would too: a second Ctrl-C (ros2
    # launch forwards one more) must not turn a clean exit into death by signal.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    code = node.exit_code or 0
    if not finished:  # an inference is still running in a daemon thread: do not wait for it at exit
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
