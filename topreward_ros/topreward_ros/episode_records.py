"""Finished episodes appended to `record_dir/episodes.jsonl`, one JSON object a line, written safely.

The directory is created if missing. The file is opened without following a symbolic link (a link
planted at that name could point anywhere), and a file that exists but is not one this node wrote
(its first line is not an episode record) is never appended to.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

RECORDS_FILE = "episodes.jsonl"
_RECORD_KEYS = ("episode_id", "log_prob_true")


class RecordError(OSError):
    """The record cannot be written; the message says why."""


def _ours(path: Path) -> bool:
    with open(path, "rb") as f:
        first = f.readline(1 << 20)
    if not first.strip():
        return True
    try:
        record = json.loads(first)
    except ValueError:
        return False
    return isinstance(record, dict) and all(k in record for k in _RECORD_KEYS)


def append_record(record_dir: str | Path, record: dict) -> Path:
    """Append one record; returns the file's path. Raises RecordError."""
    directory = Path(record_dir).expanduser()
    path = directory / RECORDS_FILE
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            raise RecordError(f"{path} is a symbolic link: not following it")
        if path.exists() and (not path.is_file() or not _ours(path)):
            raise RecordError(f"{path} exists and is not an episode record file written by this node: "
                              "not appending to it")
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "a") as f:
            f.write(json.dumps(record) + "\n")
    except RecordError:
        raise
    except OSError as exc:
        raise RecordError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path
