"""Bad input over real DDS to a real node: >1,000 seeded malformed camera messages, and bad instructions.

Every bad message must be rejected under its reason (in the intake and in /diagnostics),
the node must keep running, and the good frames must score exactly as if the bad ones had never been sent.

Stamps: a malformed *image* is only converted (and so rejected) when its stamp would be sampled, so those
carry a stamp in the next 2 fps grid cell; a *valid* image is bad only through its stamp (zero on a
stamped camera, repeated, backwards, far future), because a valid image on a new grid cell is a good frame.
"""
from __future__ import annotations

import time
from collections import Counter

import cv2
import numpy as np
import pytest
from conftest import random_frames
from node_harness import TASK, compressed_msg, diagnostic_values, image_msg, offline_values, wait_until
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

pytestmark = pytest.mark.ros  # ROS-facing: CI runs these on every distro it covers

SEED = 20261201
GRID_NS = 500_000_000  # 2 fps
MAX_PIXELS = 100_000  # the harness's max_image_pixels: a 64x64 frame is 4,096
CHUNK = 40  # messages published before waiting for the node to have received them all (no DDS history loss)


def _raw(rng, width=64, height=64, encoding="rgb8", step=None, size=None) -> Image:
    step = width * 3 if step is None else step
    size = step * height if size is None else size
    return Image(width=width, height=height, encoding=encoding, step=step,
                 data=rng.integers(0, 256, size, dtype=np.uint8).tobytes())


def _bad_raw_image(rng, kind: str) -> Image:
    """A sensor_msgs/Image that is malformed in the way `kind` names (the node's reason code)."""
    if kind == "unsupported_encoding":
        encoding = rng.choice(["32FC1", "16UC1", "mono16", "bayer_rggb8", "nv12", "8UC3", "rgb16", "jpeg", "",
                               "RGB 8", "".join(rng.choice(list("abcxyz0189_"), 6))])
        return _raw(rng, encoding=str(encoding))
    if kind == "bad_layout":
        if rng.random() < 0.3:  # 4:2:2 needs an even width
            return _raw(rng, width=63, encoding=str(rng.choice(["yuv422", "yuv422_yuy2"])), step=126)
        encoding = str(rng.choice(["rgb8", "bgr8", "rgba8", "bgra8", "mono8"]))
        channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}[encoding]
        return _raw(rng, encoding=encoding, step=int(rng.integers(0, 64 * channels)), size=64 * 64 * channels)
    if kind == "truncated":
        encoding = str(rng.choice(["rgb8", "bgr8", "rgba8", "mono8", "yuv422"]))
        channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "mono8": 1, "yuv422": 2}[encoding]
        width, height = 64, int(rng.integers(1, 128))  # height may also claim more rows than the data holds
        pad = int(rng.integers(0, 3)) * 16
        step = width * channels + pad
        needed = step * (height - 1) + width * channels
        return _raw(rng, width, height, encoding, step, int(rng.integers(0, needed)))
    if kind == "empty":
        width, height = (0, int(rng.integers(0, 64))) if rng.random() < 0.5 else (int(rng.integers(0, 64)), 0)
        return _raw(rng, width, height, size=int(rng.integers(0, 64)))
    if kind == "too_large":  # a corrupt header claiming a huge image, with or without the bytes for it
        width = int(rng.integers(MAX_PIXELS // 64 + 1, 1 << 16))
        height = int(rng.integers(MAX_PIXELS // width + 1, 1 << 16))
        return _raw(rng, width, height, step=width * 3, size=int(rng.integers(0, 4096)))
    raise AssertionError(kind)


def _corrupt_compressed(rng, frame: np.ndarray) -> bytes:
    """Bytes that start like a JPEG or PNG of `frame` (or not at all) and that OpenCV cannot decode."""
    while True:
        ext = str(rng.choice([".jpg", ".png"]))
        data = bytearray(cv2.imencode(ext, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))[1].tobytes())
        how = rng.integers(0, 4)
        keep = 33 if ext == ".png" else 200  # past the size fields, which the node reads before decoding
        if how == 0:  # garbage after the header
            data[keep:] = rng.integers(0, 256, len(data) - keep, dtype=np.uint8).tobytes()
        elif how == 1:  # cut short
            data = data[:int(rng.integers(keep, len(data) // 3))]
        elif how == 2:  # neither JPEG nor PNG
            data = bytearray(rng.integers(0, 256, int(rng.integers(1, 3000)), dtype=np.uint8).tobytes())
            data[0] = 0x00
        else:  # bytes flipped throughout the body
            for i in rng.integers(keep, len(data), 64):
                data[i] ^= 0xFF
        # The class is "cannot be decoded": bytes that still decode into some image are not malformed.
        if cv2.imdecode(np.frombuffer(bytes(data), np.uint8), cv2.IMREAD_COLOR) is None:
            return bytes(data)


def _bad_compressed_image(rng, kind: str, frame: np.ndarray) -> CompressedImage:
    if kind == "decode_failed":
        data = _corrupt_compressed(rng, frame)
    elif kind == "empty":
        data = b""
    elif kind == "too_large" and rng.random() < 0.5:  # a PNG whose header claims more than max_image_pixels
        data = bytearray(cv2.imencode(".png", frame)[1].tobytes())
        data[16:24] = int(rng.integers(400, 1 << 20)).to_bytes(4, "big") + (400).to_bytes(4, "big")
        data = bytes(data)
    elif kind == "too_large":  # the same in a JPEG frame header, behind 0xFF fill bytes that libjpeg skips
        data = bytearray(cv2.imencode(".jpg", frame)[1].tobytes())
        sof = data.find(b"\xff\xc0")
        data[sof + 5:sof + 9] = (400).to_bytes(2, "big") + int(rng.integers(400, 1 << 16)).to_bytes(2, "big")
        data = bytes(data[:sof]) + b"\xff" * int(rng.integers(0, 3)) + bytes(data[sof:])
    else:
        raise AssertionError(kind)
    return CompressedImage(format="png", data=data)


IMAGE_KINDS_RAW = ("unsupported_encoding", "bad_layout", "truncated", "empty", "too_large")
IMAGE_KINDS_COMPRESSED = ("decode_failed", "empty", "too_large")
STAMP_KINDS = ("zero_stamp", "duplicate_stamp", "stamp_backwards", "future_stamp")


def _bad_stamp(rng, kind: str, first_ns: int, last_ns: int) -> int:
    """A stamp that makes a valid image bad (`last_ns`: the newest good frame's)."""
    if kind == "zero_stamp":
        return 0
    if kind == "duplicate_stamp":
        return last_ns
    if kind == "stamp_backwards":
        return int(rng.integers(max(first_ns - 3600 * 10**9, 1), last_ns))
    if kind == "future_stamp":  # beyond max_stamp_lead (10 s) ahead of the node's clock, up to 2038
        return int(rng.integers(time.time_ns() + 60 * 10**9, (2**31 - 1) * 10**9))
    raise AssertionError(kind)


def _run(h, make_good, make_bad_image, image_kinds, good_count: int, bad_per_gap: int, rng, topic: str):
    """Publish good frames with `bad_per_gap` bad messages after each but the last.

    Returns the good frames, their stamps [ns], a Counter of the bad messages' expected reasons, and the
    number of messages sent.
    """
    base_ns = (time.time_ns() // 10**9 - 120) * 10**9 + 123_456_789  # a live camera, two minutes behind
    frames = random_frames(good_count, seed=SEED, size=(64, 64))
    times_ns = [base_ns + k * GRID_NS for k in range(good_count)]
    expected: Counter = Counter()
    sent = 0

    def publish(msg) -> None:
        nonlocal sent
        h.publish(msg, topic)
        sent += 1
        if sent % CHUNK == 0:
            assert wait_until(lambda: h.received() == sent), f"node received {h.received()} of {sent}"

    for k in range(good_count):
        publish(make_good(frames[k], times_ns[k]))
        if k == good_count - 1:
            break
        for _ in range(bad_per_gap):
            kind = str(rng.choice(image_kinds + STAMP_KINDS))
            if kind in STAMP_KINDS:
                source = frames[k] if kind == "duplicate_stamp" and rng.random() < 0.5 else \
                    rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)  # a duplicate frame, or another picture
                msg = make_good(source, _bad_stamp(rng, kind, times_ns[0], times_ns[k]))
            else:
                msg = make_bad_image(rng, kind, frames[k])
                # In the next grid cell, so that it would be sampled: the node must convert it to reject it.
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(
                    times_ns[k + 1] + int(rng.integers(0, GRID_NS * 9 // 10)), 10**9)
            expected[kind] += 1
            publish(msg)
    assert wait_until(lambda: h.received() == sent)
    return frames, times_ns, expected, sent


def _check(h, backend, frames, times_ns, expected: Counter, sent: int, topic: str) -> None:
    good = len(frames)
    assert wait_until(lambda: h.progress and h.progress[-1].num_frames == good, 30.0), \
        f"scored {h.progress[-1].num_frames if h.progress else 0} of {good} good frames; rejected {h.rejected()}"
    # Rejected, each under its own reason, and nothing else was: the good frames were all kept.
    assert h.rejected() == dict(expected)
    assert len(h.node.channels[0].buffer) == good
    assert h.node.lifecycle_state == "active" and h.node._worker.alive
    # The good frames' values are exactly those of the good frames alone.
    reference = offline_values(backend, frames, [t / 1e9 for t in times_ns])
    assert max(reference) == good
    for msg in h.progress:
        ref = reference[msg.num_frames]
        assert msg.episode_id == 0
        assert abs(msg.log_prob_true - ref.log_prob_true) < 1e-4, msg.num_frames
        assert abs(msg.log_prob_false - ref.log_prob_false) < 1e-4, msg.num_frames
        assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == times_ns[msg.num_frames - 1]
    # The same counters in /diagnostics, under "<topic> rejected <reason>".
    want = {f"{topic} rejected {reason}": str(count) for reason, count in expected.items()}
    want[f"{topic} frames_received"] = str(sent)
    want[f"{topic} frames_rejected"] = str(sum(expected.values()))

    def shows_all(status) -> bool:
        values = diagnostic_values(status)
        return all(values.get(k) == v for k, v in want.items())

    assert wait_until(lambda: h.diagnostics_where(shows_all) is not None, 5.0), \
        {k: v for k, v in diagnostic_values(h.diagnostics[-1][1]).items() if "rejected" in k}


def test_raw_fuzz_rejected_counted_and_good_frames_unchanged(harness, backend):
    topic = "/cam/image_raw"
    h = harness(max_image_pixels=MAX_PIXELS)
    rng = np.random.default_rng(SEED)
    frames, times_ns, expected, sent = _run(
        h, lambda f, t: image_msg(f, t), lambda r, kind, _: _bad_raw_image(r, kind), IMAGE_KINDS_RAW,
        good_count=12, bad_per_gap=92, rng=rng, topic=topic)
    bad = sum(expected.values())
    print(f"\nraw fuzz: {bad} malformed among {len(frames)} good; per reason {dict(sorted(expected.items()))}")
    assert bad >= 1000 and set(expected) == set(IMAGE_KINDS_RAW + STAMP_KINDS)
    _check(h, backend, frames, times_ns, expected, sent, topic)


def test_compressed_fuzz_rejected_counted_and_good_frames_unchanged(harness, backend):
    topic = "/cam/image_raw/compressed"
    h = harness(camera_topics=[topic], max_image_pixels=MAX_PIXELS)
    rng = np.random.default_rng(SEED + 1)
    frames, times_ns, expected, sent = _run(
        h, lambda f, t: compressed_msg(f, t, ".png"), _bad_compressed_image, IMAGE_KINDS_COMPRESSED,
        good_count=6, bad_per_gap=40, rng=rng, topic=topic)
    print(f"\ncompressed fuzz: {sum(expected.values())} malformed among {len(frames)} good; per reason "
          f"{dict(sorted(expected.items()))}")
    assert set(expected) == set(IMAGE_KINDS_COMPRESSED + STAMP_KINDS)
    _check(h, backend, frames, times_ns, expected, sent, topic)


def test_instructions_bad_rejected_non_ascii_scored(harness, backend):
    task = "把红色方块放进碗里 — räume den Tisch ab, déjà vu 🤖"
    h = harness()
    pub = h.peer.create_publisher(String, "/topreward/instruction", 10)
    assert wait_until(lambda: pub.get_subscription_count() > 0)
    bad = ["", "   \t\n ", "x" * 1001, "é" * 1001]
    for text in bad:
        pub.publish(String(data=text))
    channel = h.node.channels[0]
    assert wait_until(lambda: channel.instructions_rejected == len(bad))
    buffer = h.node.channels[0].buffer
    assert buffer.instruction == TASK and buffer.episode_id == 0  # nothing changed
    assert wait_until(lambda: h.diagnostics_where(
        lambda s: diagnostic_values(s).get("instructions_rejected") == str(len(bad))) is not None, 5.0)
    pub.publish(String(data=task))
    assert wait_until(lambda: h.node.channels[0].buffer.instruction == task)
    frames, times = random_frames(2, seed=7, size=(64, 64)), [30.0, 30.5]
    for frame, t in zip(frames, times, strict=True):
        h.send(frame, t)
    assert wait_until(lambda: h.progress and h.progress[-1].num_frames == 2)
    reference = offline_values(backend, frames, times, instruction=task)
    for msg in h.progress:
        assert msg.instruction == task and msg.episode_id == 1
        assert abs(msg.log_prob_true - reference[msg.num_frames].log_prob_true) < 1e-4
