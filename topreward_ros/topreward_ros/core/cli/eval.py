"""`topreward eval SOURCE --out DIR`: score a lab's recorded episodes, summarize, calibrate success_threshold.

Also the loop `topreward label` runs: progress bars, one line per finished or skipped episode, resume.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from ..offline.episode import Episode, Skipped, SourceError
from ..offline.evaluate import EpisodeLog, Outcome, ScoringConfig, evaluate, select
from ..offline.readers import FORMATS, SourceOptions, detect_format, read_source
from .common import (
    UsageError,
    add_scoring_options,
    check_writable_dir,
    interactive,
    new_scorer,
    prompt_config,
    schedule_config,
)


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="score many recorded episodes: VOC, ROC-AUC, suggested success_threshold, plots")
    p.add_argument("source", type=Path, help="manifest (.jsonl/.csv), LeRobot dataset folder, ROS 2 bag (or folder "
                                             "of bags) or a video file")
    p.add_argument("--out", type=Path, required=True, help="folder for episodes.jsonl, summary.json, threshold.yaml, "
                                                           "curves.png, voc.png, roc.png")
    add_source_options(p)
    p.add_argument("--static-check", action="store_true",
                   help="also score the first frame repeated at the same prefix lengths (length bias)")
    add_scoring_options(p)
    p.set_defaults(run=run)


def add_source_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=FORMATS, help="force the source format (default: detected)")
    p.add_argument("--camera", nargs="+", action="extend", metavar="KEY_OR_TOPIC",
                   help="LeRobot camera feature key(s) or bag image topic(s); several are tiled side by side as the "
                        "node tiles them (default: the first video feature / image topic)")
    p.add_argument("--instruction", "-i", help="task instruction where the source has none")
    p.add_argument("--instruction-topic", help="bags: std_msgs/String topic holding the task instruction")
    p.add_argument("--episode-topic", help="bags: topic whose messages (any type) mark episode starts")
    p.add_argument("--episodes", help="which episodes, by position in the source's order: A:B or A,B,C")
    p.add_argument("--resume", action="store_true", help="keep the episodes already scored in --out and do the rest")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no per-episode lines")


def list_episodes(args: argparse.Namespace, selected: bool = True) -> tuple[str, list[Episode | Skipped]]:
    """The (selected) episodes, frames not yet read, and the detected format; exit 2 when there is none."""
    fmt = args.format or detect_format(args.source)
    options = SourceOptions(cameras=args.camera, instruction=args.instruction,
                            instruction_topic=args.instruction_topic, episode_topic=args.episode_topic)
    items = list(read_source(args.source, fmt, options))
    try:
        items = select(items, args.episodes if selected else None)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not items:
        raise SourceError(f"{args.source} holds no episode" + (f" in --episodes {args.episodes}" if args.episodes
                                                                else ""))
    return fmt, items


def scoring_config(args: argparse.Namespace, prefixes: int | None = None, static_check: bool = False) -> ScoringConfig:
    return ScoringConfig(schedule=schedule_config(args), prompt=prompt_config(args), prefixes=prefixes,
                         tau=args.tau, delta_max=args.delta_max, static_check=static_check,
                         cameras=tuple(args.camera or ()))


def check_resumable(log: EpisodeLog, config: ScoringConfig, model: str) -> None:
    for curve in log.load():
        if curve.settings != config.settings() or curve.model != model:
            raise UsageError(f"{log.path} was scored with other settings or another model ({curve.model}); "
                             "use another --out or run without --resume")


def run_episodes(args: argparse.Namespace, items: list[Episode | Skipped], log: EpisodeLog, config: ScoringConfig,
                 after_each: Callable[[Outcome], None] = lambda outcome: None) -> Outcome:
    """The shared loop: score, print one line per episode, keep the caller's files up to date."""
    from tqdm import tqdm

    from ..offline.summary import episode_line, table_header

    if args.resume:
        check_resumable(log, config, args.model)
    show = not args.quiet
    bars = not args.quiet and interactive()
    episodes_bar = tqdm(total=len(items), desc="episodes", unit="ep", disable=not bars, position=0)
    prefix_bar = tqdm(desc="prefixes", unit="prefix", disable=not bars, position=1, leave=False)
    header_printed = False
    running = Outcome()

    def on_event(kind: str, value) -> None:
        nonlocal header_printed
        episodes_bar.update()
        prefix_bar.reset()
        if kind == "skipped":
            running.skipped.append(value)
            print(f"topreward: skipped {value.key} ({value.source}): {value.reason}", file=sys.stderr, flush=True)
        else:
            if kind == "done":
                running.curves.append(value)
            if show and kind == "done":
                if not header_printed:
                    tqdm.write(table_header(config.static_check))
                    header_printed = True
                tqdm.write(episode_line(value))
        after_each(running)

    try:
        outcome = evaluate(items, log, config, lambda: new_scorer(args), resume=args.resume, on_event=on_event,
                           on_prefix=lambda n: prefix_bar.update())
    finally:
        prefix_bar.close()
        episodes_bar.close()
    if outcome.resumed and show:
        print(f"resumed: {outcome.resumed} episode(s) already in {log.path}")
    return outcome


def run(args: argparse.Namespace) -> int:
    from ..offline.plots import write_plots
    from ..offline.summary import summarize, summary_lines, write_summary

    fmt, items = list_episodes(args)
    check_writable_dir(args.out)
    config = scoring_config(args, args.prefixes, args.static_check)
    log = EpisodeLog(args.out / "episodes.jsonl")
    done_before = log.load() if args.resume else []

    def save(outcome: Outcome) -> None:
        # Resumed curves first, in the order they were scored: what is on disk always matches episodes.jsonl.
        curves = done_before + [c for c in outcome.curves if c.key not in {d.key for d in done_before}]
        write_summary(args.out, summarize(curves, outcome.skipped, str(args.source), fmt))

    outcome = run_episodes(args, items, log, config, after_each=save)
    curves = log.load()
    summary = summarize(curves, outcome.skipped, str(args.source), fmt)
    write_summary(args.out, summary)
    write_plots(args.out, curves, summary)
    if not args.quiet or outcome.interrupted:
        for line in summary_lines(summary):
            print(line)
        print(f"wrote {args.out}/episodes.jsonl, summary.json" + (", threshold.yaml" if (
            summary["success_detection"]["suggested_threshold"] is not None) else "") + ", curves.png, voc.png"
            + (", roc.png" if summary["success_detection"]["roc_auc"] is not None else ""))
    if outcome.interrupted:
        print(f"interrupted: {len(curves)} episode(s) kept; rerun with --resume to continue", file=sys.stderr)
        return 130
    if not curves:
        print("topreward: error: no episode could be scored", file=sys.stderr)
        return 2
    return 0
