"""The cached paths (streaming and offline) equal a plain full recompute within 1e-4 in fp32."""
from __future__ import annotations

import pytest
from conftest import random_frames

from topreward.scoring.curve import prefix_lengths, score_curve
from topreward.scoring.scorer import StreamingScorer
from topreward.types import ScheduleConfig

TOL = 1e-4
SMALL = ScheduleConfig(sample_fps=2.0, frame_size=(64, 64), max_frames=64)


def assert_matches_full_recompute(scorer, score):
    ref = scorer.full_recompute(score.num_frames)
    assert abs(score.log_prob_true - ref.log_prob_true) < TOL
    assert abs(score.log_prob_false - ref.log_prob_false) < TOL
    return ref


def test_streaming_equals_full_recompute_odd_and_even(backend):
    scorer = StreamingScorer(backend, "stack the blocks", SMALL)
    values = []
    for k, frame in enumerate(random_frames(9, seed=5)):
        assert scorer.append(frame, 0.5 * k)
        score = scorer.score()
        assert score.num_frames == k + 1
        assert_matches_full_recompute(scorer, score)
        values.append(score.log_prob_true)
    assert len(set(values)) == len(values)  # every prefix sees different video


def test_cache_grows_by_one_pair_and_question_is_cropped(backend):
    scorer = StreamingScorer(backend, "stack the blocks", SMALL)
    for k, frame in enumerate(random_frames(6, seed=6)):
        scorer.append(frame, 0.5 * k)
        scorer.score()
        # Only complete pairs stay in the cache; the question and a lone frame were cropped off.
        assert scorer.cache.get_seq_length() == scorer._pair_ends[-1][0]
        assert len(scorer._pair_ends) - 1 == (k + 1) // 2
        if k >= 3 and k % 2 == 1:
            pair_tokens = len(scorer._pair_ids(len(scorer._pair_ends) - 2, k))
            assert scorer._pair_ends[-1][0] - scorer._pair_ends[-2][0] == pair_tokens


def test_offline_curve_equals_full_recompute_in_any_order(backend):
    scorer = StreamingScorer(backend, "open the drawer", SMALL)
    for k, frame in enumerate(random_frames(11, seed=7)):
        scorer.append(frame, 0.5 * k)
    lengths = prefix_lengths(scorer.num_frames, 4)
    curve = score_curve(scorer, lengths)
    assert curve.prefix_lengths == lengths == [1, 4, 8, 11]
    for n, value in zip(lengths, curve.log_prob_true, strict=True):
        assert abs(value - scorer.full_recompute(n).log_prob_true) < TOL
    # Going back to a shorter prefix crops the cache to that pair boundary, still exact.
    for n in (3, 10, 2, 7):
        assert_matches_full_recompute(scorer, scorer.score(n))


def test_exact_across_the_max_frames_halving(backend):
    capped = ScheduleConfig(sample_fps=2.0, frame_size=(64, 64), max_frames=6)
    scorer = StreamingScorer(backend, "wipe the table", capped)
    generations = set()
    for k, frame in enumerate(random_frames(30, seed=8)):
        if scorer.append(frame, 0.25 * k):
            score = scorer.score()
            assert score.num_frames == scorer.num_frames <= 6
            assert_matches_full_recompute(scorer, score)
            generations.add(scorer.schedule.generation)
    assert len(generations) >= 2  # the cap was hit and the cache rebuilt


def test_exact_after_reset_with_new_instruction(backend):
    scorer = StreamingScorer(backend, "first task", SMALL)
    for k, frame in enumerate(random_frames(5, seed=9)):
        scorer.append(frame, 0.5 * k)
        scorer.score()
    scorer.reset("second task")
    assert scorer.num_frames == 0 and scorer.cache.get_seq_length() == 0
    fresh = StreamingScorer(backend, "second task", SMALL)
    for k, frame in enumerate(random_frames(3, seed=10)):
        scorer.append(frame, 7.0 + 0.5 * k)
        fresh.append(frame, 0.5 * k)  # timestamps are relative to the episode's first frame
        a, b = scorer.score(), fresh.score()
        assert_matches_full_recompute(scorer, a)
        assert a.log_prob_true == pytest.approx(b.log_prob_true, abs=TOL)


def test_score_rejects_prefix_beyond_sampled_frames(backend):
    scorer = StreamingScorer(backend, "x", SMALL)
    with pytest.raises(ValueError, match="0 sampled"):
        scorer.score()


def test_empty_instruction_rejected(backend):
    with pytest.raises(ValueError, match="empty"):
        StreamingScorer(backend, "   ", SMALL)


def test_frame_size_must_fit_patch_grid(backend):
    with pytest.raises(ValueError, match="multiple of 32"):
        StreamingScorer(backend, "x", ScheduleConfig(frame_size=(100, 100)))


def test_cache_recovers_after_a_failed_forward(backend, monkeypatch):
    scorer = StreamingScorer(backend, "stack the blocks", SMALL)
    frames = random_frames(6, seed=12)
    for k in range(4):
        scorer.append(frames[k], 0.5 * k)
        scorer.score()
    head = backend.model.lm_head
    original = head.forward
    calls = {"n": 0}

    def fail_once(*args, **kwargs):  # an out-of-memory error after the layers already grew the cache
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("simulated CUDA out of memory")
        return original(*args, **kwargs)

    monkeypatch.setattr(head, "forward", fail_once)
    scorer.append(frames[4], 2.0)
    with pytest.raises(RuntimeError, match="simulated"):
        scorer.score()
    scorer.append(frames[5], 2.5)
    for n in (6, 5, 3):
        assert_matches_full_recompute(scorer, scorer.score(n))


def test_each_prefix_is_one_forward_pass_of_exactly_the_tokens_it_needs(backend):
    scorer = StreamingScorer(backend, "stack the blocks", SMALL)
    calls = {"llm": 0, "vision": 0}

    def counter(key):
        return lambda *_: calls.__setitem__(key, calls[key] + 1)

    hooks = [backend.model.register_forward_pre_hook(counter("llm")),
             backend.model.model.visual.register_forward_pre_hook(counter("vision"))]
    try:
        frames = random_frames(7, seed=13)
        for k, frame in enumerate(frames):
            scorer.append(frame, 0.5 * k)
            scorer.score()
    finally:
        for h in hooks:
            h.remove()
    n = len(frames)
    # The limit: every complete pair once, an odd prefix's self-pair once, the question once per prefix.
    pairs = sum(len(scorer._pair_ids(k, 2 * k + 1)) for k in range(n // 2))
    self_pairs = sum(len(scorer._pair_ids(m // 2, m - 1)) for m in range(1, n + 1, 2))
    question = len(scorer.prompt.question("stack the blocks"))
    assert calls["llm"] == scorer.work.forward_passes == n
    assert calls["vision"] == n  # one vision call per prefix: the new pair or the self-pair
    assert scorer.work.tokens_prefilled == pairs + self_pairs + n * question
    assert scorer.work.frames_encoded == 2 * n
    assert scorer.cache.get_seq_length() == pairs  # complete pairs only
