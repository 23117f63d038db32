"""bf16 against fp32, per prefix: how far the streamed and packed values drift from a bf16 full recompute.

  python benchmarks/bench_bf16.py [--quick] [--json PATH] [--raw-frames 512] [--model mid]

One random model, its fp32 weights and the same weights cast to bf16. A 30 fps synthetic video sampled at 2 fps,
the reference implementation's 15 prefixes (bench_curve.py). Per prefix, log p(True) four ways in bf16 (full
recompute, streamed: one pass per prefix on the cache, packed: the whole curve in one pass) and the fp32 full
recompute, which every bf16 figure is compared with too. Random weights: the values mean nothing, their
differences do.

Then where a bf16 difference comes from: the vision tower's output for the first frame pair encoded alone and
encoded together with every other pair of the episode (the full recompute encodes all at once, the streamed path a
pair or two at a time), and the same for the language model's keys of the first pair, computed alone or in one
pass with the whole episode.
"""
from __future__ import annotations

import argparse
import copy

import torch
from bench_curve import _fed
from common import add_common_args, describe, finish, load_backend, setup, synthetic_video

from topreward.model.backend import Qwen3VLBackend
from topreward.scoring.packed import score_prefixes


def as_bf16(backend: Qwen3VLBackend) -> Qwen3VLBackend:
    """The same weights in bfloat16, on a backend of their own."""
    model = copy.deepcopy(backend.model).to(torch.bfloat16)
    return Qwen3VLBackend(model, backend.processor, backend.name + " (bf16 cast)")


def per_prefix(fp32: Qwen3VLBackend, bf16: Qwen3VLBackend, video: list) -> list[dict]:
    reference, lengths = _fed(fp32, video, 2.0)
    lengths = sorted(set(lengths))
    truth = {n: reference.full_recompute(n).log_prob_true for n in lengths}
    full_scorer, _ = _fed(bf16, video, 2.0)
    full = {n: full_scorer.full_recompute(n).log_prob_true for n in lengths}
    stream_scorer, _ = _fed(bf16, video, 2.0)
    streamed = {n: stream_scorer.score(n).log_prob_true for n in lengths}
    packed_scorer, _ = _fed(bf16, video, 2.0)
    packed = {s.num_frames: s.log_prob_true for s in score_prefixes([(packed_scorer, lengths)])[0]}
    rows = []
    for n in lengths:
        rows.append({"prefix": n, "fp32_full": truth[n], "bf16_full": full[n], "bf16_streamed": streamed[n],
                     "bf16_packed": packed[n], "full_vs_fp32": full[n] - truth[n],
                     "streamed_vs_bf16_full": streamed[n] - full[n], "packed_vs_bf16_full": packed[n] - full[n],
                     "streamed_vs_fp32": streamed[n] - truth[n], "packed_vs_fp32": packed[n] - truth[n]})
    return rows


@torch.inference_mode()
def where(bf16: Qwen3VLBackend, video: list) -> dict:
    """Max |difference| of the first pair's vision output and first-layer keys, alone vs with the whole episode."""
    scorer, _ = _fed(bf16, video, 2.0)
    frames = list(scorer.schedule.frames[:2 * (scorer.num_frames // 2)])
    visual = bf16.model.model.visual
    alone_pixels, alone_grid = bf16.encode_pairs(frames[:2])
    all_pixels, all_grid = bf16.encode_pairs(frames)
    alone = visual(alone_pixels, grid_thw=alone_grid).pooler_output
    together = visual(all_pixels, grid_thw=all_grid).pooler_output[:len(alone)]
    vision = (alone.float() - together.float()).abs().max().item()
    scale = alone.float().abs().max().item()
    # The language model: the first pair's keys in layer 0 and the last layer, from a pass of that pair alone and
    # from one pass over every pair.
    ids, _ = scorer.complete_pairs(0, len(frames) // 2)
    first, _ = scorer.complete_pairs(0, 1)
    caches = []
    for chunk, pixels, grid in ((first, alone_pixels, alone_grid), (ids, all_pixels, all_grid)):
        cache = bf16.new_cache()
        bf16.forward(chunk, 0, cache, pixels, grid)
        caches.append(cache)
    keys = {}
    for name, layer in (("first_layer", 0), ("last_layer", -1)):
        a = caches[0].layers[layer].keys[0, :, :len(first)].float()
        b = caches[1].layers[layer].keys[0, :, :len(first)].float()
        keys[name] = {"max_abs_diff": (a - b).abs().max().item(), "max_abs": a.abs().max().item()}
    return {"pairs": len(frames) // 2, "vision_max_abs_diff": vision, "vision_max_abs": scale, "keys": keys}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--raw-frames", type=int, default=512)
    args = parser.parse_args(argv)
    setup(args)
    fp32 = load_backend(args.model, args.device, "float32")
    bf16 = as_bf16(fp32)
    print(describe(fp32))
    video = synthetic_video(64 if args.quick else args.raw_frames)
    rows = per_prefix(fp32, bf16, video)
    print(f"{'prefix':>6} {'fp32 full':>10} {'bf16 full':>10} {'streamed':>10} {'packed':>10} "
          f"{'full-fp32':>10} {'str-full':>10} {'pack-full':>10} {'str-fp32':>10} {'pack-fp32':>10}")
    for r in rows:
        print(f"{r['prefix']:6d} {r['fp32_full']:10.4f} {r['bf16_full']:10.4f} {r['bf16_streamed']:10.4f} "
              f"{r['bf16_packed']:10.4f} {r['full_vs_fp32']:10.4f} {r['streamed_vs_bf16_full']:10.4f} "
              f"{r['packed_vs_bf16_full']:10.4f} {r['streamed_vs_fp32']:10.4f} {r['packed_vs_fp32']:10.4f}")
    found = where(bf16, video)
    keys = found["keys"]
    print(f"first pair, alone vs with all {found['pairs']} pairs: vision output max |diff| "
          f"{found['vision_max_abs_diff']:.4g} (values up to {found['vision_max_abs']:.3g}); keys, first layer "
          f"{keys['first_layer']['max_abs_diff']:.4g}, last layer {keys['last_layer']['max_abs_diff']:.4g}")
    finish(args, {"benchmark": "bf16", "model": describe(fp32), "rows": rows, "where": found})


if __name__ == "__main__":
    main()
