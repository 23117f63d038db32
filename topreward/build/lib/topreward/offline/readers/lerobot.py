"""LeRobot datasets on disk, v3.x (episodes packed into shared files) and v2.x (one file per episode).

Layouts as LeRobot 0.6 writes them (see ../shared/LEROBOT.md): `meta/info.json` with `codebase_version`,
`fps`, `features`, path templates; v3 episode metadata under `meta/episodes/`, tasks in
`meta/tasks.parquet`; v2 `meta/episodes.jsonl` and `meta/tasks.jsonl`. A camera is a feature of dtype
`video` (frame k of an episode at `from_timestamp + k / fps` of its mp4) or `image` (encoded bytes in
the data parquet).
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from topreward.offline.episode import Episode, EpisodeError, SourceError, ViewsAt, WantsFn
from topreward.offline.readers.frames import decode_image, segment_frames

_V2_DATA = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
_V2_VIDEO = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
_V3_DATA = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
_V3_VIDEO = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"


def is_lerobot_dataset(path: Path) -> bool:
    return path.is_dir() and ((path / "meta").is_dir() or (path / "meta" / "info.json").is_file())


@dataclass(frozen=True)
class DatasetInfo:
    """What `meta/info.json` says, checked."""

    root: Path
    version: str  # "v3.0", "v2.1", ...
    major: int
    fps: float
    features: dict
    chunks_size: int
    data_path: str
    video_path: str

    def cameras(self) -> list[str]:
        return [k for k, f in self.features.items() if isinstance(f, dict) and f.get("dtype") in ("video", "image")]

    def choose_cameras(self, wanted: list[str] | None) -> list[str]:
        available = self.cameras()
        if not available:
            raise SourceError(f"dataset {self.root} has no camera feature (dtype video or image)")
        if not wanted:
            videos = [k for k in available if self.features[k]["dtype"] == "video"]
            return [(videos or available)[0]]
        for key in wanted:
            if key not in available:
                raise SourceError(f"dataset {self.root} has no camera {key!r}; cameras: {', '.join(available)}")
        return list(wanted)


def read_info(root: Path) -> DatasetInfo:
    path = root / "meta" / "info.json"
    if not path.is_file():
        raise SourceError(f"{root} has no meta/info.json: not a LeRobot dataset")
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path} is not valid JSON: {exc}") from None
    version = str(info.get("codebase_version", ""))
    major = version[1:].split(".")[0] if version.startswith("v") else ""
    if major not in ("2", "3"):
        raise SourceError(f"{root}: LeRobot codebase_version {version or 'missing'!r} is not supported "
                          "(v3.x and v2.1 are)")
    try:
        fps = float(info["fps"])
        features = dict(info["features"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SourceError(f"{path} lacks a valid {exc} entry") from None
    defaults = (_V3_DATA, _V3_VIDEO) if major == "3" else (_V2_DATA, _V2_VIDEO)
    return DatasetInfo(root=root, version=version, major=int(major), fps=fps, features=features,
                       chunks_size=int(info.get("chunks_size", 1000)), data_path=info.get("data_path") or defaults[0],
                       video_path=info.get("video_path") or defaults[1])


def _read_parquet_rows(paths: list[Path], what: str) -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not paths:
        raise SourceError(f"no {what} parquet files found")
    try:
        return pa.concat_tables([pq.read_table(p) for p in paths], promote_options="default").to_pylist()
    except (OSError, pa.ArrowException) as exc:
        raise SourceError(f"cannot read {what}: {exc}") from None


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise SourceError(f"{path} does not exist")
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise SourceError(f"{path}: invalid JSON line: {exc}") from None


@dataclass(frozen=True)
class _EpisodeMeta:
    index: int
    length: int
    first_index: int
    task: str | None
    success: bool | None
    data_file: Path
    videos: dict  # camera key -> (mp4 path, from_timestamp)


def _episodes_v3(info: DatasetInfo, cameras: list[str]) -> list[_EpisodeMeta]:
    root = info.root
    rows = _read_parquet_rows(sorted((root / "meta" / "episodes").glob("*/*.parquet")), "meta/episodes")
    out = []
    for row in sorted(rows, key=lambda r: int(r["episode_index"])):
        videos = {}
        for key in cameras:
            if info.features[key]["dtype"] != "video":
                continue
            video = info.video_path.format(video_key=key, chunk_index=int(row[f"videos/{key}/chunk_index"]),
                                           file_index=int(row[f"videos/{key}/file_index"]))
            videos[key] = (root / video, float(row[f"videos/{key}/from_timestamp"]))
        data = info.data_path.format(chunk_index=int(row.get("data/chunk_index") or 0),
                                     file_index=int(row.get("data/file_index") or 0))
        tasks = row.get("tasks") or []
        out.append(_EpisodeMeta(
            index=int(row["episode_index"]), length=int(row["length"]), first_index=int(row["dataset_from_index"]),
            task=tasks[0] if tasks else None, success=row.get("success"), data_file=root / data, videos=videos))
    return out


def _episodes_v2(info: DatasetInfo, cameras: list[str]) -> list[_EpisodeMeta]:
    root = info.root
    rows = sorted(_read_jsonl(root / "meta" / "episodes.jsonl"), key=lambda r: int(r["episode_index"]))
    out, first = [], 0
    for row in rows:
        index = int(row["episode_index"])
        chunk = index // info.chunks_size
        videos = {key: (root / info.video_path.format(episode_chunk=chunk, video_key=key, episode_index=index), 0.0)
                  for key in cameras if info.features[key]["dtype"] == "video"}
        tasks = row.get("tasks") or []
        out.append(_EpisodeMeta(
            index=index, length=int(row["length"]), first_index=first, task=tasks[0] if tasks else None,
            success=row.get("success"), videos=videos,
            data_file=root / info.data_path.format(episode_chunk=chunk, episode_index=index)))
        first += int(row["length"])  # v2's global index is the running total of episode lengths
    return out


def _parquet_images(meta: _EpisodeMeta, key: str, root: Path) -> Iterator:
    """The encoded images of one image feature, in frame order, from the episode's rows of the data parquet."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if not meta.data_file.is_file():
        raise EpisodeError(f"data file {meta.data_file} does not exist")
    table = pq.read_table(meta.data_file, columns=["episode_index", "frame_index", key])
    table = table.filter(pc.equal(table["episode_index"], meta.index)).sort_by("frame_index")
    cells = table[key].to_pylist()
    if len(cells) < meta.length:
        raise EpisodeError(f"{meta.data_file} holds {len(cells)} of the episode's {meta.length} frames")
    for k, cell in enumerate(cells[:meta.length]):
        data = cell.get("bytes") if isinstance(cell, dict) else cell
        if not data and isinstance(cell, dict) and cell.get("path"):
            data = (root / cell["path"]).read_bytes()
        yield data, f"{key} frame {k}"


def _episode_frames(info: DatasetInfo, meta: _EpisodeMeta, cameras: list[str], wants: WantsFn) -> Iterator[ViewsAt]:
    # All cameras advance together, frame by frame; only the frames the schedule wants are converted.
    streams = []
    for key in cameras:
        if key in meta.videos:
            path, start = meta.videos[key]
            streams.append(("video", segment_frames(path, start, meta.length, info.fps)))
        else:
            streams.append(("image", _parquet_images(meta, key, info.root)))
    for k in range(meta.length):
        items = [(kind, next(stream)) for kind, stream in streams]
        t = k / info.fps  # LeRobot's own `timestamp` is frame_index / fps
        if not wants(t):
            continue
        views = [item.to_ndarray(format="rgb24") if kind == "video" else decode_image(*item) for kind, item in items]
        yield views, t


def read_lerobot(root: Path, cameras: list[str] | None, instruction: str | None) -> Iterator[Episode]:
    """Every episode of the dataset in episode-index order; the instruction is the episode's task."""
    info = read_info(root)
    chosen = info.choose_cameras(cameras)
    metas = (_episodes_v3 if info.major == 3 else _episodes_v2)(info, chosen)
    for meta in metas:
        source = ", ".join(f"{p.relative_to(root)}@{s:.2f}s" for p, s in meta.videos.values()) or \
            str(meta.data_file.relative_to(root))
        yield Episode(
            key=f"episode {meta.index}", source=source, instruction=meta.task or instruction,
            success=meta.success if isinstance(meta.success, bool) else None, episode_id=meta.index,
            num_frames=meta.length, fps=info.fps, first_index=meta.first_index,
            read=lambda wants, meta=meta: _episode_frames(info, meta, chosen, wants))
