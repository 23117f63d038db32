"""Outputs are written safely: folders created, no symbolic link followed, no file of someone else's replaced."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from topreward.output_files import (
    OutputError,
    json_with,
    open_append,
    png_ours,
    write_atomic,
    yaml_ours,
)

CURVE = json_with("log_prob_true", "prefix_lengths")


def test_folder_created_and_own_file_replaced(tmp_path):
    path = tmp_path / "a" / "b" / "curve.json"
    write_atomic(path, json.dumps({"log_prob_true": [1], "prefix_lengths": [1]}), CURVE)
    write_atomic(path, json.dumps({"log_prob_true": [2], "prefix_lengths": [1]}), CURVE)
    assert json.loads(path.read_text())["log_prob_true"] == [2]
    assert [p.name for p in path.parent.iterdir()] == ["curve.json"]  # no temporary file left


def test_each_write_has_a_temporary_file_of_its_own_synced_before_it_replaces(tmp_path, monkeypatch):
    path = tmp_path / "curve.json"
    # Another writer's temporary file under the old fixed name: neither used nor touched.
    other = tmp_path / ".curve.json.tmp"
    other.write_text("another writer, half-way")
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    write_atomic(path, json.dumps({"log_prob_true": [3], "prefix_lengths": [1]}), CURVE)
    assert json.loads(path.read_text())["log_prob_true"] == [3]
    assert other.read_text() == "another writer, half-way"
    assert len(synced) == 2 and synced[1] == str(tmp_path)  # the data (as the temporary file), then the folder
    assert synced[0] != str(other) and synced[0].startswith(str(tmp_path / ".curve.json."))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".curve.json.tmp", "curve.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    path = tmp_path / "curve.json"
    write_atomic(path, json.dumps({"log_prob_true": [1], "prefix_lengths": [1]}), CURVE)
    with pytest.raises(TypeError):
        write_atomic(path, 42, CURVE)  # neither text nor bytes: fails while writing
    assert json.loads(path.read_text())["log_prob_true"] == [1]
    assert [p.name for p in tmp_path.iterdir()] == ["curve.json"]


def test_someone_elses_file_is_never_overwritten(tmp_path):
    cases = [(tmp_path / "notes.json", b'{"my": "notes"}', CURVE), (tmp_path / "log.jsonl", b"plain text\n", CURVE),
             (tmp_path / "t.yaml", b"a: 1\n", yaml_ours), (tmp_path / "p.png", b"\x89PNG\r\n\x1a\n....", png_ours)]
    for path, content, ours in cases:
        path.write_bytes(content)
        with pytest.raises(OutputError, match="not written by topreward_ros"):
            write_atomic(path, "x", ours)
        with pytest.raises(OutputError):
            open_append(path, ours)
        assert path.read_bytes() == content, path


def test_symbolic_links_are_not_followed(tmp_path):
    victim = tmp_path / "outside" / "important.json"
    victim.parent.mkdir()
    victim.write_text(json.dumps({"log_prob_true": [], "prefix_lengths": []}))  # looks like ours, still a link
    link = tmp_path / "out" / "curve.json"
    link.parent.mkdir()
    link.symlink_to(victim)
    before = victim.read_text()
    with pytest.raises(OutputError, match="symbolic link"):
        write_atomic(link, "{}", CURVE)
    with pytest.raises(OutputError, match="symbolic link"):
        open_append(link, CURVE)
    assert victim.read_text() == before and link.is_symlink()


def test_our_plots_are_recognised(tmp_path, backend):
    from conftest import random_frames

    from topreward.offline.plots import plot_curve
    from topreward.scoring.curve import score_curve
    from topreward.scoring.scorer import StreamingScorer
    from topreward.types import ScheduleConfig

    scorer = StreamingScorer(backend, "stack the cups", ScheduleConfig(2.0, (64, 64)))
    for k, frame in enumerate(random_frames(3, seed=1)):
        scorer.append(frame, 0.5 * k)
    path = plot_curve(score_curve(scorer, [1, 2, 3]), tmp_path / "curve.png")
    assert png_ours(path)
    plot_curve(score_curve(scorer, [2, 3]), path)  # ours: replaced without complaint
    assert png_ours(path)


def test_score_refuses_an_existing_foreign_output_before_scoring(tmp_path):
    foreign = tmp_path / "results.json"
    foreign.write_text('{"experiment": 7}')
    video = tmp_path / "missing.mp4"  # never read: the output is checked first
    result = subprocess.run([sys.executable, "-m", "topreward.cli", "score", str(video), "-i", "x",
                             "--out", str(foreign)], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2 and "not written by topreward_ros" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and foreign.read_text() == '{"experiment": 7}'
