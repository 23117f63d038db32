"""Time the offline curve and the streaming step, cached against full recompute, and their difference.

  .venv/bin/python benchmarks/bench_scoring.py [--model tiny-random|DIR|HUB_ID] [--frames 64] [--device auto]

Prints one table. With the tiny random model the timings show the cache's scaling on this machine;
its values are meaningless, only the cached-vs-recompute difference is.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from topreward_ros.core.backend import Qwen3VLBackend
from topreward_ros.core.curve import prefix_lengths
from topreward_ros.core.scorer import StreamingScorer
from topreward_ros.core.types import ModelConfig, ScheduleConfig


def synthetic_episode(count: int, size: int = 256, seed: int = 0) -> list[np.ndarray]:
    """A moving block on a noisy background: every frame differs."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(count):
        f = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
        x = int(k * (size - 48) / max(count - 1, 1))
        f[100:148, x:x + 48] = (220, 40, 40)
        frames.append(f)
    return frames


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def new_scorer(backend, frames, max_frames):
    scorer = StreamingScorer(backend, "push the red block to the right", ScheduleConfig(2.0, (256, 256), max_frames))
    for k, f in enumerate(frames):
        scorer.append(f, 0.5 * k)
    return scorer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-random")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--prefixes", type=int, default=15)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    backend = Qwen3VLBackend.load(ModelConfig(args.model, args.device, args.dtype))
    frames = synthetic_episode(args.frames)
    lengths = prefix_lengths(args.frames, args.prefixes)
    print(f"model {args.model} on {backend.device} ({backend.dtype}), {args.frames} frames of 256x256 "
          f"({backend.tokens_per_frame_pair(256, 256)} tokens per pair), torch threads {torch.get_num_threads()}")

    warm = new_scorer(backend, frames[:4], args.frames)
    warm.score()
    warm.full_recompute()

    scorer = new_scorer(backend, frames, args.frames)
    cached, t_cached = timed(lambda: [scorer.score(n) for n in lengths])
    recomputed, t_full = timed(lambda: [scorer.full_recompute(n) for n in lengths])
    diff = max(max(abs(a.log_prob_true - b.log_prob_true), abs(a.log_prob_false - b.log_prob_false))
               for a, b in zip(cached, recomputed, strict=True))
    print(f"offline curve, {len(lengths)} prefixes: cached {t_cached:.3f} s, full recompute {t_full:.3f} s "
          f"({t_full / t_cached:.1f}x), max |difference| {diff:.2e}")

    # Streaming: time of the step that adds frame n, for growing n (the cache makes it flat).
    stream = new_scorer(backend, [], args.frames)
    steps = {}
    for k, f in enumerate(frames):
        stream.append(f, 0.5 * k)
        _, dt = timed(stream.score)
        steps[k + 1] = dt
    marks = [n for n in (2, 8, 16, 32, 64, 128, 256) if n <= args.frames]
    row = "  ".join(f"n={n}: {steps[n] * 1000:.1f} ms" for n in marks)
    print(f"streaming step (new frame -> value), cached: {row}")
    full_row = "  ".join(f"n={n}: {timed(lambda n=n: stream.full_recompute(n))[1] * 1000:.1f} ms" for n in marks)
    print(f"same prefix by full recompute:            {full_row}")
    print(f"streaming all {args.frames} prefixes: cached {sum(steps.values()):.3f} s total, "
          f"median step {statistics.median(steps.values()) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
