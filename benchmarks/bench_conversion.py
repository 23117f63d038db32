"""The floor under the node's intake: what converting one sampled frame costs, each step alone, no ROS.

  python benchmarks/bench_conversion.py [--quick] [--json PATH] [--repeats 100]

The same 640x480 messages as bench_node (rgb8 Image and JPEG CompressedImage). Reported (median per
step): the JPEG decode, one INTER_AREA resize to the frame and to a third of it (a tile column), the
whole conversion of one view to its frame, and three views tiled, one after another and in parallel
as the intake does (secondary views on threads). A camera callback for a sampled frame cannot cost less
than this on the machine, whatever the node does around it.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from bench_node import HEIGHT, WIDTH, camera_messages
from common import finish

from topreward.frames.image_conversion import to_rgb
from topreward.frames.tiling import column_sizes, tile_views

FRAME = (256, 256)


def median_ms(step: Callable[[int], object], repeats: int) -> float:
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 repeats")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--repeats", type=int, help="timed repeats per step (default 100, quick 10)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (10 if args.quick else 100)
    jpeg, raw = camera_messages("jpeg", 3, 4), camera_messages("rgb8", 3, 4)
    columns = column_sizes(3, FRAME)
    views = ThreadPoolExecutor(2, thread_name_prefix="views")

    def tiled(messages: list, parallel: bool) -> np.ndarray:
        if not parallel:
            return tile_views([to_rgb(m, size=c) for m, c in zip(messages, columns, strict=True)], FRAME)
        futures = [views.submit(to_rgb, m, size=c) for m, c in zip(messages[1:], columns[1:], strict=True)]
        return tile_views([to_rgb(messages[0], size=columns[0]), *(f.result() for f in futures)], FRAME)

    def pixels(i: int) -> np.ndarray:
        return np.frombuffer(raw[0][i % 4].data, np.uint8).reshape(HEIGHT, WIDTH, 3)

    def at(i: int, cams: list[list]) -> list:
        return [cam[i % 4] for cam in cams]

    steps = {
        "jpeg_decode": lambda i: cv2.imdecode(np.frombuffer(jpeg[0][i % 4].data, np.uint8), cv2.IMREAD_COLOR),
        "resize_to_frame": lambda i: cv2.resize(pixels(i), FRAME[::-1], interpolation=cv2.INTER_AREA),
        "resize_to_column": lambda i: cv2.resize(pixels(i), columns[1][::-1], interpolation=cv2.INTER_AREA),
        "rgb8_view_to_frame": lambda i: to_rgb(raw[0][i % 4], size=FRAME),
        "jpeg_view_to_frame": lambda i: to_rgb(jpeg[0][i % 4], size=FRAME),
        "rgb8_3_views_sequential": lambda i: tiled(at(i, raw), False),
        "rgb8_3_views_parallel": lambda i: tiled(at(i, raw), True),
        "jpeg_3_views_sequential": lambda i: tiled(at(i, jpeg), False),
        "jpeg_3_views_parallel": lambda i: tiled(at(i, jpeg), True),
    }
    # Parallel and sequential tiling must give the same frame, or the timing compares different work.
    assert np.array_equal(tiled(at(0, jpeg), False), tiled(at(0, jpeg), True))
    result = {name: median_ms(step, repeats) for name, step in steps.items()}
    views.shutdown()
    for name, ms in result.items():
        print(f"{name:>24}: {ms:6.2f} ms")
    jpeg_kb = float(np.mean([len(m.data) for m in jpeg[0]])) / 1024
    finish(args, {"benchmark": "conversion", "quick": args.quick, "repeats": repeats, "jpeg_kb": jpeg_kb,
                  "source": [HEIGHT, WIDTH], "frame": list(FRAME), "opencv_threads": cv2.getNumThreads(),
                  "median_ms": result})


if __name__ == "__main__":
    main()
