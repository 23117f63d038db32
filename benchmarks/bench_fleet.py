"""Several robots, one model: each round's new prefixes in one batched pass (score_batch) vs one robot after another.

  python benchmarks/bench_fleet.py [--quick] [--json PATH] [--model mid|tiny-random|...] [--robots 1 2 4 8]
  python benchmarks/bench_fleet.py --device cuda --dtype bfloat16 --model 8b-shaped   # one GPU call

N robots each stream their own video (different frames and instructions) at 2 fps; in every round each
robot gets one new sampled frame and its prefix so far is scored. Two fleets of identical scorers see the
same frames: one is scored with score_batch (one forward pass for all N), the other robot by robot with
scorer.score(). The two steps of a round run back to back, in alternating order, so a neighbour's load on
a shared machine falls on both alike. Reported per N: aggregate prefixes/s, prefixes/s per robot, time per
round, forward passes per round and the padding share of the batched pass, max |batched - unbatched| of
log p, and memory: parameter bytes, each robot's KV cache at the end, process RSS after loading the model,
and one process serving N robots (model + N caches) vs N separate nodes (N x (model + cache)).
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from common import (
    FRAME_SIZE,
    add_common_args,
    describe,
    finish,
    load_backend,
    max_abs_diff,
    median_ms,
    print_table,
    setup,
    sync,
    synthetic_video,
)

from topreward.frames.image_conversion import resize_image
from topreward.scoring.batch import score_batch
from topreward.scoring.scorer import StreamingScorer
from topreward.types import ScheduleConfig

INSTRUCTIONS = ("push the red block to the right", "open the top drawer", "stack the green cup on the plate",
                "wipe the table")
MB = 2**20


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def parameter_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def cache_bytes(scorer: StreamingScorer) -> int:
    layers = scorer._cache.layers
    return sum(t.numel() * t.element_size() for layer in layers if layer.is_initialized
               for t in (layer.keys, layer.values))


def fleet(backend, n: int) -> list[StreamingScorer]:
    schedule = ScheduleConfig(2.0, FRAME_SIZE, 4096)
    return [StreamingScorer(backend, INSTRUCTIONS[i % len(INSTRUCTIONS)], schedule) for i in range(n)]


class PassCounter:
    """Forward passes of the whole model and the token slots they ran (padding included)."""

    def __init__(self, backend) -> None:
        self.passes = 0
        self.slots = 0
        self._handle = backend.model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs) -> None:
        self.passes += 1
        self.slots += int(kwargs["input_ids"].numel())

    def close(self) -> None:
        self._handle.remove()


def run_fleet(backend, videos: list[list], rounds: int) -> dict:
    """N robots over `rounds` rounds, batched and unbatched; the figures of one N."""
    n = len(videos)
    batched, alone = fleet(backend, n), fleet(backend, n)
    device = backend.device
    steps = {"batched": [], "unbatched": []}
    passes = {"batched": 0, "unbatched": 0}
    slots = {"batched": 0, "unbatched": 0}
    peak_mb = {"batched": 0.0, "unbatched": 0.0}
    scores = {"batched": [], "unbatched": []}

    def step(mode: str) -> None:
        scorers = batched if mode == "batched" else alone
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        counter = PassCounter(backend)
        sync(device)
        start = time.perf_counter()
        try:
            if mode == "batched":
                out = score_batch([(s, None) for s in scorers])
            else:
                out = [s.score() for s in scorers]
            sync(device)
        finally:
            counter.close()
        steps[mode].append(time.perf_counter() - start)
        passes[mode] += counter.passes
        slots[mode] += counter.slots
        scores[mode] += out
        if device.type == "cuda":
            peak_mb[mode] = max(peak_mb[mode], torch.cuda.max_memory_allocated(device) / MB)

    for k in range(rounds):
        for robot, video in enumerate(videos):
            assert batched[robot].append(video[k], 0.5 * k) and alone[robot].append(video[k], 0.5 * k)
        for mode in (("batched", "unbatched") if k % 2 == 0 else ("unbatched", "batched")):
            step(mode)
    real_tokens = sum(s.work.tokens_prefilled for s in batched)
    assert real_tokens == sum(s.work.tokens_prefilled for s in alone)
    kv = [cache_bytes(s) for s in batched]
    assert kv == [cache_bytes(s) for s in alone]
    row = {"robots": n, "rounds": rounds, "prefixes": n * rounds,
           "max_abs_diff": max_abs_diff(scores["batched"], scores["unbatched"]),
           "kv_bytes_per_robot": statistics.mean(kv), "kv_bytes_per_robot_max": max(kv),
           "cache_tokens_per_robot": statistics.mean(s._cache.get_seq_length() for s in batched)}
    for mode in ("batched", "unbatched"):
        total = sum(steps[mode])
        row[mode] = {
            "total_s": total,
            "prefixes_per_s": n * rounds / total,
            "prefixes_per_s_per_robot": rounds / total,
            "round_ms_median": median_ms(steps[mode]),
            "round_ms_last_quarter": median_ms(steps[mode][-max(rounds // 4, 1):]),
            "passes_per_round": passes[mode] / rounds,
            # Token slots the model ran per real token: what padding costs the batched pass.
            "slots_per_token": slots[mode] / real_tokens,
            "rounds_ms": [round(1000.0 * x, 1) for x in steps[mode]],
        }
        if device.type == "cuda":
            row[mode]["gpu_peak_mb"] = peak_mb[mode]
    row["speedup"] = row["unbatched"]["total_s"] / row["batched"]["total_s"]
    return row


def memory_figures(row: dict, model_bytes: int, rss_after_load_mb: float) -> dict:
    n, kv = row["robots"], row["kv_bytes_per_robot"]
    return {
        "model_mb": model_bytes / MB, "kv_mb_per_robot": kv / MB, "rss_mb_after_load": rss_after_load_mb,
        "one_process_mb": (model_bytes + n * kv) / MB, "separate_nodes_mb": n * (model_bytes + kv) / MB,
        # The same with the whole process (torch, processor, tokenizer) in place of the parameters alone.
        "one_process_rss_mb": rss_after_load_mb + n * kv / MB,
        "separate_nodes_rss_mb": n * (rss_after_load_mb + kv / MB),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--robots", type=int, nargs="+", help="fleet sizes N (default 1 2 4 8)")
    parser.add_argument("--frames", type=int, help="rounds = sampled frames per robot (default 24, quick 2)")
    args = parser.parse_args(argv)
    setup(args)
    sizes = args.robots or [1, 2, 4, 8]
    rounds = args.frames or (2 if args.quick else 24)
    backend = load_backend(args.model, args.device, args.dtype)
    rss_after_load = rss_mb()
    model_bytes = parameter_bytes(backend.model)
    print(describe(backend), f"; RSS after load {rss_after_load:.0f} MB", flush=True)
    videos = [[resize_image(f, FRAME_SIZE) for f in synthetic_video(rounds, seed=robot)]
              for robot in range(max(sizes))]
    warm = 1 if args.quick else 2
    run_fleet(backend, [v[:warm] for v in videos[:2]], warm)  # warm-up: first calls at new shapes pick kernels

    results, rows = {}, []
    for n in sizes:
        row = run_fleet(backend, videos[:n], rounds)
        row["memory"] = memory_figures(row, model_bytes, rss_after_load)
        results[str(n)] = row
        b, u, mem = row["batched"], row["unbatched"], row["memory"]
        rows.append({"N": n, "bps": b["prefixes_per_s"], "ups": u["prefixes_per_s"],
                     "brr": b["prefixes_per_s_per_robot"], "urr": u["prefixes_per_s_per_robot"],
                     "bms": b["round_ms_median"], "ums": u["round_ms_median"], "x": row["speedup"],
                     "bp": b["passes_per_round"], "up": u["passes_per_round"], "pad": b["slots_per_token"],
                     "diff": row["max_abs_diff"], "kv": mem["kv_mb_per_robot"], "one": mem["one_process_mb"],
                     "sep": mem["separate_nodes_mb"]})
        print(f"N={n}: batched {b['total_s']:.1f} s, unbatched {u['total_s']:.1f} s ({row['speedup']:.2f}x), "
              f"max |diff| {row['max_abs_diff']:.1e}", flush=True)
    print(f"\n{rounds} rounds (sampled frames per robot), batched | unbatched; model {model_bytes / MB:.0f} MB, "
          f"RSS after load {rss_after_load:.0f} MB:")
    print_table(rows, COLUMNS)
    finish(args, {"benchmark": "fleet", "model": describe(backend), "frame_size": list(FRAME_SIZE),
                  "robots": sizes, "rounds": rounds, "quick": args.quick, "model_bytes": model_bytes,
                  "rss_mb_after_load": rss_after_load, "per_N": results})


COLUMNS = [("N", "N", "d"), ("bps", "prefix/s", ".2f"), ("ups", "unb prefix/s", ".2f"),
           ("brr", "per robot/s", ".2f"), ("urr", "unb per robot/s", ".2f"), ("bms", "round ms", ".0f"),
           ("ums", "unb round ms", ".0f"), ("x", "ratio", ".2f"), ("bp", "passes", ".0f"), ("up", "unb passes", ".0f"),
           ("pad", "slots/token", ".2f"), ("diff", "max|diff|", ".1e"), ("kv", "KV MB/robot", ".1f"),
           ("one", "1 process MB", ".0f"), ("sep", "N nodes MB", ".0f")]


if __name__ == "__main__":
    main()
