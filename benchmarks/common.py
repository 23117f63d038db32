"""Shared pieces of the benchmark scripts: model shapes, synthetic video, a model meter, the machine, JSON output.

Not a test helper: the scripts print tables for people and JSON for tools. Random weights everywhere, so the
values are meaningless; what is measured is time, work (tokens, passes, frames) and cached-vs-recompute exactness.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from topreward.cli.allocator import keep_freed_memory
from topreward.model.backend import Qwen3VLBackend
from topreward.model.tiny import TINY_MODEL_NAME, random_model, random_processor
from topreward.scoring.scorer import StreamingScorer
from topreward.types import ModelConfig, ScheduleConfig

INSTRUCTION = "push the red block to the right"
FRAME_SIZE = (256, 256)  # the reference's ~256x256 frames: 64 LLM tokens per frame pair

_ROPE = {"rope_type": "default", "mrope_section": [24, 20, 20], "mrope_interleaved": True}
# Random models of known shapes, built in memory (no checkpoint on disk): name -> (text, vision, description).
SHAPES: dict[str, tuple[dict, dict, str]] = {
    # The mid-sized model: big enough that compute, not Python overhead, dominates on a CPU.
    "mid": (
        dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=8,
             num_key_value_heads=4, head_dim=128, rope_scaling=_ROPE),
        dict(depth=4, hidden_size=256, intermediate_size=1024, num_heads=4, patch_size=16, spatial_merge_size=2,
             out_hidden_size=1024, deepstack_visual_indexes=[1, 2, 3]),
        "random Qwen3-VL, text 1024x8 layers (8 heads, 4 KV, head_dim 128), vision 256x4",
    ),
    # Qwen3-VL-8B-Instruct's shapes (config.json of the release).
    "8b-shaped": (
        dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
             num_key_value_heads=8, head_dim=128, rope_scaling=_ROPE, tie_word_embeddings=False),
        dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, out_hidden_size=4096,
             deepstack_visual_indexes=[8, 16, 24], num_position_embeddings=2304),
        "random Qwen3-VL with Qwen3-VL-8B's shapes",
    ),
    # Qwen3-VL-2B-Instruct's shapes.
    "2b-shaped": (
        dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
             num_key_value_heads=8, head_dim=128, rope_scaling=_ROPE, tie_word_embeddings=True),
        dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, out_hidden_size=2048,
             deepstack_visual_indexes=[5, 11, 17], num_position_embeddings=2304),
        "random Qwen3-VL with Qwen3-VL-2B's shapes",
    ),
}


def add_common_args(parser: argparse.ArgumentParser, default_model: str = "mid") -> None:
    parser.add_argument("--model", default=default_model,
                        help=f"{', '.join(SHAPES)}, {TINY_MODEL_NAME}, a checkpoint directory or a hub id")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the reference figures used 2)")
    parser.add_argument("--quick", action="store_true", help="a reduced run (under a minute on a CPU), same keys")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--default-allocator", action="store_true",
                        help="leave glibc's malloc as it is (the topreward commands keep freed memory for reuse)")


def load_backend(name: str, device: str = "cpu", dtype: str = "float32") -> Qwen3VLBackend:
    """A named random shape built in memory, or anything Qwen3VLBackend.load accepts."""
    if name not in SHAPES:
        return Qwen3VLBackend.load(ModelConfig(model=name, device=device, dtype=dtype))
    from topreward.model.resolve import resolve_device, resolve_dtype

    text, vision, _ = SHAPES[name]
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype)
    try:
        with torch.device(torch_device):  # a GPU-sized model is initialised on the GPU, not in host memory
            model = random_model(text, vision)
    finally:
        torch.set_default_dtype(previous)
    return Qwen3VLBackend(model, random_processor(), name)


def synthetic_video(count: int, size: tuple[int, int] = (240, 320), seed: int = 0) -> list[np.ndarray]:
    """A red block sliding over a noisy background: every frame differs (RGB uint8, (H, W, 3))."""
    rng = np.random.default_rng(seed)
    height, width = size
    frames = []
    for k in range(count):
        f = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
        x = int(k * (width - 48) / max(count - 1, 1))
        f[height // 2 - 24:height // 2 + 24, x:x + 48] = (220, 40, 40)
        frames.append(f)
    return frames


def new_scorer(backend: Qwen3VLBackend, sample_fps: float = 2.0, max_frames: int = 4096) -> StreamingScorer:
    return StreamingScorer(backend, INSTRUCTION, ScheduleConfig(sample_fps, FRAME_SIZE, max_frames))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Meter:
    """Model work and time seen through forward hooks on the real modules (nothing is replaced)."""

    passes: int = 0
    tokens: int = 0  # LLM input tokens
    vision_calls: int = 0
    vision_frames: int = 0  # frames through the vision encoder (temporal patches x 2)
    model_s: float = 0.0  # whole forward passes, vision encoder included
    vision_s: float = 0.0
    wall_s: float = 0.0  # everything inside the measured block (processor, Python, cache bookkeeping too)
    steps_s: list[float] = field(default_factory=list)

    @property
    def llm_s(self) -> float:
        return self.model_s - self.vision_s

    @property
    def other_s(self) -> float:
        """Outside the model: frame resize, the video processor, prompt ids, rope index, cache crop."""
        return self.wall_s - self.model_s


@contextmanager
def metered(backend: Qwen3VLBackend) -> Iterator[Meter]:
    """Count and time every model forward pass and vision-encoder call inside the block."""
    meter = Meter()
    device = backend.device
    starts: dict[str, float] = {}

    def pre(key: str) -> Callable:
        def hook(module, args, kwargs):
            sync(device)
            starts[key] = time.perf_counter()
            if key == "model":
                meter.passes += 1
                meter.tokens += int(kwargs["input_ids"].shape[1])
            else:
                meter.vision_calls += 1
                grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
                meter.vision_frames += 2 * int(grid[:, 0].sum())
        return hook

    def post(key: str) -> Callable:
        def hook(module, args, kwargs, output):
            sync(device)
            elapsed = time.perf_counter() - starts.pop(key)
            if key == "model":
                meter.model_s += elapsed
            else:
                meter.vision_s += elapsed
        return hook

    handles = []
    for key, module in (("model", backend.model), ("vision", backend.model.model.visual)):
        handles.append(module.register_forward_pre_hook(pre(key), with_kwargs=True))
        handles.append(module.register_forward_hook(post(key), with_kwargs=True))
    sync(device)
    start = time.perf_counter()
    try:
        yield meter
    finally:
        sync(device)
        meter.wall_s = time.perf_counter() - start
        for h in handles:
            h.remove()


@contextmanager
def peak_memory(device: torch.device) -> Iterator[dict]:
    """The block's peak memory above what was in use when it began, in MB (`peak_mb` of the dict yielded).

    GPU memory on a GPU (torch's allocator), else the process's resident memory sampled every 5 ms (a short peak
    between samples is missed), after handing freed heap memory back to the system (glibc's malloc_trim), so that
    memory a previous run freed but kept does not hide this run's.
    """
    result = {"peak_mb": 0.0}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        try:
            yield result
        finally:
            torch.cuda.synchronize(device)
            result["peak_mb"] = (torch.cuda.max_memory_allocated(device) - before) / 2**20
        return
    import ctypes
    import threading

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the figure is then a lower bound
        pass
    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    before, peak, done = rss(), [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], rss())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        done.set()
        thread.join()
        result["peak_mb"] = max(peak[0], rss()) / 2**20 - before / 2**20


def timed_step(meter: Meter, device: torch.device, fn: Callable):
    """Run `fn`, appending its wall time to `meter.steps_s`."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    meter.steps_s.append(time.perf_counter() - start)
    return out


def median_ms(values: list[float]) -> float:
    return 1000.0 * statistics.median(values) if values else float("nan")


def limit_tokens(scorer: StreamingScorer, lengths: list[int]) -> int:
    """The physical limit for scoring `lengths` (in this order, each once) on a prefix cache.

    Every complete pair of the longest prefix prefilled once, every odd prefix's self-pair once, and the
    question once per scored prefix: all that any exact cached implementation must run through the LLM.
    """
    longest = max(lengths)
    pairs = sum(len(scorer._pair_ids(k, 2 * k + 1)) for k in range(longest // 2))
    self_pairs = sum(len(scorer._pair_ids(n // 2, n - 1)) for n in lengths if n % 2)
    return pairs + self_pairs + len(lengths) * len(scorer.prompt.question(scorer.instruction))


def max_abs_diff(a: list, b: list) -> float:
    return max(max(abs(x.log_prob_true - y.log_prob_true), abs(x.log_prob_false - y.log_prob_false))
               for x, y in zip(a, b, strict=True))


def machine() -> dict:
    """What the figures were measured on."""
    cpu = platform.processor() or "unknown"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except OSError:
        pass
    import transformers

    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": os.cpu_count(), "cpu": cpu, "load_avg": [round(x, 2) for x in os.getloadavg()],
        "torch": torch.__version__, "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def describe(backend: Qwen3VLBackend) -> str:
    text = backend.model.config.get_text_config()
    return (f"{backend.name}: text {text.hidden_size}x{text.num_hidden_layers} layers, "
            f"{sum(p.numel() for p in backend.model.parameters()) / 1e6:.0f} M parameters, "
            f"{backend.dtype} on {backend.device}")


def setup(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    args.kept_freed_memory = not args.default_allocator and keep_freed_memory()  # as the topreward commands do


def finish(args: argparse.Namespace, result: dict) -> None:
    """Record the machine (its load at the end too) and write the JSON."""
    result["machine"] = machine()
    result["machine"]["malloc_keeps_freed_memory"] = getattr(args, "kept_freed_memory", False)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """columns: (key, header, format)."""
    widths = [max(len(h), *(len(format(r[k], f)) for r in rows)) for k, h, f in columns]
    print("  ".join(h.rjust(w) for (_, h, _), w in zip(columns, widths, strict=True)))
    for r in rows:
        print("  ".join(format(r[k], f).rjust(w) for (k, _, f), w in zip(columns, widths, strict=True)))
