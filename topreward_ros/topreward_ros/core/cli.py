"""`topreward`: score recorded robot videos with TOPReward from the command line."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from .backend import ModelLoadError, Qwen3VLBackend
from .curve import Curve, prefix_lengths, score_curve
from .prompt import DEFAULT_PREFIX, DEFAULT_SUFFIX, PromptConfig
from .schedule import FrameSchedule, resize_frame
from .scorer import StreamingScorer
from .tiny_model import TINY_MODEL_NAME, TINY_WARNING
from .types import DEFAULT_MODEL, ModelConfig, ScheduleConfig
from .video import VideoReadError, read_frames


class UsageError(Exception):
    """Bad input: reported as one line, exit status 2."""


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _prefix_count(text: str) -> int | None:
    if text == "all":
        return None
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 or 'all', got {text}")
    return value


def _frame_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        if len(parts) not in (1, 2):
            raise ValueError
        h, w = (int(parts[0]), int(parts[-1]))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH or SIZE, got {text}") from None
    return h, w


def _check_output(path: Path | None, plot: bool = False) -> None:
    """Fail before any scoring if an output could not be written afterwards."""
    if path is None:
        return
    if path.is_dir():
        raise UsageError(f"{path} is a directory; give a file name")
    if plot:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        formats = FigureCanvasAgg.get_supported_filetypes()
        if path.suffix.lstrip(".").lower() not in formats:
            raise UsageError(f"cannot plot to {path.name}: use one of .{', .'.join(sorted(formats))}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the folder of {path}: {exc.strerror}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="topreward", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    score = sub.add_parser("score", help="score one video: log p(True) at K prefixes, progress, VOC, rewards")
    score.add_argument("video", type=Path, help="video file (anything FFmpeg decodes: mp4, mkv, webm, ...)")
    score.add_argument("--instruction", "-i", required=True, help="task instruction, e.g. 'put the cube in the box'")
    score.add_argument("--model", default=DEFAULT_MODEL,
                       help=f"hub id or local Qwen3-VL directory (default {DEFAULT_MODEL}); "
                            "'tiny-random' = meaningless random weights, for smoke tests only")
    score.add_argument("--sample-fps", type=_positive_float, default=2.0, help="frames per second given to the model")
    score.add_argument("--prefixes", type=_prefix_count, default=15,
                       help="number of prefixes to score, spread over the sampled frames, or 'all' (default 15)")
    score.add_argument("--frame-size", type=_frame_size, default=(256, 256),
                       help="HEIGHTxWIDTH every frame is resized to, multiple of 32 (default 256x256)")
    score.add_argument("--max-frames", type=int, default=64,
                       help="cap on sampled frames; longer videos are sampled at a halved rate (default 64)")
    score.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    score.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16, float16")
    score.add_argument("--attn", default="auto", help="attention implementation: auto, sdpa, flash_attention_2, eager")
    score.add_argument("--prompt-prefix", default=DEFAULT_PREFIX, help="text between the video and the instruction")
    score.add_argument("--prompt-suffix", default=DEFAULT_SUFFIX, help="text between the instruction and ' True'")
    score.add_argument("--chat-template", action="store_true", help="wrap the prompt in the chat turn (paper ablation)")
    score.add_argument("--tau", type=float, default=2.0, help="Eq. 3 scale tau (default 2.0)")
    score.add_argument("--delta-max", type=float, default=2.0, help="Eq. 3 clip delta_max (default 2.0)")
    score.add_argument("--out", type=Path, help="write the curve as JSON here")
    score.add_argument("--plot", type=Path, help="write a PNG plot here")
    score.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no table")
    return parser


def _progress_bar(total: int, quiet: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="prefix", disable=quiet or not sys.stderr.isatty(), leave=False)


def _thumbnails(frames: list[np.ndarray], count: int = 8, height: int = 96) -> list[np.ndarray]:
    picks = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    h, w = frames[0].shape[:2]
    return [resize_frame(frames[i], (height, max(1, round(w * height / h)))) for i in picks]


def _print_table(curve: Curve) -> None:
    print(f"{'prefix':>6} {'frames':>6} {'t [s]':>7} {'log p(True)':>12} {'log p(False)':>13} {'p_true':>7} "
          f"{'progress':>8} {'reward':>7}")
    for k, n in enumerate(curve.prefix_lengths):
        print(f"{k:>6} {n:>6} {curve.prefix_times[k]:>7.2f} {curve.log_prob_true[k]:>12.4f} "
              f"{curve.log_prob_false[k]:>13.4f} {curve.p_true[k]:>7.3f} {curve.normalized[k]:>8.3f} "
              f"{curve.reward[k]:>7.3f}")
    voc = "undefined (constant curve)" if np.isnan(curve.voc) else f"{curve.voc:.4f}"
    print(f"VOC {voc}  |  model {curve.model}  |  sampled at {curve.sample_fps:g} fps")


def run_score(args: argparse.Namespace) -> int:
    if not args.instruction.strip():
        raise UsageError("--instruction must not be empty")
    try:
        schedule = ScheduleConfig(sample_fps=args.sample_fps, frame_size=args.frame_size, max_frames=args.max_frames)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    _check_output(args.out)
    _check_output(args.plot, plot=True)
    # The video is read before the model loads: a bad file fails in a second, not after minutes.
    sampled = FrameSchedule(schedule)
    for frame, t in read_frames(args.video, wants=sampled.wants):
        sampled.offer(frame, t)
    if len(sampled) < 2:
        raise UsageError(f"{args.video} gives {len(sampled)} sampled frame(s) at {args.sample_fps:g} fps; "
                         "at least one frame pair (2) is needed: use a longer video or a higher --sample-fps")
    if args.model == TINY_MODEL_NAME:
        logging.getLogger("topreward").warning(TINY_WARNING)
    backend = Qwen3VLBackend.load(ModelConfig(model=args.model, device=args.device, dtype=args.dtype,
                                              attn_implementation=args.attn))
    try:
        scorer = StreamingScorer(backend, args.instruction, schedule, PromptConfig(
            prefix=args.prompt_prefix, suffix=args.prompt_suffix, chat_template=args.chat_template))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    scorer.reset(frames=sampled)
    lengths = prefix_lengths(scorer.num_frames, args.prefixes)
    start = time.perf_counter()
    with _progress_bar(len(lengths), args.quiet, "scoring") as bar:
        curve = score_curve(scorer, lengths, args.tau, args.delta_max, on_prefix=lambda n: bar.update())
    seconds = time.perf_counter() - start
    if not args.quiet:
        _print_table(curve)
        print(f"{len(lengths)} prefixes of {scorer.num_frames} sampled frames in {seconds:.2f} s")
    try:
        if args.out:
            args.out.write_text(json.dumps(curve.to_json(), indent=1))
        if args.plot:
            from .plot import plot_curve

            plot_curve(curve, args.plot, _thumbnails(scorer.schedule.frames))
    except OSError as exc:
        raise UsageError(f"cannot write {exc.filename}: {exc.strerror}") from None
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="topreward: %(levelname)s: %(message)s", level=logging.WARNING)
    try:
        return run_score(args)
    except (UsageError, VideoReadError, ModelLoadError) as exc:
        print(f"topreward: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
