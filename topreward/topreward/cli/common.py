"""What the commands share: the one-line usage error, argument types, the scoring options and model loading."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

from topreward.scoring.prompt import DEFAULT_PREFIX, DEFAULT_SUFFIX, PromptConfig
from topreward.types import DEFAULT_MODEL, ModelConfig, ScheduleConfig, frame_size_error


class UsageError(Exception):
    """Bad input: reported as one line, exit status 2."""


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {value}")
    return value


def positive_int(text: str) -> int:
    value = non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected 1 or more, got 0")
    return value


def prefix_count(text: str) -> int | None:
    if text == "all":
        return None
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 or 'all', got {text}")
    return value


def frame_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        if len(parts) not in (1, 2):
            raise ValueError
        h, w = (int(parts[0]), int(parts[-1]))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH or SIZE, got {text}") from None
    if error := frame_size_error((h, w)):  # checked here, before minutes of model loading
        raise argparse.ArgumentTypeError(error)
    return h, w


def add_scoring_options(parser: argparse.ArgumentParser) -> None:
    """Model, sampling and prompt options, the same for every command."""
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"hub id or local Qwen3-VL directory (default {DEFAULT_MODEL}); "
                             "'tiny-random' = meaningless random weights, for smoke tests only")
    parser.add_argument("--revision", default="",
                        help="hub branch, tag or commit of --model (default: the default branch); the commit "
                             "loaded is written into the outputs as model@commit")
    parser.add_argument("--sample-fps", type=positive_float, default=2.0, help="frames per second given to the model")
    parser.add_argument("--prefixes", type=prefix_count, default=15,
                        help="number of prefixes to score, spread over the sampled frames, or 'all' (default 15)")
    parser.add_argument("--frame-size", type=frame_size, default=(256, 256),
                        help="HEIGHTxWIDTH every frame is resized to, multiple of 32 (default 256x256)")
    parser.add_argument("--max-frames", type=int, default=64,
                        help="cap on sampled frames; longer videos are sampled at a halved rate (default 64)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16, float16")
    parser.add_argument("--attn", default="auto", help="attention implementation: auto, sdpa, flash_attention_2, eager")
    parser.add_argument("--batch-tokens", type=non_negative_int, default=None, metavar="N",
                        help="tokens per packed forward pass, the memory bound of scoring (default 4096 on a CPU, "
                             "16384 on a GPU); 0 scores one prefix per pass, as the node does. The values are the "
                             "same either way; packing needs sdpa attention")
    parser.add_argument("--prompt-prefix", default=DEFAULT_PREFIX, help="text between the video and the instruction")
    parser.add_argument("--prompt-suffix", default=DEFAULT_SUFFIX, help="text between the instruction and ' True'")
    parser.add_argument("--chat-template", action="store_true",
                        help="wrap the prompt in the chat turn (paper ablation)")
    parser.add_argument("--tau", type=float, default=2.0, help="Eq. 3 scale tau (default 2.0)")
    parser.add_argument("--delta-max", type=float, default=2.0, help="Eq. 3 clip delta_max (default 2.0)")


def schedule_config(args: argparse.Namespace) -> ScheduleConfig:
    try:
        return ScheduleConfig(sample_fps=args.sample_fps, frame_size=args.frame_size, max_frames=args.max_frames)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def prompt_config(args: argparse.Namespace) -> PromptConfig:
    return PromptConfig(prefix=args.prompt_prefix, suffix=args.prompt_suffix, chat_template=args.chat_template)


def model_config(args: argparse.Namespace) -> ModelConfig:
    return ModelConfig(model=args.model, revision=args.revision, device=args.device, dtype=args.dtype,
                       attn_implementation=args.attn)


def interactive() -> bool:
    """Progress bars only on a terminal: logs and CI get the plain lines."""
    return sys.stderr.isatty()


def check_writable_dir(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {path} is a file; give a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {path}: {exc.strerror}") from None


def add_success_threshold_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--success-threshold", type=float,
                        help="progress videos: draw this success threshold [nats] and mark when the node would "
                             "have reported success (eval: default the threshold it suggests)")


def write_video(args: argparse.Namespace, path: Path, instants: Iterable, curve, threshold: float | None = None) -> int:
    """One progress video of an episode's (views, time) instants, with a progress bar on a terminal; its frames."""
    from tqdm import tqdm

    from topreward.frames.tiling import tile_views
    from topreward.offline.progress_video import write_progress_video

    threshold = args.success_threshold if args.success_threshold is not None else threshold
    duration = curve.frame_times[-1] + 1.0 / curve.sample_fps
    frames = ((views[0] if len(views) == 1 else tile_views(views, _tile_size(views)), t)
              for views, t in instants if views and views[0] is not None)
    with tqdm(desc=f"video {path.name}", unit="frame", disable=args.quiet or not interactive(), leave=False) as bar:
        return write_progress_video(path, frames, curve, duration, threshold, on_frame=bar.update)


def _tile_size(views: list) -> tuple[int, int]:
    """Views side by side at the first view's size each, for display."""
    h, w = next(v.shape[:2] for v in views if v is not None)
    return h, w * len(views)
