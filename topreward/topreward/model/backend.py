"""Qwen3-VL through transformers: loading, per-pair pixel encoding, and one forward step on a KV cache."""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from topreward.model.tiny import TINY_MODEL_NAME, tiny_model_dir
from topreward.types import ModelConfig

_QWEN3_VL_TYPES = ("qwen3_vl", "qwen3_vl_moe")


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message says why in one line."""



def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ModelLoadError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from exc
    if device.type not in ("cpu", "cuda"):
        raise ModelLoadError(f"unsupported device {name!r}: use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {name!r} requested but CUDA is not available on this machine")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    dtypes = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
              "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if name not in dtypes:
        raise ModelLoadError(f"unknown dtype {name!r}: use auto, float32, bfloat16 or float16")
    return dtypes[name]


def _attn_implementation(name: str, device: torch.device) -> str:
    if name != "auto":
        return name
    if device.type == "cuda":
        try:
            import flash_attn  # noqa: F401

            return "flash_attention_2"
        except ImportError:
            pass
    return "sdpa"


def _check_local_checkpoint(path: Path) -> None:
    config = path / "config.json"
    if not config.is_file():
        raise ModelLoadError(f"model directory {path} has no config.json: not a transformers checkpoint")
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{config} is not valid JSON: {exc}") from exc
    if model_type not in _QWEN3_VL_TYPES:
        raise ModelLoadError(f"model directory {path} holds a {model_type!r} checkpoint, not Qwen3-VL")


class LinearPatchEmbed(torch.nn.Module):
    """Qwen3-VL's patch embedding as the matrix product it is.

    The original is a Conv3d whose kernel equals its stride (one output per flattened patch), which
    PyTorch runs through a generic convolution: 48 ms for one frame pair of 256x256 on a 2-core CPU, against
    1 ms as a GEMM (and pathologically slow cuDNN kernels on some GPUs, transformers issue 45750). Same
    weights, held by the original `proj` so the state dict is unchanged; the result differs only by
    float rounding (4e-6 in fp32).
    """

    def __init__(self, original: torch.nn.Module) -> None:
        super().__init__()
        self.proj = original.proj
        self.embed_dim = self.proj.out_channels

    @staticmethod
    def fits(module: torch.nn.Module) -> bool:
        proj = getattr(module, "proj", None)
        return (isinstance(proj, torch.nn.Conv3d) and proj.stride == proj.kernel_size and proj.groups == 1
                and proj.padding == (0, 0, 0) and proj.dilation == (1, 1, 1))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        weight = self.proj.weight.view(self.embed_dim, -1)
        patches = hidden_states.view(-1, weight.shape[1]).to(weight.dtype)
        return torch.nn.functional.linear(patches, weight, self.proj.bias)


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
            _check_local_checkpoint(path)
        kwargs = {"trust_remote_code": config.trust_remote_code}
        if path.is_dir():
            if config.revision:
                raise ModelLoadError(f"revision {config.revision!r} applies to hub ids, not to the local directory "
                                     f"{path}")
            source = str(path)
        else:
            source = config.model
            kwargs["revision"] = config.revision or None
            kwargs["local_files_only"] = _hub_source(config.model, kwargs["revision"])
        try:
            processor = AutoProcessor.from_pretrained(source, **kwargs)
            # Straight onto the device: an 8B model never passes through a robot PC's host memory whole.
            model = AutoModelForImageTextToText.from_pretrained(
                source, dtype=dtype, device_map=str(device),
                use_safetensors=None if config.allow_pickle_weights else True,
                attn_implementation=_attn_implementation(config.attn_implementation, device), **kwargs,
            )
        except Exception as exc:  # missing files, no hub, corrupt weights, an absent attention package, ...
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if not config.allow_pickle_weights and "safetensors" in str(exc).lower():
                first_line += " (only safetensors weights are loaded unless pickle weights are allowed)"
            raise ModelLoadError(f"cannot load model {config.model!r}: {first_line}") from exc
        if model.config.model_type not in _QWEN3_VL_TYPES:
            raise ModelLoadError(f"{config.model!r} is a {model.config.model_type!r} model, not Qwen3-VL")
        commit = None if path.is_dir() else _cached_commit(source, kwargs["revision"])
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
        stacked = self._stacked_cache([r.cache for r in rows], cached, past)
        out = self.model(
            input_ids=input_ids, attention_mask=mask, position_ids=position_ids, past_key_values=stacked,
            use_cache=True, pixel_values_videos=pixels, video_grid_thw=grid, mm_token_type_ids=mm_types,
            logits_to_keep=logits_to_keep,
        )
        logits = out.logits.float()
        return [
            BatchRowOutput(logits=logits[i], positions=chunk_positions[i],
                           cache=self._row_cache(stacked, i, past - have, past + r.keep))
            for i, (r, have) in enumerate(zip(rows, cached, strict=True))
        ]

    def _stacked_cache(self, caches: list, lengths: list[int], past: int):
        """One batched DynamicCache holding copies of `caches`, each right-aligned at `past` after zeros."""
        stacked = self.new_cache()
        if past == 0:
            return stacked
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
        return type(stacked)(ddp_cache_data=layers, config=self.model.config.get_text_config())

    def _row_cache(self, stacked, row: int, begin: int, end: int):
        """A new single-row cache of `stacked`'s tokens begin..end of one row (copied: the batch is freed)."""
        if end == begin:
            return self.new_cache()
        layers = [(layer.keys[row:row + 1, :, begin:end].clone(), layer.values[row:row + 1, :, begin:end].clone())
                  for layer in stacked.layers]
        return type(stacked)(ddp_cache_data=layers, config=self.model.config.get_text_config())

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

    def new_cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config.get_text_config())


def _hub_reachable(name: str, revision: str | None = None, timeout: float = 5.0) -> bool:
    """Whether the hub answers about `name`, asked as huggingface_hub itself is configured.

    That is HF_ENDPOINT (a mirror), HF_HUB_OFFLINE, HF_TOKEN and the proxy variables. Any answer counts, a 404
    or a gated model too: loading then says what is wrong; only no answer at all (offline, refused, timed out)
    is unreachable.
    """
    from huggingface_hub import constants, model_info
    from huggingface_hub.errors import HfHubHTTPError

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        model_info(name, revision=revision, timeout=timeout)
    except HfHubHTTPError:
        return True
    except Exception:  # connection refused, name resolution, proxy, timeout: the client's own error types
        return False
    return True


def _cached_config(name: str, revision: str | None = None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(name, "config.json", revision=revision)
    return Path(found) if isinstance(found, str) else None


def _cached(name: str, revision: str | None = None) -> bool:
    return _cached_config(name, revision) is not None


def _cached_commit(name: str, revision: str | None) -> str | None:
    """The commit of a hub model as loaded: the hub client keeps each one in <cache>/snapshots/<commit>/."""
    config = _cached_config(name, revision)
    return config.parent.name if config is not None and config.parent.parent.name == "snapshots" else None


def _hub_source(name: str, revision: str | None = None) -> bool:
    """Whether a hub id must load from the local cache only; ModelLoadError at once if it cannot load at all.

    Without this check the hub client retries for minutes before it fails on a machine that cannot reach it.
    """
    if _hub_reachable(name, revision):
        return False
    if _cached(name, revision):
        return True
    raise ModelLoadError(f"cannot load model {name!r}: it is not in the local Hugging Face cache and the hub "
                         "cannot be reached; set model to a local checkpoint directory (e.g. "
                         "model:=/path/to/Qwen3-VL-8B-Instruct) or download it first")


def model_available(name: str) -> bool:
    """Whether `name` can be loaded now: a local directory, a hub id already in the cache, or the hub reachable.

    A quick check (seconds), so that a demo can fall back instead of waiting out the hub client's retries.
    """
    if name == TINY_MODEL_NAME or Path(name).expanduser().is_dir():
        return True
    try:
        _hub_source(name)
    except ModelLoadError:
        return False
    return True
