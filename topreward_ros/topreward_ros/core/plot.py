"""A picture of one curve: raw log p(True) and normalized progress over time, with frame thumbnails."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .curve import Curve


def plot_curve(curve: Curve, path: str | Path, thumbnails: list[np.ndarray] | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.asarray(curve.prefix_times)
    has_thumbs = bool(thumbnails)
    fig = plt.figure(figsize=(10, 5.6 if has_thumbs else 4.2), dpi=110)
    grid = fig.add_gridspec(2 if has_thumbs else 1, 1, height_ratios=[1, 3.2] if has_thumbs else [1], hspace=0.08)
    ax = fig.add_subplot(grid[-1])
    ax.plot(t, curve.log_prob_true, "o-", color="tab:blue", label='raw log p(" True")')
    ax.set_xlabel("time since first frame [s]")
    ax.set_ylabel('log p(" True")', color="tab:blue")
    ax.tick_params(axis="y", colors="tab:blue")
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot(t, curve.normalized, "s--", color="tab:orange", label="normalized progress")
    ax2.set_ylim(-0.05, 1.05)
    ax2.set_ylabel("normalized progress", color="tab:orange")
    ax2.tick_params(axis="y", colors="tab:orange")
    voc = "n/a" if np.isnan(curve.voc) else f"{curve.voc:.3f}"
    title = f"{curve.instruction}\nVOC {voc} | {curve.model} | {len(t)} prefixes at {curve.sample_fps:g} fps"
    if has_thumbs:
        strip = fig.add_subplot(grid[0])
        strip.imshow(np.concatenate(thumbnails, axis=1))
        strip.set_axis_off()
        strip.set_title(title, fontsize=10)
    else:
        ax.set_title(title, fontsize=10)
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], loc="lower right", fontsize=8)
    path = Path(path)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
