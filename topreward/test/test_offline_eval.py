"""`topreward eval` end to end with the tiny random model on each source format, resume, and bad input."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from offline_data import write_bag, write_lerobot_v3, write_lerobot_v21, write_mp4
from sklearn.metrics import roc_auc_score

from topreward.cli import main
from topreward.offline.readers import SourceError, SourceOptions, read_source

FAST = ["--frame-size", "64", "--prefixes", "4"]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """Four labelled mp4s (1.5 to 2.4 s at 10 fps) listed in a CSV manifest."""
    root = tmp_path_factory.mktemp("manifest")
    rows = ["video,instruction,success,episode_id"]
    for k, (n, ok) in enumerate([(15, True), (18, False), (21, True), (24, False)]):
        write_mp4(root / "videos" / f"ep{k}.mp4", list(range(k, k + n)))
        rows.append(f"videos/ep{k}.mp4,push the block to the left,{str(ok).lower()},{k}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root / "manifest.csv"


def run_eval(source, out, model, *extra) -> int:
    return main(["eval", str(source), "--out", str(out), "--model", str(model), *FAST, *extra])


def episodes(out) -> list[dict]:
    return [json.loads(line) for line in (out / "curves.jsonl").read_text().splitlines()]


def test_manifest_summary_threshold_and_plots(manifest, tiny_model_path, tmp_path, capsys):
    out = tmp_path / "eval"
    assert run_eval(manifest, out, tiny_model_path, "--static-check") == 0
    eps = episodes(out)
    assert [e["episode_id"] for e in eps] == [0, 1, 2, 3] and [e["success"] for e in eps] == [True, False, True, False]
    for e in eps:  # the fields of `topreward score --out`, plus the episode's own
        assert len(e["log_prob_true"]) == len(e["static_log_prob_true"]) == min(4, len(e["frame_times"]))
        assert e["success_score"] == pytest.approx(np.mean(e["log_prob_true"][-3:]))
        assert e["settings"]["static_check"] is True and e["source"].startswith("videos/ep")
    summary = json.loads((out / "summary.json").read_text())
    scores = [e["success_score"] for e in eps]
    labels = [e["success"] for e in eps]
    detection = summary["success_detection"]
    assert detection["roc_auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert summary["episodes_scored"] == 4 and summary["episodes_skipped"] == 0
    assert summary["voc"]["mean"] == pytest.approx(np.mean([e["voc"] for e in eps]))
    assert summary["static_voc"]["median"] == pytest.approx(np.median([e["static_voc"] for e in eps]))
    params = yaml.safe_load((out / "threshold.yaml").read_text())["/**"]["ros__parameters"]
    assert params["success_threshold"] == pytest.approx(min(detection["suggested_threshold"], 0.0), abs=1e-6)
    called = [s >= detection["suggested_threshold"] for s in scores]
    assert np.mean([c for c, y in zip(called, labels, strict=True) if y]) == detection["tpr"]
    for name in ("curves.png", "voc.png", "roc.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "ROC-AUC" in printed and "suggested success_threshold" in printed and "static VOC" in printed


def test_lerobot_v3_shared_mp4_values_equal_the_episode_as_its_own_video(tiny_model_path, tmp_path):
    write_lerobot_v3(tmp_path / "ds", [12, 9, 11])
    write_mp4(tmp_path / "ep1.mp4", list(range(12, 21)))  # the same recorded frames, alone in a file
    assert run_eval(tmp_path / "ds", tmp_path / "out", tiny_model_path, "--episodes", "1:3") == 0
    eps = episodes(tmp_path / "out")
    assert [e["episode_id"] for e in eps] == [1, 2] and eps[0]["instruction"] == "open the drawer"
    assert main(["score", str(tmp_path / "ep1.mp4"), "-i", "open the drawer", "--model", str(tiny_model_path), *FAST,
                 "--out", str(tmp_path / "alone.json"), "-q"]) == 0
    alone = json.loads((tmp_path / "alone.json").read_text())
    assert eps[0]["frame_times"] == pytest.approx(alone["frame_times"])
    assert eps[0]["log_prob_true"] == pytest.approx(alone["log_prob_true"], abs=1e-6)
    assert eps[0]["log_prob_false"] == pytest.approx(alone["log_prob_false"], abs=1e-6)


def test_lerobot_v21_and_tiled_cameras(tiny_model_path, tmp_path):
    write_lerobot_v21(tmp_path / "ds", [12, 9])
    cams = ["--camera", "observation.images.top", "observation.images.wrist", "--frame-size", "64x128"]
    assert run_eval(tmp_path / "ds", tmp_path / "out", tiny_model_path, *cams) == 0
    eps = episodes(tmp_path / "out")
    assert [e["episode_id"] for e in eps] == [0, 1]
    assert eps[0]["settings"]["cameras"] == ["observation.images.top", "observation.images.wrist"]
    assert eps[0]["settings"]["frame_size"] == [64, 128]


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_bag_split_into_episodes(storage, tiny_model_path, tmp_path):
    bag = write_bag(tmp_path / "bag", storage)
    assert run_eval(bag, tmp_path / "out", tiny_model_path, "--camera", "/cam/image_raw/compressed",
                    "--instruction-topic", "/task", "--episode-topic", "/reset") == 0
    eps = episodes(tmp_path / "out")
    assert [(e["key"], e["instruction"]) for e in eps] == [("bag#0", "pick up the cube"), ("bag#1", "place the cube")]
    assert eps[1]["frame_times"] == pytest.approx([0.0, 0.5, 1.0])  # header stamps, from the episode's start


def test_video_source(tiny_model_path, tmp_path):
    write_mp4(tmp_path / "v.mp4", list(range(20)))
    assert run_eval(tmp_path / "v.mp4", tmp_path / "out", tiny_model_path, "-i", "do it") == 0
    assert len(episodes(tmp_path / "out")) == 1


def test_bad_rows_are_skipped_with_one_line_each(tiny_model_path, tmp_path, capsys):
    write_mp4(tmp_path / "good.mp4", list(range(15)))
    write_mp4(tmp_path / "short.mp4", [0, 1, 2])  # 0.3 s: one frame at 2 fps
    (tmp_path / "empty.mp4").touch()
    (tmp_path / "text.mp4").write_text("not a video")
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"video": "good.mp4", "instruction": "do it", "success": True},
        {"video": "missing.mp4", "instruction": "do it"},
        {"video": "empty.mp4", "instruction": "do it"},
        {"video": "text.mp4", "instruction": "do it"},
        {"video": "good.mp4"},
        {"video": "good.mp4", "instruction": "do it", "success": "perhaps"},
        {"video": "short.mp4", "instruction": "do it"},
    ]) + "\n")
    assert run_eval(tmp_path / "m.jsonl", tmp_path / "out", tiny_model_path) == 0
    err = capsys.readouterr().err
    expected = {"row 2": "does not exist", "row 3": "is empty", "row 4": "cannot open", "row 5": "no instruction",
                "row 6": "bad success value", "row 7": "episode too short"}
    lines = [line for line in err.splitlines() if line.startswith("topreward: skipped")]
    assert len(lines) == len(expected)
    for line, (key, cause) in zip(lines, expected.items(), strict=True):
        assert line.startswith(f"topreward: skipped {key} ") and cause in line
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["episodes_scored"] == 1 and summary["episodes_skipped"] == 6
    assert [s["key"] for s in summary["skipped"]] == list(expected)
    assert "Traceback" not in err


@pytest.mark.parametrize("case", ["missing", "no_info", "bad_version", "camera", "bag_topic", "empty_manifest"])
def test_source_level_errors_exit_2(case, tmp_path, tiny_model_path, capsys):
    source = tmp_path / "src"
    extra: list[str] = []
    if case == "no_info":
        (source / "meta").mkdir(parents=True)
    elif case == "bad_version":
        (source / "meta").mkdir(parents=True)
        (source / "meta" / "info.json").write_text(json.dumps({"codebase_version": "v1.6", "fps": 10, "features": {}}))
    elif case == "camera":
        write_lerobot_v21(source, [12])
        extra = ["--camera", "observation.images.side"]
    elif case == "bag_topic":
        write_bag(source, "mcap", count=6, reset_at=None, compressed=False)
        extra = ["--camera", "/front", "-i", "do it"]
    elif case == "empty_manifest":
        source = tmp_path / "m.csv"
        source.write_text("video,instruction\n")
    expect = {"missing": "does not exist", "no_info": "no meta/info.json", "bad_version": "'v1.6' is not supported",
              "camera": "cameras: observation.images.top, observation.images.wrist",
              "bag_topic": "image topics: /cam/image_raw", "empty_manifest": "holds no episode"}[case]
    assert run_eval(source, tmp_path / "out", tiny_model_path, *extra) == 2
    err = capsys.readouterr().err
    assert expect in err and "Traceback" not in err


def test_resume_after_a_killed_run_gives_the_same_files(manifest, tiny_model_path, tmp_path):
    # Two batches of two episodes, the same in every run, so that the values agree to the last digit (packed passes
    # of other shapes agree to float rounding only).
    args = [str(manifest), "--model", str(tiny_model_path), *FAST, "-q", "--batch-episodes", "2"]
    assert main(["eval", *args, "--out", str(tmp_path / "whole")]) == 0
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "topreward.cli", "eval", *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = out / "curves.jsonl"
    deadline = time.monotonic() + 120
    # Killed once the first batch is written (both lines): the resumed run then scores the same second batch.
    while time.monotonic() < deadline and not (log.is_file() and log.read_text().count("\n") >= 2):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = log.read_text().count("\n")
    assert 2 <= done < 4, "the run should have been killed part-way"
    # Valid, and at most the episode in flight behind: the kill can land between the episode's line and
    # the summary's rewrite (a crash can always fall there; --resume below rebuilds the summary).
    assert done - 1 <= json.loads((out / "summary.json").read_text())["episodes_scored"] <= done
    assert main(["eval", *args, "--out", str(out), "--resume"]) == 0
    for name in ("curves.jsonl", "summary.json", "threshold.yaml"):
        assert (out / name).read_text() == (tmp_path / "whole" / name).read_text(), name


def write_records(folder, rows) -> None:
    """Node records as the node writes them (OnlineEpisode.record), one per (model, outcome, values) row."""
    from topreward.online.episode import OnlineEpisode
    from topreward.online.records import append_record
    from topreward.types import PrefixScore

    for k, (model, outcome, values) in enumerate(rows):
        episode = OnlineEpisode()
        for n, value in enumerate(values, start=1):
            episode.update(PrefixScore(n, 0.5 * n, 0.5 * (n - 1), value, value - 1.0))
        append_record(folder, {**episode.record(k, "open the drawer", model), "outcome": outcome})


def test_records_bad_lines_are_skipped_and_one_model_is_calibrated(tmp_path, capsys):
    records = tmp_path / "records"
    write_records(records, [("old-model", "success", [-3.0, -1.0, -0.5]),
                            ("new-model", "success", [-4.0, -2.0, -0.2]),
                            ("new-model", "failure", [-4.0, -3.5, -3.0]),
                            ("new-model", "success", [-2.0, float("nan"), -0.1]),
                            ("new-model", "maybe", [-2.0, -1.0, -0.1]),
                            ("new-model", "failure", [-3.0, -2.5, -2.0])])
    with open(records / "episodes.jsonl", "a") as f:
        f.write('{"episode_id": 6, "log_prob_tr')  # a line cut short by a crash
    out = tmp_path / "eval"
    assert main(["eval", str(records / "episodes.jsonl"), "--out", str(out), "-q"]) == 0  # the file itself works too
    err = capsys.readouterr().err
    expected = {"episode 0": "scored by old-model, not new-model", "episode 3": "a non-finite value",
                "episode 4": "unknown outcome 'maybe'", "line 7": "not valid JSON"}
    skipped = [line for line in err.splitlines() if line.startswith("topreward: skipped")]
    assert len(skipped) == len(expected)
    for line, (key, cause) in zip(skipped, expected.items(), strict=True):
        assert line.startswith(f"topreward: skipped {key} ") and cause in line, line
    summary = json.loads((out / "summary.json").read_text())
    assert summary["episodes_scored"] == 3 and summary["model"] == "new-model"
    # The success scores (-0.2+-2-4)/3 > (-2+-2.5+-3)/3 > (-3-3.5-4)/3 separate the labels: AUC 1.
    assert summary["success_detection"]["roc_auc"] == 1.0
    threshold = summary["success_detection"]["suggested_threshold"]
    assert np.mean([-3.0, -2.5, -2.0]) < threshold < np.mean([-4.0, -2.0, -0.2])
    # As frames to score again (--rescore): these records have no video, each is skipped saying so.
    again = list(read_source(records, None, SourceOptions()))
    assert all(item.reason.startswith(("no video recorded", "unknown outcome", "not valid JSON")) for item in again)
    with pytest.raises(SourceError, match="holds no node records"):
        read_source(tmp_path, "records", SourceOptions())


@pytest.mark.parametrize("argv, expect", [
    (["eval", "{records}", "--out", "{out}", "--static-check"], "--static-check, --resume and --videos need frames"),
    (["eval", "{records}", "--out", "{out}", "--videos"], "--static-check, --resume and --videos need frames"),
    (["eval", "{empty}", "--out", "{out}", "--format", "records"], "holds no node records"),
])
def test_records_where_frames_are_needed_exit_2(argv, expect, tmp_path, capsys):
    write_records(tmp_path / "records", [("m", "success", [-1.0, -0.5])])
    (tmp_path / "empty").mkdir()
    paths = {"records": tmp_path / "records", "empty": tmp_path / "empty", "out": tmp_path / "out"}
    assert main([a.format(**paths) for a in argv]) == 2
    err = capsys.readouterr().err
    assert expect in err and "Traceback" not in err


def test_resume_accepts_a_hub_model_named_with_its_commit(tmp_path):
    from dataclasses import replace as with_

    from topreward.cli.common import UsageError
    from topreward.cli.eval import check_resumable
    from topreward.offline.evaluate import ScoringConfig
    from topreward.scoring.curve import Curve
    from topreward.types import ModelConfig

    config = ScoringConfig(model=ModelConfig(model="org/model"))
    done = Curve("org/model@0123abcd", "task", 2.0, [0.0], [1], [0.0], [-1.0], [-2.0], [0.7], [0.0], [2.0], 0.0,
                 2.0, 2.0, settings=config.settings())
    check_resumable([done], config, tmp_path)  # the curves name the commit they were scored with
    for other in (with_(done, model="org/model-large@0123abcd"), with_(done, settings={"prefixes": 3})):
        with pytest.raises(UsageError, match="other settings or another model"):
            check_resumable([other], config, tmp_path)


def test_episodes_scored_together_equal_one_at_a_time_on_the_streaming_path(manifest, tiny_model_path, tmp_path,
                                                                             monkeypatch):
    from topreward.model.backend import Qwen3VLBackend

    passes = []
    real = Qwen3VLBackend.forward_packed
    monkeypatch.setattr(Qwen3VLBackend, "forward_packed", lambda self, *a: passes.append(len(a[0])) or real(self, *a))
    assert run_eval(manifest, tmp_path / "together", tiny_model_path, "--static-check", "-q") == 0
    assert len(passes) == 1  # four episodes and their static twins: one packed pass (the default bound)
    passes.clear()
    assert run_eval(manifest, tmp_path / "bounded", tiny_model_path, "--batch-tokens", "300", "-q") == 0
    assert len(passes) > 1 and max(passes) <= 300  # the bound holds (no segment here is longer)
    assert run_eval(manifest, tmp_path / "alone", tiny_model_path, "--static-check", "-q", "--batch-tokens", "0",
                    "--batch-episodes", "1") == 0
    for folder in ("together", "bounded"):
        for a, b in zip(episodes(tmp_path / folder), episodes(tmp_path / "alone"), strict=True):
            assert a["key"] == b["key"] and a["prefix_lengths"] == b["prefix_lengths"]
            assert a["log_prob_true"] == pytest.approx(b["log_prob_true"], abs=1e-5)
            if folder == "together":
                assert a["static_log_prob_true"] == pytest.approx(b["static_log_prob_true"], abs=1e-5)


@pytest.mark.parametrize("option, value, message", [("--batch-tokens", "-1", "expected 0 or more"),
                                                    ("--batch-episodes", "0", "expected 1 or more"),
                                                    ("--batch-tokens", "many", "expected a whole number")])
def test_bad_batch_options_are_refused_before_the_model_loads(manifest, tmp_path, capsys, option, value, message):
    with pytest.raises(SystemExit) as stop:
        main(["eval", str(manifest), "--out", str(tmp_path / "out"), "--model", "/no/such/model", option, value])
    assert stop.value.code == 2 and message in capsys.readouterr().err
