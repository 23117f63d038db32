"""Finished episodes appended to `record_dir/episodes.jsonl`, one JSON object a line, written safely.

The directory is created if missing. The file is opened without following a symbolic link (a link
planted at that name could point anywhere), and a file that exists but is not one this node wrote
(its first line is not an episode record) is never appended to (see core/output_files.py).
"""
from __future__ import annotations

import json
from pathlib import Path

from .core.output_files import OutputError, json_with, open_append

RECORDS_FILE = "episodes.jsonl"
RecordError = OutputError  # what append_record raises
_ours = json_with("episode_id", "log_prob_true")


def append_record(record_dir: str | Path, record: dict) -> Path:
    """Append one record; returns the file's path. Raises RecordError."""
    path = Path(record_dir).expanduser() / RECORDS_FILE
    try:
        with open_append(path, _ours) as f:
            f.write(json.dumps(record) + "\n")
    except RecordError:
        raise
    except OSError as exc:
        raise RecordError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


def next_episode_id(record_dir: str | Path, robot: str = "") -> int:
    """The id after the highest one recorded for `robot` in `record_dir`, 0 without records.

    Episode ids continue across restarts of the node, so that the records of two runs never share an id.
    Lines that are not records (a torn last line after a crash) are skipped.
    """
    path = Path(record_dir).expanduser() / RECORDS_FILE
    if path.is_symlink() or not path.is_file():
        return 0
    highest = -1
    with open(path, "rb") as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict) or record.get("robot", "") != robot:
                continue
            if isinstance(record.get("episode_id"), int):
                highest = max(highest, record["episode_id"])
    return highest + 1
