"""Packed passes (scoring/packed.py): whole curves, of one episode or several, equal a full recompute in fp32."""
from __future__ import annotations

import pytest
from conftest import random_frames

from topreward.model.backend import Qwen3VLBackend
from topreward.scoring.curve import prefix_lengths, score_curve, score_curves
from topreward.scoring.packed import score_prefixes
from topreward.scoring.scorer import NonFiniteScore, StreamingScorer
from topreward.testing import poisoned
from topreward.types import ModelConfig, ScheduleConfig

TOL = 1e-4


def fed(backend, count: int, size=(64, 64), seed: int = 0, max_frames: int = 64,
        instruction: str = "stack the blocks") -> StreamingScorer:
    scorer = StreamingScorer(backend, instruction, ScheduleConfig(2.0, size, max_frames))
    for k, frame in enumerate(random_frames(count, seed=seed, size=size)):
        scorer.append(frame, 0.5 * k)
    return scorer


def assert_exact(scorer: StreamingScorer, lengths, scores) -> None:
    assert [s.num_frames for s in scores] == list(lengths)
    for n, score in zip(lengths, scores, strict=True):
        ref = scorer.full_recompute(n)
        assert abs(score.log_prob_true - ref.log_prob_true) < TOL, n
        assert abs(score.log_prob_false - ref.log_prob_false) < TOL, n


class PassLog:
    """Records each packed pass the backend runs: its tokens and the cache it ran on (a spy, not a fake)."""

    def __init__(self, backend: Qwen3VLBackend, monkeypatch) -> None:
        self.passes: list[tuple[int, int]] = []  # (tokens in the pass, cached tokens before it)
        real = backend.forward_packed

        def forward_packed(ids, positions, layout, cache, *args):
            self.passes.append((len(ids), cache.get_seq_length()))
            return real(ids, positions, layout, cache, *args)

        monkeypatch.setattr(backend, "forward_packed", forward_packed)


@pytest.mark.parametrize("size", [(64, 64), (64, 96), (96, 64)])
def test_every_prefix_odd_and_even_in_one_pass_equals_full_recompute(backend, size, monkeypatch):
    scorer = fed(backend, 9, size=size, seed=11)
    log = PassLog(backend, monkeypatch)
    lengths = prefix_lengths(scorer.num_frames, None)  # --prefixes all: 1..9, odd and even
    (scores,) = score_prefixes([(scorer, lengths)], max_tokens=100_000)
    assert_exact(scorer, lengths, scores)
    assert len(log.passes) == 1 and log.passes[0][1] == 0  # the pairs once, then all nine questions beside them
    assert len({s.log_prob_true for s in scores}) == len(scores)
    assert scorer.cache.get_seq_length() == 0  # the scorer's own cache is neither read nor changed


def test_exact_after_a_max_frames_halving(backend):
    scorer = fed(backend, 30, seed=12, max_frames=6)
    assert scorer.schedule.generation >= 1 and scorer.num_frames <= 6  # the cap was hit: frames were thinned out
    lengths = list(range(1, scorer.num_frames + 1))
    assert_exact(scorer, lengths, score_prefixes([(scorer, lengths)])[0])


def test_several_episodes_in_shared_passes_and_the_memory_bound(backend, monkeypatch):
    episodes = [fed(backend, 9, seed=13), fed(backend, 6, size=(64, 96), seed=14, instruction="open the drawer"),
                fed(backend, 3, seed=15, instruction="wipe the table")]
    lengths = [[1, 4, 4, 9, 2], [6, 3, 5], [1, 2, 3]]  # repeats, any order: each prefix is scored once
    requests = list(zip(episodes, lengths, strict=True))
    log = PassLog(backend, monkeypatch)
    together = score_prefixes(requests, max_tokens=100_000)
    assert len(log.passes) == 1  # three episodes' pairs and eleven distinct questions: one forward pass
    for scorer, ls, scores in zip(episodes, lengths, together, strict=True):
        assert_exact(scorer, ls, scores)
    # A small bound: pairs in pieces, questions in several passes, the cache never past max(bound, one episode).
    log.passes.clear()
    bound = 150
    pieces = score_prefixes(requests, max_tokens=bound)
    assert len(log.passes) > 3
    longest_pairs = max(len(s.complete_pairs(0, max(ls) // 2)[0]) for s, ls in requests)
    longest_row = max(len(s.question_row(n)[0]) for s, ls in requests for n in ls)
    for tokens, cached in log.passes:
        assert tokens <= max(bound, longest_row) and cached <= max(bound, longest_pairs)
    for a, b in zip(together, pieces, strict=True):
        assert [x.log_prob_true for x in a] == pytest.approx([x.log_prob_true for x in b], abs=TOL)


def test_score_curves_of_episodes_together_equal_one_at_a_time(backend):
    first, second = fed(backend, 8, seed=16), fed(backend, 5, seed=17, instruction="fold the towel")
    heard = []
    curves = score_curves([(first, [2, 5, 8]), (second, [1, 5])], on_prefix=lambda r, n: heard.append((r, n)))
    assert sorted(heard) == [(0, 2), (0, 5), (0, 8), (1, 1), (1, 5)]
    streamed = [score_curve(fed(backend, 8, seed=16), [2, 5, 8], max_tokens=0),
                score_curve(fed(backend, 5, seed=17, instruction="fold the towel"), [1, 5], max_tokens=0)]
    for packed, alone in zip(curves, streamed, strict=True):
        assert packed.instruction == alone.instruction and packed.prefix_lengths == alone.prefix_lengths
        assert packed.log_prob_true == pytest.approx(alone.log_prob_true, abs=TOL)
        assert packed.normalized == pytest.approx(alone.normalized, abs=1e-3)


def test_without_sdpa_curves_are_scored_one_prefix_at_a_time(tiny_model_path):
    eager = Qwen3VLBackend.load(ModelConfig(model=str(tiny_model_path), device="cpu", dtype="float32",
                                            attn_implementation="eager"))
    assert not eager.packs
    scorer = fed(eager, 5, seed=18)
    curve = score_curve(scorer, [1, 3, 5])  # falls back to the streaming path
    assert scorer.work.forward_passes == 3
    for n, value in zip([1, 3, 5], curve.log_prob_true, strict=True):
        assert abs(value - scorer.full_recompute(n).log_prob_true) < TOL
    with pytest.raises(ValueError, match="sdpa"):
        score_prefixes([(scorer, [1])])


def test_bad_requests_are_refused_before_any_pass(backend, tiny_model_path, monkeypatch):
    log = PassLog(backend, monkeypatch)
    scorer = fed(backend, 4, seed=19)
    with pytest.raises(ValueError, match="prefix of 5 frames requested, 4 sampled"):
        score_prefixes([(scorer, [1, 5])])
    other = Qwen3VLBackend.load(ModelConfig(model=str(tiny_model_path), device="cpu", dtype="float32"))
    with pytest.raises(ValueError, match="share one backend"):
        score_prefixes([(scorer, [1]), (fed(other, 2), [2])])
    for bound in (0, -1):
        with pytest.raises(ValueError, match="max_tokens"):
            score_prefixes([(scorer, [1])], max_tokens=bound)
    assert log.passes == [] and score_prefixes([]) == []


def test_a_non_finite_value_is_refused(backend):
    scorer = fed(backend, 4, seed=20)
    with poisoned(backend, scorer.prompt.answer_id), pytest.raises(NonFiniteScore):
        score_prefixes([(scorer, [2, 4])])
    assert_exact(scorer, [2, 4], score_prefixes([(scorer, [2, 4])])[0])  # nothing was left behind


def test_the_last_layer_finishes_only_the_rows_whose_logits_are_read(backend):
    scorer = fed(backend, 9, seed=21)
    layers = backend.model.model.language_model.layers
    rows: dict[str, list[int]] = {"first": [], "last": []}
    hooks = [layers[0].mlp.register_forward_hook(lambda m, args, out: rows["first"].append(args[0].shape[1])),
             layers[-1].layer.mlp.register_forward_hook(lambda m, args, out: rows["last"].append(args[0].shape[1]))]
    try:
        scores = score_prefixes([(scorer, [3, 6, 9])], max_tokens=100_000)[0]
        assert rows["last"] == [3]  # one row per question
        assert rows["first"] == [scorer.work.tokens_prefilled]  # every token of the pass in the other layers
        rows["first"].clear()
        rows["last"].clear()
        scorer.score(4)  # a streaming pass runs the whole last layer, as transformers does
        assert rows["last"] == rows["first"] and rows["last"][0] > 1
    finally:
        for hook in hooks:
            hook.remove()
    assert_exact(scorer, [3, 6, 9], scores)
