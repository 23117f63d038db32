"""The language model's last decoder layer, finishing only the rows whose logits are read.

Every layer's keys and values come from that layer's input, so the last layer's attention output, feed-forward
block and final norm matter only at the positions whose logits are read. A packed pass (scoring/packed.py) reads
one position per question row out of thousands of tokens, and the feed-forward block is about three quarters of a
layer's matrix work in Qwen3-VL, so running it on those rows only saves that much of one layer in L: about 9 % of
the language model's work on the benchmarks' 8-layer model, 2 % on Qwen3-VL-8B (36 layers). The values are the
same computation on the same rows.

install() wraps the last layer in place. Without `output_rows` in the call the wrapped layer runs as it always
did, so the streaming passes are unchanged.
"""
from __future__ import annotations

import torch
from torch import nn


class LastLayerRows(nn.Module):
    """A decoder layer whose feed-forward block runs only on `output_rows` when a pass names them.

    The other rows of its output hold the attention's residual sum, not the layer's output: nothing reads them
    (the cache took this layer's keys and values from its input, and only `output_rows` reach the LM head).
    """

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, hidden_states: torch.Tensor, output_rows: torch.Tensor | None = None,
                **kwargs) -> torch.Tensor:
        if output_rows is None:
            return self.layer(hidden_states, **kwargs)
        layer = self.layer
        attended, _ = layer.self_attn(hidden_states=layer.input_layernorm(hidden_states), **kwargs)
        hidden = hidden_states + attended
        rows = hidden[:, output_rows]
        hidden[:, output_rows] = rows + layer.mlp(layer.post_attention_layernorm(rows))
        return hidden


def install(model) -> None:
    """Wrap the language model's last decoder layer (once)."""
    layers = model.model.language_model.layers
    if not isinstance(layers[-1], LastLayerRows):
        layers[-1] = LastLayerRows(layers[-1])
