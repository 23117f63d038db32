"""`topreward score` end to end on a generated mp4, and its one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys

import av
import numpy as np
import pytest

from topreward.cli import main


def write_video(path, frames: int, fps: int = 10, size: int = 64) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for k in range(frames):
            img = np.full((size, size, 3), (k * 9) % 255, np.uint8)
            img[: size // 2, : k * size // max(frames, 1)] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "episode.mp4"
    write_video(path, frames=42)  # 4.2 s at 10 fps: 9 frames sampled at 2 fps
    return path


def test_score_end_to_end(video, tiny_model_path, tmp_path, capsys):
    out, plot = tmp_path / "curve.json", tmp_path / "curve.png"
    rc = main(["score", str(video), "-i", "push the block to the left", "--model", str(tiny_model_path),
               "--prefixes", "5", "--frame-size", "64x64", "--out", str(out), "--plot", str(plot)])
    assert rc == 0
    curve = json.loads(out.read_text())
    assert curve["frame_times"] == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0])
    assert curve["prefix_lengths"] == [1, 3, 5, 7, 9]
    assert curve["instruction"] == "push the block to the left" and curve["sample_fps"] == 2.0
    for key in ("log_prob_true", "log_prob_false", "normalized", "reward", "p_true"):
        assert len(curve[key]) == 5
    assert min(curve["normalized"]) == 0.0 and max(curve["normalized"]) == 1.0
    assert -1.0 <= curve["voc"] <= 1.0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    table = capsys.readouterr().out
    assert "VOC" in table and table.count("\n") >= 7


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "topreward.cli", "score", *args],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("case", ["missing", "not_a_video", "empty_video", "one_frame", "empty_instruction",
                                  "model_dir_missing", "not_qwen", "bad_device", "plot_format", "out_is_dir",
                                  "corrupt_weights"])
def test_bad_input_one_line_error(case, video, tiny_model_path, tmp_path):
    model = str(tiny_model_path)
    args = [str(video), "-i", "do it", "--model", model, "--frame-size", "64"]
    expect = {
        "missing": "does not exist", "not_a_video": "cannot open", "empty_video": "is empty",
        "one_frame": "1 sampled frame", "empty_instruction": "must not be empty",
        "model_dir_missing": "does not exist", "not_qwen": "not Qwen3-VL", "bad_device": "unknown device",
        "plot_format": "cannot plot to curve.xyz", "out_is_dir": "is a directory",
        "corrupt_weights": "cannot load model",
    }[case]
    if case == "missing":
        args[0] = str(tmp_path / "nope.mp4")
    elif case == "not_a_video":
        args[0] = str(tmp_path / "notes.mp4")
        (tmp_path / "notes.mp4").write_text("not a video")
    elif case == "empty_video":
        args[0] = str(tmp_path / "empty.mp4")
        (tmp_path / "empty.mp4").touch()
    elif case == "one_frame":
        args[0] = str(tmp_path / "short.mp4")
        write_video(tmp_path / "short.mp4", frames=3)  # 0.3 s: one frame at 2 fps
    elif case == "empty_instruction":
        args[2] = "  "
    elif case == "model_dir_missing":
        args[4] = str(tmp_path / "no-model")
    elif case == "not_qwen":
        (tmp_path / "bert").mkdir()
        (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
        args[4] = str(tmp_path / "bert")
    elif case == "bad_device":
        args += ["--device", "tpu"]
    elif case == "plot_format":
        args += ["--plot", str(tmp_path / "curve.xyz")]
    elif case == "out_is_dir":
        args += ["--out", str(tmp_path)]
    elif case == "corrupt_weights":
        import shutil

        shutil.copytree(tiny_model_path, tmp_path / "corrupt")
        (tmp_path / "corrupt" / "model.safetensors").write_bytes(b"\0" * 100)
        args[4] = str(tmp_path / "corrupt")
    result = run_cli(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("topreward: error:")]
    assert len(errors) == 1 and expect in errors[0], result.stderr


@pytest.mark.parametrize("size", ["100", "256x200", "16x16"])
def test_frame_size_off_the_patch_grid_is_refused_before_the_model_loads(video, tmp_path, size):
    # The model does not exist: an error about it would mean the model was tried first.
    result = run_cli(str(video), "-i", "x", "--model", str(tmp_path / "no-model"), "--frame-size", size)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--frame-size: must be (height, width), each a multiple of 32" in result.stderr, result.stderr
    assert "no-model" not in result.stderr


def test_frame_size_must_have_one_or_two_parts(video, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["score", str(video), "-i", "x", "--frame-size", "256x256x999"])
    assert exit_info.value.code == 2 and "expected HEIGHTxWIDTH" in capsys.readouterr().err
