"""Soak: the real reward node (tiny model, its own process) fed at 30 Hz for minutes, with resets and bad frames.

  source scripts/env.sh; python benchmarks/soak_node.py --minutes 10 --json soak.json    # --quick: 1 minute

Three processes over the shipped Fast DDS profile (config/fastdds_localhost_shm.xml): the node; a publisher
(this script with --publisher) that sends 320x240 rgb8 frames stamped at publication, ~10 % of them bad
(truncated, unsupported encoding, zero stamp, far-future stamp), and calls ~/reset every ~20 s once the
node has scored the episode's last frame (a robot resetting its scene; at most --pause-max s); and this
process, which counts Progress per episode and samples the node's RSS, threads and open file descriptors
(/proc/PID) every 10 s. The publisher replays the node's sampling (FrameSchedule) on the good frames alone,
so each episode's good sampled frames are known: with no Progress lost, the last Progress of an episode
has exactly that many frames.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "topreward_ros" / "config" / "fastdds_localhost_shm.xml"
TOPIC = "/soak/image_raw"
TASK = "put the cube in the bowl"
SAMPLE_FPS, MAX_FRAMES = 2.0, 64  # the node's defaults: the replica must sample as the node does


def _stamp(msg, t_ns: int) -> None:
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(t_ns, 1_000_000_000)


def run_publisher(args: argparse.Namespace) -> int:
    """Frames at --rate, bad ones mixed in, resets every --reset-every s; writes what it sent to --out."""
    import numpy as np
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_srvs.srv import Trigger

    from topreward.frames.schedule import FrameSchedule
    from topreward.types import ScheduleConfig
    from topreward_msgs.msg import Progress

    rclpy.init()
    node = rclpy.create_node("soak_publisher")
    camera = node.create_publisher(Image, TOPIC, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    reset = node.create_client(Trigger, "/topreward/reset")
    scored: dict[int, int] = defaultdict(int)  # episode -> most frames in one of its Progress messages
    node.create_subscription(Progress, "/topreward/progress",
                             lambda m: scored.__setitem__(m.episode_id, max(scored[m.episode_id], m.num_frames)),
                             QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))

    def wait_scored(episode: int, frames: int) -> float:
        """Seconds until the node has scored the episode's last sampled frame, at most --pause-max.

        A scene reset takes that long; a good frame lost would show as a wait of --pause-max.
        """
        start = time.monotonic()
        while scored[episode] < frames and time.monotonic() - start < args.pause_max:
            rclpy.spin_once(node, timeout_sec=0.05)
        return time.monotonic() - start
    rng = np.random.default_rng(args.seed)
    pictures = [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8).tobytes() for _ in range(16)]
    tiny = np.zeros((32, 32, 3), np.uint8)
    replica_config = ScheduleConfig(SAMPLE_FPS, (32, 32), MAX_FRAMES)  # sampling does not depend on the size
    deadline = time.monotonic() + 600
    while camera.get_subscription_count() == 0 or not reset.service_is_ready():
        if time.monotonic() > deadline:
            print("soak publisher: the node never came up", file=sys.stderr)
            return 1
        time.sleep(0.1)
    episodes: dict[int, int] = {}  # episode id -> good frames the node's sampling keeps
    waits: dict[int, float] = {}  # episode id -> [s] from its last frame until that frame was scored
    bad_sent: dict[str, int] = defaultdict(int)
    good_sent = 0
    episode, replica = 0, FrameSchedule(replica_config)
    end = time.monotonic() + args.seconds
    next_reset = time.monotonic() + args.reset_every
    period, tick = 1.0 / args.rate, time.monotonic()
    while time.monotonic() < end:
        if time.monotonic() >= next_reset:
            episodes[episode] = len(replica)
            waits[episode] = wait_scored(episode, len(replica))  # the scene resets meanwhile
            future = reset.call_async(Trigger.Request())
            rclpy.spin_until_future_complete(node, future, timeout_sec=10.0)
            if not future.done() or not future.result().success:
                print("soak publisher: reset failed", file=sys.stderr)
                return 1
            episode = int(future.result().message.split()[1])
            replica, next_reset, tick = FrameSchedule(replica_config), time.monotonic() + args.reset_every, \
                time.monotonic()
        t_ns = time.time_ns()
        msg = Image(height=240, width=320, encoding="rgb8", step=960)
        msg.data = pictures[int(rng.integers(len(pictures)))]
        msg.header.frame_id = "soak_camera"
        _stamp(msg, t_ns)
        if rng.random() < args.bad_fraction:
            kind = str(rng.choice(["truncated", "encoding", "zero_stamp", "future_stamp"]))
            if kind == "truncated":
                msg.data = msg.data[:int(rng.integers(0, 240 * 960))]
            elif kind == "encoding":
                msg.encoding = "32FC1"
            elif kind == "zero_stamp":
                _stamp(msg, 0)
            else:
                _stamp(msg, t_ns + 3600 * 10**9)
            bad_sent[kind] += 1
        else:
            replica.offer(tiny, t_ns / 1e9, t_ns)
            good_sent += 1
        camera.publish(msg)
        tick += period
        time.sleep(max(tick - time.monotonic(), 0.0))
    episodes[episode] = len(replica)
    waits[episode] = wait_scored(episode, len(replica))
    Path(args.out).write_text(json.dumps({"episodes": episodes, "waits": waits, "good_sent": good_sent,
                                          "bad_sent": bad_sent}))
    node.destroy_node()
    rclpy.shutdown()
    return 0


def _proc(pid: int) -> dict:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"rss_mb": int(status["VmRSS"].split()[0]) / 1024, "threads": int(status["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def run_soak(args: argparse.Namespace) -> int:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from topreward_msgs.msg import Progress
    from topreward_ros.spinning import BackgroundSpin

    work = Path(tempfile.mkdtemp(prefix="soak-"))
    env = {**os.environ, "FASTDDS_DEFAULT_PROFILES_FILE": str(PROFILE), "ROS_DOMAIN_ID": str(args.domain_id),
           "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_HOME": str(work)}
    os.environ.update(env)
    node_log = open(work / "node.log", "w")
    node = subprocess.Popen(
        [sys.executable, "-m", "topreward_ros.reward_node", "--ros-args", "-p", "model:=tiny-random",
         "-p", "device:=cpu", "-p", f"instruction:={TASK}", "-p", f"camera_topics:=[{TOPIC}]",
         "-p", f"frame_size:=[{args.frame_size}, {args.frame_size}]", "-p", "qos_reliability:=reliable",
         "-p", "qos_depth:=10", "-p", f"record_dir:={work / 'records'}", "-p", "success_threshold:=-100.0",
         "-p", "success_consecutive:=1000"], env=env, stdout=node_log, stderr=subprocess.STDOUT)
    seconds = 60.0 if args.quick else args.minutes * 60.0
    published = work / "published.json"
    publisher = subprocess.Popen(
        [sys.executable, __file__, "--publisher", "--seconds", str(seconds), "--out", str(published),
         "--rate", str(args.rate), "--reset-every", str(args.reset_every), "--bad-fraction", str(args.bad_fraction),
         "--pause-max", str(args.pause_max), "--seed", str(args.seed)], env=env)
    rclpy.init()
    monitor = rclpy.create_node("soak_monitor")
    progress: dict[int, list[int]] = defaultdict(list)  # episode -> num_frames of each Progress
    diagnostics: list[dict] = []
    monitor.create_subscription(Progress, "/topreward/progress", lambda m: progress[m.episode_id].append(m.num_frames),
                                QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    monitor.create_subscription(DiagnosticArray, "/diagnostics", lambda m: diagnostics.append(
        {kv.key: kv.value for kv in m.status[0].values}) if m.status else None, 10)
    executor = SingleThreadedExecutor()
    executor.add_node(monitor)
    spinner = BackgroundSpin(executor, "soak-monitor")
    samples, start = [], None
    try:
        while publisher.poll() is None:
            if start is None and progress:
                start = time.monotonic()  # the first sample once the node scores
            if start is not None and (not samples or time.monotonic() - start >= 10.0 * len(samples)):
                samples.append({"t": round(time.monotonic() - start), **_proc(node.pid)})
                s = samples[-1]
                print(f"t={s['t']:>4} s  rss {s['rss_mb']:7.1f} MB  threads {s['threads']:>3}  fds {s['fds']:>3}  "
                      f"progress {sum(len(v) for v in progress.values())}", flush=True)
            if node.poll() is not None:
                print("soak: the node died; see", work / "node.log", file=sys.stderr)
                return 1
            time.sleep(0.2)
        time.sleep(2.0)
        samples.append({"t": round(time.monotonic() - (start or time.monotonic())), **_proc(node.pid)})
    finally:
        if publisher.poll() is None:  # the node died: an orphaned publisher would feed the next soak
            publisher.terminate()
            publisher.wait(timeout=30)
        node.send_signal(signal.SIGINT)
        node_code = node.wait(timeout=30)
        spinner.stop()
        monitor.destroy_node()
        rclpy.try_shutdown()
    if publisher.returncode != 0:
        print("soak: the publisher failed", file=sys.stderr)
        return 1
    sent = json.loads(published.read_text())
    rows = []
    for episode, sampled in sorted((int(k), v) for k, v in sent["episodes"].items()):
        got = progress.get(episode, [])
        rows.append({"episode": episode, "good_sampled": sampled, "progress_received": len(got),
                     "last_num_frames": max(got) if got else 0, "wait_s": round(sent["waits"][str(episode)], 2)})
    complete = sum(r["last_num_frames"] == r["good_sampled"] for r in rows)
    rejected = {k: v for k, v in (diagnostics[-1] if diagnostics else {}).items() if "rejected" in k}
    print(f"\n{'episode':>7} {'good sampled':>12} {'Progress':>8} {'last num_frames':>15} {'wait [s]':>8}")
    for r in rows:
        print(f"{r['episode']:>7} {r['good_sampled']:>12} {r['progress_received']:>8} {r['last_num_frames']:>15} "
              f"{r['wait_s']:>8.2f}")
    first, last = samples[0], samples[-1]
    bad = sum(sent["bad_sent"].values())
    print(f"\n{seconds / 60:g} min at {args.rate:g} Hz: {sent['good_sent']} good + {bad} bad frames"
          f", {len(rows)} episodes, {complete} with every good sampled frame scored; node exit {node_code}")
    print(f"RSS {first['rss_mb']:.1f} -> {last['rss_mb']:.1f} MB (max {max(s['rss_mb'] for s in samples):.1f}), "
          f"threads {first['threads']} -> {last['threads']}, fds {first['fds']} -> {last['fds']}")
    print(f"rejected by the node: {rejected}")
    result = {"minutes": seconds / 60, "rate_hz": args.rate, "frame_size": args.frame_size, "sent": sent,
              "episodes": rows, "episodes_complete": complete, "samples": samples, "rejected": rejected,
              "node_exit": node_code, "node_log": str(work / "node.log")}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0 if complete == len(rows) and node_code == 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true", help="1 minute")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--rate", type=float, default=30.0, help="camera rate [Hz]")
    parser.add_argument("--reset-every", type=float, default=20.0, help="[s] between resets")
    parser.add_argument("--bad-fraction", type=float, default=0.1)
    parser.add_argument("--pause-max", type=float, default=10.0, help="[s] at most without frames before each "
                        "reset, while the node scores the episode's last frame")
    parser.add_argument("--frame-size", type=int, default=128, help="node frame_size (square)")
    parser.add_argument("--domain-id", type=int, default=97)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--publisher", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    return run_publisher(args) if args.publisher else run_soak(args)


if __name__ == "__main__":
    sys.exit(main())
