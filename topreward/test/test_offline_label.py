"""`topreward label`: LeRobot's TOPReward label file, read back with pyarrow."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from offline_data import write_lerobot_v3

from topreward.cli import main

LENGTHS = [12, 9, 11]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_lerobot_v3(tmp_path_factory.mktemp("label") / "ds", LENGTHS)


def label(dataset, model, *extra) -> int:
    return main(["label", str(dataset), "--model", str(model), "--frame-size", "64", "--prefixes", "4", *extra])


def test_label_file_has_lerobots_schema(dataset, tiny_model_path, capsys):
    assert label(dataset, tiny_model_path, "--dense") == 0
    path = dataset / "topreward_progress.parquet"
    table = pq.read_table(path)
    assert table.schema.names == ["index", "episode_index", "frame_index", "progress_sparse", "progress_dense"]
    for name in ("index", "episode_index", "frame_index"):
        assert table.schema.field(name).type == pa.int64()
    assert table.schema.field("progress_sparse").type == pa.float32()
    assert table.schema.field("progress_dense").type == pa.float32()
    assert table.schema.metadata == {b"vlm_name": str(tiny_model_path).encode()}
    assert table.num_rows == sum(LENGTHS)  # one row per dataset frame
    assert table["index"].to_pylist() == list(range(sum(LENGTHS)))
    assert table["frame_index"].to_pylist() == [k for n in LENGTHS for k in range(n)]
    assert table["episode_index"].to_pylist() == [e for e, n in enumerate(LENGTHS) for _ in range(n)]
    # Per episode: min-max of the 4 sparse prefix values, interpolated over frame numbers.
    curves = [json.loads(line) for line in (dataset / "topreward_progress.curves.jsonl").read_text().splitlines()]
    sparse = np.asarray(table["progress_sparse"])
    start = 0
    for curve, n in zip(curves, LENGTHS, strict=True):
        picks = [k for k, m in enumerate(curve["prefix_lengths"]) if m in
                 {int(round(x)) for x in np.linspace(1, len(curve["frame_times"]), 4)}]
        raw = np.asarray(curve["log_prob_true"])[picks]
        anchors = np.rint(np.asarray(curve["prefix_times"])[picks] * 10)
        expect = np.interp(np.arange(n), anchors, (raw - raw.min()) / (raw.max() - raw.min()))
        np.testing.assert_allclose(sparse[start:start + n], expect, atol=1e-6)
        assert sparse[start:start + n].min() == 0.0 and sparse[start:start + n].max() == pytest.approx(1.0)
        start += n
    printed = capsys.readouterr().out
    assert f"--sample_weighting.progress_path={path}" in printed and "--sample_weighting.type=rabc" in printed


def test_label_never_overwrites_without_flag_and_writes_csv(dataset, tiny_model_path, tmp_path, capsys):
    out = tmp_path / "labels.csv"
    out.write_text("keep me")
    assert label(dataset, tiny_model_path, "--csv", "--out", str(out)) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err and out.read_text() == "keep me"
    # Not a label table: refused even with --overwrite, before anything is scored.
    assert label(dataset, tiny_model_path, "--csv", "--out", str(out), "--overwrite") == 2
    assert "not written by topreward_ros" in capsys.readouterr().err and out.read_text() == "keep me"
    out.write_text("index,episode_index,frame_index,progress_sparse\n0,0,0,0.5\n")  # an earlier label file
    assert label(dataset, tiny_model_path, "--csv", "--out", str(out), "--overwrite", "--episodes", "0:1") == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "index,episode_index,frame_index,progress_sparse" and len(lines) == 1 + sum(LENGTHS)
    # Episodes not labelled (outside --episodes) keep every row, with NaN progress (LeRobot: weight 1).
    assert lines[-1].startswith(f"{sum(LENGTHS) - 1},2,10,") and lines[-1].endswith("nan")
