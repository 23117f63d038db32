"""Where and how a model runs, and where it comes from: device, dtype, attention, and the Hugging Face hub.

The hub is asked as huggingface_hub itself is configured (HF_ENDPOINT, HF_HUB_OFFLINE, HF_TOKEN, proxies),
so that a machine that cannot reach it fails in seconds with the reason instead of retrying for minutes.
"""
from __future__ import annotations

from pathlib import Path

import torch

from topreward.model.errors import ModelLoadError
from topreward.model.tiny import TINY_MODEL_NAME


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


def attn_implementation(name: str, device: torch.device) -> str:
    if name != "auto":
        return name
    if device.type == "cuda":
        try:
            import flash_attn  # noqa: F401

            return "flash_attention_2"
        except ImportError:
            pass
    return "sdpa"


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


def cached_commit(name: str, revision: str | None) -> str | None:
    """The commit of a hub model as loaded: the hub client keeps each one in <cache>/snapshots/<commit>/."""
    config = _cached_config(name, revision)
    return config.parent.name if config is not None and config.parent.parent.name == "snapshots" else None


def hub_source(name: str, revision: str | None = None) -> bool:
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
        hub_source(name)
    except ModelLoadError:
        return False
    return True
