"""Shared fixtures: the tiny random Qwen3-VL and synthetic frames (topreward.testing)."""
from topreward.testing import backend, random_frames, tiny_model_path  # noqa: F401 (fixtures by name)
