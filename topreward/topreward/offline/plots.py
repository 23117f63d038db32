"""Pictures: one scored curve (`topreward score --plot`); an evaluation run's curves, VOC histogram and ROC curve."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from topreward.offline.calibration import roc_points
from topreward.offline.evaluate import finite
from topreward.output_files import SOFTWARE, claim, png_ours
from topreward.scoring.curve import Curve

MAX_PANELS = 48  # a grid beyond this is unreadable; the first ones are shown and the title says so


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path, **options) -> Path:
    """Written as ours (the PNG Software tag), never through a link or over a file that is not ours."""
    fig.savefig(claim(path, png_ours), metadata={"Software": SOFTWARE}, **options)
    plt.close(fig)
    return path


def plot_curve(curve: Curve, path: str | Path, thumbnails: list[np.ndarray] | None = None) -> Path:
    """One curve in detail: raw log p(True) with its normalized-progress scale, p_true, frame thumbnails."""
    plt = _pyplot()
    t = np.asarray(curve.prefix_times)
    raw = np.asarray(curve.log_prob_true)
    rows = ([1.0] if thumbnails else []) + [3.0, 1.3]
    fig = plt.figure(figsize=(10, 2.0 * sum(rows)), dpi=110)
    grid = fig.add_gridspec(len(rows), 1, height_ratios=rows, hspace=0.12)
    voc = "n/a" if np.isnan(curve.voc) else f"{curve.voc:.3f}"
    title = f"{curve.instruction}\nVOC {voc} | {curve.model} | {len(t)} prefixes at {curve.sample_fps:g} fps"
    if thumbnails:
        strip = fig.add_subplot(grid[0])
        strip.imshow(np.concatenate(thumbnails, axis=1))
        strip.set_axis_off()
        strip.set_title(title, fontsize=10)

    ax = fig.add_subplot(grid[-2])
    ax.plot(t, raw, "o-", color="tab:blue")
    ax.set_ylabel('raw log p(" True")', color="tab:blue")
    ax.tick_params(axis="y", colors="tab:blue")
    ax.tick_params(axis="x", labelbottom=False)
    ax.grid(alpha=0.3)
    low, span = raw.min(), raw.max() - raw.min()
    if span > 0:  # normalized progress is an affine map of the raw value: show it as a second scale
        scale = ax.secondary_yaxis("right", functions=(lambda r: (r - low) / span, lambda s: s * span + low))
        scale.set_ylabel("normalized progress (episode min-max)", color="tab:orange")
        scale.tick_params(axis="y", colors="tab:orange")
    if not thumbnails:
        ax.set_title(title, fontsize=10)

    below = fig.add_subplot(grid[-1], sharex=ax)
    below.plot(t, curve.p_true, "s-", color="tab:green", markersize=4)
    below.set_ylim(-0.05, 1.05)
    below.set_ylabel("p_true", color="tab:green")
    below.set_xlabel("time since first frame [s]")
    below.grid(alpha=0.3)
    return _save(plt, fig, Path(path), bbox_inches="tight")


def plot_curves(curves: list[Curve], path: Path) -> Path:
    plt = _pyplot()
    shown = curves[:MAX_PANELS]
    cols = min(4, max(1, len(shown)))
    rows = math.ceil(len(shown) / cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), dpi=80, squeeze=False, sharey=True)
    for ax in axes.flat[len(shown):]:
        ax.set_axis_off()
    for ax, c in zip(axes.flat, shown, strict=False):
        ax.plot(c.prefix_times, c.normalized, "o-", ms=3, color="tab:blue", label="episode")
        if c.static_normalized is not None:
            ax.plot(c.prefix_times, c.static_normalized, "--", color="gray", label="static (first frame)")
        voc = "n/a" if not np.isfinite(c.voc) else f"{c.voc:.2f}"
        title = f"{c.key}  VOC {voc}"
        if c.static_voc is not None and np.isfinite(c.static_voc):
            title += f" (static {c.static_voc:.2f})"
        failed = c.success is False
        ax.set_title(("FAILED  " if failed else "") + title, fontsize=8, color="tab:red" if failed else "black")
        if failed:
            for spine in ax.spines.values():
                spine.set_color("tab:red")
                spine.set_linewidth(2)
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    axes[0, 0].set_ylabel("progress (min-max)", fontsize=8)
    if any(c.static_normalized is not None for c in shown):
        axes[0, 0].legend(fontsize=6, loc="upper left")
    more = f" (first {MAX_PANELS} of {len(curves)})" if len(curves) > MAX_PANELS else ""
    model = curves[0].model if curves else ""
    fig.suptitle(f"TOPReward curves, {model}{more}; x: time since first frame [s]", fontsize=9)
    fig.tight_layout()
    return _save(plt, fig, path)


def plot_voc(curves: list[Curve], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3), dpi=80)
    bins = np.linspace(-1, 1, 21)
    ax.hist(finite(c.voc for c in curves), bins=bins, color="tab:blue", alpha=0.8, label="episodes")
    static = finite(c.static_voc for c in curves)
    if static:
        ax.hist(static, bins=bins, color="gray", alpha=0.5, label="static video (length bias)")
        ax.legend(fontsize=8)
    ax.set_xlabel("VOC (Spearman of value vs time)")
    ax.set_ylabel("episodes")
    ax.set_title(f"VOC of {len(curves)} episode(s)", fontsize=9)
    fig.tight_layout()
    return _save(plt, fig, path)


def plot_roc(curves: list[Curve], path: Path, auc: float, threshold: float | None) -> Path:
    plt = _pyplot()
    labelled = [c for c in curves if c.success is not None]
    scores = [c.success_score for c in labelled]
    labels = [c.success for c in labelled]
    fpr, tpr, cuts = roc_points(scores, labels)
    fig, ax = plt.subplots(figsize=(4, 4), dpi=80)
    ax.plot(fpr, tpr, "o-", ms=3, label=f"ROC-AUC {auc:.3f}")
    ax.plot([0, 1], [0, 1], ":", color="gray")
    if threshold is not None:
        s, y = np.asarray(scores), np.asarray(labels, bool)
        ax.plot([(s[~y] >= threshold).mean()], [(s[y] >= threshold).mean()], "*", ms=12, color="tab:red",
                label=f"success_threshold {threshold:.3f}")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"success detection, {len(labelled)} labelled episodes", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _save(plt, fig, path)


def write_plots(out: Path, curves: list[Curve], summary: dict) -> None:
    if not curves:
        return
    plot_curves(curves, out / "curves.png")
    plot_voc(curves, out / "voc.png")
    detection = summary["success_detection"]
    if detection["roc_auc"] is not None:
        plot_roc(curves, out / "roc.png", detection["roc_auc"], detection["suggested_threshold"])
