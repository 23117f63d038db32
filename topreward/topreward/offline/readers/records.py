"""A node's `record_dir` as an evaluation source: the values as the robot scored them online, its outcomes as labels.

Nothing is scored again (no model is loaded): each record becomes the `Curve` of its scored prefixes, so
the summary, the ROC-AUC and the suggested `success_threshold` come from the robot's own episodes, with
the outcome a learner or an operator gave through `~/start_episode` as the label.
"""
from __future__ import annotations

import math
from pathlib import Path

from topreward.offline.episode import Episode, Skipped, SourceError
from topreward.offline.readers.video import video_episode
from topreward.online.records import RECORDS_FILE, iter_records
from topreward.scoring.curve import Curve
from topreward.scoring.metrics import episode_values, success_score, value_order_correlation
from topreward.types import PrefixScore

LABELS = {"success": True, "failure": False, "unknown": None}


def records_file(path: Path) -> Path | None:
    """The records file `path` names (a record_dir, or its episodes.jsonl), or None when it is not one."""
    candidate = path / RECORDS_FILE if path.is_dir() else path
    if candidate.is_symlink() or not candidate.is_file():
        return None
    try:
        first = next((record for _, record, _ in iter_records(candidate)), None)
    except OSError:
        return None
    return candidate if first is not None else None


def record_key(record: dict) -> str:
    robot = record.get("robot", "")
    return f"{robot}/episode {record['episode_id']}" if robot else f"episode {record['episode_id']}"


def record_curve(record: dict, source: str, tau: float, delta_max: float) -> Curve:
    """One record's prefixes as a Curve; ValueError says why the record cannot be used."""
    raw, false = [float(v) for v in record["log_prob_true"]], [float(v) for v in record["log_prob_false"]]
    elapsed, lengths = [float(v) for v in record["elapsed"]], [int(v) for v in record["num_frames"]]
    if not raw:
        raise ValueError("no scored prefix")
    if not len(raw) == len(false) == len(elapsed) == len(lengths):
        raise ValueError("its value lists differ in length")
    if not all(map(math.isfinite, raw + false)):
        raise ValueError("a non-finite value")
    outcome = record.get("outcome", "unknown")
    if outcome not in LABELS:
        raise ValueError(f"unknown outcome {outcome!r}")
    normalized, reward = episode_values(raw, tau, delta_max)
    rate = (lengths[-1] - 1) / elapsed[-1] if elapsed[-1] > 0 else 0.0
    return Curve(
        model=record["model"], instruction=record["instruction"], sample_fps=rate, frame_times=elapsed,
        prefix_lengths=lengths, prefix_times=elapsed, log_prob_true=raw, log_prob_false=false,
        p_true=[PrefixScore(n, t, t, r, f).p_true for n, t, r, f in zip(lengths, elapsed, raw, false, strict=True)],
        normalized=normalized.tolist(), reward=reward.tolist(),
        voc=value_order_correlation(raw), tau=tau, delta_max=delta_max, success_score=success_score(raw),
        key=record_key(record), episode_id=record["episode_id"], source=source, success=LABELS[outcome],
        settings={"scored": "online (node records)"}, detected=record.get("success") is not None,
    )


def _records_file_or_error(path: Path) -> Path:
    found = records_file(path)
    if found is None:
        raise SourceError(f"{path} holds no node records ({RECORDS_FILE} with episode records, as record_dir writes)")
    return found


def read_records(path: Path, tau: float = 2.0, delta_max: float = 2.0) -> list[Curve | Skipped]:
    """Every record in file order; a line that is no usable record comes out Skipped with the line and the cause.

    Records of several models cannot share one threshold: the latest model's (the last record's) are kept
    and the others are skipped, each naming its model.
    """
    found = _records_file_or_error(path)
    items: list[Curve | Skipped] = []
    for number, record, why in iter_records(found):
        source = f"{found}:{number}"
        if record is None:
            items.append(Skipped(f"line {number}", source, why))
            continue
        try:
            items.append(record_curve(record, source, tau, delta_max))
        except (ValueError, TypeError) as exc:
            items.append(Skipped(record_key(record), source, f"unusable record: {exc}", record["episode_id"]))
    models = [item.model for item in items if isinstance(item, Curve)]
    if len(set(models)) > 1:
        latest = models[-1]
        items = [item if not isinstance(item, Curve) or item.model == latest else
                 Skipped(item.key, item.source, f"scored by {item.model}, not {latest} (the latest records' model)",
                         item.episode_id) for item in items]
    return items


def record_episodes(path: Path) -> list[Episode | Skipped]:
    """The recorded episodes as frames to score again: each record's video (record_video), task and outcome."""
    found = _records_file_or_error(path)
    items: list[Episode | Skipped] = []
    for number, record, why in iter_records(found):
        source = f"{found}:{number}"
        if record is None:
            items.append(Skipped(f"line {number}", source, why))
        elif not record.get("video"):
            items.append(Skipped(record_key(record), source, "no video recorded (the node's record_video was off)",
                                 record["episode_id"]))
        elif record.get("outcome", "unknown") not in LABELS:
            items.append(Skipped(record_key(record), source, f"unknown outcome {record['outcome']!r}",
                                 record["episode_id"]))
        else:
            items.append(video_episode(found.parent / record["video"], record_key(record), record["instruction"],
                                       LABELS[record.get("outcome", "unknown")], record["episode_id"],
                                       f"{found.parent / record['video']} ({source})"))
    return items
