"""Shared fixtures: the tiny random Qwen3-VL, synthetic frames (topreward.testing), and ROS contexts per test."""
from __future__ import annotations

import itertools
import os

import pytest

from topreward.testing import backend, random_frames, tiny_model_path  # noqa: F401 (fixtures by name)

# DDS never leaves this machine, whatever the caller's environment says.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

_domain_ids = itertools.count(int(os.environ.get("ROS_DOMAIN_ID", "40")) % 90 + 1)


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
def harness(ros_context, tiny_model_path):  # noqa: F811 (the fixture, by name)
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
