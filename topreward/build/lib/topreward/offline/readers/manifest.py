"""A manifest of video files: JSON lines or CSV rows with `video`, `instruction`, optional `success`, `episode_id`."""
from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from topreward.offline.episode import Episode, Skipped, SourceError
from topreward.offline.readers.video import video_episode

MANIFEST_SUFFIXES = (".jsonl", ".ndjson", ".csv")
_TRUE = ("true", "1", "yes", "success", "y", "t")
_FALSE = ("false", "0", "no", "failure", "fail", "n", "f")


def parse_success(value) -> bool | None:
    """A success label from JSON (bool, 0/1, null) or CSV text; ValueError names what was found."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"bad success value {value!r}: use true/false (or 1/0, empty for unknown)")


def _rows(path: Path) -> Iterator[tuple[int, dict | None, str]]:
    """(row number from 1, the row or None, why not) in file order."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"cannot read manifest {path}: {exc}") from None
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames or "video" not in [f.strip() for f in reader.fieldnames]:
            raise SourceError(f"manifest {path} has no 'video' column (columns: {', '.join(reader.fieldnames or [])})")
        for number, row in enumerate(reader, start=1):
            yield number, {k.strip(): (v.strip() if isinstance(v, str) else v) for k, v in row.items() if k}, ""
        return
    number = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        number += 1
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, None, f"not valid JSON ({exc.msg})"
            continue
        yield (number, row, "") if isinstance(row, dict) else (number, None, "not a JSON object")


def read_manifest(path: Path, default_instruction: str | None = None) -> Iterator[Episode | Skipped]:
    """The manifest's episodes in file order; bad rows come out as Skipped with the row and the cause."""
    for number, row, problem in _rows(path):
        key = f"row {number}"
        if row is None:
            yield Skipped(key, f"{path}:{number}", problem)
            continue
        episode_id = row.get("episode_id")
        if isinstance(episode_id, str) and episode_id.strip().isdigit():
            episode_id = int(episode_id)  # CSV gives text; a dataset's episode index is a number
        if episode_id not in (None, ""):
            key = f"episode {episode_id}"
        else:
            episode_id = None
        video = str(row.get("video") or "").strip()
        source = f"{path.name}:{number}"
        if not video:
            yield Skipped(key, source, "no 'video' given", episode_id)
            continue
        instruction = str(row.get("instruction") or "").strip() or default_instruction
        if not instruction:
            yield Skipped(key, source, "no instruction (give an 'instruction' column or --instruction)", episode_id)
            continue
        try:
            success = parse_success(row.get("success"))
        except ValueError as exc:
            yield Skipped(key, source, str(exc), episode_id)
            continue
        video_path = (path.parent / video) if not Path(video).is_absolute() else Path(video)
        yield video_episode(video_path, key, instruction, success, episode_id, source=video)
