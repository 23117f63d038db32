"""`topreward eval SOURCE --out DIR`: score a lab's recorded episodes, summarize, calibrate success_threshold.

Also the loop `topreward label` runs: progress bars, one line per finished or skipped episode, resume.
"""
from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from topreward.cli.common import (
    UsageError,
    add_scoring_options,
    add_success_threshold_option,
    check_writable_dir,
    interactive,
    model_config,
    positive_int,
    prompt_config,
    schedule_config,
    write_video,
)
from topreward.offline.distributed import Parts, World, world_from_env
from topreward.offline.episode import Episode, Skipped, SourceError
from topreward.offline.evaluate import CurveLog, Outcome, ScoringConfig, evaluate, select
from topreward.offline.progress_video import video_ours
from topreward.offline.readers import FORMATS, SourceOptions, detect_format, read_source
from topreward.output_files import claim
from topreward.scoring.curve import Curve


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="score many recorded episodes: VOC, ROC-AUC, suggested success_threshold, plots")
    p.add_argument("source", type=Path, help="manifest (.jsonl/.csv), LeRobot dataset folder, ROS 2 bag (or folder "
                                             "of bags), a video file, or a node's record_dir (the values scored "
                                             "online, outcomes as labels: no model is loaded)")
    p.add_argument("--out", type=Path, required=True, help="folder for curves.jsonl, summary.json, threshold.yaml, "
                                                           "curves.png, voc.png, roc.png")
    add_source_options(p)
    p.add_argument("--static-check", action="store_true",
                   help="also score the first frame repeated at the same prefix lengths (length bias)")
    p.add_argument("--videos", action="store_true",
                   help="also write a progress video per episode to DIR/videos/ (the episode's video with its curve)")
    add_success_threshold_option(p)
    p.add_argument("--rescore", action="store_true",
                   help="node records: score the recorded episode videos (record_video) again with this command's "
                        "model and settings, instead of reading the values scored online")
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
    p.add_argument("--batch-episodes", type=positive_int, default=8, metavar="N",
                   help="episodes read ahead and scored together in packed passes (default 8; 1: one at a time)")
    p.add_argument("--resume", action="store_true", help="keep the episodes already scored in --out and do the rest")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no per-episode lines")


@dataclass(frozen=True)
class Listing:
    """The source's episodes (frames not yet read): all of them, in the source's order, and the selected ones."""

    fmt: str
    every: list[Episode | Skipped]
    items: list[Episode | Skipped]  # --episodes of `every`

    @property
    def order(self) -> list[str]:
        """Episode keys in the source's order: the order of the merged files."""
        return [item.key for item in self.every]


def list_source(args: argparse.Namespace) -> Listing:
    """Every episode of the source and the selected ones; exit 2 when none is selected."""
    fmt = args.format or detect_format(args.source)
    options = SourceOptions(cameras=args.camera, instruction=args.instruction,
                            instruction_topic=args.instruction_topic, episode_topic=args.episode_topic)
    every = list(read_source(args.source, fmt, options))
    try:
        items = select(every, args.episodes)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not items:
        raise SourceError(f"{args.source} holds no episode" + (f" in --episodes {args.episodes}" if args.episodes
                                                                else ""))
    return Listing(fmt, every, items)


def scoring_config(args: argparse.Namespace, prefixes: int | None = None, static_check: bool = False) -> ScoringConfig:
    """The command line as the typed configuration the offline loop takes (nothing below here reads `args`)."""
    return ScoringConfig(schedule=schedule_config(args), prompt=prompt_config(args), prefixes=prefixes,
                         tau=args.tau, delta_max=args.delta_max, static_check=static_check,
                         cameras=tuple(args.camera or ()), model=model_config(args), batch_tokens=args.batch_tokens,
                         batch_episodes=args.batch_episodes)


def check_resumable(done: Iterable[Curve], config: ScoringConfig, where: Path) -> None:
    model = config.model.model
    for curve in done:
        # A hub model is named model@commit in the curves it scored.
        if curve.settings != config.settings() or not (curve.model == model or curve.model.startswith(model + "@")):
            raise UsageError(f"{where} was scored with other settings or another model ({curve.model}); "
                             "use another --out or run without --resume")


def run_episodes(args: argparse.Namespace, listing: Listing, parts: Parts, config: ScoringConfig,
                 after_each: Callable[[Outcome, Path], None] = lambda outcome, folder: None) -> tuple[World, Outcome]:
    """The shared loop, on every rank: score this rank's share into its part, then merge on rank 0.

    Returns this process's place and, on rank 0, the whole run's outcome: every finished episode in the source's
    order (`parts.merged` now holds them) and every rank's skips; on the other ranks, their own outcome.
    `after_each` hears this rank's running outcome and its part's folder after every episode.
    """
    world, device = world_from_env(config.model.device)
    config = replace(config, model=replace(config.model, device=device))  # each rank on its own GPU
    try:
        if world.is_main and not args.resume:
            parts.clear()
        world.barrier()  # a fresh start is clean before any rank looks
        done = parts.done() if args.resume else {}
        check_resumable(done.values(), config, parts.merged.parent)
        world.barrier()  # every rank has read the others' parts before any appends to its own
        outcome = score_share(args, world.share(listing.items), CurveLog(parts.part(world)), config, done, world,
                              after_each)
        ranks = world.gather((outcome.skipped, outcome.resumed, outcome.interrupted))  # waits for the slowest
    finally:
        world.close()
    if not world.is_main:
        return world, outcome
    unseen = parts.missing(world.size)
    if unseen:  # the other ranks wrote to a disk rank 0 cannot read: nothing would be merged
        raise UsageError(f"the parts of rank(s) {', '.join(map(str, unseen))} are not in {parts.root}: --out must be "
                         "on a filesystem every node sees (each rank's finished episodes stay in its own part)")
    position = {key: k for k, key in enumerate(listing.order)}
    skipped = sorted((s for rank in ranks for s in rank[0]), key=lambda s: position.get(s.key, 0))
    whole = Outcome(curves=parts.merge(listing.order), skipped=skipped, resumed=sum(rank[1] for rank in ranks),
                    interrupted=any(rank[2] for rank in ranks))
    if whole.resumed and not args.quiet:
        print(f"resumed: {whole.resumed} episode(s) already in {parts.merged}" + ("" if world.size == 1 else
                                                                                  " or its parts"))
    return world, whole


def score_share(args: argparse.Namespace, items: list[Episode | Skipped], log: CurveLog, config: ScoringConfig,
                done: dict[str, Curve], world: World, after_each: Callable[[Outcome, Path], None]) -> Outcome:
    """Score this rank's episodes: a progress bar on rank 0's terminal, one line per episode, the caller's files."""
    from tqdm import tqdm

    from topreward.offline.summary import episode_line, table_header

    show = not args.quiet
    bars = show and interactive() and world.is_main
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
            print(f"topreward: {world.tag}skipped {value.key} ({value.source}): {value.reason}", file=sys.stderr,
                  flush=True)
        else:
            running.curves.append(value)
            if show and kind == "done":
                if not header_printed:
                    tqdm.write(world.tag + table_header(config.static_check))
                    header_printed = True
                tqdm.write(world.tag + episode_line(value))
        after_each(running, log.path.parent)

    log.path.parent.mkdir(parents=True, exist_ok=True)
    after_each(running, log.path.parent)  # a part's summary never describes an earlier run
    try:
        return evaluate(items, log, config, done=done, resume=args.resume,
                        on_event=on_event, on_prefix=lambda n: prefix_bar.update())
    finally:
        prefix_bar.close()
        episodes_bar.close()


def run(args: argparse.Namespace) -> int:
    if (args.format or detect_format(args.source)) == "records" and not args.rescore:
        return run_records(args)
    from topreward.offline.summary import summarize, write_summary

    listing = list_source(args)
    check_writable_dir(args.out)
    if args.videos:  # a file in the way is found now, not after the scoring
        for item in listing.items:
            if isinstance(item, Episode):
                claim(video_path(args.out, item.key), video_ours)
    config = scoring_config(args, args.prefixes, args.static_check)

    def save(outcome: Outcome, folder: Path) -> None:
        # This rank's summary so far, beside its part (in a single process: the output folder itself).
        write_summary(folder, summarize(outcome.curves, outcome.skipped, str(args.source), listing.fmt))

    world, outcome = run_episodes(args, listing, Parts(args.out / "curves.jsonl", args.out / "parts"), config,
                                  after_each=save)
    if not world.is_main:
        return 130 if outcome.interrupted else 0
    if args.videos and not outcome.interrupted:
        write_videos(args, listing, outcome.curves)
    return report(args, outcome, listing.fmt)


def video_path(out: Path, key: str) -> Path:
    """DIR/videos/ and a file name for an episode's key ("episode 3", "row 2", "arm1/episode 4")."""
    return out / "videos" / (re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("_") + ".mp4")


def write_videos(args: argparse.Namespace, listing: Listing, curves: list[Curve]) -> None:
    """One progress video per scored episode under DIR/videos/, drawn with the threshold the run suggests."""
    from topreward.offline.summary import summarize

    threshold = summarize(curves, [], "", "")["success_detection"]["suggested_threshold"]
    episodes = {item.key: item for item in listing.items if isinstance(item, Episode)}
    for curve in curves:
        path = video_path(args.out, curve.key)
        frames = write_video(args, path, episodes[curve.key].read(lambda t: True), curve, threshold)
        if not args.quiet:
            print(f"video {path} ({frames} frames)")


def run_records(args: argparse.Namespace) -> int:
    """A node's record_dir: the curves as scored online, summarized and calibrated without a model."""
    from topreward.offline.readers.records import read_records

    if args.static_check or args.resume or args.videos:
        raise UsageError("node records hold the values scored online: --static-check, --resume and --videos need "
                         "frames")
    try:
        items = select(read_records(args.source, args.tau, args.delta_max), args.episodes)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    check_writable_dir(args.out)
    outcome = Outcome(curves=[c for c in items if isinstance(c, Curve)],
                      skipped=[s for s in items if isinstance(s, Skipped)])
    log = CurveLog(args.out / "curves.jsonl")
    log.start(resume=False)
    for curve in outcome.curves:
        log.append(curve)
    for skip in outcome.skipped:
        print(f"topreward: skipped {skip.key} ({skip.source}): {skip.reason}", file=sys.stderr)
    if not args.quiet and outcome.curves:
        from topreward.offline.summary import episode_line, table_header

        print(table_header(False))
        for curve in outcome.curves:
            print(episode_line(curve))
    return report(args, outcome, "records")


def report(args: argparse.Namespace, outcome: Outcome, fmt: str) -> int:
    """Summary, threshold and plots of a finished (or interrupted) run on rank 0; the exit status."""
    from topreward.offline.plots import write_plots
    from topreward.offline.summary import summarize, summary_lines, write_summary

    curves = outcome.curves
    summary = summarize(curves, outcome.skipped, str(args.source), fmt)
    write_summary(args.out, summary)
    write_plots(args.out, curves, summary)
    if not args.quiet or outcome.interrupted:
        for line in summary_lines(summary):
            print(line)
        print(f"wrote {args.out}/curves.jsonl, summary.json" + (", threshold.yaml" if (
            summary["success_detection"]["suggested_threshold"] is not None) else "") + ", curves.png, voc.png"
            + (", roc.png" if summary["success_detection"]["roc_auc"] is not None else ""))
    if outcome.interrupted:
        print(f"interrupted: {len(curves)} episode(s) kept; rerun with --resume to continue", file=sys.stderr)
        return 130
    if not curves:
        print("topreward: error: no episode could be scored", file=sys.stderr)
        return 2
    return 0
