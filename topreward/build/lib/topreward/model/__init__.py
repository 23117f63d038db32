"""Loading Qwen3-VL (hub or local directory, device, dtype, revision) and its forward passes."""
