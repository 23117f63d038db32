"""The TOPReward reward node: camera topics in, Progress and SuccessDetected out, for one robot or several.

camera callbacks -> CameraIntake (conversion, tiling, stamps) -> EpisodeBuffer -> InferenceWorker (owns the
model) -> OnlineEpisode (progress, reward, success) -> publishers. Callbacks never wait for inference.
Each robot is a RobotChannel (its own topics, cameras, episode, records); the model and the inference
thread are shared. This file is wiring: the lifecycle, the parameter gate and diagnostics.
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
from rclpy.lifecycle.node import LifecycleNodeMixin

from topreward.model.backend import ModelLoadError, Qwen3VLBackend
from topreward.model.tiny import TINY_MODEL_NAME, TINY_WARNING
from topreward.online.worker import MAX_BATCH_FAILURES, InferenceWorker
from topreward.scoring.scorer import StreamingScorer
from topreward_ros.diagnostics import BatchHealth, reward_status
from topreward_ros.node_config import ConfigError, NodeConfig, fleet_configs, fleet_warnings
from topreward_ros.parameters import (
    NODE_PARAMETERS,
    RUNTIME_PARAMETERS,
    base_name,
    declare_parameters,
    integers_as_floats,
    validate,
    values,
)
from topreward_ros.robot_channel import RobotChannel
from topreward_ros.spinning import BackgroundSpin

NODE_NAME = "topreward"
WORKER_STOP_TIMEOUT = 60.0  # [s] a transition waits this long for the inference in flight
SHUTDOWN_TIMEOUT = 3.0  # [s] on SIGINT/SIGTERM: then the process ends whatever the inference does


class RewardNode(LifecycleNode):
    """Managed node: the model loads on configure and is freed on cleanup."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.configs: dict[str, NodeConfig] = {}  # robot -> its configuration, while configured
        self.channels: list[RobotChannel] = []
        self.exit_code: int | None = None  # set when the process should end (autostart failed, signal)
        self._backend: Qwen3VLBackend | None = None
        self._worker: InferenceWorker | None = None
        self.worker_stop_timeout = WORKER_STOP_TIMEOUT
        self._io_group = MutuallyExclusiveCallbackGroup()
        self._runtime_lock = threading.RLock()  # runtime parameter changes against configure building channels
        # Registered before declaring, so that start-up values are validated too.
        self.add_pre_set_parameters_callback(integers_as_floats)
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self._declared = False
        self.robots = declare_parameters(self)
        self._declared = True
        fleet_configs(self._values(), self.robots)  # start-up values together: ConfigError ends the process
        self._autostart = self.get_parameter("autostart").value
        if self._autostart:
            self._autostart_timer = self.create_timer(0.0, self._run_autostart, callback_group=self._io_group)

    @property
    def lifecycle_state(self) -> str:
        """The lifecycle's own state label: unconfigured, configuring, inactive, active, ..."""
        return self._state_machine.current_state[1]

    def _values(self) -> dict[str, object]:
        return values(self, self.robots)

    # ---------------------------------------------------------------- parameters
    def _validate_parameters(self, params) -> SetParametersResult:
        for param in params:
            if reason := validate(param.name, param.value):
                return SetParametersResult(successful=False, reason=f"{param.name}: {reason}")
            name = base_name(param.name)
            # Whatever is read on configure is frozen from the start of configuring, not only after it.
            if self.lifecycle_state != "unconfigured" and name not in RUNTIME_PARAMETERS:
                return SetParametersResult(successful=False, reason=(
                    f"{param.name} is read on configure: deactivate and clean up the node, set it, then configure"))
            if self._declared and self.robots and "." not in param.name and name not in NODE_PARAMETERS:
                # Each robot has its own copy from start-up on: a top-level change would reach nobody.
                return SetParametersResult(successful=False, reason=(
                    f"this node serves robots {', '.join(self.robots)}: set {self.robots[0]}.{param.name} (the "
                    f"top-level {param.name} is only every robot's start-up default)"))
        if self._declared:  # the rules between parameters, on the values as they would be
            try:
                fleet_configs({**self._values(), **{p.name: p.value for p in params}}, self.robots)
            except ConfigError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _apply_parameters(self, params) -> None:
        with self._runtime_lock:  # never between configure reading the values and its channels existing
            for param in params:
                for channel in self.channels:
                    if param.name == channel.param(base_name(param.name)):
                        channel.set_runtime(base_name(param.name), param.value)

    # ---------------------------------------------------------------- lifecycle
    def _run_autostart(self) -> None:
        self.destroy_timer(self._autostart_timer)
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            self.exit_code = 1  # no lifecycle manager will retry: end the process
        elif self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            self.exit_code = 1

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:  # every cheap check first: a bad combination fails before minutes of loading
            configs = fleet_configs(self._values(), self.robots)
        except ConfigError as exc:
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        for robot, config in configs.items():
            self.get_logger().debug(f"configuration{' of ' + robot if robot else ''}: {config}")
        for warning in fleet_warnings(configs):
            self.get_logger().warning(warning)
        model = next(iter(configs.values())).model  # node-wide: the same for every robot
        if model.model == TINY_MODEL_NAME:
            self.get_logger().warning(TINY_WARNING)
        self.get_logger().info(f"loading {model.model} (device {model.device}, dtype {model.dtype})")
        try:
            self._backend = Qwen3VLBackend.load(model)
            # A scorer needs some task; the worker resets it with the real one before scoring.
            scorers = {robot: StreamingScorer(self._backend, config.instruction or "(no instruction yet)",
                                              config.schedule, config.prompt) for robot, config in configs.items()}
        except Exception as exc:  # rclpy would turn it into an unlogged ERROR transition
            self.get_logger().error(f"configure failed: {exc if isinstance(exc, ModelLoadError) else repr(exc)}")
            self._backend = None
            _free_accelerator_memory()
            return TransitionCallbackReturn.FAILURE
        with self._runtime_lock:
            # A runtime parameter (the instruction above all) set during the minutes of loading was applied to
            # no channel: the channels start from the values as they are now, and a later set reaches them.
            self.configs = fleet_configs(self._values(), self.robots)
            self._wake = threading.Event()
            self.channels = [RobotChannel(self, robot, config, scorers[robot], self._wake, self._io_group)
                             for robot, config in self.configs.items()]
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(1.0, self._publish_diagnostics, callback_group=self._io_group)
        served = f" for robots {', '.join(self.robots)}" if self.robots else ""
        self.get_logger().info(f"configured: {self._backend.name} on {self._backend.device} ({self._backend.dtype})"
                               f"{served}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._worker is not None and self._worker.alive:
            self.get_logger().error("activate failed: the previous inference thread is still running; try again "
                                    "once its inference has ended")
            return TransitionCallbackReturn.FAILURE
        # A callback group per robot: one robot's camera callbacks never queue behind another's.
        streams = [channel.activate(MutuallyExclusiveCallbackGroup()) for channel in self.channels]
        worker = InferenceWorker(streams, self.get_parameter("max_batch").value, self._wake, self._on_batch_failure)
        worker.start()
        # Shown to the process's watch (inference_error) only once running: a worker not yet started is not alive,
        # and was read there as a thread that had ended.
        self._worker = worker
        for channel in self.channels:
            self.get_logger().info(f"activated: scoring {', '.join(channel.config.intake.scored_topics)}; progress "
                                   f"on {channel.progress_pub.topic_name}")
        return super().on_activate(state)

    def _stop_cameras_and_worker(self, timeout: float | None) -> bool:
        """Unsubscribe and stop the worker; False if its inference was still running after `timeout`."""
        for channel in self.channels:
            channel.unsubscribe_cameras()
        if self._worker is None:
            return True
        return self._worker.stop(timeout)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if not self._stop_cameras_and_worker(self.worker_stop_timeout):
            # It publishes nothing more (the worker is stopping); activate and cleanup wait for it to end.
            self.get_logger().warning(f"the inference in flight outlasted {self.worker_stop_timeout:g} s; the "
                                      "node is inactive, its thread ends after that inference")
        # Deactivation ends the episodes: after activation progress and success start afresh, so an
        # episode can never report success twice.
        for channel in self.channels:
            channel.new_episode(None)
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._worker is not None and self._worker.alive:
            self.get_logger().error("cleanup failed: the inference thread is still running and holds the model")
            return TransitionCallbackReturn.FAILURE
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """From any state: the episodes are recorded, what configure made is freed, and the process ends (0)."""
        if self.close(self.worker_stop_timeout):
            self._release()
        else:  # the thread still holds the model: the process ends all the same, which frees it
            self.get_logger().warning(f"the inference in flight outlasted {self.worker_stop_timeout:g} s")
        self.exit_code = 0
        return TransitionCallbackReturn.SUCCESS

    def _LifecycleNodeMixin__on_change_state(self, request, response):  # rclpy's ~/change_state service callback
        """A transition the current state does not have is answered with success false.

        rclpy raises there instead (`ros2 lifecycle set /topreward shutdown` while the model loads, `configure`
        when active), which would end the executor's thread and with it the node.
        """
        state = self.lifecycle_state
        try:
            return LifecycleNodeMixin._LifecycleNodeMixin__on_change_state(self, request, response)
        except Exception as exc:  # rclpy's RCLError for an unregistered transition, a KeyError for some others
            if self.lifecycle_state != state:  # something did change: not a refused request, let it end the node
                raise
            self.get_logger().warning(f"lifecycle transition {request.transition.id} {request.transition.label!r} "
                                      f"refused in state {state}: {type(exc).__name__}: {str(exc).split(',')[0]}")
            response.success = False
            return response

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """A transition raised: free what configure made, so that the next configure starts from nothing."""
        self.get_logger().error(f"a transition from {state.label} failed; the node is unconfigured again")
        if self.close(self.worker_stop_timeout):
            self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        """Free what configure made: each robot's topics, services and cameras, diagnostics, and the model."""
        self._worker = None
        channels, self.channels = self.channels, []  # first: a diagnostics tick from now on finds nothing
        if channels:
            self.destroy_timer(self._diag_timer)
            for channel in channels:
                channel.destroy()
            self.destroy_publisher(self._diag_pub)
        self.configs, self._backend = {}, None
        _free_accelerator_memory()

    def inference_error(self) -> str | None:
        """Why the inference thread ended by itself while the node is active, or None while it serves."""
        worker = self._worker
        if worker is None or worker.alive or worker.stopping:
            return None
        return f"{type(worker.error).__name__}: {worker.error}" if worker.error else "it ended"

    def close(self, timeout: float = SHUTDOWN_TIMEOUT) -> bool:
        """End for good (SIGINT/SIGTERM): nothing is published after this; the episode records are written.

        Returns False if the inference in flight was still running after `timeout`: the records were then
        written from here, and the caller must not wait for that thread.
        """
        for channel in self.channels:
            channel.close()  # no publication from here on
        finished = self._stop_cameras_and_worker(timeout)  # the worker writes the records on its way out
        if not finished:
            for channel in self.channels:
                channel.record_unfinished()
        for channel in self.channels:
            channel.finish_videos(timeout=10.0)  # the process ends right after this: nothing is left half-written
        return finished

    # ---------------------------------------------------------------- diagnostics
    def _on_batch_failure(self, exc: Exception, robots: int, stopped: bool) -> None:
        if stopped:
            self.get_logger().error(f"{MAX_BATCH_FAILURES} batched passes failed in a row (last: {type(exc).__name__}: "
                                    f"{exc}): robots are scored one at a time until one starts a new episode")
        else:
            self.get_logger().warning(f"a batched pass over {robots} robots failed ({type(exc).__name__}: {exc}): "
                                      "each robot is scored alone", throttle_duration_sec=5.0)

    def _publish_diagnostics(self) -> None:
        worker, channels = self._worker, self.channels
        if not channels:  # cleaned up meanwhile
            return
        active = worker is not None and not worker.stopping
        alive = worker is not None and worker.alive
        batch = BatchHealth(worker.batch_failures, worker.batching) if worker is not None else BatchHealth()
        state = self.lifecycle_state
        array = DiagnosticArray(status=[reward_status(channel.health(state, active, alive, batch))
                                        for channel in channels])
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
    executor = MultiThreadedExecutor(num_threads=min(2 + len(node.robots or ('',)), 8))
    executor.add_node(node)
    spinner = BackgroundSpin(executor, "topreward-executor")
    while not stop.wait(0.1) and node.exit_code is None:
        # A dead executor or inference thread ends the process non-zero: systemd's Restart=on-failure and
        # launch's respawn then start it again.
        died = (None if spinner.alive else f"the executor stopped: {spinner.describe_end()}") \
            or (f"the inference thread stopped: {error}" if (error := node.inference_error()) else None)
        if died:
            node.get_logger().fatal(died)
            node.exit_code = 1
    node.get_logger().info("shutting down" if stop.is_set() else f"exiting with status {node.exit_code}")
    node.close()
    spinner.stop(timeout=1.0)
    node.destroy_node()
    rclpy.try_shutdown()
    # try_shutdown restored the default handlers, and interpreter exit would too: a second Ctrl-C (ros2
    # launch forwards one more) must not turn a clean exit into death by signal.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    # Everything is written and shut down (records, logs: try_shutdown ends rcl logging). Interpreter
    # teardown after this (torch and DDS objects, an inference that close() gave up waiting for) can take
    # over 5 s on a loaded machine, past ros2 launch's SIGINT grace period: skip it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(node.exit_code or 0)


if __name__ == "__main__":
    sys.exit(main())
