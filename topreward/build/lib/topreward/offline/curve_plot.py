"""A picture of one curve: raw log p(True) with its normalized-progress scale, p_true, frame thumbnails."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from topreward.output_files import SOFTWARE, claim, png_ours
from topreward.scoring.curve import Curve


def plot_curve(curve: Curve, path: str | Path, thumbnails: list[np.ndarray] | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    path = Path(path)
    fig.savefig(claim(Path(path), png_ours), bbox_inches="tight", metadata={"Software": SOFTWARE})
    plt.close(fig)
    return path
