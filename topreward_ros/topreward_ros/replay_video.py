"""Replay a recorded video as a live camera topic and print the reward node's answers.

  replay_video episode.mp4 --topic /demo/camera/image_raw --loops 2 --reset-service /topreward/reset

Frames go out as sensor_msgs/Image rgb8 at the video's own pace, stamped with the time of publication,
so the reward node sees a real camera. Every loop after the first starts a new episode through the
reset service. Progress and SuccessDetected of the node are printed as they arrive.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_srvs.srv import Trigger

from topreward_msgs.msg import Progress, SuccessDetected

from .core.video import VideoReadError, read_frames


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
    parser.add_argument("--linger", type=float, default=3.0, help="seconds to keep printing after the last frame")
    args, ros_args = parser.parse_known_args(argv)
    try:
        frames = list(read_frames(args.video))
    except VideoReadError as exc:
        print(f"replay_video: error: {exc}", file=sys.stderr)
        return 2
    if not frames:
        print(f"replay_video: error: {args.video} has no frames", file=sys.stderr)
        return 2
    rclpy.init(args=ros_args)
    node = ReplayNode(args)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        print(f"replay_video: waiting up to {args.wait:.0f} s for a subscriber on {args.topic} ...", flush=True)
        deadline = time.monotonic() + args.wait
        while node.camera.get_subscription_count() == 0:
            if time.monotonic() > deadline:
                print(f"replay_video: error: nobody subscribed to {args.topic}", file=sys.stderr)
                return 1
            time.sleep(0.1)
        for loop in range(args.loops):
            if loop and node.reset is not None:
                if not node.reset.wait_for_service(timeout_sec=10.0):
                    print(f"replay_video: error: {args.reset_service} not available", file=sys.stderr)
                    return 1
                future = node.reset.call_async(Trigger.Request())
                while not future.done():
                    time.sleep(0.01)
            start = time.monotonic()
            for frame, t in frames:
                delay = start + (t - frames[0][1]) / args.speed - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                node.publish(frame, args.frame_id)
        time.sleep(args.linger)
        print(f"replay_video: {args.loops} x {len(frames)} frames sent, {node.received} progress messages received")
        return 0 if node.received else 1
    except KeyboardInterrupt:
        return 130
    finally:
        executor.shutdown()
        spinner.join(timeout=5.0)  # the spin thread must be gone before the context is (else: abort)
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
