"""Several robots on one model: score_batch equals each scorer's own score() and the full recompute (1e-4, fp32)."""
from __future__ import annotations

import pytest
import torch
from conftest import random_frames

from topreward.model.backend import BatchRow, Qwen3VLBackend
from topreward.scoring.batch import score_batch
from topreward.scoring.scorer import StreamingScorer
from topreward.types import ModelConfig, ScheduleConfig

TOL = 1e-4
SQUARE = ScheduleConfig(sample_fps=2.0, frame_size=(64, 64), max_frames=64)
WIDE = ScheduleConfig(sample_fps=2.0, frame_size=(64, 128), max_frames=64)  # twice the tokens per pair
# Robot: (instruction, schedule, frames in its episode, round of its first frame).
FLEET = [
    ("stack the blocks", SQUARE, 7, 0),
    ("open the top drawer of the cabinet slowly", WIDE, 5, 2),  # joins late: an empty cache in a busy batch
    ("wipe the table", SQUARE, 8, 1),
]


def make_fleet(backend) -> list[StreamingScorer]:
    return [StreamingScorer(backend, instruction, schedule) for instruction, schedule, _, _ in FLEET]


def fleet_frames() -> list[list]:
    return [random_frames(count, seed=20 + i) for i, (_, _, count, _) in enumerate(FLEET)]


def offer_round(fleets: list[list[StreamingScorer]], frames: list[list], rnd: int) -> list[int]:
    """Give each robot that has a frame in this round the same frame in every fleet; the robots that got one."""
    active = []
    for i, (_, _, count, first) in enumerate(FLEET):
        k = rnd - first
        if 0 <= k < count:
            for fleet in fleets:
                assert fleet[i].append(frames[i][k], 0.5 * k)
            active.append(i)
    return active


def assert_same_state(a: StreamingScorer, b: StreamingScorer) -> None:
    """Pair ends, work counters and the cached keys and values of two scorers of the same episode agree."""
    assert a._pair_ends == b._pair_ends
    assert a.work == b.work
    assert a._cache.get_seq_length() == b._cache.get_seq_length() == a._pair_ends[-1][0]
    if a._cache.get_seq_length():
        for la, lb in zip(a._cache.layers, b._cache.layers, strict=True):
            assert la.keys.shape == lb.keys.shape and la.keys.shape[0] == 1
            assert torch.allclose(la.keys, lb.keys, atol=TOL) and torch.allclose(la.values, lb.values, atol=TOL)


def assert_close(score, ref) -> None:
    assert score.num_frames == ref.num_frames and score.stamp_ns == ref.stamp_ns
    assert abs(score.log_prob_true - ref.log_prob_true) < TOL
    assert abs(score.log_prob_false - ref.log_prob_false) < TOL


def test_streaming_batches_equal_own_scoring_and_full_recompute(backend):
    batched, alone = make_fleet(backend), make_fleet(backend)
    frames = fleet_frames()
    seen_sizes, values = set(), []
    for rnd in range(8):
        active = offer_round([batched, alone], frames, rnd)
        seen_sizes.add(len(active))
        scores = score_batch([(batched[i], None) for i in active])
        for i, score in zip(active, scores, strict=True):
            assert score.num_frames == batched[i].num_frames
            assert_close(score, alone[i].score())
            assert_close(score, batched[i].full_recompute())
            assert_same_state(batched[i], alone[i])
            values.append(score.log_prob_true)
    assert {2, 3} <= seen_sizes  # batches of two and three robots, odd and even prefixes among them
    assert len(set(values)) == len(values)  # every robot's every prefix differs: no row read another's


def test_unbatched_rounds_after_batched_ones_stay_exact(backend):
    batched, alone = make_fleet(backend), make_fleet(backend)
    frames = fleet_frames()
    for rnd in range(5):  # batched, so the caches now in place were written back by score_batch
        active = offer_round([batched, alone], frames, rnd)
        score_batch([(batched[i], None) for i in active])
        for i in active:
            alone[i].score()
    for rnd in range(5, 9):
        for i in offer_round([batched, alone], frames, rnd):
            score = batched[i].score()
            assert_close(score, alone[i].score())
            assert_close(score, batched[i].full_recompute())
            assert_same_state(batched[i], alone[i])


def test_explicit_prefixes_earlier_cached_and_question_only_rows(backend):
    batched, alone = make_fleet(backend), make_fleet(backend)
    frames = fleet_frames()
    for rnd in range(6):
        offer_round([batched, alone], frames, rnd)
    for fleet in (batched, alone):
        for scorer in fleet:
            scorer.score()
    # Robot 0 (6 frames, 3 pairs cached) goes back to 3 frames, robot 1 (4 frames, 2 pairs) asks for 4 again:
    # only its question runs, with no pixels, so its pads come first; robot 2 (5 frames) asks for 4.
    requests = [(0, 3), (1, 4), (2, 4)]
    scores = score_batch([(batched[i], n) for i, n in requests])
    for (i, n), score in zip(requests, scores, strict=True):
        assert score.num_frames == n
        assert_close(score, alone[i].score(n))
        assert_close(score, batched[i].full_recompute(n))
        assert_same_state(batched[i], alone[i])
    assert batched[0]._cache.get_seq_length() == batched[0]._pair_ends[1][0]  # cropped to one pair


def test_a_halving_in_one_robot_rebuilds_only_its_cache(backend):
    capped = ScheduleConfig(sample_fps=2.0, frame_size=(64, 64), max_frames=4)

    def make():
        return [StreamingScorer(backend, "pour the water", capped), StreamingScorer(backend, "fold the towel", SQUARE)]

    batched, alone = make(), make()
    frames = [random_frames(9, seed=30), random_frames(9, seed=31)]
    generations = set()
    for k in range(9):
        for fleet in (batched, alone):
            for scorer, robot_frames in zip(fleet, frames, strict=True):
                scorer.append(robot_frames[k], 0.5 * k)
        scores = score_batch([(s, None) for s in batched])
        for scorer, other, score in zip(batched, alone, scores, strict=True):
            assert_close(score, other.score())
            assert_close(score, scorer.full_recompute())
            assert_same_state(scorer, other)
        generations.add(batched[0].schedule.generation)
    assert len(generations) >= 3 and batched[1].schedule.generation == 0


def test_a_failing_batch_leaves_every_cache_as_it_was(backend, monkeypatch):
    batched, alone = make_fleet(backend), make_fleet(backend)
    frames = fleet_frames()
    for rnd in range(4):
        active = offer_round([batched, alone], frames, rnd)
        score_batch([(batched[i], None) for i in active])
        for i in active:
            alone[i].score()
    active = offer_round([batched, alone], frames, 4)
    assert len(active) == 3
    before = [(s._cache, s._cache.get_seq_length(), list(s._pair_ends), s.work.forward_passes) for s in batched]
    head = backend.model.lm_head
    original = head.forward

    def fail(*args, **kwargs):  # after every decoder layer has grown the (stacked) cache
        raise RuntimeError("simulated CUDA out of memory")

    monkeypatch.setattr(head, "forward", fail)
    with pytest.raises(RuntimeError, match="simulated"):
        score_batch([(batched[i], None) for i in active])
    monkeypatch.setattr(head, "forward", original)
    after = [(s._cache, s._cache.get_seq_length(), list(s._pair_ends), s.work.forward_passes) for s in batched]
    assert after == before
    # The caller's fallback: each robot alone, then batched again; both exact.
    for i in active[:2]:
        assert_close(batched[i].score(), batched[i].full_recompute())
    assert_close(score_batch([(batched[2], None)])[0], batched[2].full_recompute())
    offer_round([batched, alone], frames, 5)
    for i, score in enumerate(score_batch([(s, None) for s in batched])):
        assert_close(score, batched[i].full_recompute())


def test_one_request_is_the_scorers_own_score(backend, monkeypatch):
    scorer = StreamingScorer(backend, "stack the blocks", SQUARE)
    for k, frame in enumerate(random_frames(3, seed=40)):
        scorer.append(frame, 0.5 * k)

    def no_batch(*args, **kwargs):
        raise AssertionError("a single request must not take the batched path")

    monkeypatch.setattr(backend, "forward_batch", no_batch)
    (score,) = score_batch([(scorer, 2)])
    assert_close(score, scorer.full_recompute(2))
    assert score_batch([]) == []


def test_rejected_batches_change_nothing(backend, tiny_model_path):
    a, b = StreamingScorer(backend, "stack the blocks", SQUARE), StreamingScorer(backend, "wipe", SQUARE)
    for k, frame in enumerate(random_frames(4, seed=41)):
        a.append(frame, 0.5 * k)
        b.append(frame, 0.5 * k)
    a.score()
    with pytest.raises(ValueError, match="twice"):
        score_batch([(a, 2), (b, None), (a, 4)])
    other = Qwen3VLBackend.load(ModelConfig(model=str(tiny_model_path), device="cpu", dtype="float32"))
    stranger = StreamingScorer(other, "wipe", SQUARE)
    stranger.append(random_frames(1, seed=42)[0], 0.0)
    with pytest.raises(ValueError, match="one backend"):
        score_batch([(a, None), (stranger, None)])
    with pytest.raises(ValueError, match="5 frames requested, 4 sampled"):
        score_batch([(a, 1), (b, 5)])  # a's earlier prefix would crop its cache: checked before any change
    assert len(a._pair_ends) == 3 and a.work.forward_passes == 1 and b.work.forward_passes == 0


def test_forward_batch_rejects_a_layout_that_would_mask_a_whole_row(backend):
    empty = backend.new_cache()
    row = BatchRow(ids=[1, 2, 3], start=0, cache=empty, pixels=None, grid=None, pad_at=0, keep=0)
    longer = BatchRow(ids=[1, 2, 3, 4], start=0, cache=backend.new_cache(), pixels=None, grid=None, pad_at=1, keep=0)
    with pytest.raises(ValueError, match="empty cache"):
        backend.forward_batch([row, longer], logits_to_keep=2)
    with pytest.raises(ValueError, match="pad_at"):
        backend.forward_batch([BatchRow([1, 2, 3], 0, empty, None, None, pad_at=2, keep=0)], logits_to_keep=2)
