"""Source readers, one module per format; each yields `Episode`s (and `Skipped` ones) and knows nothing of scoring.

A new format goes in a module of its own here plus one line in `FORMATS` and `detect_format`.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from topreward.offline.episode import Episode, Skipped, SourceError
from topreward.offline.readers.lerobot import is_lerobot_dataset, read_lerobot
from topreward.offline.readers.manifest import MANIFEST_SUFFIXES, read_manifest
from topreward.offline.readers.records import record_episodes, records_file
from topreward.offline.readers.rosbag import BagOptions, bags_in, read_bags
from topreward.offline.readers.video import read_video

FORMATS = ("manifest", "lerobot", "bag", "video", "records")


@dataclass(frozen=True)
class SourceOptions:
    """What the user said about the source beyond its path."""

    cameras: list[str] | None = None  # LeRobot feature keys or bag image topics, primary first
    instruction: str | None = None  # fallback task instruction
    instruction_topic: str | None = None  # bags: std_msgs/String topic with the task
    episode_topic: str | None = None  # bags: messages on it mark episode starts


def detect_format(path: Path) -> str:
    """Which reader a path needs, from what it is."""
    if not path.exists():
        raise SourceError(f"{path} does not exist")
    if records_file(path) is not None:
        return "records"
    if path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
        return "manifest"
    if is_lerobot_dataset(path):
        return "lerobot"
    if bags_in(path):
        return "bag"
    if path.is_file():
        return "video"
    raise SourceError(f"{path} is a folder but neither a LeRobot dataset (meta/info.json) nor a ROS 2 bag "
                      "(metadata.yaml, .mcap) nor a folder of bags nor a node's record_dir (episodes.jsonl); a "
                      "manifest is a .jsonl or .csv file")


def read_source(path: Path, fmt: str | None, options: SourceOptions) -> Iterator[Episode | Skipped]:
    """The source's episodes in a deterministic order (file order, episode index, bag name)."""
    fmt = fmt or detect_format(path)
    if not path.exists():
        raise SourceError(f"{path} does not exist")
    if options.cameras and fmt in ("manifest", "video"):
        raise SourceError(f"--camera applies to LeRobot datasets and bags, not to a {fmt}")
    if fmt == "manifest":
        return read_manifest(path, options.instruction)
    if fmt == "lerobot":
        return read_lerobot(path, options.cameras, options.instruction)
    if fmt == "bag":
        return read_bags(path, BagOptions(options.cameras, options.instruction, options.instruction_topic,
                                          options.episode_topic))
    if fmt == "video":
        return read_video(path, options.instruction)
    if fmt == "records":  # the recorded episode videos (record_video), scored again
        return iter(record_episodes(path))
    raise SourceError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")


__all__ = ["FORMATS", "Episode", "Skipped", "SourceError", "SourceOptions", "detect_format", "read_source"]
