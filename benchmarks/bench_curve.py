"""The offline 15-prefix curve, cached vs uncached, on the reference implementation's prefixes.

  python benchmarks/bench_curve.py [--quick] [--json PATH] [--model mid|tiny-random|...]

A 30 fps video of N camera frames (N = 64, 256, 512) is sampled at 2 fps and at 30 fps (every frame
used). The prefixes are the reference's: 15 raw-frame lengths linspace(1, N, 15), each seen through the
sampler, so at 2 fps several coincide; each is scored anyway, as the reference does. Cached: one
StreamingScorer over the prefixes in order. Uncached: one fresh forward pass per prefix
(`full_recompute`). Times include resizing the frames; the vision encoder and the LLM are timed apart.
An uncached run whose longest prefix exceeds --uncached-max-frames is skipped (null): on a CPU it would
take tens of minutes.

The issue's figures for the reference implementation (its prefix cache, transformers 4.57.1, the same
mid-sized model, CPU fp32 sdpa 2 threads, 2 fps) are printed next to ours for comparison; they were
measured elsewhere, not by this script.
"""
from __future__ import annotations

import argparse

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
    print_table,
    setup,
    synthetic_video,
)

CAMERA_FPS = 30.0
# raw frames -> (uncached s, cached s) of the reference implementation at 2 fps, from the issue.
REFERENCE_2FPS = {64: (19.7, 7.4), 256: (31.8, 4.7), 512: (46.8, 5.9)}


def reference_prefixes(raw: int, count: int = 15) -> list[int]:
    """The reference's raw-frame prefix lengths: sorted(set(linspace(1, N, min(15, N)).astype(int)))."""
    return sorted({int(x) for x in np.linspace(1, raw, min(count, raw))})


def run(backend, video: list, sample_fps: float, uncached_max: int) -> dict:
    raw = len(video)
    scorer = new_scorer(backend, sample_fps)
    with metered(backend) as cached:
        kept_raw = [k for k, f in enumerate(video) if scorer.append(f, k / CAMERA_FPS)]
        # Sampled frames seen by each raw prefix (the sampler is prefix-stable).
        lengths = [max(sum(1 for k in kept_raw if k < r), 1) for r in reference_prefixes(raw)]
        cached_scores = [scorer.score(n) for n in lengths]
    row = {
        "raw_frames": raw, "sample_fps": sample_fps, "sampled_frames": scorer.num_frames,
        "prefixes": len(lengths), "distinct_prefixes": len(set(lengths)),
        "cached_s": cached.wall_s, "cached_vision_s": cached.vision_s, "cached_llm_s": cached.llm_s,
        "cached_other_s": cached.other_s, "cached_passes": cached.passes, "cached_tokens": cached.tokens,
        "limit_tokens": limit_tokens(scorer, lengths),
        "uncached_s": None, "uncached_vision_s": None, "uncached_llm_s": None, "uncached_tokens": None,
        "speedup": None, "max_abs_diff": None,
    }
    if max(lengths) <= uncached_max:
        with metered(backend) as uncached:
            full_scores = [scorer.full_recompute(n) for n in lengths]
        row.update(uncached_s=uncached.wall_s, uncached_vision_s=uncached.vision_s, uncached_llm_s=uncached.llm_s,
                   uncached_tokens=uncached.tokens, speedup=uncached.wall_s / cached.wall_s,
                   max_abs_diff=max_abs_diff(cached_scores, full_scores))
    ref = REFERENCE_2FPS.get(raw) if sample_fps == 2.0 else None
    row["reference_uncached_s"], row["reference_cached_s"] = ref if ref else (None, None)
    row["vs_reference_cached"] = ref[1] / cached.wall_s if ref else None
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--raw-frames", type=int, nargs="+", help="camera frames per video (default 64 256 512)")
    parser.add_argument("--sample-fps", type=float, nargs="+", default=[2.0, CAMERA_FPS])
    parser.add_argument("--uncached-max-frames", type=int, default=128)
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
            row = run(backend, clip, fps, args.uncached_max_frames)
            rows.append(row)
            print(f"{row['raw_frames']} frames at {fps:g} fps ({row['sampled_frames']} sampled): cached "
                  f"{row['cached_s']:.2f} s, uncached {fmt(row['uncached_s'], '.2f')} s", flush=True)
    print()
    print_table([{k: fmt(v, ".3g") if not isinstance(v, str) else v for k, v in r.items()} for r in rows], COLUMNS)
    finish(args, {"benchmark": "curve", "model": describe(backend), "quick": args.quick, "rows": rows})


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


COLUMNS = [(k, h, "s") for k, h in (
    ("raw_frames", "raw"), ("sample_fps", "fps"), ("sampled_frames", "sampled"),
    ("distinct_prefixes", "distinct"), ("reference_uncached_s", "ref uncached s"),
    ("reference_cached_s", "ref cached s"), ("uncached_s", "uncached s"), ("cached_s", "cached s"),
    ("speedup", "ratio"), ("vs_reference_cached", "vs ref cached"), ("cached_vision_s", "vision s"),
    ("cached_llm_s", "LLM s"), ("cached_other_s", "other s"), ("cached_tokens", "tokens"),
    ("limit_tokens", "limit"), ("max_abs_diff", "max|diff|"),
)]


if __name__ == "__main__":
    main()
