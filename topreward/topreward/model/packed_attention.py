"""Attention for packed passes: every segment attends to exactly the keys it sees, so nothing masked is computed.

A packed pass (scoring/packed.py) holds segments that see different parts of the cache: a question row sees only its
own prefix's pairs. One attention over the whole pass with a mask would compute every query against every key and
throw most of it away (on a CPU that was a third of a curve's time). Here each segment gets one
scaled_dot_product_attention call over its own keys: the keys it sees in full, then its own tokens, causally.

Registered with transformers under NAME and given to the language model only: with no `packed_layout` in the call it
is transformers' own sdpa, so every other pass runs exactly as before.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

NAME = "topreward_sdpa"


@dataclass(frozen=True)
class SegmentKeys:
    """One segment of a packed pass: its queries, the keys it sees, and which of them are its own."""

    begin: int  # first query row of the segment in the pass
    end: int
    keys: tuple[tuple[int, int], ...]  # ranges of the layer's keys (cache, then the pass): the seen, then its own
    mask: torch.Tensor | None  # (end - begin, keys) True where a query sees a key; None: its own tokens only, causal


def packed_sdpa(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask,
                dropout: float = 0.0, scaling: float | None = None, packed_layout: list[SegmentKeys] | None = None,
                **kwargs) -> tuple[torch.Tensor, None]:
    """Attention with transformers' signature: query (1, heads, Q, dim), key and value (1, kv heads, keys, dim)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if packed_layout is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    out = torch.empty((query.shape[0], query.shape[2], query.shape[1], query.shape[3]), dtype=query.dtype,
                      device=query.device)  # (1, Q, heads, dim): the layout transformers expects back
    gqa = query.shape[1] != key.shape[1]
    for segment in packed_layout:
        keys, values = _ranges(key, segment.keys), _ranges(value, segment.keys)
        attended = torch.nn.functional.scaled_dot_product_attention(
            query[:, :, segment.begin:segment.end], keys, values, attn_mask=segment.mask,
            is_causal=segment.mask is None, scale=scaling, enable_gqa=gqa)
        out[:, segment.begin:segment.end] = attended.transpose(1, 2)
    return out, None


def _ranges(states: torch.Tensor, ranges: tuple[tuple[int, int], ...]) -> torch.Tensor:
    """The keys (or values) in `ranges`, along the token axis: a view for one range, a copy for several."""
    if len(ranges) == 1:
        return states[:, :, ranges[0][0]:ranges[0][1]]
    return torch.cat([states[:, :, a:b] for a, b in ranges], dim=2)


def segment_keys(begin: int, end: int, seen: torch.Tensor, own_first_key: int) -> SegmentKeys:
    """The keys of queries begin..end whose own keys start at `own_first_key`, seeing the sorted indices `seen`."""
    length = end - begin
    own = (own_first_key, own_first_key + length)
    if len(seen) == 0:
        return SegmentKeys(begin, end, (own,), None)  # plain causal attention over its own tokens
    breaks = (torch.nonzero(seen[1:] != seen[:-1] + 1)[:, 0] + 1).tolist()
    starts, ends = [0, *breaks], [*breaks, len(seen)]
    ranges = tuple((int(seen[a]), int(seen[b - 1]) + 1) for a, b in zip(starts, ends, strict=True))
    if ranges[-1][1] == own[0]:  # seen keys right before its own: one range
        ranges = (*ranges[:-1], (ranges[-1][0], own[1]))
    else:
        ranges = (*ranges, own)
    mask = torch.ones((length, len(seen) + length), dtype=torch.bool)
    mask[:, len(seen):] = torch.ones((length, length), dtype=torch.bool).tril()
    return SegmentKeys(begin, end, ranges, mask)


def install(model) -> bool:
    """Give the language model packed_sdpa where it runs sdpa; whether packed passes can run on `model`."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    text = model.config.get_text_config()
    if text._attn_implementation == NAME:
        return True
    if text._attn_implementation != "sdpa":
        return False  # flash attention or eager: packed passes are not offered (score one prefix at a time)
    AttentionInterface.register(NAME, packed_sdpa)
    AttentionMaskInterface.register(NAME, sdpa_mask)  # ordinary passes get sdpa's masks
    text._attn_implementation = NAME
    return True
