"""The progress picture (debug image and progress videos): where the frame goes and what the panel marks."""
from __future__ import annotations

import numpy as np
import pytest

from topreward.overlay import (
    MAX_WIDTH,
    MIN_WIDTH,
    PANEL_HEIGHT,
    VIDEO_HEIGHT,
    ProgressPainter,
    Trace,
    display_resize,
    picture_size,
)

GREEN, AMBER = (80, 220, 80), (255, 190, 40)


def trace(count: int = 8) -> Trace:
    return Trace("push the block", list(np.linspace(0.5, 4.0, count)), list(np.linspace(-6.0, -1.0, count)),
                 list(np.linspace(0.1, 0.9, count)), list(np.linspace(0.0, 1.0, count)))


@pytest.mark.parametrize("shape, size, width", [
    ((256, 256), (VIDEO_HEIGHT, VIDEO_HEIGHT), MIN_WIDTH),  # square: full height, centred on the minimum width
    ((480, 640), (VIDEO_HEIGHT, 480), MIN_WIDTH),
    ((256, 768), (256, MAX_WIDTH), MAX_WIDTH),  # three tiled views: shown at their own size, never enlarged
    ((100, 1000), (76, MAX_WIDTH), MAX_WIDTH),
])
def test_the_frame_fills_its_area_and_keeps_its_aspect(shape, size, width):
    assert picture_size(shape) == size and size[0] % 2 == 0 == size[1] % 2  # even: H.264's chroma
    frame = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    painter = ProgressPainter(trace(), shape, threshold=None, success_at=None, duration=4.0)
    out = painter.paint(frame, 2.0)
    assert out.shape == (VIDEO_HEIGHT + PANEL_HEIGHT, width, 3)
    y0, x0 = (VIDEO_HEIGHT - size[0]) // 2, (width - size[1]) // 2
    # Below the instruction's line of text, the frame sits centred in its area, resized and nothing else.
    np.testing.assert_array_equal(out[max(y0, 40):y0 + size[0], x0:x0 + size[1]],
                                  display_resize(frame, size)[max(y0, 40) - y0:])


def colour_in_panel(picture: np.ndarray, colour: tuple[int, int, int]) -> bool:
    """Whether a run of 20 pixels of a row of the panel has `colour` (anti-aliased lines blend at their ends)."""
    near = (np.abs(picture[VIDEO_HEIGHT:].astype(int) - colour) <= 40).all(axis=-1)
    return bool((near.sum(axis=1) >= 20).any())


def test_the_panel_marks_the_threshold_progress_and_success_only_once_reached():
    frame = np.zeros((64, 64, 3), np.uint8)
    plain = ProgressPainter(trace(), (64, 64), threshold=None, success_at=None, duration=4.0)
    marked = ProgressPainter(trace(), (64, 64), threshold=-3.0, success_at=3.0, duration=4.0)
    assert not colour_in_panel(plain.paint(frame, 0.0), AMBER) and colour_in_panel(marked.paint(frame, 0.0), AMBER)
    before, after = marked.paint(frame, 2.9), marked.paint(frame, 3.5)
    # The success line is drawn from its moment on; the "SUCCESS" text sits above the panel, in the picture.
    success_line = (after[VIDEO_HEIGHT + 60:] == GREEN).all(axis=-1).sum(axis=0)
    assert success_line.max() > 50 and not (before[VIDEO_HEIGHT + 60:] == GREEN).all(axis=-1).any()
    assert (after[:VIDEO_HEIGHT] == GREEN).all(axis=-1).any()
    assert not (before[:VIDEO_HEIGHT] == GREEN).all(axis=-1).any()
    # The progress bar grows with the newest prefix's progress.
    bar = [(plain.paint(frame, t)[VIDEO_HEIGHT + 47] == GREEN).all(axis=-1).sum() for t in (1.0, 2.5, 4.0)]
    assert 0 < bar[0] < bar[1] < bar[2] and bar[2] >= MIN_WIDTH - 20  # full progress: the whole bar
