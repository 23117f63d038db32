"""Test fixtures shared by this package's tests and the ROS layer's: the tiny random Qwen3-VL, synthetic frames, fakes.

The tiny model is a real Qwen3-VL object (real classes, processor, tokenizer and cache code) with random
weights: its numbers mean nothing. Import the fixtures into a conftest.py to use them.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    from .model.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen3-vl"))


@pytest.fixture(scope="session")
def backend(tiny_model_path):
    from .model.backend import Qwen3VLBackend
    from .types import ModelConfig

    return Qwen3VLBackend.load(ModelConfig(model=str(tiny_model_path), device="cpu", dtype="float32"))


def random_frames(count: int, seed: int = 0, size: tuple[int, int] = (96, 128)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(count)]


class BatchOutOfMemory:
    """The real backend, except that a batched pass raises as a GPU out of memory would.

    A fake for what cannot happen on this CPU; everything else, single passes included, is the real model.
    """

    def __init__(self, real) -> None:
        self._real = real
        self.batch_calls = 0
        self.failing = True

    def __getattr__(self, name):
        return getattr(self._real, name)

    def forward_batch(self, *args, **kwargs):
        self.batch_calls += 1
        if self.failing:
            raise RuntimeError("CUDA out of memory (injected by BatchOutOfMemory)")
        return self._real.forward_batch(*args, **kwargs)


@contextmanager
def poisoned(backend, token_id: int) -> Iterator[None]:
    """The model's output row of `token_id` set to NaN, as a float16 overflow leaves it; restored afterwards."""
    import torch

    weight = backend.model.get_output_embeddings().weight
    saved = weight[token_id].clone()
    with torch.no_grad():
        weight[token_id] = float("nan")
    try:
        yield
    finally:
        with torch.no_grad():
            weight[token_id] = saved
