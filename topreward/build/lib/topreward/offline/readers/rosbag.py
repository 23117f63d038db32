"""ROS 2 bags (sqlite3 or MCAP) read with the pure-Python `rosbags` library: no ROS install needed.

A bag is one episode, or several when `episode_topic` names a topic whose messages (any type, e.g. the
node's recorded reset calls) mark episode starts. Images are `sensor_msgs/Image` or `CompressedImage`;
the header stamp is the capture time. Secondary cameras are tiled with their latest frame at or before
the primary frame's stamp, as the node tiles its latest message.
"""
from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from topreward.frames.image_conversion import ImageConversionError, to_rgb
from topreward.offline.episode import Episode, EpisodeError, Skipped, SourceError, ViewsAt, WantsFn

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
STRING_TYPE = "std_msgs/msg/String"
MAX_VIEW_SKEW = 0.5  # [s] as the node's max_view_skew default: an older secondary view is tiled black
# Generic OpenCV type names some recorders write; read as the colour layouts they were read as before.
_GENERIC = {"8UC3": "rgb8", "8UC1": "mono8"}


def is_bag(path: Path) -> bool:
    if path.is_dir():
        return (path / "metadata.yaml").is_file()
    return path.is_file() and path.suffix in (".mcap", ".db3")


def bags_in(path: Path) -> list[Path]:
    """The bag itself, or the bags directly inside a folder of recordings, sorted by name."""
    if is_bag(path):
        return [path]
    if path.is_dir():
        return sorted(p for p in path.iterdir() if is_bag(p))
    return []


def image_to_rgb(msg, msgtype: str, what: str) -> np.ndarray:
    """RGB uint8 from a deserialized sensor_msgs Image or CompressedImage: the node's own conversion."""
    if not msgtype.endswith("CompressedImage") and msg.encoding in _GENERIC:
        msg = copy.copy(msg)
        msg.encoding = _GENERIC[msg.encoding]
    try:
        return to_rgb(msg)
    except ImageConversionError as exc:
        raise EpisodeError(f"{what}: {exc}") from None


def _stamp(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def _open(path: Path):
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    # Bags without embedded definitions (old sqlite3 ones) fall back to the standard message types.
    return AnyReader([path], default_typestore=get_typestore(Stores.ROS2_HUMBLE))


@dataclass(frozen=True)
class BagOptions:
    """Which topics of a bag hold what."""

    cameras: list[str] | None  # image topics, primary first; None: the first image topic by name
    instruction: str | None  # used when no instruction topic message applies
    instruction_topic: str | None = None
    episode_topic: str | None = None


def _segments(reader, image_conn, marks: list[int]) -> list[tuple[int | None, int | None]]:
    """[start, stop) bag-time ranges [ns] between episode marks that hold at least one primary image."""
    edges = [None, *sorted(marks), None]
    times = [t for _, t, _ in reader.messages(connections=[image_conn])]
    out = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        if any((a is None or t >= a) and (b is None or t < b) for t in times):
            out.append((a, b))
    return out


def _instruction_for(texts: list[tuple[int, str]], start: int | None, first_frame: int) -> str | None:
    before = [s for t, s in texts if t <= first_frame]
    within = [s for t, s in texts if start is None or t >= start]
    return (before[-1] if before else within[0] if within else None) or None


def _frames(path: Path, topics: list[str], start: int | None, stop: int | None, wants: WantsFn) -> Iterator[ViewsAt]:
    try:
        with _open(path) as reader:
            conns = {c.topic: c for c in reader.connections if c.topic in topics}
            latest: dict[str, tuple[float, object]] = {}
            for conn, _, raw in reader.messages(connections=list(conns.values()), start=start, stop=stop):
                msg = reader.deserialize(raw, conn.msgtype)
                t = _stamp(msg)
                if conn.topic != topics[0]:
                    latest[conn.topic] = (t, msg, conn.msgtype)
                    continue
                if not wants(t):
                    continue
                views = [image_to_rgb(msg, conn.msgtype, f"{conn.topic} at {t:.3f} s")]
                for topic in topics[1:]:
                    seen = latest.get(topic)
                    fresh = seen is not None and t - seen[0] <= MAX_VIEW_SKEW
                    views.append(image_to_rgb(seen[1], seen[2], f"{topic} at {seen[0]:.3f} s") if fresh else None)
                yield views, t
    except EpisodeError:
        raise
    except Exception as exc:  # a truncated or corrupt bag: rosbags raises its own errors, and struct/KeyError
        raise EpisodeError(f"cannot read bag {path}: {exc}") from None


def _bag_episodes(path: Path, options: BagOptions) -> Iterator[Episode | Skipped]:
    try:
        with _open(path) as reader:
            types = {c.topic: c.msgtype for c in reader.connections}
            images = sorted(t for t, m in types.items() if m in IMAGE_TYPES)
            topics = options.cameras or images[:1]
            missing = [t for t in topics if t not in images]
            if not topics or missing:
                what = f"no image topic {missing[0]!r}" if missing else "no image topic"
                yield Skipped(path.name, str(path), f"{what}; image topics: {', '.join(images) or 'none'}")
                return
            for topic in (options.instruction_topic, options.episode_topic):
                if topic and topic not in types:
                    yield Skipped(path.name, str(path), f"no topic {topic!r}; topics: {', '.join(sorted(types))}")
                    return
            if options.instruction_topic and types[options.instruction_topic] != STRING_TYPE:
                yield Skipped(path.name, str(path), f"{options.instruction_topic} is "
                                                    f"{types[options.instruction_topic]}, not std_msgs/String")
                return
            conn_of = {c.topic: c for c in reader.connections}
            texts = []
            if options.instruction_topic:
                conn = conn_of[options.instruction_topic]
                texts = [(t, reader.deserialize(raw, conn.msgtype).data.strip())
                         for _, t, raw in reader.messages(connections=[conn])]
            marks = []
            if options.episode_topic:
                marks = [t for _, t, _ in reader.messages(connections=[conn_of[options.episode_topic]])]
            segments = _segments(reader, conn_of[topics[0]], marks)
            firsts = [next(t for _, t, _ in reader.messages(connections=[conn_of[topics[0]]], start=a, stop=b))
                      for a, b in segments]
    except Exception as exc:
        yield Skipped(path.name, str(path), f"cannot read bag: {exc}")
        return
    if not segments:
        yield Skipped(path.name, str(path), f"no message on {topics[0]}")
    for number, ((a, b), first) in enumerate(zip(segments, firsts, strict=True)):
        split = options.episode_topic is not None
        key = f"{path.name}#{number}" if split else path.name
        instruction = _instruction_for(texts, a, first) or options.instruction
        if not instruction:
            yield Skipped(key, str(path), "no instruction: give --instruction or --instruction-topic")
            continue
        yield Episode(key=key, source=f"{path}" + (f"#{number}" if split else ""), instruction=instruction,
                      episode_id=number if split else None,
                      read=lambda wants, a=a, b=b: _frames(path, topics, a, b, wants))


def read_bags(path: Path, options: BagOptions) -> Iterator[Episode | Skipped]:
    """The episodes of one bag, or of every bag in a folder, in name order."""
    bags = bags_in(path)
    if not bags:
        raise SourceError(f"{path} is not a ROS 2 bag (no metadata.yaml, .mcap or .db3) nor a folder of bags")
    for bag in bags:
        yield from _bag_episodes(bag, options)
