"""Writing outputs safely: folder created if missing, never through a symbolic link, never over another's file.

A link planted at an output name could point anywhere (a shared machine, a dataset folder), and an
`--out` that names someone's file by mistake must not destroy it. What counts as "written by us" is
read from the file itself: the JSON/JSONL schema, the YAML header comment, a PNG's Software tag, or a
label parquet's metadata.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

SOFTWARE = "topreward_ros"  # the PNG Software tag of every plot
TEMP_SUFFIX = ".tmp"  # temporary files are .<name>.<random>.tmp beside the file they replace


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


@contextmanager
def replacing(path: Path, ours: Callable[[Path], bool]) -> Iterator[Path]:
    """A new temporary file beside `path` to write into; once written it is synced and replaces `path`.

    The temporary name is unique and created exclusively, so two writers never share one and no link planted
    at a guessable name is followed; it is removed if the writing fails. The file's data and the folder's
    entry are synced before and after the replacement, so a crash or a power cut leaves the old version or
    the new one, never half of one.
    """
    claim(path, ours)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)  # replaces a name, never follows a link
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(path.parent)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: str | bytes, ours: Callable[[Path], bool]) -> None:
    """Replace the file in one step with `data` (text is written as UTF-8); see `replacing`."""
    with replacing(Path(path), ours) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


def open_append(path: Path, ours: Callable[[Path], bool]):
    """A text file opened for appending (created if missing), never through a link."""
    claim(path, ours, "appending to")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    return os.fdopen(fd, "a")
