"""Small recordings in the real on-disk formats, written by the tests: mp4s, LeRobot v3 / v2.1 datasets, ROS 2 bags.

Every frame shows its global frame number g in two flat gray blocks (g // 8 on the right half, g % 8 on the
left), coarse enough to survive lossy coding, so a test can tell from the pixels which recorded frame a
reader returned.
"""
from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np

SIZE = 64
FPS = 10


def frame(g: int) -> np.ndarray:
    img = np.empty((SIZE, SIZE, 3), np.uint8)
    img[:, : SIZE // 2] = 15 + 30 * (g % 8)
    img[:, SIZE // 2:] = 15 + 30 * ((g // 8) % 8)
    return img


def frame_number(img: np.ndarray) -> int:
    """The g (0..63) the frame shows; decoded frames are within a few gray levels of what was encoded."""
    def digit(block: np.ndarray) -> int:
        return int(round((float(block[8:-8, 8:-8].mean()) - 15) / 30))

    return digit(img[:, SIZE // 2:]) * 8 + digit(img[:, : SIZE // 2])


def write_mp4(path: Path, numbers: list[int], fps: int = FPS) -> Path:
    """Intra-only mpeg4 at a fixed quantizer: a frame decodes to the same pixels whichever file it is in."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        # Fixed quantizer: rate control would otherwise give a frame another quality after other frames.
        stream = container.add_stream("mpeg4", rate=fps, options={"qmin": "2", "qmax": "2"})
        stream.width = stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = 1
        for g in numbers:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame(g), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _png(g: int) -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(frame(g), cv2.COLOR_RGB2BGR))[1].tobytes()


def _features(v3: bool) -> dict:
    video = {"dtype": "video", "shape": [SIZE, SIZE, 3], "names": ["height", "width", "channels"],
             "info": {"video.fps": FPS, "video.height": SIZE, "video.width": SIZE, "video.codec": "mpeg4",
                      "video.pix_fmt": "yuv420p"}}
    return {
        "observation.images.top": video,
        "observation.images.wrist": {"dtype": "image", "shape": [SIZE, SIZE, 3],
                                     "names": ["height", "width", "channels"]},
        "action": {"dtype": "float32", "shape": [2], "names": None},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    }


def _data_rows(lengths: list[int], tasks_of: list[int], offset: int = 0) -> dict:
    rows = {k: [] for k in ("index", "episode_index", "frame_index", "task_index", "timestamp", "action",
                            "observation.images.wrist")}
    g = offset
    for ep, n in enumerate(lengths):
        for k in range(n):
            rows["index"].append(g)
            rows["episode_index"].append(ep)
            rows["frame_index"].append(k)
            rows["task_index"].append(tasks_of[ep])
            rows["timestamp"].append(k / FPS)
            rows["action"].append([0.0, 0.0])
            # The wrist camera shows the frame 40 ahead, so it is told apart from the top camera.
            rows["observation.images.wrist"].append({"bytes": _png(g + 40), "path": None})
            g += 1
    return rows


def _table(rows: dict):
    import pyarrow as pa

    types = {"index": pa.int64(), "episode_index": pa.int64(), "frame_index": pa.int64(), "task_index": pa.int64(),
             "timestamp": pa.float32(), "action": pa.list_(pa.float32()),
             "observation.images.wrist": pa.struct([("bytes", pa.binary()), ("path", pa.string())])}
    return pa.table({k: pa.array(v, types[k]) for k, v in rows.items()})


TASKS = ["push the block to the left", "open the drawer"]


def write_lerobot_v3(root: Path, lengths: list[int]) -> Path:
    """All episodes in one mp4 and one data file; episode e starts at from_timestamp = its first frame / fps."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tasks_of = [e % 2 for e in range(len(lengths))]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int).tolist()
    write_mp4(root / "videos/observation.images.top/chunk-000/file-000.mp4", list(range(sum(lengths))))
    (root / "data/chunk-000").mkdir(parents=True)
    pq.write_table(_table(_data_rows(lengths, tasks_of)), root / "data/chunk-000/file-000.parquet")
    pq.write_table(pa.table({"task_index": pa.array([0, 1], pa.int64()), "task": TASKS}), root / "meta/tasks.parquet") \
        if (root / "meta").mkdir(parents=True) is None else None
    key = "videos/observation.images.top"
    episodes = {
        "episode_index": pa.array(range(len(lengths)), pa.int64()),
        "tasks": [[TASKS[t]] for t in tasks_of], "length": pa.array(lengths, pa.int64()),
        "data/chunk_index": [0] * len(lengths), "data/file_index": [0] * len(lengths),
        "dataset_from_index": starts, "dataset_to_index": [s + n for s, n in zip(starts, lengths, strict=True)],
        f"{key}/chunk_index": [0] * len(lengths), f"{key}/file_index": [0] * len(lengths),
        f"{key}/from_timestamp": [s / FPS for s in starts],
        f"{key}/to_timestamp": [(s + n) / FPS for s, n in zip(starts, lengths, strict=True)],
        "meta/episodes/chunk_index": [0] * len(lengths), "meta/episodes/file_index": [0] * len(lengths),
    }
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    pq.write_table(pa.table(episodes), root / "meta/episodes/chunk-000/file-000.parquet")
    info = {"codebase_version": "v3.0", "robot_type": "so101", "fps": FPS, "total_episodes": len(lengths),
            "total_frames": sum(lengths), "total_tasks": 2, "chunks_size": 1000, "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 200, "splits": {"train": f"0:{len(lengths)}"},
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
            "features": _features(True)}
    (root / "meta/info.json").write_text(json.dumps(info, indent=1))
    return root


def write_lerobot_v21(root: Path, lengths: list[int]) -> Path:
    """One mp4 and one data file per episode; global index = running total of lengths."""
    import pyarrow.parquet as pq

    tasks_of = [e % 2 for e in range(len(lengths))]
    (root / "meta").mkdir(parents=True)
    (root / "data/chunk-000").mkdir(parents=True)
    first = 0
    lines = []
    for ep, n in enumerate(lengths):
        write_mp4(root / f"videos/chunk-000/observation.images.top/episode_{ep:06d}.mp4", list(range(first, first + n)))
        rows = _data_rows([n], [tasks_of[ep]], offset=first)
        rows["episode_index"] = [ep] * n
        rows["index"] = list(range(first, first + n))
        pq.write_table(_table(rows), root / f"data/chunk-000/episode_{ep:06d}.parquet")
        lines.append(json.dumps({"episode_index": ep, "tasks": [TASKS[tasks_of[ep]]], "length": n}))
        first += n
    (root / "meta/episodes.jsonl").write_text("\n".join(lines) + "\n")
    (root / "meta/tasks.jsonl").write_text("\n".join(json.dumps({"task_index": i, "task": t})
                                                     for i, t in enumerate(TASKS)) + "\n")
    info = {"codebase_version": "v2.1", "fps": FPS, "total_episodes": len(lengths), "total_frames": sum(lengths),
            "chunks_size": 1000,
            "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
            "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
            "features": _features(False)}
    (root / "meta/info.json").write_text(json.dumps(info, indent=1))
    return root


def write_bag(path: Path, storage: str, count: int = 30, reset_at: int | None = 15, compressed: bool = True) -> Path:
    """A bag with /cam/image_raw (rgb8), /cam/image_raw/compressed (JPEG), /task (String) and /reset (Empty).

    Frame g has header stamp 100 + g / FPS [s] and bag time 1000 s + g / FPS.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    T = store.types
    Time, Header = T["builtin_interfaces/msg/Time"], T["std_msgs/msg/Header"]
    Image, Compressed = T["sensor_msgs/msg/Image"], T["sensor_msgs/msg/CompressedImage"]
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        raw = writer.add_connection("/cam/image_raw", Image.__msgtype__, typestore=store)
        jpg = writer.add_connection("/cam/image_raw/compressed", Compressed.__msgtype__, typestore=store) \
            if compressed else None
        task = writer.add_connection("/task", "std_msgs/msg/String", typestore=store)
        reset = writer.add_connection("/reset", "std_msgs/msg/Empty", typestore=store)
        base = 1_000_000_000_000
        writer.write(task, base - 1, store.serialize_cdr(T["std_msgs/msg/String"](data="pick up the cube"),
                                                          "std_msgs/msg/String"))
        for g in range(count):
            t_ns = base + g * 100_000_000
            if reset_at is not None and g == reset_at:
                writer.write(reset, t_ns - 1, store.serialize_cdr(T["std_msgs/msg/Empty"](), "std_msgs/msg/Empty"))
                writer.write(task, t_ns - 1, store.serialize_cdr(T["std_msgs/msg/String"](data="place the cube"),
                                                                  "std_msgs/msg/String"))
            stamp = Time(sec=100 + g // FPS, nanosec=(g % FPS) * 100_000_000)
            header = Header(stamp=stamp, frame_id="cam")
            img = frame(g)
            writer.write(raw, t_ns, store.serialize_cdr(Image(header=header, height=SIZE, width=SIZE, encoding="rgb8",
                                                              is_bigendian=0, step=SIZE * 3, data=img.reshape(-1)),
                                                        Image.__msgtype__))
            if jpg is not None:
                data = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])[1]
                writer.write(jpg, t_ns + 1, store.serialize_cdr(Compressed(header=header, format="jpeg",
                                                                           data=data.reshape(-1)),
                                                                Compressed.__msgtype__))
    return path
