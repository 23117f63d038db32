"""Several camera views in one frame, so a multi-view rig is scored as one video."""
from __future__ import annotations

import numpy as np

from .schedule import resize_frame


def tile_views(views: list[np.ndarray | None], size: tuple[int, int]) -> np.ndarray:
    """Views side by side, each squeezed into an equal-width column of a (height, width) frame.

    A missing view (None) is a black column, so the layout never shifts. Use a wider frame_size
    (e.g. 256x512 for two views) to keep each view's aspect ratio.
    """
    if not views or views[0] is None:
        raise ValueError("the primary view is required")
    height, width = size
    edges = np.linspace(0, width, len(views) + 1).round().astype(int)
    out = np.zeros((height, width, 3), np.uint8)
    for view, left, right in zip(views, edges[:-1], edges[1:], strict=True):
        if view is not None:
            out[:, left:right] = resize_frame(view, (height, int(right - left)))
    return out
