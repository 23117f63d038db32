"""`topreward label DATASET`: per-frame TOPReward progress for a LeRobot dataset, in LeRobot's RA-BC label schema."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from topreward.cli.common import UsageError, add_scoring_options
from topreward.cli.eval import add_source_options, list_source, run_episodes, scoring_config
from topreward.offline.distributed import Parts
from topreward.offline.labels import label_table, training_flags, write_table
from topreward.output_files import claim, json_with, label_table_ours, write_atomic

DEFAULT_NAME = "topreward_progress"


def add_parser(sub) -> None:
    p = sub.add_parser("label", help="write <dataset>/topreward_progress.parquet for LeRobot's reward-aligned BC")
    p.add_argument("source", type=Path, metavar="DATASET", help="LeRobot dataset folder (v3.x or v2.1)")
    p.add_argument("--out", type=Path,
                   help="output file (default <DATASET>/topreward_progress.parquet, .csv with --csv)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--csv", action="store_true", help="write the same table as CSV")
    p.add_argument("--dense", action="store_true",
                   help="also score a prefix at every sampled frame and add progress_dense")
    add_source_options(p)
    add_scoring_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.format not in (None, "lerobot"):
        raise UsageError("topreward label needs a LeRobot dataset (it writes one row per dataset frame)")
    args.format = "lerobot"
    out = args.out or args.source / f"{DEFAULT_NAME}.{'csv' if args.csv else 'parquet'}"
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; give a file name")
    if out.exists() and not args.overwrite:
        raise UsageError(f"{out} exists; pass --overwrite to replace it")
    claim(out, label_table_ours)  # before any scoring: --overwrite replaces a label table, nothing else
    listing = list_source(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    # --dense scores every sampled frame once; the sparse column uses the K-prefix subset of the same values.
    config = scoring_config(args, None if args.dense else args.prefixes)
    parts = Parts(out.with_name(f"{out.stem}.curves.jsonl"), out.with_name(f"{out.stem}.parts"))
    world, outcome = run_episodes(args, listing, parts, config)
    if not world.is_main:
        return 130 if outcome.interrupted else 0
    if outcome.interrupted:
        print(f"interrupted: {len(outcome.curves)} episode(s) kept in {parts.merged}; rerun with --resume",
              file=sys.stderr)
        return 130
    curves = {c.key: c for c in outcome.curves}
    if not curves:
        print("topreward: error: no episode could be scored", file=sys.stderr)
        return 2
    episodes = [e for e in listing.every if getattr(e, "num_frames", None) is not None]
    table = label_table(episodes, curves, args.prefixes, args.dense, curves[next(iter(curves))].model)
    write_table(table, out, args.csv)
    skipped = {s.key: s.reason for s in outcome.skipped}
    write_atomic(out.with_name(f"{out.stem}.summary.json"), json.dumps(
        {"output": str(out), "rows": table.num_rows, "episodes_labelled": len(curves),
         "episodes_skipped": len(skipped), "skipped": skipped,
         "episodes_unscored": len(episodes) - len(curves)}, indent=1) + "\n", json_with("output", "rows"))
    if not args.quiet:
        print(f"wrote {table.num_rows} rows ({len(curves)} episodes"
              + (f"; {len(episodes) - len(curves)} unscored with NaN progress = weight 1" if len(episodes) > len(curves)
               else "") + f") to {out}")
        print("train with LeRobot's reward-aligned BC:")
        print("  lerobot-train --dataset.repo_id=<your/dataset> " + " ".join(training_flags(out, args.source,
                                                                                           args.dense)))
    return 0
