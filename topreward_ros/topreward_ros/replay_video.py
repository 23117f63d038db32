"""Replay a recorded video as a live camera topic and print the reward node's answers.

  replay_video episode.mp4 --topic /demo/camera/image_raw --loops 2 --reset-service /topreward/reset

Frames go out as sensor_msgs/Image rgb8 at the video's own pace, stamped with the time of publication,
so the reward node sees a real camera. Every loop after the first starts a new episode through the
reset service. Progress and SuccessDetected of the node are printed as they arrive.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image
from std_srvs.srv import Trigger

from topreward.frames.video import VideoReadError, read_frames
from topreward_msgs.msg import Progress, SuccessDetected
from topreward_ros.spinning import BackgroundSpin


class ReplayNode(Node):
    """Publishes frames; prints progress."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__("replay_video")
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.camera = self.create_publisher(Image, args.topic, qos)
        self.reset = self.create_client(Trigger, args.reset_service) if args.reset_service else None
        self.create_subscription(Progress, f"{args.node}/progress", self._on_progress, qos)
        self.create_subscription(SuccessDetected, f"{args.node}/success", self._on_success, qos)
        self.received = 0

    def _on_progress(self, m: Progress) -> None:
        self.received += 1
        print(f"episode {m.episode_id:>2}  t={m.elapsed:5.2f}s  frames={m.num_frames:>3}  "
              f"log p(True)={m.log_prob_true:8.4f}  p_true={m.p_true:.3f}  progress={m.progress:.3f}  "
              f"reward={m.reward:+.3f}  latency={m.latency * 1000:6.1f} ms", flush=True)

    def _on_success(self, m: SuccessDetected) -> None:
        print(f"episode {m.episode_id:>2}  SUCCESS at t={m.elapsed:.2f}s  score={m.score:.4f} >= "
              f"{m.threshold:.4f} ({m.consecutive} in a row)", flush=True)

    def publish(self, frame, frame_id: str) -> None:
        msg = Image(height=frame.shape[0], width=frame.shape[1], encoding="rgb8", step=frame.shape[1] * 3)
        msg.data = frame.tobytes()  # tobytes(): filling msg.data from an ndarray directly is ~500x slower
        msg.header.frame_id = frame_id
        msg.header.stamp = self.get_clock().now().to_msg()
        self.camera.publish(msg)


def _positive(text: str) -> float:
    if not float(text) > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return float(text)


def _positive_int(text: str) -> int:
    if int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return int(text)


class Stopped(Exception):
    """SIGINT or SIGTERM: end now, cleanly."""


def _sleep(stop: threading.Event, seconds: float) -> None:
    if stop.wait(max(seconds, 0.0)):
        raise Stopped


def _reset(node: ReplayNode, args: argparse.Namespace, stop: threading.Event) -> None:
    """Call the reset service and wait for its reply, at most --reply-timeout seconds."""
    if not node.reset.wait_for_service(timeout_sec=args.reply_timeout):
        raise RuntimeError(f"{args.reset_service} not available after {args.reply_timeout:g} s")
    future = node.reset.call_async(Trigger.Request())
    deadline = time.monotonic() + args.reply_timeout
    while not future.done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no reply from {args.reset_service} within {args.reply_timeout:g} s")
        _sleep(stop, 0.01)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="replay_video", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", help="video file")
    parser.add_argument("--topic", default="/camera/camera/color/image_raw", help="sensor_msgs/Image topic")
    parser.add_argument("--frame-id", default="replay_camera", help="header.frame_id of the frames")
    parser.add_argument("--loops", type=_positive_int, default=1, help="times to play the video (one episode each)")
    parser.add_argument("--speed", type=_positive, default=1.0, help="playback speed factor")
    parser.add_argument("--reset-service", default="/topreward/reset", help="called before every loop after the "
                        "first; empty: never")
    parser.add_argument("--node", default="/topreward", help="the reward node, whose progress is printed")
    parser.add_argument("--wait", type=float, default=300.0, help="seconds to wait for a subscriber (model load)")
    parser.add_argument("--reply-timeout", type=_positive, default=10.0,
                        help="seconds to wait for the reset service and for its reply")
    parser.add_argument("--linger", type=float, default=3.0, help="seconds to keep printing after the last frame")
    args, ros_args = parser.parse_known_args(argv)
    try:  # a bad file fails before ROS starts; frames are then decoded as they are sent, never all held
        next(iter(read_frames(args.video)))
    except VideoReadError as exc:
        print(f"replay_video: error: {exc}", file=sys.stderr)
        return 2
    except StopIteration:
        print(f"replay_video: error: {args.video} has no frames", file=sys.stderr)
        return 2
    rclpy.init(args=ros_args, signal_handler_options=SignalHandlerOptions.NO)
    # After rclpy.init, which resets the handlers: both signals end the replay the same orderly way.
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    node = ReplayNode(args)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = BackgroundSpin(executor, "replay-executor")
    sent = 0
    try:
        print(f"replay_video: waiting up to {args.wait:.0f} s for a subscriber on {args.topic} ...", flush=True)
        deadline = time.monotonic() + args.wait
        while node.camera.get_subscription_count() == 0:
            if time.monotonic() > deadline:
                print(f"replay_video: error: nobody subscribed to {args.topic}", file=sys.stderr)
                return 1
            _sleep(stop, 0.1)
        for loop in range(args.loops):
            if loop and node.reset is not None:
                _reset(node, args, stop)
            start = first = None
            for frame, t in read_frames(args.video):
                if start is None:
                    start, first = time.monotonic(), t
                _sleep(stop, start + (t - first) / args.speed - time.monotonic())
                node.publish(frame, args.frame_id)
                sent += 1
        _sleep(stop, args.linger)
        print(f"replay_video: {sent} frames sent in {args.loops} loop(s), {node.received} progress messages "
              "received")
        return 0 if node.received else 1
    except Stopped:
        print(f"replay_video: stopped after {sent} frames", file=sys.stderr)
        return 130
    except (RuntimeError, VideoReadError) as exc:
        print(f"replay_video: error: {exc}", file=sys.stderr)
        return 1
    finally:
        spinner.stop()
        node.destroy_node()
        rclpy.try_shutdown()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main())
