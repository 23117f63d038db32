"""GPU figures in one call: streaming and curve benchmarks on Qwen3-VL-8B- and 2B-shaped random models in bf16.

  python benchmarks/bench_gpu.py [--quick] [--json PATH] [--models 8b-shaped 2b-shaped]

For each model: the streaming step vs recompute at T = 16, 32, 64 sampled frames (and the Progress rate
one GPU sustains per robot at 2 fps sampling), the 15-prefix curve at 64/256/512 camera frames at 2 fps
and with every frame used (cached: a pass per prefix; packed: the whole curve in few passes), `topreward
eval`'s episodes per minute one at a time and batched (16 demo episodes), and the GPU memory in use after a
64-frame episode and at the peak of each curve and eval run. Random weights built on
the GPU (no download); bf16 values agree with the recompute only to bf16 precision. Runs on a CPU too
(`--device cpu --models tiny-random`), which is how the test keeps it from rotting.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from bench_curve import CAMERA_FPS, run_eval
from bench_curve import run as run_curve
from bench_streaming import run_recompute, run_streaming
from common import FRAME_SIZE, describe, finish, load_backend, synthetic_video

from topreward.frames.image_conversion import resize_image


def bench_model(name: str, device: str, dtype: str, lengths: list[int], raws: list[int], uncached_max: int,
                eval_episodes: int) -> dict:
    backend = load_backend(name, device, dtype)
    print(describe(backend), flush=True)
    on_gpu = backend.device.type == "cuda"
    video = [resize_image(f, FRAME_SIZE) for f in synthetic_video(max(lengths))]
    run_streaming(backend, video[:4])  # warm-up
    streaming = {}
    for t in lengths:
        if on_gpu:
            torch.cuda.reset_peak_memory_stats()
        _, stream, scorer = run_streaming(backend, video[:t])
        _, recompute, _ = run_recompute(backend, scorer, t, 4)
        stream["recompute"] = recompute
        stream["speedup"] = recompute["total_s"] / stream["total_s"]
        # The node scores each new sampled frame once: a robot needs sample_fps prefixes per second.
        stream["prefixes_per_s"] = 1000.0 / stream["step_ms_last_quarter"]
        stream["robots_at_2fps"] = stream["prefixes_per_s"] / 2.0
        if on_gpu:
            stream["gpu_memory_gb_in_use"] = torch.cuda.memory_allocated() / 2**30
            stream["gpu_memory_gb_peak"] = torch.cuda.max_memory_allocated() / 2**30
        streaming[str(t)] = stream
        print(f"  T={t}: step {stream['step_ms_median']:.1f} ms (late {stream['step_ms_last_quarter']:.1f}), "
              f"recompute total {recompute['total_s']:.1f} s vs {stream['total_s']:.1f} s "
              f"({stream['speedup']:.1f}x), {stream['robots_at_2fps']:.1f} robots at 2 fps", flush=True)
        del scorer
    curve = []
    long_video = synthetic_video(max(raws))
    for fps in (2.0, CAMERA_FPS):
        for raw in raws:
            row = run_curve(backend, long_video[:raw], fps, uncached_max, repeat=2)
            curve.append(row)
            print(f"  curve {raw} frames at {fps:g} fps: cached {row['cached_s']:.2f} s, packed {row['packed_s']:.2f} "
                  f"s ({row['packed_speedup']:.1f}x, peak {row['packed_peak_mb']:.0f} MB vs "
                  f"{row['cached_peak_mb']:.0f} MB), uncached "
                  f"{row['uncached_s'] if row['uncached_s'] is None else round(row['uncached_s'], 2)} s", flush=True)
    evaluation = run_eval(backend, eval_episodes)
    for way_name, way in evaluation["ways"].items():
        print(f"  eval {way_name}: {way['episodes_per_min']:.1f} episodes/min ({way['vs_one_at_a_time_cached']:.1f}x), "
              f"peak {way['peak_mb']:.0f} MB", flush=True)
    result = {"model": describe(backend), "streaming": streaming, "curve": curve, "eval": evaluation}
    del backend
    if on_gpu:
        torch.cuda.empty_cache()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["8b-shaped", "2b-shaped"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="T = 8, 16 and 64 camera frames only")
    parser.add_argument("--lengths", type=int, nargs="+", help="streaming episode lengths T in sampled frames")
    parser.add_argument("--raw-frames", type=int, nargs="+", help="camera frames per curve video")
    parser.add_argument("--eval-episodes", type=int, help="demo episodes for the eval throughput (default 16, quick 4)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    lengths = args.lengths or ([8, 16] if args.quick else [16, 32, 64])
    raws = args.raw_frames or ([64] if args.quick else [64, 256, 512])
    uncached_max = 64 if args.quick else 512
    eval_episodes = args.eval_episodes or (4 if args.quick else 16)
    results = {name: bench_model(name, args.device, args.dtype, lengths, raws, uncached_max, eval_episodes)
               for name in args.models}
    finish(args, {"benchmark": "gpu", "quick": args.quick, "models": results})


if __name__ == "__main__":
    main()
