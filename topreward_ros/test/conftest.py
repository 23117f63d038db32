"""Shared fixtures: the tiny random Qwen3-VL, synthetic frames, and ROS contexts isolated per test."""
from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import pytest

# DDS never leaves this machine, whatever the caller's environment says.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

_domain_ids = itertools.count(int(os.environ.get("ROS_DOMAIN_ID", "40")) % 90 + 1)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    from topreward_ros.core.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen3-vl"))


@pytest.fixture(scope="session")
def backend(tiny_model_path):
    from topreward_ros.core.backend import Qwen3VLBackend
    from topreward_ros.core.types import ModelConfig

    return Qwen3VLBackend.load(ModelConfig(model=str(tiny_model_path), device="cpu", dtype="float32"))


def random_frames(count: int, seed: int = 0, size: tuple[int, int] = (96, 128)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(count)]


@pytest.fixture
def ros_context():
    """An rclpy context on a domain id of its own, shut down after the test."""
    import rclpy

    context = rclpy.context.Context()
    rclpy.init(context=context, domain_id=next(_domain_ids))
    yield context
    context.try_shutdown()


@pytest.fixture
def domain_id() -> int:
    """A ROS domain id no other test of this run uses (for tests that start ROS processes)."""
    return next(_domain_ids)


@pytest.fixture
def harness(ros_context, tiny_model_path):
    """make(**params): a reward node with the tiny model and a peer node (node_harness.Harness), closed after."""
    from node_harness import Harness

    made = []

    def make(**params):
        made.append(Harness(ros_context, tiny_model_path, **params))
        return made[-1]

    yield make
    for h in made:
        h.close()


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "ros: talks to ROS 2 (rclpy, messages, launch); CI runs these on every distro")
