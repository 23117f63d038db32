"""Per-frame progress labels for LeRobot's reward-aligned behaviour cloning (RA-BC).

The table is exactly what LeRobot's own TOPReward labeller writes, so LeRobot trains on it unchanged:
huggingface/lerobot `src/lerobot/rewards/topreward/compute_rabc_weights.py` (`compute_topreward_progress`):
columns `index`, `episode_index`, `frame_index` (int64) and `progress_sparse` (float32), one row per
dataset frame sorted by `index`, parquet schema metadata `vlm_name`; per-frame progress is the
episode's min-max normalized prefix values interpolated with `np.interp` over frame numbers. `--dense`
adds `progress_dense`, the column SARM's files carry, from a prefix at every sampled frame.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from topreward.offline.episode import Episode
from topreward.output_files import label_table_ours, replacing
from topreward.scoring.curve import Curve, prefix_lengths
from topreward.scoring.metrics import minmax_normalize

COLUMNS = ("index", "episode_index", "frame_index", "progress_sparse")


def frame_progress(curve: Curve, num_frames: int, fps: float, prefixes: int | None) -> np.ndarray:
    """Min-max of the values at `prefixes` prefix lengths (a subset of the curve's), interpolated over frames."""
    wanted = set(prefix_lengths(len(curve.frame_times), prefixes))
    picks = [k for k, n in enumerate(curve.prefix_lengths) if n in wanted]
    values = minmax_normalize([curve.log_prob_true[k] for k in picks])
    # A prefix's newest frame, as a frame number: the readers give frame k the time k / fps.
    anchors = np.rint(np.asarray([curve.prefix_times[k] for k in picks]) * fps)
    return np.interp(np.arange(num_frames), anchors, values)


def label_table(episodes: list[Episode], curves: dict[str, Curve], prefixes: int | None, dense: bool, model: str):
    """The pyarrow table: every frame of every episode; an unscored episode's progress is NaN.

    LeRobot turns NaN progress into weight 1, so such an episode trains as in plain behaviour cloning.
    """
    import pyarrow as pa

    index, episode_index, frame_index, sparse, full = [], [], [], [], []
    for ep in sorted(episodes, key=lambda e: e.first_index):
        n = int(ep.num_frames)
        curve = curves.get(ep.key)
        index.append(np.arange(ep.first_index, ep.first_index + n, dtype=np.int64))
        episode_index.append(np.full(n, int(ep.episode_id), np.int64))
        frame_index.append(np.arange(n, dtype=np.int64))
        sparse.append(frame_progress(curve, n, ep.fps, prefixes) if curve else np.full(n, np.nan))
        if dense:
            full.append(frame_progress(curve, n, ep.fps, None) if curve else np.full(n, np.nan))
    columns = {
        "index": np.concatenate(index), "episode_index": np.concatenate(episode_index),
        "frame_index": np.concatenate(frame_index), "progress_sparse": np.concatenate(sparse).astype(np.float32),
    }
    if dense:
        columns["progress_dense"] = np.concatenate(full).astype(np.float32)
    table = pa.table(columns).sort_by("index")
    return table.replace_schema_metadata({b"vlm_name": model.encode()})


def write_table(table, path: Path, as_csv: bool) -> None:
    """Parquet (what LeRobot reads) or the same columns as CSV, written whole and then moved into place."""
    import pyarrow.parquet as pq

    # Never a link, never someone else's file, even with --overwrite.
    with replacing(path, label_table_ours) as tmp:
        if as_csv:
            with tmp.open("w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(table.column_names)
                writer.writerows(zip(*(table[c].to_pylist() for c in table.column_names), strict=True))
        else:
            pq.write_table(table, tmp)


def training_flags(path: Path, dataset: Path, dense: bool) -> list[str]:
    """The lerobot-train flags that weight samples by this file (it is never found without progress_path)."""
    return [
        f"--dataset.root={dataset.resolve()}",
        "--sample_weighting.type=rabc",
        f"--sample_weighting.progress_path={path.resolve()}",
        f"--sample_weighting.head_mode={'dense' if dense else 'sparse'}",
        "--sample_weighting.kappa=0.01",
    ]
