"""Checks on a local checkpoint directory before transformers reads it: a Qwen3-VL config, nothing else."""
from __future__ import annotations

import json
from pathlib import Path

from topreward.model.errors import ModelLoadError

QWEN3_VL_TYPES = ("qwen3_vl", "qwen3_vl_moe")


def check_local_checkpoint(path: Path) -> None:
    config = path / "config.json"
    if not config.is_file():
        raise ModelLoadError(f"model directory {path} has no config.json: not a transformers checkpoint")
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{config} is not valid JSON: {exc}") from exc
    if model_type not in QWEN3_VL_TYPES:
        raise ModelLoadError(f"model directory {path} holds a {model_type!r} checkpoint, not Qwen3-VL")
