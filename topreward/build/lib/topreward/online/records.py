"""The node's records: finished episodes appended to `record_dir/episodes.jsonl`, one JSON object a line.

The directory is created if missing. The file is opened without following a symbolic link (a link
planted at that name could point anywhere), and a file that exists but is not one this node wrote
(its first line is not an episode record) is never appended to (see output_files.py).
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from topreward.output_files import OutputError, json_with, open_append

RECORDS_FILE = "episodes.jsonl"
RECORD_KEYS = ("episode_id", "instruction", "model", "elapsed", "num_frames", "log_prob_true", "log_prob_false")
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


def iter_records(path: Path) -> Iterator[tuple[int, dict | None, str]]:
    """(line number from 1, the record or None, why not) for every non-empty line of a records file."""
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                yield number, None, "not valid JSON (a line cut short by a crash?)"
                continue
            if not isinstance(record, dict) or not all(k in record for k in RECORD_KEYS):
                yield number, None, f"not an episode record (needs {', '.join(RECORD_KEYS)})"
                continue
            yield number, record, ""


def next_episode_id(record_dir: str | Path, robot: str = "") -> int:
    """The id after the highest one recorded for `robot` in `record_dir`, 0 without records.

    Episode ids continue across restarts of the node, so that the records of two runs never share an id.
    Lines that are not records (a torn last line after a crash) are skipped.
    """
    path = Path(record_dir).expanduser() / RECORDS_FILE
    if path.is_symlink() or not path.is_file():
        return 0
    ids = [r["episode_id"] for _, r, _ in iter_records(path)
           if r is not None and r.get("robot", "") == robot and isinstance(r["episode_id"], int)]
    return max(ids, default=-1) + 1
