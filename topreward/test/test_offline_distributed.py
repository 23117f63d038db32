"""`torchrun` data parallel `topreward eval` and `label`: two gloo ranks write what one process writes.

Resume works after the number of ranks changes: a real SIGKILL part-way (parts left on disk), and a limited run.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from offline_data import write_lerobot_v3, write_mp4

from topreward.cli import main

# One episode per batch: byte-for-byte equality across rank counts needs the same packed passes in every run
# (each rank batches its own share; passes of other shapes agree to float rounding: see the batched test).
FAST = ["--frame-size", "64", "--prefixes", "3", "-q", "--batch-episodes", "1"]
# Rank 0 of 2 gets positions 0, 2, 4: after its first (short) episode come two long ones (1000 frames, 64
# sampled), so a run killed once rank 0's part has a line is reliably killed before the merge. Position 5, a
# missing video, is skipped by rank 1.
EPISODES = [(12, True), (14, False), (1000, True), (12, False), (1000, False)]
MERGED = ("curves.jsonl", "summary.json", "threshold.yaml")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dist")
    rows = ["video,instruction,success,episode_id"]
    for k, (n, ok) in enumerate(EPISODES):
        write_mp4(root / "videos" / f"ep{k}.mp4", [(k + g) % 64 for g in range(n)])
        rows.append(f"videos/ep{k}.mp4,push the block to the left,{str(ok).lower()},{k}")
    rows.append("videos/missing.mp4,push the block to the left,true,5")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root / "manifest.csv"


@pytest.fixture
def one_thread():
    """The in-process runs compute with one thread, as every torchrun rank does (OMP_NUM_THREADS=1): same bits."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc: int, *args: str) -> subprocess.Popen:
    """`python -m torch.distributed.run --nproc-per-node N -m topreward.cli ...`, output captured."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-addr",
           "127.0.0.1", "--master-port", str(free_port()), "-m", "topreward.cli", *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def children(pid: int) -> list[int]:
    """The ranks torchrun started (each in a session of its own, so a process-group kill misses them)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def finished(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    return out


def lines(path: Path) -> int:
    return path.read_text().count("\n") if path.is_file() else 0


def same_files(a: Path, b: Path, names=MERGED) -> None:
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.fixture(scope="module")
def reference(manifest, tiny_model_path, tmp_path_factory) -> Path:
    """The single-process run the distributed ones must reproduce byte for byte."""
    out = tmp_path_factory.mktemp("ref") / "out"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["eval", str(manifest), "--out", str(out), "--model", str(tiny_model_path), *FAST]) == 0
    finally:
        torch.set_num_threads(before)
    return out


def test_two_ranks_resuming_one_process_write_what_one_process_writes(manifest, reference, tiny_model_path,
                                                                      tmp_path, one_thread):
    out = tmp_path / "out"
    args = ["eval", str(manifest), "--out", str(out), "--model", str(tiny_model_path), *FAST]
    assert main([*args, "--episodes", "0:2"]) == 0  # one process does positions 0 and 1 ...
    printed = finished(torchrun(2, *args, "--resume"))  # ... two ranks the rest, and rank 0 merges
    same_files(out, reference)
    assert not (out / "parts").exists()  # merged once, the parts removed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["episodes_scored"] == 5 and [s["key"] for s in summary["skipped"]] == ["episode 5"]
    assert "topreward: [rank 1/2] skipped episode 5 " in printed  # each rank reports its own skips


def test_resume_after_a_kill_with_two_ranks_finishes_with_one(manifest, reference, tiny_model_path, tmp_path,
                                                              one_thread):
    out = tmp_path / "out"
    args = ["eval", str(manifest), "--out", str(out), "--model", str(tiny_model_path), *FAST]
    proc = torchrun(2, *args)
    part0 = out / "parts/rank-00000-of-00002/curves.jsonl"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and lines(part0) < 1 and proc.poll() is None:
        time.sleep(0.01)
    for pid in [*children(proc.pid), proc.pid]:  # both ranks and the agent, as a crashed node would
        os.kill(pid, signal.SIGKILL)
    printed, _ = proc.communicate()
    assert 1 <= lines(part0) < 3 and not (out / "curves.jsonl").exists(), f"not killed part-way:\n{printed}"
    assert main([*args, "--resume"]) == 0
    same_files(out, reference)
    assert not (out / "parts").exists()


def test_two_ranks_scoring_their_shares_in_batches_agree_with_one_process(manifest, reference, tiny_model_path,
                                                                        tmp_path):
    out = tmp_path / "out"
    finished(torchrun(2, "eval", str(manifest), "--out", str(out), "--model", str(tiny_model_path), *FAST,
                      "--batch-episodes", "8"))  # the last --batch-episodes counts: each rank's share in one batch
    batched, alone = ([json.loads(line) for line in (folder / "curves.jsonl").read_text().splitlines()]
                      for folder in (out, reference))
    assert [c["key"] for c in batched] == [c["key"] for c in alone]
    for a, b in zip(batched, alone, strict=True):
        assert a["log_prob_true"] == pytest.approx(b["log_prob_true"], abs=1e-5)


def test_label_two_ranks_write_what_one_process_writes(tiny_model_path, tmp_path, one_thread):
    dataset = write_lerobot_v3(tmp_path / "ds", [12, 9, 11])
    common = ["--model", str(tiny_model_path), *FAST]
    assert main(["label", str(dataset), "--out", str(tmp_path / "one.parquet"), *common]) == 0
    finished(torchrun(2, "label", str(dataset), "--out", str(tmp_path / "two.parquet"), *common))
    assert (tmp_path / "two.parquet").read_bytes() == (tmp_path / "one.parquet").read_bytes()
    assert (tmp_path / "two.curves.jsonl").read_bytes() == (tmp_path / "one.curves.jsonl").read_bytes()
    assert not (tmp_path / "two.parts").exists()
