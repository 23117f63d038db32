"""Writing outputs safely: folder created if missing, never through a symbolic link, never over another's file.

A link planted at an output name could point anywhere (a shared machine, a dataset folder), and an
`--out` that names someone's file by mistake must not destroy it. What counts as "written by us" is
read from the file itself: the JSON/JSONL schema, the YAML header comment, a PNG's Software tag, or a
label parquet's metadata.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

SOFTWARE = "topreward_ros"  # the PNG Software tag of every plot


class OutputError(OSError):
    """An output cannot be written safely; the message says why in one line."""


def _json_keys(path: Path, keys: tuple[str, ...]) -> bool:
    with open(path, "rb") as f:
        first = f.readline(1 << 22)
    if not first.strip():
        return True
    try:
        data = json.loads(first) if path.suffix == ".jsonl" else json.loads(path.read_bytes())
    except ValueError:
        return False
    return isinstance(data, dict) and all(k in data for k in keys)


def json_with(*keys: str) -> Callable[[Path], bool]:
    """Ours: a JSON object (or a JSONL file whose first line is one) that has these keys, or an empty file."""
    return lambda path: _json_keys(path, keys)


def png_ours(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(4096)
    return head.startswith(b"\x89PNG") and SOFTWARE.encode() in head


def yaml_ours(path: Path) -> bool:
    """Ours: the first line is a comment that names topreward (every YAML file the tools write starts so)."""
    with open(path, "rb") as f:
        first = f.readline(4096)
    return first.startswith(b"#") and b"topreward" in first


def label_table_ours(path: Path) -> bool:
    """A progress parquet/CSV of LeRobot's schema (ours or LeRobot's own labeller's: the same table)."""
    if path.suffix == ".csv":
        with open(path) as f:
            return f.readline().startswith("index,episode_index,frame_index,progress_sparse")
    import pyarrow.parquet as pq

    try:
        return b"vlm_name" in (pq.read_schema(path).metadata or {})
    except Exception:  # not a parquet file at all
        return False


def claim(path: Path, ours: Callable[[Path], bool], action: str = "overwriting") -> Path:
    """Make `path` ready to be (over)written: its folder exists, it is no link, absent or written by us."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the folder of {path}: {exc.strerror}") from None
    if path.is_symlink():
        raise OutputError(f"{path} is a symbolic link: not writing through it")
    if path.exists():
        if not path.is_file():
            raise OutputError(f"{path} exists and is not a file")
        try:
            mine = ours(path)
        except OSError:
            mine = False
        if not mine:
            raise OutputError(f"{path} exists and was not written by topreward_ros: not {action} it (move it "
                              "away or choose another path)")
    return path


def write_atomic(path: Path, data: str | bytes, ours: Callable[[Path], bool]) -> None:
    """Replace the file in one step, so a crash leaves the old or the new version, never half of one."""
    claim(path, ours)
    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.is_symlink():
        tmp.unlink()
    if isinstance(data, str):
        tmp.write_text(data)
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)  # replaces a name, never follows a link


def open_append(path: Path, ours: Callable[[Path], bool]):
    """A text file opened for appending (created if missing), never through a link."""
    claim(path, ours, "appending to")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    return os.fdopen(fd, "a")
