"""Several camera views in one frame, so a multi-view rig is scored as one video."""
from __future__ import annotations

import numpy as np

from topreward.frames.image_conversion import check_rgb, resize_image


def column_sizes(views: int, size: tuple[int, int]) -> list[tuple[int, int]]:
    """(height, width) of each view's column in a tiled frame of `size` = (height, width)."""
    height, width = size
    edges = np.linspace(0, width, views + 1).round().astype(int)
    return [(height, int(right - left)) for left, right in zip(edges[:-1], edges[1:], strict=True)]


def tile_views(views: list[np.ndarray | None], size: tuple[int, int]) -> np.ndarray:
    """Views side by side, each squeezed into an equal-width column of a (height, width) frame.

    A missing view (None) is a black column, so the layout never shifts. Use a wider frame_size
    (e.g. 256x512 for two views) to keep each view's aspect ratio. A view already at its column's size
    (see `column_sizes`) is copied as it is.
    """
    if not views or views[0] is None:
        raise ValueError("the primary view is required")
    out = np.zeros((*size, 3), np.uint8)
    left = 0
    for view, column in zip(views, column_sizes(len(views), size), strict=True):
        if view is not None:
            out[:, left:left + column[1]] = resize_image(check_rgb(view), column)
        left += column[1]
    return out
