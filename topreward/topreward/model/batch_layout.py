"""The rows of a batched forward pass: one chunk of ids on its own KV cache each, and the stacked cache they share.

Built on transformers' DynamicCache layout (one (keys, values) pair of shape (batch, heads, tokens, dim) per
layer): each row's cache is copied right-aligned after zeros into one batched cache, and each row's grown
cache is copied back out once the pass has succeeded, so a failed pass changes no row's cache.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class BatchRow:
    """One sequence of a batched forward pass: a chunk of ids on top of its own cache."""

    ids: list[int]
    start: int  # position of the chunk's first token
    cache: object  # the row's DynamicCache; read, never changed
    pixels: torch.Tensor | None  # the chunk's frame pairs (encode_pairs), or None for text only
    grid: torch.Tensor | None
    pad_at: int  # where the row's padding goes: after the tokens it keeps, before the tokens it reads logits of
    keep: int  # leading chunk tokens whose keys and values join the row's cache


@dataclass
class BatchRowOutput:
    """What forward() would have given the row, and the row's cache grown by its kept tokens."""

    logits: torch.Tensor  # (logits_to_keep, vocabulary) float32: the row's last real positions
    positions: torch.Tensor  # (3, len(ids)) the chunk's positions, as forward() returns them
    cache: object  # a new DynamicCache: the row's cache followed by its first `keep` chunk tokens


def stacked_cache(config, caches: list, lengths: list[int], past: int):
    """One batched DynamicCache holding copies of `caches`, each right-aligned at `past` after zeros."""
    from transformers import DynamicCache

    if past == 0:
        return DynamicCache(config=config)
    longest = caches[lengths.index(past)]
    layers = []
    for index, like in enumerate(longest.layers):
        shape = (len(caches), like.keys.shape[1], past, like.keys.shape[3])
        keys = like.keys.new_zeros(shape)
        values = like.values.new_zeros(shape)
        for row, (cache, length) in enumerate(zip(caches, lengths, strict=True)):
            if length:
                keys[row, :, past - length:] = cache.layers[index].keys[0]
                values[row, :, past - length:] = cache.layers[index].values[0]
        layers.append((keys, values))
    return DynamicCache(ddp_cache_data=layers, config=config)


def row_cache(config, stacked, row: int, begin: int, end: int):
    """A new single-row cache of `stacked`'s tokens begin..end of one row (copied: the batch is freed)."""
    from transformers import DynamicCache

    if end == begin:
        return DynamicCache(config=config)
    layers = [(layer.keys[row:row + 1, :, begin:end].clone(), layer.values[row:row + 1, :, begin:end].clone())
              for layer in stacked.layers]
    return DynamicCache(ddp_cache_data=layers, config=config)
