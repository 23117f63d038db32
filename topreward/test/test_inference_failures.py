"""Failures inside and after a forward pass: counted and survived, never published as values (no ROS)."""
from __future__ import annotations

import math
import threading
import time

import pytest
from conftest import random_frames

from topreward.online.buffer import EpisodeBuffer
from topreward.online.worker import EpisodeStream, InferenceWorker
from topreward.scoring.batch import score_batch
from topreward.scoring.scorer import NonFiniteScore, StreamingScorer
from topreward.testing import BatchOutOfMemory, poisoned
from topreward.types import PrefixScore, ScheduleConfig, SuccessConfig

SMALL = ScheduleConfig(sample_fps=2.0, frame_size=(64, 64), max_frames=64)


def wait_until(predicate, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


@pytest.mark.parametrize(("log_true", "log_false", "p_true"), [
    (-800.0, 0.0, 0.0), (0.0, -800.0, 1.0), (-1.0, -1.0, 0.5), (-2.0, -1.0, 1.0 / (1.0 + math.e))])
def test_p_true_is_defined_however_wide_the_gap(log_true, log_false, p_true):
    # exp(800) overflows a float: the gap must never be exponentiated on the side where it is large.
    assert PrefixScore(1, 0.0, 0.0, log_true, log_false).p_true == pytest.approx(p_true, abs=1e-15)


def fed(backend, frames, instruction="stack the cups") -> StreamingScorer:
    scorer = StreamingScorer(backend, instruction, SMALL)
    for k, frame in enumerate(frames):
        scorer.append(frame, 0.5 * k)
    return scorer


def test_non_finite_logits_raise_and_leave_a_cache_that_scores_exactly(backend):
    frames = random_frames(5, seed=71, size=(64, 64))
    scorer = fed(backend, frames)
    scorer.score(2)
    with poisoned(backend, scorer.prompt.answer_id), pytest.raises(NonFiniteScore, match="float16"):
        scorer.score(4)
    again, fresh = scorer.score(5), fed(backend, frames).full_recompute(5)
    assert abs(again.log_prob_true - fresh.log_prob_true) < 1e-4


def test_a_non_finite_row_of_a_batch_raises_and_every_scorer_still_scores_exactly(backend):
    a_frames, b_frames = random_frames(4, seed=72, size=(64, 64)), random_frames(4, seed=73, size=(64, 64))
    a, b = fed(backend, a_frames, "fold the towel"), fed(backend, b_frames)
    with poisoned(backend, a.prompt.answer_id), pytest.raises(NonFiniteScore):
        score_batch([(a, 3), (b, 3)])
    for scorer, frames, task in ((a, a_frames, "fold the towel"), (b, b_frames, "stack the cups")):
        fresh = fed(backend, frames, task).full_recompute(4)
        assert abs(scorer.score(4).log_prob_true - fresh.log_prob_true) < 1e-4


def test_a_publisher_that_raises_is_a_counted_failure_and_the_thread_goes_on(backend):
    wake = threading.Event()
    buffer = EpisodeBuffer(SMALL, "open the drawer", wake)
    published, errors = [], []

    def on_step(episode_id, instruction, step, inference):
        if not errors:
            raise OverflowError("math range error (a publisher's arithmetic)")
        published.append(step.score.num_frames)

    stream = EpisodeStream(StreamingScorer(backend, "open the drawer", SMALL), buffer, SuccessConfig(), on_step,
                           on_error=errors.append)
    worker = InferenceWorker([stream], wake=wake)
    worker.start()
    try:
        frames = random_frames(4, seed=74, size=(64, 64))
        buffer.offer(frames[0], 0.0)
        assert wait_until(lambda: stream.failures().by_reason["OverflowError"] == 1)
        for k in range(1, 4):
            buffer.offer(frames[k], 0.5 * k)
        assert wait_until(lambda: published and published[-1] == 4)
        assert worker.alive and stream.failures().consecutive == 0 and len(errors) == 1
    finally:
        assert worker.stop(timeout=30)


def test_failed_batches_are_counted_reported_and_stop_until_a_new_episode(backend):
    model = BatchOutOfMemory(backend)
    buffers = [EpisodeBuffer(SMALL, task) for task in ("fold the towel", "stack the cups")]
    published = {0: [], 1: []}
    reports = []
    streams = [EpisodeStream(StreamingScorer(model, buffer.instruction, SMALL), buffer, SuccessConfig(),
                             lambda e, i, step, t, k=k: published[k].append(step.score.num_frames), on_error=print)
               for k, buffer in enumerate(buffers)]
    worker = InferenceWorker(streams, max_batch=8, on_batch_failure=lambda *report: reports.append(report))
    frames = random_frames(8, seed=75, size=(64, 64))

    def round_with_new_frames(k: int) -> None:
        for buffer in buffers:
            buffer.offer(frames[k], 0.5 * k)
        worker.run_round()

    for k in range(5):
        round_with_new_frames(k)
        assert published == {0: list(range(1, k + 2)), 1: list(range(1, k + 2))}  # every prefix, alone
    # Rounds 0-2 each tried a batch (both robots had a new prefix), then batching stopped.
    assert model.batch_calls == 3 and worker.batch_failures == 3 and not worker.batching
    assert [(robots, stopped) for _, robots, stopped in reports] == [(2, False), (2, False), (2, True)]
    assert all("out of memory" in str(exc) for exc, _, _ in reports)
    model.failing = False
    round_with_new_frames(5)
    assert model.batch_calls == 3  # still one at a time: no new episode yet
    buffers[1].new_episode()
    round_with_new_frames(6)
    assert worker.batching and model.batch_calls == 4 and worker.batches == 1 and worker.batch_failures == 3
