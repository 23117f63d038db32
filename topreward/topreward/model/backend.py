"""Qwen3-VL through transformers: loading, per-pair pixel encoding, and forward steps on KV caches.

Where the model runs and comes from is resolved in resolve.py, a local checkpoint is checked in checkpoint.py,
the patch embedding is replaced (patch_embed.py), and the batched pass's stacked caches are laid out in
batch_layout.py.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from topreward.model.batch_layout import BatchRow, BatchRowOutput, row_cache, stacked_cache
from topreward.model.checkpoint import QWEN3_VL_TYPES, check_local_checkpoint
from topreward.model.errors import ModelLoadError
from topreward.model.output_rows import install as install_output_rows
from topreward.model.packed_attention import SegmentKeys
from topreward.model.packed_attention import install as install_packed_attention
from topreward.model.patch_embed import LinearPatchEmbed
from topreward.model.resolve import attn_implementation, cached_commit, hub_source, resolve_device, resolve_dtype
from topreward.model.tiny import TINY_MODEL_NAME, TINY_WARNING, tiny_model_dir
from topreward.types import ModelConfig

__all__ = ["BatchRow", "BatchRowOutput", "ModelLoadError", "Qwen3VLBackend", "load_model"]


class Qwen3VLBackend:
    """Owns the model and its processor; every tensor it returns lives on `self.device`."""

    def __init__(self, model, processor, name: str, linear_patch_embed: bool = True) -> None:
        self.model = model.eval()
        visual = model.model.visual
        if linear_patch_embed and LinearPatchEmbed.fits(visual.patch_embed):
            visual.patch_embed = LinearPatchEmbed(visual.patch_embed)
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.name = name
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        vp = processor.video_processor
        self.patch_size, self.merge_size = vp.patch_size, vp.merge_size
        if vp.temporal_patch_size != 2:
            raise ModelLoadError(f"expected temporal_patch_size 2, got {vp.temporal_patch_size}")
        self.video_token_id = int(model.config.video_token_id)
        self.packs = install_packed_attention(model)  # whether forward_packed can run (sdpa, not flash or eager)
        install_output_rows(model)  # forward_packed finishes the last layer on its logits rows only

    @classmethod
    def load(cls, config: ModelConfig) -> Qwen3VLBackend:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        device = resolve_device(config.device)
        dtype = resolve_dtype(config.dtype, device)
        name = config.model
        if config.model == TINY_MODEL_NAME:  # callers warn the user: see TINY_WARNING
            config = replace(config, model=str(tiny_model_dir()))
        path = Path(config.model).expanduser()
        if path.exists() or config.model.startswith((".", "/", "~")):
            if not path.is_dir():
                raise ModelLoadError(f"model directory {path} does not exist")
            check_local_checkpoint(path)
        kwargs = {"trust_remote_code": config.trust_remote_code}
        if path.is_dir():
            if config.revision:
                raise ModelLoadError(f"revision {config.revision!r} applies to hub ids, not to the local directory "
                                     f"{path}")
            source = str(path)
        else:
            source = config.model
            kwargs["revision"] = config.revision or None
            kwargs["local_files_only"] = hub_source(config.model, kwargs["revision"])
        try:
            processor = AutoProcessor.from_pretrained(source, **kwargs)
            # Straight onto the device: an 8B model never passes through a robot PC's host memory whole.
            model = AutoModelForImageTextToText.from_pretrained(
                source, dtype=dtype, device_map=str(device),
                use_safetensors=None if config.allow_pickle_weights else True,
                attn_implementation=attn_implementation(config.attn_implementation, device), **kwargs,
            )
        except Exception as exc:  # missing files, no hub, corrupt weights, an absent attention package, ...
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if not config.allow_pickle_weights and "safetensors" in str(exc).lower():
                first_line += " (only safetensors weights are loaded unless pickle weights are allowed)"
            raise ModelLoadError(f"cannot load model {config.model!r}: {first_line}") from exc
        if model.config.model_type not in QWEN3_VL_TYPES:
            raise ModelLoadError(f"{config.model!r} is a {model.config.model_type!r} model, not Qwen3-VL")
        commit = None if path.is_dir() else cached_commit(source, kwargs["revision"])
        return cls(model, processor, f"{name}@{commit}" if commit else name)

    def tokens_per_frame_pair(self, height: int, width: int) -> int:
        return (height // self.patch_size) * (width // self.patch_size) // self.merge_size**2

    def check_frame_size(self, height: int, width: int) -> None:
        factor = self.patch_size * self.merge_size
        if height % factor or width % factor:
            raise ValueError(f"frame_size ({height}, {width}) must be a multiple of {factor} for this model")

    def encode_pairs(self, frames: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel rows and (n_pairs, 3) grid for an even number of same-size RGB uint8 frames.

        The processor's own resize is off: frames already have their final fixed size, and its
        resize would shrink them as the video grows.
        """
        video = np.stack(frames)
        out = self.processor.video_processor(
            videos=[video], do_resize=False, do_sample_frames=False, cap_pixels_per_frame=False, return_tensors="pt",
        )
        pixels = out["pixel_values_videos"].to(self.device, self.dtype)
        t, h, w = (int(v) for v in out["video_grid_thw"][0])
        grid = torch.tensor([[1, h, w]] * t, device=self.device)
        return pixels, grid

    def _modality_types(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Qwen3-VL's token types: 2 for video tokens, 0 for text."""
        return (input_ids == self.video_token_id).int() * 2

    def _chunk_positions(self, ids: list[int], start: int, grid: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """(input ids (1, L), token types (1, L), positions (3, 1, L)) of a chunk whose first token sits at `start`.

        Qwen3-VL's 3-D positions are an offset plus a term that depends only on the chunk itself, so the chunk's
        positions are the model's own rope index of the chunk alone, shifted by `start`.
        """
        input_ids = torch.tensor([ids], device=self.device)
        mm_types = self._modality_types(input_ids)
        position_ids, _ = self.model.model.get_rope_index(input_ids, mm_types, video_grid_thw=grid)
        return input_ids, mm_types, position_ids + start

    @torch.inference_mode()
    def forward(self, ids: list[int], start: int, cache, pixels: torch.Tensor | None = None,
                grid: torch.Tensor | None = None, logits_to_keep: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Run `ids` on top of `cache` (which grows by them); positions continue from `start`.

        Returns (logits of the last `logits_to_keep` tokens as float32, the chunk's (3, L) positions).
        """
        input_ids, mm_types, position_ids = self._chunk_positions(ids, start, grid)
        out = self.model(
            input_ids=input_ids, position_ids=position_ids, past_key_values=cache, use_cache=True,
            pixel_values_videos=pixels, video_grid_thw=grid, mm_token_type_ids=mm_types,
            logits_to_keep=logits_to_keep,
        )
        return out.logits[0].float(), position_ids[:, 0]

    @torch.inference_mode()
    def forward_batch(self, rows: Sequence[BatchRow], logits_to_keep: int = 1) -> list[BatchRowOutput]:
        """Several chunks, each on top of its own cache, in one forward pass; what forward() gives for each.

        Layout of row i in the batch (P = the longest cache, W = the longest chunk):

            [ zeros | cache_i ][ chunk_i[:pad_at] | pad tokens | chunk_i[pad_at:] ]
              P - len(cache_i)       W - len(chunk_i) pads

        A 2-D attention mask over [cache | chunk] hides the zeros and the pads from every query. Each row's
        last tokens are real, so `logits_to_keep` reads every row's own, and a pad query still sees real keys
        (its row's cache or the chunk's tokens before it): no query row is fully masked, which would give NaN
        hidden states and, through 0 * NaN in the next layer's attention, poison the rows. Positions are
        explicit per row (forward()'s, with the pads given their neighbour's), video pixels and grids are
        concatenated in row order (the model scatters video embeddings over video tokens in row-major order).
        The rows' caches are read into a stacked copy and never changed; each output carries a new cache.
        """
        if not rows:
            return []
        widths = [len(r.ids) for r in rows]
        width = max(widths)
        cached = [r.cache.get_seq_length() for r in rows]
        past = max(cached)
        for r, length, have in zip(rows, widths, cached, strict=True):
            if not 0 <= r.keep <= r.pad_at <= length - logits_to_keep:
                raise ValueError(f"a row needs keep <= pad_at <= len(ids) - logits_to_keep, got keep {r.keep}, "
                                 f"pad_at {r.pad_at}, {length} ids")
            if have == 0 and r.pad_at == 0 and length < width:
                raise ValueError("a row with an empty cache cannot be padded before its first token")
        batch = len(rows)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((batch, width), pad_id, dtype=torch.long, device=self.device)
        mm_types = torch.zeros((batch, width), dtype=torch.int, device=self.device)
        position_ids = torch.zeros((3, batch, width), dtype=torch.long, device=self.device)
        mask = torch.zeros((batch, past + width), dtype=torch.bool, device=self.device)
        chunk_positions = []
        for i, (r, length, have) in enumerate(zip(rows, widths, cached, strict=True)):
            ids, types, positions = self._chunk_positions(r.ids, r.start, r.grid)
            pads = width - length
            real = torch.cat([torch.arange(r.pad_at), torch.arange(r.pad_at + pads, width)]).to(self.device)
            input_ids[i, real] = ids[0]
            mm_types[i, real] = types[0]
            position_ids[:, i, real] = positions[:, 0]
            # The pads' own outputs are never read: any position will do.
            position_ids[:, i, r.pad_at:r.pad_at + pads] = positions[:, 0, r.pad_at:r.pad_at + 1]
            mask[i, past - have:past] = True
            mask[i, past + real] = True
            chunk_positions.append(positions[:, 0])
        with_pixels = [r for r in rows if r.pixels is not None]
        pixels = torch.cat([r.pixels for r in with_pixels]) if with_pixels else None
        grid = torch.cat([r.grid for r in with_pixels]) if with_pixels else None
        stacked = stacked_cache(self._text_config, [r.cache for r in rows], cached, past)
        out = self.model(
            input_ids=input_ids, attention_mask=mask, position_ids=position_ids, past_key_values=stacked,
            use_cache=True, pixel_values_videos=pixels, video_grid_thw=grid, mm_token_type_ids=mm_types,
            logits_to_keep=logits_to_keep,
        )
        logits = out.logits.float()
        return [
            BatchRowOutput(logits=logits[i], positions=chunk_positions[i],
                           cache=row_cache(self._text_config, stacked, i, past - have, past + r.keep))
            for i, (r, have) in enumerate(zip(rows, cached, strict=True))
        ]

    def pair_grid(self, pairs: int, height: int, width: int) -> torch.Tensor:
        """The (pairs, 3) grid encode_pairs gives for `pairs` frame pairs of this size, without encoding them."""
        return torch.tensor([[1, height // self.patch_size, width // self.patch_size]] * pairs, device=self.device)

    def chunk_positions(self, ids: list[int], start: int, grid: torch.Tensor | None) -> torch.Tensor:
        """The (3, L) positions forward() gives `ids` whose first token sits at `start`."""
        return self._chunk_positions(ids, start, grid)[2][:, 0]

    @torch.inference_mode()
    def forward_packed(self, ids: list[int], positions: torch.Tensor, layout: list[SegmentKeys], cache,
                       pixels: torch.Tensor | None, grid: torch.Tensor | None, logits_at: list[int]) -> torch.Tensor:
        """One sequence of several segments on `cache` (which grows by all of it); needs `self.packs`.

        Each segment's queries attend only to the keys its SegmentKeys name (packed_attention.py). `positions`
        (3, L) are given, not computed: each segment carries its own. Returns the float32 logits at the offsets
        `logits_at` (the last layer's feed-forward block and the LM head run on those positions only).
        """
        if not self.packs:
            raise ValueError("packed passes need sdpa attention (flash attention and eager score one prefix at a time)")
        input_ids = torch.tensor([ids], device=self.device)
        layout = [replace(s, mask=None if s.mask is None else s.mask.to(self.device)) for s in layout]
        rows = torch.tensor(logits_at, dtype=torch.long, device=self.device)
        out = self.model(
            input_ids=input_ids, position_ids=positions[:, None].to(self.device), past_key_values=cache,
            use_cache=True, pixel_values_videos=pixels, video_grid_thw=grid,
            mm_token_type_ids=self._modality_types(input_ids),
            logits_to_keep=rows, output_rows=rows, packed_layout=layout,
        )
        return out.logits[0].float()

    @torch.inference_mode()
    def forward_uncached(self, ids: list[int], pixels: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """Logits at the second-to-last token of one plain forward pass, positions left to the model.

        Only the last two positions go through the LM head (the vocabulary projection is the largest
        matrix: at every position it would cost more than a decoder layer).
        """
        input_ids = torch.tensor([ids], device=self.device)
        out = self.model(
            input_ids=input_ids, pixel_values_videos=pixels, video_grid_thw=grid,
            mm_token_type_ids=self._modality_types(input_ids), use_cache=False, logits_to_keep=2,
        )
        return out.logits[0, -2].float()

    @property
    def _text_config(self):
        return self.model.config.get_text_config()

    def new_cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config.get_text_config())


def load_model(config: ModelConfig) -> Qwen3VLBackend:
    """The model, loaded now (minutes for a large one); the tiny random model is announced as meaningless.

    The warning goes to the `topreward` logger; the ROS node logs it through its own logger and calls
    Qwen3VLBackend.load itself.
    """
    if config.model == TINY_MODEL_NAME:
        logging.getLogger("topreward").warning(TINY_WARNING)
    return Qwen3VLBackend.load(config)
