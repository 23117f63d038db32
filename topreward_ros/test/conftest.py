"""Shared fixtures: the tiny random Qwen3-VL, synthetic frames (topreward.testing), and ROS contexts per test."""
from __future__ import annotations

import fcntl
import itertools
import os
import tempfile
from collections.abc import Iterator

import pytest

from topreward.testing import backend, random_frames, tiny_model_path  # noqa: F401 (fixtures by name)

# DDS never leaves this machine, whatever the caller's environment says.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

# Domain ids 1..101: above 101 Fast DDS's ports reach the kernel's ephemeral range. Each test claims one with a
# lock file, so that test runs side by side on one machine (CI tests Jazzy, Kilted and a colcon workspace at
# once) never share a domain, where one run's nodes would answer the other's.
DOMAIN_IDS = 101
_next_domain = itertools.count(int(os.environ.get("ROS_DOMAIN_ID", "40")))


@pytest.fixture
def domain_id() -> Iterator[int]:
    """A ROS domain id that no other test, of this run or of another on this machine, uses meanwhile."""
    for _ in range(DOMAIN_IDS):
        candidate = next(_next_domain) % DOMAIN_IDS + 1
        lock = open(os.path.join(tempfile.gettempdir(), f"topreward-test-domain-{candidate}.lock"), "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another test process holds it
            lock.close()
            continue
        try:
            yield candidate
        finally:
            lock.close()  # releases the lock
        return
    raise RuntimeError(f"all {DOMAIN_IDS} ROS domain ids are held by other test processes")


@pytest.fixture
def ros_context(domain_id):
    """An rclpy context on a domain id of its own (see domain_id), shut down after the test."""
    import rclpy

    context = rclpy.context.Context()
    rclpy.init(context=context, domain_id=domain_id)
    yield context
    context.try_shutdown()


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
