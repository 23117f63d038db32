"""`summary.json`, `threshold.yaml` and the printed table of an evaluation run, rewritten as episodes finish."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from topreward.offline.calibration import roc_auc, suggest_threshold, threshold_yaml
from topreward.offline.episode import Skipped
from topreward.offline.evaluate import finite
from topreward.output_files import json_with, write_atomic, yaml_ours
from topreward.scoring.curve import Curve


def _stats(values: list[float], total: int) -> dict:
    v = finite(values)
    return {"mean": float(np.mean(v)) if v else None, "median": float(np.median(v)) if v else None,
            "min": float(np.min(v)) if v else None, "max": float(np.max(v)) if v else None,
            "undefined": total - len(v)}


def summarize(curves: list[Curve], skipped: list[Skipped], source: str, fmt: str) -> dict:
    """Counts, VOC statistics and, with labels, ROC-AUC and the suggested success_threshold."""
    summary = {
        "source": source, "format": fmt, "model": curves[0].model if curves else None,
        "settings": curves[0].settings if curves else None,
        "episodes_scored": len(curves), "episodes_skipped": len(skipped),
        "skipped": [{"key": s.key, "source": s.source, "reason": s.reason} for s in skipped],
        "voc": _stats([c.voc for c in curves], len(curves)),
    }
    if any(c.static_voc is not None or c.static_log_prob_true for c in curves):
        summary["static_voc"] = _stats([c.static_voc for c in curves], len(curves))
    labelled = [c for c in curves if c.success is not None]
    detection = {"metric": "success_score = mean raw log p(True) of the last 3 prefixes",
                 "labelled": len(labelled), "successes": sum(c.success for c in labelled),
                 "failures": sum(not c.success for c in labelled), "roc_auc": None, "suggested_threshold": None}
    if detection["successes"] and detection["failures"]:
        scores = [c.success_score for c in labelled]
        labels = [c.success for c in labelled]
        choice = suggest_threshold(scores, labels)
        detection.update(roc_auc=roc_auc(scores, labels), suggested_threshold=choice.threshold,
                         criterion=choice.criterion, tpr=choice.tpr, fpr=choice.fpr, youden_j=choice.youden_j)
    else:
        detection["note"] = ("needs labelled successes and failures (a manifest's 'success' column, or the outcomes "
                             "a learner gave ~/start_episode in node records)")
    summary["success_detection"] = detection
    online = [c for c in labelled if c.detected is not None]
    if online:  # node records: how the threshold the robot ran with did on the same episodes
        hits = sum(c.detected and c.success for c in online)
        false_alarms = sum(c.detected and not c.success for c in online)
        successes, failures = sum(c.success for c in online), sum(not c.success for c in online)
        summary["online_detection"] = {
            "labelled": len(online), "detected_successes": hits, "false_alarms": false_alarms,
            "tpr": hits / successes if successes else None, "fpr": false_alarms / failures if failures else None}
    return summary


def write_summary(out: Path, summary: dict) -> None:
    write_atomic(out / "summary.json", json.dumps(summary, indent=1, allow_nan=False) + "\n",
                 json_with("episodes_scored", "success_detection"))
    detection = summary["success_detection"]
    if detection["suggested_threshold"] is not None:
        from topreward.offline.calibration import Threshold

        choice = Threshold(detection["suggested_threshold"], detection["tpr"], detection["fpr"], detection["youden_j"])
        write_atomic(out / "threshold.yaml", threshold_yaml(choice, summary["model"], detection["labelled"]),
                     yaml_ours)


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None or not np.isfinite(value) else format(value, spec)


def episode_line(curve: Curve) -> str:
    """One row of the table, printed as the episode finishes."""
    label = {True: "success", False: "failure", None: "-"}[curve.success]
    static = f" {_fmt(curve.static_voc):>10}" if curve.static_log_prob_true is not None else ""
    return (f"{curve.key:<24} {len(curve.frame_times):>7} {len(curve.prefix_lengths):>8} {_fmt(curve.voc):>7}{static} "
            f"{_fmt(curve.success_score, '.4f'):>13} {label:>8}")


def table_header(static: bool) -> str:
    return (f"{'episode':<24} {'frames':>7} {'prefixes':>8} {'VOC':>7}" + (f" {'static VOC':>10}" if static else "")
            + f" {'success_score':>13} {'label':>8}")


def summary_lines(summary: dict) -> list[str]:
    voc = summary["voc"]
    lines = [f"scored {summary['episodes_scored']} episode(s), skipped {summary['episodes_skipped']}"]
    for s in summary["skipped"]:
        lines.append(f"  skipped {s['key']}: {s['reason']}")
    lines.append(f"VOC mean {_fmt(voc['mean'])}, median {_fmt(voc['median'])}"
                 + (f" ({voc['undefined']} undefined: constant curve)" if voc["undefined"] else ""))
    if "static_voc" in summary:
        st = summary["static_voc"]
        lines.append(f"static VOC (first frame repeated) mean {_fmt(st['mean'])}, median {_fmt(st['median'])}: "
                     "near the real VOC means the model mostly counts frames (length bias)")
    d = summary["success_detection"]
    if d["suggested_threshold"] is None:
        lines.append(f"success detection: {d['labelled']} labelled episode(s); {d['note']}")
    else:
        lines.append(f"success detection on {d['labelled']} labelled episodes ({d['successes']} successes): "
                     f"ROC-AUC {d['roc_auc']:.3f}")
        lines.append(f"suggested success_threshold {d['suggested_threshold']:.4f} by {d['criterion']}: "
                     f"TPR {d['tpr']:.3f}, FPR {d['fpr']:.3f}")
        if d["youden_j"] <= 0:
            lines.append("  warning: the success scores do not separate successes from failures (J <= 0): this "
                         "threshold is no better than chance; do not deploy it")
    online = summary.get("online_detection")
    if online:
        lines.append(f"online, the node reported {online['detected_successes']} of the labelled successes and "
                     f"{online['false_alarms']} false alarm(s) on {online['labelled']} labelled episodes (TPR "
                     f"{_fmt(online['tpr'])}, FPR {_fmt(online['fpr'])})")
    return lines
