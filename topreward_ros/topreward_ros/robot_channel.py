"""One robot served by the reward node: its topics and services, cameras, episode, outputs and records.

A node serves one robot with `~/progress`, `~/success`, `~/reset`, `~/instruction`, or several, each
under its own namespace: `<robot>/topreward/progress`, ... Every robot has its own episode buffer,
scorer (KV cache), episode ids, success state and records; only the model and the inference thread
are shared (see core/worker.py).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from rclpy.callback_groups import CallbackGroup
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from topreward.online.buffer import EpisodeBuffer
from topreward.online.episode import OnlineEpisode
from topreward.online.episode_video import EpisodeVideoWriter
from topreward.online.records import RecordError, append_record, next_episode_id
from topreward.online.worker import EpisodeStream, FailureStats
from topreward.overlay import Trace
from topreward.scoring.scorer import StreamingScorer
from topreward.types import RewardStep, Step
from topreward_msgs.msg import Progress, SuccessDetected
from topreward_msgs.srv import StartEpisode
from topreward_ros.camera_intake import CameraIntake
from topreward_ros.debug_image import DebugFrame, DebugImagePublisher
from topreward_ros.diagnostics import BatchHealth, Health
from topreward_ros.node_config import NodeConfig
from topreward_ros.parameters import validate

OUTCOMES = {StartEpisode.Request.OUTCOME_UNKNOWN: "unknown", StartEpisode.Request.OUTCOME_SUCCESS: "success",
            StartEpisode.Request.OUTCOME_FAILURE: "failure"}  # StartEpisode.previous_outcome -> records' "outcome"


IMAGE_TYPES = {"sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CompressedImage": CompressedImage}


def is_compressed_topic(topic: str) -> bool:
    """A guess from the name alone: the topic's last name segment says compressed (`.../compressed`)."""
    return "compressed" in topic.rstrip("/").rsplit("/", 1)[-1]


def published_image_type(node, topic: str) -> type | None:
    """The image type `topic`'s publishers report in the ROS graph, or None while none does (or they disagree)."""
    found = {IMAGE_TYPES.get(info.topic_type) for info in node.get_publishers_info_by_topic(topic)}
    return found.pop() if len(found) == 1 else None


def _stamp(stamp_ns: int):
    from builtin_interfaces.msg import Time

    return Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)


@dataclass
class _EpisodeTrace:
    """The values published for one episode so far (what the debug image draws)."""

    episode_id: int
    times: list[float] = field(default_factory=list)
    log_prob_true: list[float] = field(default_factory=list)
    p_true: list[float] = field(default_factory=list)
    progress: list[float] = field(default_factory=list)
    success_at: float | None = None

    def add(self, values: RewardStep) -> None:
        self.times.append(values.elapsed)
        self.log_prob_true.append(values.log_prob_true)
        self.p_true.append(values.p_true)
        self.progress.append(values.progress)
        if values.success is not None:
            self.success_at = values.elapsed

    def snapshot(self, instruction: str) -> Trace:
        return Trace(instruction, tuple(self.times), tuple(self.log_prob_true), tuple(self.p_true),
                     tuple(self.progress))


class RobotChannel:
    """One robot's interfaces and episode state on `node`; `robot` '' is the single robot of a plain node."""

    def __init__(self, node, robot: str, config: NodeConfig, scorer: StreamingScorer, wake: threading.Event,
                 io_group: CallbackGroup) -> None:
        self.node, self.robot, self.config, self.scorer = node, robot, config, scorer
        # Ids continue from the records, so that two runs' records never share one.
        first_id = next_episode_id(config.record_dir, robot) if config.record_dir else 0
        self.buffer = EpisodeBuffer(config.schedule, config.instruction, wake, first_id)
        self._outcomes: dict[int, str] = {}  # episode id -> what a learner said happened (StartEpisode)
        self.intake: CameraIntake | None = None
        self.stream: EpisodeStream | None = None
        self.success_count = 0
        self.instructions_rejected = 0
        self._camera_subs: list = []  # one subscription per scored camera, in order
        self._guessed: set[int] = set()  # cameras subscribed by their name's guess: checked against the graph
        self._retyped: dict[int, type] = {}  # cameras to subscribe again, with the type their topic carries
        self._type_timer = None
        self._camera_lock = threading.Lock()  # the type check (io group) against deactivation (transitions)
        self._io_group = io_group
        self._publish_lock = threading.Lock()  # orders publications against episode resets and shutdown
        self._closing = False
        # Episodes end in increasing id order; close() writes the record of an inference it gave up on, and
        # that worker, ending later, would write the same episode again.
        self._record_lock = threading.Lock()
        self._last_recorded = -1
        self._log = node.get_logger() if not robot else node.get_logger().get_child(robot)
        ns = "~/" if not robot else f"{robot}/{node.get_name()}/"
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.progress_pub = node.create_lifecycle_publisher(Progress, ns + "progress", reliable)
        self.success_pub = node.create_lifecycle_publisher(SuccessDetected, ns + "success", reliable)
        # A deep request queue: with the services default (keep last 10) a burst of resets from several
        # clients drops requests on the floor, and their callers wait for a reply that never comes.
        requests = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        self.reset_srv = node.create_service(Trigger, ns + "reset", self.on_reset, callback_group=io_group,
                                             qos_profile=requests)
        self.start_srv = node.create_service(StartEpisode, ns + "start_episode", self.on_start_episode,
                                             callback_group=io_group, qos_profile=requests)
        self.instruction_sub = node.create_subscription(String, ns + "instruction", self.on_instruction, 10,
                                                        callback_group=io_group)
        self.debug = None
        if config.debug_image:
            debug_pub = node.create_lifecycle_publisher(Image, ns + "debug_image", QoSProfile(depth=1))
            self.debug = DebugImagePublisher(debug_pub, lambda exc: self._log.warning(
                f"debug image not drawn: {type(exc).__name__}: {exc}", throttle_duration_sec=5.0))
        self._trace = _EpisodeTrace(-1)  # the published values of the current episode, for the debug image
        self.videos = EpisodeVideoWriter(lambda path, exc: self._log.error(f"episode video {path} not written: "
                                                                           f"{exc}")) if config.record_video else None
        self.reset_client = None
        if config.reset_service:
            self.reset_client = node.create_client(Trigger, config.reset_service, callback_group=io_group)
        if not config.instruction:
            self._log.warning(f"no instruction: frames are ignored until one arrives on "
                              f"{self.instruction_sub.topic_name} or the {self.param('instruction')} parameter "
                              "is set")

    def param(self, name: str) -> str:
        """The name of this robot's parameter `name`."""
        return f"{self.robot}.{name}" if self.robot else name

    # ---------------------------------------------------------------- lifecycle
    def activate(self, group: CallbackGroup) -> EpisodeStream:
        """Subscribe the cameras; returns the robot's stream for the inference worker."""
        intake = self.config.intake
        self.intake = CameraIntake(intake, self.buffer, lambda: self.node.get_clock().now().nanoseconds,
                                   lambda text: self._log.warning(text, throttle_duration_sec=5.0))
        qos = QoSProfile(depth=intake.qos_depth, history=HistoryPolicy.KEEP_LAST,
                         reliability=ReliabilityPolicy.RELIABLE if intake.qos_reliability == "reliable"
                         else ReliabilityPolicy.BEST_EFFORT)
        # The type a topic carries is what its publishers say; before any publishes, the name is a guess
        # (a republished `.../image_decompressed` is an Image), checked again every second until one does.
        for index, topic in enumerate(intake.scored_topics):
            msg_type = published_image_type(self.node, topic)
            if msg_type is None:
                msg_type = CompressedImage if is_compressed_topic(topic) else Image
                self._guessed.add(index)
            self._camera_subs.append(None)
            self._subscribe(index, msg_type, qos, group)
        if self._guessed:
            self._type_timer = self.node.create_timer(1.0, lambda: self._check_camera_types(qos, group),
                                                      callback_group=self._io_group)
        self.stream = EpisodeStream(self.scorer, self.buffer, self.config.success, self.on_step,
                                    self.on_episode_end, self.on_worker_error, self.config.max_consecutive_failures,
                                    self.on_worker_halt)
        return self.stream

    def _subscribe(self, index: int, msg_type: type, qos: QoSProfile, group: CallbackGroup) -> None:
        topic = self.config.intake.scored_topics[index]
        self._camera_subs[index] = self.node.create_subscription(
            msg_type, topic, lambda msg, i=index: self.intake.on_message(msg, i), qos, callback_group=group)
        guess = " (guessed from its name until it is published)" if index in self._guessed else ""
        self._log.info(f"camera {index}: {topic} ({msg_type.__name__}){guess}")

    def _check_camera_types(self, qos: QoSProfile, group: CallbackGroup) -> None:
        with self._camera_lock:
            # A subscription ends only once the executor lets go of it, and one DDS participant cannot hold
            # a topic with two types: the new subscription is made a tick after the old one was destroyed.
            for index, msg_type in self._retyped.items():
                self._subscribe(index, msg_type, qos, group)
            self._retyped.clear()
            for index in sorted(self._guessed):
                self._retype_camera(index)
            if not self._guessed and not self._retyped and self._type_timer is not None:
                self.node.destroy_timer(self._type_timer)
                self._type_timer = None

    def _retype_camera(self, index: int) -> None:
        """Once `index`'s topic is published: if its type is not the one guessed, drop the subscription."""
        topic, subscribed = self.config.intake.scored_topics[index], self._camera_subs[index].msg_type
        published = published_image_type(self.node, topic)
        if published is None:
            return
        self._guessed.discard(index)
        if published is not subscribed:
            self._log.warning(f"{topic} carries {published.__name__}, not {subscribed.__name__} as its name "
                              "suggests: subscribing again")
            self.node.destroy_subscription(self._camera_subs[index])
            self._camera_subs[index] = None
            self._retyped[index] = published

    def camera_types(self) -> list[type]:
        """The message type each scored camera is subscribed with now."""
        with self._camera_lock:
            return [sub.msg_type for sub in self._camera_subs if sub is not None]

    def unsubscribe_cameras(self) -> None:
        with self._camera_lock:
            if self._type_timer is not None:
                self.node.destroy_timer(self._type_timer)
                self._type_timer = None
            for sub in self._camera_subs:
                if sub is not None:
                    self.node.destroy_subscription(sub)
            self._camera_subs.clear()
            self._guessed.clear()
            self._retyped.clear()

    def destroy(self) -> None:
        self.unsubscribe_cameras()
        if self.debug is not None:
            self.debug.close()
            self.node.destroy_lifecycle_publisher(self.debug.publisher)
        self.finish_videos()
        self.node.destroy_lifecycle_publisher(self.progress_pub)
        self.node.destroy_lifecycle_publisher(self.success_pub)
        self.node.destroy_service(self.reset_srv)
        self.node.destroy_service(self.start_srv)
        self.node.destroy_subscription(self.instruction_sub)
        if self.reset_client is not None:
            self.node.destroy_client(self.reset_client)

    def finish_videos(self, timeout: float = 30.0) -> None:
        """Write the episode videos already handed over, then stop the writer (shutdown, cleanup)."""
        if self.videos is not None and not self.videos.close(timeout):
            self._log.error(f"episode videos still being written after {timeout:g} s: some may be missing")
        self.videos = None

    def close(self) -> None:
        """Nothing is published after this."""
        with self._publish_lock:
            self._closing = True

    def record_unfinished(self) -> None:
        """Write the live episode's record from here: for a worker that could not finish to write it itself."""
        if self.stream is not None:
            episode_id, instruction, episode = self.stream.episode_copy()
            if episode is not None and episode.scores:
                self.on_episode_end(episode_id, instruction, episode)

    def set_runtime(self, name: str, value) -> None:
        """Apply a runtime parameter of this robot (already validated)."""
        if name == "instruction" and value != self.buffer.instruction:
            self.new_episode(value)
        elif name == "max_view_skew" and self.intake is not None:
            self.intake.config = replace(self.intake.config, max_view_skew=value)

    # ---------------------------------------------------------------- episodes
    def on_instruction(self, msg: String) -> None:
        text = msg.data.strip()
        reason = "empty" if not text else validate("instruction", text)
        if reason:
            self.instructions_rejected += 1
            self._log.warning(f"instruction on {self.instruction_sub.topic_name} ignored: {reason}")
            return
        if text == self.buffer.instruction:
            self.new_episode(None)  # same task again: still a new episode
            return
        # Through the parameter, so that it always reads the current task.
        result = self.node.set_parameters([Parameter(self.param("instruction"), value=text)])[0]
        if not result.successful:
            self.instructions_rejected += 1
            self._log.warning(f"instruction rejected: {result.reason}")

    def on_reset(self, request, response):
        episode = self.new_episode(None)
        response.success, response.message = True, f"episode {episode} started"
        return response

    def on_start_episode(self, request: StartEpisode.Request, response: StartEpisode.Response):
        """End the episode with the outcome the learner reports and start the next, with a new task or not.

        A refused request changes nothing: not the task, not the episode, not the ended episode's outcome.
        """
        text = request.instruction.strip()
        if request.previous_outcome not in OUTCOMES:
            return self._refused(response, f"previous_outcome must be 0 (unknown), 1 (success) or 2 (failure), "
                                           f"got {request.previous_outcome}")
        if text and (reason := validate("instruction", text)):
            self.instructions_rejected += 1
            return self._refused(response, f"instruction rejected: {reason}")
        ending = self.buffer.episode_id
        with self._record_lock:  # before the episode ends: the worker writes its record once it sees the next
            self._outcomes[ending] = OUTCOMES[request.previous_outcome]
        if text and text != self.buffer.instruction:
            # Through the parameter, so that it always reads the current task (setting it starts the episode).
            result = self.node.set_parameters([Parameter(self.param("instruction"), value=text)])[0]
            if not result.successful:
                with self._record_lock:
                    self._outcomes.pop(ending, None)
                self.instructions_rejected += 1
                return self._refused(response, f"instruction rejected: {result.reason}")
            episode = self.buffer.episode_id
        else:
            episode = self.new_episode(None)
        response.success, response.message, response.episode_id = True, f"episode {episode} started", episode
        return response

    def _refused(self, response: StartEpisode.Response, why: str) -> StartEpisode.Response:
        self._log.warning(f"start_episode refused: {why}")
        response.success, response.message, response.episode_id = False, why, self.buffer.episode_id
        return response

    def new_episode(self, instruction: str | None) -> int:
        with self._publish_lock:  # a result of the old episode can no longer be published after this
            episode = self.buffer.new_episode(instruction)
        self._log.info(f"episode {episode} started: {self.buffer.instruction!r}")
        return episode

    # ---------------------------------------------------------------- outputs (worker thread)
    def on_step(self, episode_id: int, instruction: str, step: Step, inference: float) -> None:
        values = RewardStep.of(episode_id, instruction, step, inference, self.scorer.backend.name)
        msg = Progress()
        msg.header.stamp = _stamp(values.stamp_ns)
        msg.header.frame_id = self.intake.frame_id
        msg.episode_id, msg.instruction, msg.num_frames = values.episode_id, values.instruction, values.num_frames
        msg.elapsed = values.elapsed
        msg.log_prob_true, msg.log_prob_false, msg.p_true = values.log_prob_true, values.log_prob_false, values.p_true
        msg.progress, msg.reward, msg.model = values.progress, values.reward, values.model
        with self._publish_lock:
            if self._closing or episode_id != self.buffer.episode_id:
                return  # shutting down, or the episode was reset while this prefix was being scored
            msg.latency = (self.node.get_clock().now().nanoseconds - values.stamp_ns) * 1e-9
            self.progress_pub.publish(msg)
            if values.success is not None:
                self._publish_success(values)
            self._show(values, msg)

    def _show(self, values: RewardStep, msg: Progress) -> None:
        """Hand the prefix to the debug image (drawn on its own thread) if anyone looks at it."""
        if self._trace.episode_id != values.episode_id:
            self._trace = _EpisodeTrace(values.episode_id)
        self._trace.add(values)
        if self.debug is None or not self.debug.wanted():
            return
        success = self.config.success
        self.debug.offer(DebugFrame(
            frame=self.scorer.schedule.frames[values.num_frames - 1],  # this thread owns the scorer: no race
            trace=self._trace.snapshot(values.instruction),
            threshold=success.threshold if success.metric == "log_prob_true" else None,
            success_at=self._trace.success_at, header=msg.header,
            caption=f"episode {values.episode_id}   latency {msg.latency:.2f} s"))

    def _publish_success(self, values: RewardStep) -> None:
        event = values.success
        msg = SuccessDetected()
        msg.header.stamp = _stamp(values.stamp_ns)
        msg.header.frame_id = self.intake.frame_id
        msg.episode_id, msg.instruction = values.episode_id, values.instruction
        msg.score = event.score
        msg.threshold = event.threshold
        msg.consecutive = event.consecutive
        msg.elapsed = event.elapsed
        self.success_pub.publish(msg)
        self.success_count += 1
        self._log.info(f"episode {values.episode_id}: success (score {event.score:.3f} >= {event.threshold:.3f})")
        if self.reset_client is not None:
            if self.reset_client.service_is_ready():
                self.reset_client.call_async(Trigger.Request())  # never waited on: the executor stays free
            else:
                self._log.warning(f"reset service {self.config.reset_service} is not available")

    def on_episode_end(self, episode_id: int, instruction: str, episode: OnlineEpisode) -> None:
        record_dir = self.node.get_parameter(self.param("record_dir")).value  # changeable at runtime
        if not record_dir:
            return
        with self._record_lock:
            if episode_id <= self._last_recorded:
                return
            self._last_recorded = episode_id
            outcome = self._outcomes.pop(episode_id, "unknown")
        record = episode.record(episode_id, instruction, self.scorer.backend.name, self.config.tau,
                                self.config.delta_max)
        record["outcome"] = outcome
        if self.robot:
            record["robot"] = self.robot
        if self.videos is not None:
            record["video"] = self._submit_video(record_dir, episode_id, episode)
        try:
            append_record(record_dir, record)
        except RecordError as exc:
            self._log.error(f"episode {episode_id} not recorded: {exc}")

    def _submit_video(self, record_dir: str, episode_id: int, episode: OnlineEpisode) -> str | None:
        """Hand the episode's sampled frames to the video writer; the video's path relative to record_dir."""
        frames = self.scorer.schedule  # the episode's last snapshot: the scorer is reset only after this
        if not len(frames) or not episode.scores or frames.stamps_ns[0] != episode.scores[0].stamp_ns:
            self._log.warning(f"episode {episode_id}: its frames are gone, no video")
            return None
        name = f"videos/{self.robot + '_' if self.robot else ''}episode_{episode_id:06d}.mp4"
        self.videos.submit(Path(record_dir).expanduser() / name, frames.frames, frames.times)
        return name

    def on_worker_error(self, exc: Exception) -> None:
        self._log.error(f"inference failed: {type(exc).__name__}: {exc}", throttle_duration_sec=5.0)

    def on_worker_halt(self, why: str) -> None:
        self._log.error(f"episode {self.buffer.episode_id} is no longer scored ({why}); call "
                        f"{self.node.resolve_service_name(self.reset_srv.srv_name)} or re-activate to try again")

    def health(self, state: str, worker_active: bool, worker_alive: bool,
               batch: BatchHealth) -> Health:
        """This robot's diagnostics; `worker_active`: a worker is running and not stopping."""
        stream, intake, backend = self.stream, self.intake, self.scorer.backend
        name = f"{self.node.get_fully_qualified_name()}: reward" + (f" {self.robot}" if self.robot else "")
        return Health(
            name=name, state=state, instruction=self.buffer.instruction, model=backend.name,
            device=str(backend.device),
            episode_id=self.buffer.episode_id, frames_buffered=len(self.buffer),
            worker_alive=worker_alive if worker_active else None,
            prefixes_scored=stream.scored if stream else 0,
            inference_latency=stream.last_inference if stream else None,
            failures=stream.failures() if stream and worker_active else FailureStats(),
            successes=self.success_count, instructions_rejected=self.instructions_rejected,
            cameras=tuple(intake.reports()) if intake and worker_active else (),
            camera_timeout=self.config.intake.camera_timeout, batch=batch,
        )
