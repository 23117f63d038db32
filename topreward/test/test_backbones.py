"""The exact cache holds on the other backbones: Qwen3-VL-MoE, and the real models' attention layout.

The tiny model has head_dim 32 and mrope_section [6, 5, 5]; the released models have head_dim 128,
mrope_section [24, 20, 20] and three deepstack layers. Both layouts below are small enough for seconds.
"""
from __future__ import annotations

import pytest
from conftest import random_frames

from topreward.model.backend import Qwen3VLBackend
from topreward.model.tiny import random_model
from topreward.scoring.scorer import StreamingScorer
from topreward.types import ScheduleConfig

TOL = 1e-4
SMALL = ScheduleConfig(sample_fps=2.0, frame_size=(64, 64), max_frames=64)

# Qwen3-VL-8B: 27 vision blocks with deepstack taps after blocks 8, 16, 24, i.e. at 8/27, 16/27, 24/27 of
# the depth; scaled to 4 blocks that is [1, 2, 3]. The taps feed the first three LLM layers, so 3 layers.
REAL_LAYOUT_TEXT = dict(
    hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1,
    head_dim=128, rope_scaling={"rope_type": "default", "mrope_section": [24, 20, 20], "mrope_interleaved": True},
)
REAL_LAYOUT_VISION = dict(depth=4, deepstack_visual_indexes=[1, 2, 3])
MOE_TEXT = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=64, decoder_sparse_step=1)


@pytest.fixture(scope="module")
def processor(backend):
    return backend.processor  # the tiny checkpoint's: the same tokenizer and processor random_processor() builds


def backend_of(model, processor, name: str) -> Qwen3VLBackend:
    return Qwen3VLBackend(model, processor, name)


def stream_and_check(backend: Qwen3VLBackend, frames: int = 7) -> list[float]:
    scorer = StreamingScorer(backend, "put the cup on the plate", SMALL)
    diffs = []
    for k, frame in enumerate(random_frames(frames, seed=21)):
        scorer.append(frame, 0.5 * k)
        cached, full = scorer.score(), scorer.full_recompute()
        diffs.append(max(abs(cached.log_prob_true - full.log_prob_true),
                         abs(cached.log_prob_false - full.log_prob_false)))
    for n in (2, 5):  # back to shorter prefixes: the cache is cropped to a pair boundary
        cached, full = scorer.score(n), scorer.full_recompute(n)
        diffs.append(abs(cached.log_prob_true - full.log_prob_true))
    return diffs


def test_real_attention_layout_is_exact(processor):
    model = random_model(REAL_LAYOUT_TEXT, REAL_LAYOUT_VISION, seed=3)
    text = model.config.text_config
    assert text.head_dim == 128
    rope = getattr(text, "rope_parameters", None) or text.rope_scaling
    assert list(rope["mrope_section"]) == [24, 20, 20]
    assert list(model.config.vision_config.deepstack_visual_indexes) == [1, 2, 3]
    assert max(stream_and_check(backend_of(model, processor, "real-layout"))) < TOL


def test_moe_backbone_is_exact(processor):
    model = random_model({**REAL_LAYOUT_TEXT, **MOE_TEXT}, REAL_LAYOUT_VISION, moe=True, seed=4)
    assert model.config.model_type == "qwen3_vl_moe"
    assert type(model).__name__ == "Qwen3VLMoeForConditionalGeneration"
    backend = backend_of(model, processor, "moe")
    assert max(stream_and_check(backend)) < TOL


def test_linear_patch_embedding_equals_the_convolution(backend):
    import torch
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionPatchEmbed

    from topreward.model.patch_embed import LinearPatchEmbed

    visual = backend.model.model.visual
    assert isinstance(visual.patch_embed, LinearPatchEmbed)
    conv = Qwen3VLVisionPatchEmbed(visual.config)
    conv.proj = visual.patch_embed.proj  # the very weights the backend uses
    pixels, _ = backend.encode_pairs(random_frames(2, seed=30, size=(64, 96)))
    with torch.inference_mode():
        assert torch.allclose(visual.patch_embed(pixels), conv(pixels), atol=1e-5)
    assert "model.visual.patch_embed.proj.weight" in backend.model.state_dict()  # checkpoints load unchanged
