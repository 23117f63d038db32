"""`topreward score VIDEO`: one video's TOPReward values at K prefixes, progress, VOC and rewards."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from topreward.cli.common import (
    UsageError,
    add_scoring_options,
    add_success_threshold_option,
    interactive,
    model_config,
    prompt_config,
    schedule_config,
    write_video,
)
from topreward.frames.image_conversion import resize_image
from topreward.frames.schedule import FrameSchedule
from topreward.frames.video import read_frames
from topreward.model.backend import load_model
from topreward.offline.progress_video import video_ours
from topreward.output_files import OutputError, claim, json_with, png_ours, write_atomic
from topreward.scoring.curve import Curve, prefix_lengths, score_curve
from topreward.scoring.scorer import StreamingScorer

CURVE_JSON = json_with("log_prob_true", "prefix_lengths")  # what `--out` writes: it may replace only that


def _check_output(path: Path | None, plot: bool = False, video: bool = False) -> None:
    """Fail before any scoring if an output could not be written afterwards."""
    if path is None:
        return
    if path.is_dir():
        raise UsageError(f"{path} is a directory; give a file name")
    if video and path.suffix.lower() != ".mp4":
        raise UsageError(f"cannot write a progress video to {path.name}: give a .mp4 file")
    if plot:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        formats = FigureCanvasAgg.get_supported_filetypes()
        if path.suffix.lstrip(".").lower() not in formats:
            raise UsageError(f"cannot plot to {path.name}: use one of .{', .'.join(sorted(formats))}")
    try:
        claim(path, video_ours if video else png_ours if plot else CURVE_JSON)
    except OutputError as exc:
        raise UsageError(str(exc)) from None


def add_parser(sub) -> None:
    score = sub.add_parser("score", help="score one video: log p(True) at K prefixes, progress, VOC, rewards")
    score.add_argument("video", type=Path, help="video file (anything FFmpeg decodes: mp4, mkv, webm, ...)")
    score.add_argument("--instruction", "-i", required=True, help="task instruction, e.g. 'put the cube in the box'")
    add_scoring_options(score)
    score.add_argument("--out", type=Path, help="write the curve as JSON here")
    score.add_argument("--plot", type=Path, help="write a PNG plot here")
    score.add_argument("--video", dest="video_out", type=Path,
                       help="write a progress video here (.mp4): the video with the curve drawn up to each frame")
    add_success_threshold_option(score)
    score.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no table")
    score.set_defaults(run=run)


def _thumbnails(frames: list[np.ndarray], count: int = 8, height: int = 96) -> list[np.ndarray]:
    picks = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    h, w = frames[0].shape[:2]
    return [resize_image(frames[i], (height, max(1, round(w * height / h)))) for i in picks]


def _print_table(curve: Curve) -> None:
    print(f"{'prefix':>6} {'frames':>6} {'t [s]':>7} {'log p(True)':>12} {'log p(False)':>13} {'p_true':>7} "
          f"{'progress':>8} {'reward':>7}")
    for k, n in enumerate(curve.prefix_lengths):
        print(f"{k:>6} {n:>6} {curve.prefix_times[k]:>7.2f} {curve.log_prob_true[k]:>12.4f} "
              f"{curve.log_prob_false[k]:>13.4f} {curve.p_true[k]:>7.3f} {curve.normalized[k]:>8.3f} "
              f"{curve.reward[k]:>7.3f}")
    voc = "undefined (constant curve)" if np.isnan(curve.voc) else f"{curve.voc:.4f}"
    print(f"VOC {voc}  |  model {curve.model}  |  sampled at {curve.sample_fps:g} fps")


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from tqdm import tqdm

    from topreward.offline.evaluate import ScoringConfig

    if not args.instruction.strip():
        raise UsageError("--instruction must not be empty")
    schedule = schedule_config(args)
    _check_output(args.out)
    _check_output(args.plot, plot=True)
    _check_output(args.video_out, video=True)
    # The video is read before the model loads: a bad file fails in a second, not after minutes.
    sampled = FrameSchedule(schedule)
    for frame, t in read_frames(args.video, wants=sampled.wants):
        sampled.offer(frame, t)
    if len(sampled) < 2:
        raise UsageError(f"{args.video} gives {len(sampled)} sampled frame(s) at {args.sample_fps:g} fps; "
                         "at least one frame pair (2) is needed: use a longer video or a higher --sample-fps")
    try:
        scorer = StreamingScorer(load_model(model_config(args)), args.instruction, schedule, prompt_config(args))
    except ValueError as exc:  # a frame size this model cannot patch, a prompt that swallows the answer token
        raise UsageError(str(exc)) from None
    scorer.reset(frames=sampled)
    lengths = prefix_lengths(scorer.num_frames, args.prefixes)
    start = time.perf_counter()
    with tqdm(total=len(lengths), desc="scoring", unit="prefix", disable=args.quiet or not interactive(),
              leave=False) as bar:
        curve = score_curve(scorer, lengths, args.tau, args.delta_max, on_prefix=lambda n: bar.update(),
                            max_tokens=args.batch_tokens)
    seconds = time.perf_counter() - start
    # The same record as one line of `topreward eval`'s curves.jsonl.
    settings = ScoringConfig(schedule=schedule, prompt=prompt_config(args), prefixes=args.prefixes).settings()
    curve = replace(curve, key=args.video.name, source=str(args.video), settings=settings)
    if not args.quiet:
        _print_table(curve)
        print(f"{len(lengths)} prefixes of {scorer.num_frames} sampled frames in {seconds:.2f} s")
    try:
        if args.out:
            write_atomic(args.out, json.dumps(curve.to_json(), indent=1), CURVE_JSON)
        if args.plot:
            from topreward.offline.plots import plot_curve

            plot_curve(curve, args.plot, _thumbnails(scorer.schedule.frames))
        if args.video_out:
            write_video(args, args.video_out, (([frame], t) for frame, t in read_frames(args.video)), curve)
    except OutputError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot write {exc.filename}: {exc.strerror}") from None
    return 0
