"""Cost of the node's ~/debug_image per scored prefix: nothing without a subscriber, one drawing with one.

Measures, with a real rclpy publisher (DebugImagePublisher, the node's own class):
- without a subscriber: what a scored prefix costs on the inference thread (the subscriber check);
- with one: drawing one image (the frame enlarged, the panel, BGR conversion) on the drawing thread,
  for one camera (256x256) and three tiled (256x768), with a 64-prefix episode so far.

    source scripts/env.sh && python benchmarks/bench_debug_image.py [--quick] [--json out.json] [--picture out.png]

--picture writes one debug image of the bundled demo episode scored by the tiny random model (its values
are meaningless: it shows what the picture looks like).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from common import finish


def _percentiles(seconds: list[float]) -> dict:
    ms = sorted(s * 1e3 for s in seconds)
    return {"p50_ms": round(statistics.median(ms), 4), "p99_ms": round(ms[int(0.99 * (len(ms) - 1))], 4)}


def _item(frame: np.ndarray, prefixes: int):
    from std_msgs.msg import Header

    from topreward.overlay import Trace
    from topreward_ros.debug_image import DebugFrame

    times = [0.5 * k for k in range(prefixes)]
    raw = list(np.linspace(-3.0, -0.4, prefixes))
    trace = Trace("pick up the red block and put it in the bowl", times, raw, [0.5] * prefixes,
                  list(np.linspace(0, 1, prefixes)))
    return DebugFrame(frame, trace, -0.5, times[-1], Header(frame_id="camera"), "episode 3   latency 0.21 s")


def measure(runs: int) -> dict:
    import rclpy
    from sensor_msgs.msg import Image

    from topreward_ros.debug_image import DebugImagePublisher

    rclpy.init()
    node = rclpy.create_node("bench_debug_image")
    debug = DebugImagePublisher(node.create_publisher(Image, "~/debug_image", 1), print)
    try:
        rng = np.random.default_rng(0)
        unwatched = []
        for _ in range(runs):
            start = time.perf_counter()
            debug.wanted()
            unwatched.append(time.perf_counter() - start)
        result = {"without_subscriber": _percentiles(unwatched)}
        for name, shape in (("one_camera_256x256", (256, 256, 3)), ("three_cameras_256x768", (256, 768, 3))):
            item = _item(rng.integers(0, 256, shape, dtype=np.uint8), 64)
            debug.render(item)  # first call: OpenCV's lazy setup
            drawn = []
            for _ in range(runs):
                start = time.perf_counter()
                debug.render(item)
                drawn.append(time.perf_counter() - start)
            result[name] = _percentiles(drawn)
        return result
    finally:
        debug.close()
        node.destroy_node()
        rclpy.try_shutdown()


def picture(path: Path) -> None:
    """One debug image of the demo episode, scored by the tiny random model through the node's code path."""
    import cv2

    import topreward
    from topreward import TOPReward
    from topreward.frames.video import read_frames
    from topreward.overlay import ProgressPainter, Trace

    reward = TOPReward.load("tiny-random", device="cpu", dtype="float32", frame_size=(256, 256),
                            success_threshold=-100.0)
    reward.reset(json.loads((topreward.DATA_DIR / "demo_episode.json").read_text())["instruction"])
    steps, frame = [], None
    for image, t in read_frames(topreward.DEMO_EPISODE):
        step = reward.observe(image, t)
        if step is not None:
            steps.append(step)
            frame = reward._buffer.wait_for_change(None, 0.0).frames.frames[step.num_frames - 1]
    trace = Trace(steps[-1].instruction, [s.elapsed for s in steps], [s.log_prob_true for s in steps],
                  [s.p_true for s in steps], [s.progress for s in steps])
    success_at = next((s.elapsed for s in steps if s.success), None)
    painter = ProgressPainter(trace, frame.shape[:2], None, success_at, trace.times[-1],
                              caption=f"episode {steps[-1].episode_id}   latency 0.12 s")
    cv2.imwrite(str(path), cv2.cvtColor(painter.paint(frame, trace.times[-1]), cv2.COLOR_RGB2BGR))
    print(f"wrote {path} (tiny-random: the values are meaningless)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20 runs instead of 300")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--picture", type=Path, help="write a debug image of the demo episode here (PNG)")
    args = parser.parse_args(argv)
    cases = measure(20 if args.quick else 300)
    print(f"{'case':<28} {'p50 [ms]':>9} {'p99 [ms]':>9}")
    for name, figures in cases.items():
        print(f"{name:<28} {figures['p50_ms']:>9.3f} {figures['p99_ms']:>9.3f}")
    if args.picture:
        picture(args.picture)
    finish(args, {"benchmark": "debug_image", "quick": args.quick, "cases": cases})


if __name__ == "__main__":
    main()
