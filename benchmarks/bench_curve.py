"""Offline scoring, before and after packing: the 15-prefix curve and `topreward eval`'s throughput, in one run.

  python benchmarks/bench_curve.py [--quick] [--json PATH] [--model mid|tiny-random|...] [--repeat 2]

Curve: a 30 fps video of N camera frames (N = 64, 256, 512), sampled at 2 fps (and, unless told otherwise, at
30 fps: every frame used). The prefixes are the reference implementation's: 15 raw-frame lengths linspace(1, N, 15),
each seen through the sampler, so at 2 fps several coincide. Three ways, same values:
  cached   one StreamingScorer pass per prefix (the node's path; each listed prefix scored, repeats too)
  packed   scoring/packed.py: every complete pair once, then all questions side by side (each distinct prefix once)
  uncached one fresh forward pass per prefix (`full_recompute`), skipped past --uncached-max-frames.
Times include resizing the frames. With --repeat R, cached and packed run R times each in alternating order and
the fastest run counts (runs of one command differ by up to a third on a shared machine). The first run of each way
starts cold: freed memory is handed back to the system first (for its peak memory figure), so its passes touch
fresh pages as a new process's do (`*_cold_s`); later runs reuse the process's memory, as `topreward eval` does
from its second batch on (the commands keep freed memory: topreward/cli/allocator.py; --default-allocator
measures without that).

Eval: 16 episodes of the bundled video (the package's demo episode), read and sampled once, then scored one at a
time on the cached path (as `topreward eval --batch-tokens 0 --batch-episodes 1`), one at a time packed
(`--batch-episodes 1`), and all together packed (the default batch of 8 episodes, and 16): episodes per minute.

Peak memory: above what was in use when each run began (GPU memory on a GPU, resident memory on a CPU).
"""
from __future__ import annotations

import argparse
import time
from contextlib import nullcontext
from dataclasses import replace
from importlib import resources

import numpy as np
from common import (
    add_common_args,
    describe,
    finish,
    limit_tokens,
    load_backend,
    max_abs_diff,
    metered,
    new_scorer,
    peak_memory,
    print_table,
    setup,
    synthetic_video,
)

from topreward.offline.evaluate import ScoringConfig, sample_episode, score_episodes
from topreward.offline.readers import SourceOptions, read_source
from topreward.scoring.packed import score_prefixes
from topreward.types import ScheduleConfig

CAMERA_FPS = 30.0


def reference_prefixes(raw: int, count: int = 15) -> list[int]:
    """The reference's raw-frame prefix lengths: sorted(set(linspace(1, N, min(15, N)).astype(int)))."""
    return sorted({int(x) for x in np.linspace(1, raw, min(count, raw))})


def _fed(backend, video: list, sample_fps: float):
    """A scorer holding the video's sampled frames, and the sampled prefix each reference prefix sees."""
    scorer = new_scorer(backend, sample_fps)
    kept_raw = [k for k, f in enumerate(video) if scorer.append(f, k / CAMERA_FPS)]
    # Sampled frames seen by each raw prefix (the sampler is prefix-stable).
    return scorer, [max(sum(1 for k in kept_raw if k < r), 1) for r in reference_prefixes(len(video))]


def _memory(backend, measure: bool):
    return peak_memory(backend.device) if measure else nullcontext({"peak_mb": None})


def _cached(backend, video, sample_fps, measure_memory: bool):
    with _memory(backend, measure_memory) as memory, metered(backend) as meter:
        scorer, lengths = _fed(backend, video, sample_fps)
        scores = [scorer.score(n) for n in lengths]
    return meter, memory["peak_mb"], scores, scorer, lengths


def _packed(backend, video, sample_fps, max_tokens, measure_memory: bool):
    with _memory(backend, measure_memory) as memory, metered(backend) as meter:
        scorer, lengths = _fed(backend, video, sample_fps)
        (scores,) = score_prefixes([(scorer, lengths)], max_tokens)
    return meter, memory["peak_mb"], scores


def run(backend, video: list, sample_fps: float, uncached_max: int, repeat: int = 1,
        max_tokens: int | None = None) -> dict:
    cached_runs, packed_runs = [], []
    for k in range(repeat):  # alternating order: neither way always runs on a warmer machine
        order = (cached_runs, packed_runs) if k % 2 == 0 else (packed_runs, cached_runs)
        for runs in order:
            runs.append(_cached(backend, video, sample_fps, k == 0) if runs is cached_runs
                        else _packed(backend, video, sample_fps, max_tokens, k == 0))
    cached_peak, packed_peak = cached_runs[0][1], packed_runs[0][1]  # the cold runs
    cached, _, cached_scores, scorer, lengths = min(cached_runs, key=lambda r: r[0].wall_s)
    packed, _, packed_scores = min(packed_runs, key=lambda r: r[0].wall_s)
    row = {
        "raw_frames": len(video), "sample_fps": sample_fps, "sampled_frames": scorer.num_frames,
        "prefixes": len(lengths), "distinct_prefixes": len(set(lengths)),
        "cached_s": cached.wall_s, "cached_runs_s": [r[0].wall_s for r in cached_runs],
        "cached_cold_s": cached_runs[0][0].wall_s, "packed_cold_s": packed_runs[0][0].wall_s,
        "cached_vision_s": cached.vision_s, "cached_llm_s": cached.llm_s, "cached_other_s": cached.other_s,
        "cached_passes": cached.passes, "cached_tokens": cached.tokens, "cached_peak_mb": cached_peak,
        "packed_s": packed.wall_s, "packed_runs_s": [r[0].wall_s for r in packed_runs],
        "packed_vision_s": packed.vision_s, "packed_llm_s": packed.llm_s, "packed_other_s": packed.other_s,
        "packed_passes": packed.passes, "packed_tokens": packed.tokens, "packed_peak_mb": packed_peak,
        "packed_speedup": cached.wall_s / packed.wall_s, "packed_vs_cached_max_abs_diff":
            max_abs_diff(cached_scores, packed_scores),
        "limit_tokens": limit_tokens(scorer, lengths),
        "uncached_s": None, "uncached_llm_s": None, "uncached_tokens": None, "max_abs_diff": None,
    }
    if max(lengths) <= uncached_max:
        with metered(backend) as uncached:
            full_scores = [scorer.full_recompute(n) for n in lengths]
        row.update(uncached_s=uncached.wall_s, uncached_llm_s=uncached.llm_s, uncached_tokens=uncached.tokens,
                   max_abs_diff=max(max_abs_diff(cached_scores, full_scores), max_abs_diff(packed_scores,
                                                                                        full_scores)))
    return row


def demo_episodes(count: int) -> list:
    """The bundled demo video `count` times over, as `topreward eval` reads a manifest of it."""
    import tempfile
    from pathlib import Path

    data = resources.files("topreward") / "data"
    folder = Path(tempfile.mkdtemp(prefix="bench_curve_"))
    instruction = __import__("json").loads((data / "demo_episode.json").read_text())["instruction"]
    rows = ["video,instruction"] + [f"{data / 'demo_episode.mp4'},{instruction}"] * count
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return list(read_source(folder / "manifest.csv", "manifest", SourceOptions()))


def run_eval(backend, count: int = 16, repeat: int = 1) -> dict:
    """Episodes per minute of `topreward eval`'s scoring on `count` copies of the demo episode, three ways."""
    config = ScoringConfig(schedule=ScheduleConfig(2.0, (256, 256), 64))
    episodes = demo_episodes(count)
    start = time.perf_counter()
    sampled = [(episode, sample_episode(episode, config.schedule)) for episode in episodes]
    read_s = time.perf_counter() - start
    ways = {"one_at_a_time_cached": replace(config, batch_tokens=0, batch_episodes=1),
            "one_at_a_time_packed": replace(config, batch_episodes=1),
            "batched_8": replace(config, batch_episodes=8), "batched_16": replace(config, batch_episodes=16)}
    result = {"episodes": count, "sampled_frames": len(sampled[0][1]), "read_s": read_s, "ways": {}}
    curves = {}
    for k in range(repeat):
        for name, way in (list(ways.items()) if k % 2 == 0 else list(reversed(ways.items()))):
            with peak_memory(backend.device) as memory, metered(backend) as meter:
                curves[name] = [c for b in range(0, count, way.batch_episodes)
                                for c in score_episodes(backend, sampled[b:b + way.batch_episodes], way)]
            best = result["ways"].get(name)
            if best is None or meter.wall_s < best["score_s"]:
                result["ways"][name] = {"score_s": meter.wall_s, "passes": meter.passes, "tokens": meter.tokens,
                                        "episodes_per_min": 60.0 * count / meter.wall_s, "peak_mb": memory["peak_mb"]}
    base = result["ways"]["one_at_a_time_cached"]["episodes_per_min"]
    for way in result["ways"].values():
        way["vs_one_at_a_time_cached"] = way["episodes_per_min"] / base
    result["max_abs_diff"] = max(abs(a - b) for name in ways for x, y in zip(curves[name], curves["batched_16"],
                                                                               strict=True)
                                 for a, b in zip(x.log_prob_true, y.log_prob_true, strict=True))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--raw-frames", type=int, nargs="+", help="camera frames per video (default 64 256 512)")
    parser.add_argument("--sample-fps", type=float, nargs="+", default=[2.0, CAMERA_FPS])
    parser.add_argument("--uncached-max-frames", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=2, help="runs of cached and packed each; the fastest counts")
    parser.add_argument("--eval-episodes", type=int, default=16, help="0 skips the eval throughput")
    parser.add_argument("--batch-tokens", type=int, help="packed passes' token bound (default: the device's)")
    args = parser.parse_args(argv)
    setup(args)
    raws = args.raw_frames or ([64] if args.quick else [64, 256, 512])
    backend = load_backend(args.model, args.device, args.dtype)
    print(describe(backend))
    video = synthetic_video(max(raws))
    run(backend, video[:8], 2.0, 8)  # warm-up
    rows = []
    for fps in args.sample_fps:
        for raw in raws:
            clip = video[:raw] if not (args.quick and fps > 2.0) else video[:8]  # quick: a short all-frames clip
            row = run(backend, clip, fps, args.uncached_max_frames, 1 if args.quick else args.repeat,
                      args.batch_tokens)
            rows.append(row)
            print(f"{row['raw_frames']} frames at {fps:g} fps ({row['sampled_frames']} sampled): cached "
                  f"{row['cached_s']:.2f} s, packed {row['packed_s']:.2f} s ({row['packed_speedup']:.2f}x), "
                  f"uncached {fmt(row['uncached_s'], '.2f')} s", flush=True)
    print()
    print_table([{k: fmt(r[k], ".3g") for k, _, _ in COLUMNS} for r in rows], COLUMNS)
    result = {"benchmark": "curve", "model": describe(backend), "quick": args.quick, "rows": rows}
    if args.eval_episodes:
        result["eval"] = run_eval(backend, 4 if args.quick else args.eval_episodes, 1 if args.quick else args.repeat)
        print()
        print(f"eval, {result['eval']['episodes']} episodes of the demo video "
              f"({result['eval']['sampled_frames']} sampled frames each; reading {result['eval']['read_s']:.1f} s):")
        for name, way in result["eval"]["ways"].items():
            print(f"  {name:22s} {way['score_s']:7.2f} s  {way['episodes_per_min']:6.1f} episodes/min  "
                  f"{way['vs_one_at_a_time_cached']:.2f}x  {way['passes']:3d} passes  peak {way['peak_mb']:.0f} MB")
    finish(args, result)


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


COLUMNS = [(k, h, "s") for k, h in (
    ("raw_frames", "raw"), ("sample_fps", "fps"), ("sampled_frames", "sampled"),
    ("distinct_prefixes", "distinct"), ("uncached_s", "uncached s"), ("cached_s", "cached s"),
    ("packed_s", "packed s"), ("packed_speedup", "packed/cached"), ("cached_cold_s", "cached cold s"),
    ("packed_cold_s", "packed cold s"), ("cached_passes", "cached passes"),
    ("packed_passes", "packed passes"), ("cached_llm_s", "cached LLM s"), ("packed_llm_s", "packed LLM s"),
    ("packed_vision_s", "packed vision s"), ("cached_peak_mb", "cached peak MB"), ("packed_peak_mb", "packed peak MB"),
    ("limit_tokens", "limit"), ("max_abs_diff", "max|diff|"),
)]


if __name__ == "__main__":
    main()
