"""Node intake: the real reward node in its own process, fed at 30 Hz by a publisher in this one.

  python benchmarks/bench_node.py [--quick] [--json PATH] [--duration 60]

Over the shipped Fast DDS profile (shared memory + localhost UDP), 640x480 frames as rgb8 Image and as
JPEG CompressedImage, 1 camera and 3 cameras tiled, with the tiny random model (the intake is measured,
not the model). Reported per run: camera-callback time per raw frame (p50/p99, split into frames the
schedule skips and frames it samples), frames received vs published, frames rejected, capture-to-publish
latency of Progress (p50/p99, Progress.latency), RSS of the node process at start and end, its thread
count, and the Progress rate.

The callback (`CameraIntake.on_message`) is timed by a wrapper installed in the node's process only (run
with `--host`): the node's code itself is unchanged.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import finish, synthetic_video

FPS = 30.0
HEIGHT, WIDTH = 480, 640
INSTRUCTION = "push the red block to the right"


# ----------------------------------------------------------------------------- node side (--host)
def host(stats_path: Path, ros_args: list[str]) -> int:
    """Run the real reward node, timing each camera callback; write the timings on shutdown."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

    from topreward_ros.camera_intake import CameraIntake
    from topreward_ros.reward_node import RewardNode

    timings: dict[str, list[float]] = {"skipped": [], "sampled": [], "secondary": []}
    on_message = CameraIntake.on_message

    def timed(intake: CameraIntake, msg, index: int) -> None:
        """The real camera callback, timed (this process only; nothing else changes)."""
        stamp = msg.header.stamp
        # Whether the schedule samples this frame: asked before the callback, outside the timing.
        kind = "secondary" if index else (
            "sampled" if intake.buffer.admit(stamp.sec + stamp.nanosec * 1e-9) is not None else "skipped")
        start = time.perf_counter()
        on_message(intake, msg, index)
        timings[kind].append(time.perf_counter() - start)

    CameraIntake.on_message = timed

    rclpy.init(args=["--ros-args", *ros_args])
    node = RewardNode()
    executor = MultiThreadedExecutor(num_threads=3)  # as reward_node.main does
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        cameras = [{"topic": c.topic, "received": c.received, "rejected": sum(c.rejected.values())}
                   for c in node.channels[0].intake.cameras]
        stats_path.write_text(json.dumps({"timings": timings, "cameras": cameras}))
        node.close()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


# ----------------------------------------------------------------------------- publisher side
def proc_status(pid: int) -> dict:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()
    return {"rss_mb": int(fields["VmRSS"][0]) / 1024, "hwm_mb": int(fields["VmHWM"][0]) / 1024,
            "threads": int(fields["Threads"][0])}


def ros_env(tmp: Path) -> dict:
    from ament_index_python.packages import get_package_share_directory

    profile = Path(get_package_share_directory("topreward_ros")) / "config" / "fastdds_localhost_shm.xml"
    return {"ROS_DOMAIN_ID": str(random.randint(100, 200)), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
            "ROS_HOME": str(tmp), "FASTDDS_DEFAULT_PROFILES_FILE": str(profile)}


def camera_messages(encoding: str, cameras: int, count: int = 30) -> list[list]:
    """`count` frames per camera, as ready messages (payload built once: filling msg.data is the slow part)."""
    import cv2
    from sensor_msgs.msg import CompressedImage, Image

    views = []
    for cam in range(cameras):
        msgs = []
        for frame in synthetic_video(count, (HEIGHT, WIDTH), seed=cam):
            if encoding == "jpeg":
                msg = CompressedImage(format="jpeg")
                msg.data = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))[1].tobytes()
            else:
                msg = Image(height=HEIGHT, width=WIDTH, encoding="rgb8", step=3 * WIDTH, data=frame.tobytes())
            msg.header.frame_id = f"camera{cam}"
            msgs.append(msg)
        views.append(msgs)
    return views


def percentile_ms(values: list[float], q: float) -> float | None:
    return 1000.0 * float(np.percentile(values, q)) if values else None


def run_config(encoding: str, cameras: int, duration: float, model: str, tmp: Path,
               params: tuple[str, ...] = ()) -> dict:
    import rclpy
    import rclpy.executors
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage, Image

    from topreward_msgs.msg import Progress

    suffix = "compressed" if encoding == "jpeg" else "image_raw"
    topics = [f"/bench/cam{i}/{suffix}" for i in range(cameras)]
    stats_path = tmp / f"stats_{encoding}_{cameras}.json"
    ros = ros_env(tmp)
    env = {**os.environ, **ros}
    node_cmd = [
        sys.executable, str(Path(__file__).resolve()), "--host", str(stats_path), "--ros-args",
        "-p", f"model:={model}", "-p", "device:=cpu", "-p", f"instruction:={INSTRUCTION}",
        "-p", f"camera_topics:=[{','.join(topics)}]", "-p", f"tile_views:={'true' if cameras > 1 else 'false'}",
        *(arg for param in params for arg in ("-p", param)),
    ]
    node = subprocess.Popen(node_cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    saved_env = dict(os.environ)
    os.environ.update(ros)  # this process talks over the same profile and domain (restored below)
    context = rclpy.context.Context()
    rclpy.init(context=context, domain_id=int(ros["ROS_DOMAIN_ID"]))
    try:
        pub_node = rclpy.create_node("bench_camera", context=context)
        msg_type = CompressedImage if encoding == "jpeg" else Image
        pubs = [pub_node.create_publisher(msg_type, t, qos_profile_sensor_data) for t in topics]
        progress: list[tuple[float, float]] = []  # (receive time, Progress.latency)
        pub_node.create_subscription(Progress, "/topreward/progress",
                                     lambda m: progress.append((time.monotonic(), m.latency)), 10)
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(pub_node)
        views = camera_messages(encoding, cameras)
        payload_kb = float(np.mean([len(m.data) for msgs in views for m in msgs])) / 1024
        deadline = time.monotonic() + 120
        while any(p.get_subscription_count() == 0 for p in pubs):  # the node has configured and activated
            if node.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("reward node did not come up:\n" + (node.communicate()[0] or ""))
            executor.spin_once(timeout_sec=0.1)
        start_status = proc_status(node.pid)
        warm_status = None  # after a quarter of the run: the model's first allocations are behind it
        published = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < duration:
            if warm_status is None and time.monotonic() - t0 > duration / 4:
                warm_status = proc_status(node.pid)
            target = t0 + published / FPS
            while time.monotonic() < target:
                executor.spin_once(timeout_sec=max(target - time.monotonic(), 0.0))
            stamp = pub_node.get_clock().now().to_msg()
            for pub, msgs in zip(pubs, views, strict=True):
                msg = msgs[published % len(msgs)]
                msg.header.stamp = stamp
                pub.publish(msg)
            published += 1
        publish_s = time.monotonic() - t0
        settle = time.monotonic() + 1.0
        while time.monotonic() < settle:
            executor.spin_once(timeout_sec=0.05)
        end_status = proc_status(node.pid)
    finally:
        node.send_signal(signal.SIGINT)
        log = node.communicate(timeout=60)[0]
        rclpy.try_shutdown(context=context)
        os.environ.clear()
        os.environ.update(saved_env)
    if not stats_path.exists():
        raise RuntimeError("the node wrote no statistics:\n" + log)
    stats = json.loads(stats_path.read_text())
    t = stats["timings"]
    all_primary = t["skipped"] + t["sampled"]
    latencies = [lat for _, lat in progress]
    rate = (len(progress) - 1) / (progress[-1][0] - progress[0][0]) if len(progress) > 1 else 0.0
    return {
        "encoding": encoding, "cameras": cameras, "payload_kb": payload_kb, "duration_s": publish_s,
        "published_per_camera": published, "received_per_camera": [c["received"] for c in stats["cameras"]],
        "lost": sum(published - c["received"] for c in stats["cameras"]),
        "rejected": sum(c["rejected"] for c in stats["cameras"]),
        "callback_ms_p50": percentile_ms(all_primary, 50), "callback_ms_p99": percentile_ms(all_primary, 99),
        "skipped_callback_ms_p50": percentile_ms(t["skipped"], 50),
        "skipped_callback_ms_p99": percentile_ms(t["skipped"], 99),
        "sampled_callback_ms_p50": percentile_ms(t["sampled"], 50),
        "sampled_callback_ms_p99": percentile_ms(t["sampled"], 99),
        "secondary_callback_ms_p50": percentile_ms(t["secondary"], 50),
        "sampled_frames": len(t["sampled"]),
        "latency_ms_p50": percentile_ms(latencies, 50), "latency_ms_p99": percentile_ms(latencies, 99),
        "progress_messages": len(progress), "progress_hz": rate,
        "rss_mb_start": start_status["rss_mb"], "rss_mb_end": end_status["rss_mb"],
        "rss_mb_quarter": (warm_status or end_status)["rss_mb"],
        "threads_start": start_status["threads"], "threads_end": end_status["threads"],
        "traceback_in_log": "Traceback" in log,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", type=Path, help=argparse.SUPPRESS)  # internal: run the timed node
    parser.add_argument("--quick", action="store_true", help="10 s per run, rgb8 x1 and jpeg x3 only")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--duration", type=float, help="seconds of publishing per run (default 60, quick 10)")
    parser.add_argument("--runs", nargs="+", help="ENCODING:CAMERAS, e.g. rgb8:1 jpeg:3")
    parser.add_argument("--model", default="tiny-random")
    parser.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE",
                        help="a node parameter for every run, e.g. --param qos_depth:=20 (repeatable)")
    args, ros_args = parser.parse_known_args(argv)
    if args.host:
        sys.exit(host(args.host, ros_args[1:] if ros_args[:1] == ["--ros-args"] else ros_args))
    duration = args.duration or (10.0 if args.quick else 60.0)
    runs = args.runs or (["rgb8:1", "jpeg:3"] if args.quick else ["rgb8:1", "rgb8:3", "jpeg:1", "jpeg:3"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in runs:
            encoding, cameras = run.split(":")
            row = run_config(encoding, int(cameras), duration, args.model, Path(tmp), tuple(args.param))
            rows.append(row)
            print(f"{encoding} x{cameras} ({row['payload_kb']:.0f} KB per message): callback p50/p99 "
                  f"{fmt(row['callback_ms_p50'])}/{fmt(row['callback_ms_p99'])} ms "
                  f"(skipped {fmt(row['skipped_callback_ms_p50'])}, sampled {fmt(row['sampled_callback_ms_p50'])}/"
                  f"{fmt(row['sampled_callback_ms_p99'])}), received {row['received_per_camera']} of "
                  f"{row['published_per_camera']}, rejected {row['rejected']}, latency p50/p99 "
                  f"{fmt(row['latency_ms_p50'])}/{fmt(row['latency_ms_p99'])} ms, RSS {row['rss_mb_start']:.0f}->"
                  f"{row['rss_mb_quarter']:.0f}->{row['rss_mb_end']:.0f} MB, threads {row['threads_start']}->"
                  f"{row['threads_end']}, Progress "
                  f"{row['progress_hz']:.2f} Hz", flush=True)
    summary = {"median_callback_ms_p50": statistics.median(r["callback_ms_p50"] for r in rows)}
    finish(args, {"benchmark": "node", "model": args.model, "params": args.param, "quick": args.quick,
                  "duration_s": duration, "runs": rows, "summary": summary})


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    main()
