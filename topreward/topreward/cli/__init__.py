"""`topreward`: score recorded robot videos, evaluate a lab's recordings and label datasets with TOPReward.

One module per command: `score.py` (one video), `eval.py` (many episodes: metrics, threshold, plots),
`label.py` (per-frame progress for LeRobot's reward-aligned behaviour cloning).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from topreward.cli import eval as eval_command
from topreward.cli import label as label_command
from topreward.cli import score as score_command
from topreward.cli.allocator import keep_freed_memory
from topreward.cli.common import UsageError
from topreward.frames.video import VideoReadError
from topreward.model.errors import ModelLoadError
from topreward.offline.episode import SourceError
from topreward.output_files import OutputError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="topreward", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (score_command, eval_command, label_command):
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="topreward: %(levelname)s: %(message)s", level=logging.WARNING)
    if not sys.stderr.isatty():  # the model loader's progress bars are noise in logs and CI
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    keep_freed_memory()
    try:
        return args.run(args)
    except (UsageError, VideoReadError, ModelLoadError, SourceError, OutputError) as exc:
        print(f"topreward: error: {exc}", file=sys.stderr)
        return 2


__all__ = ["UsageError", "build_parser", "main"]
