"""Progress videos: `topreward score --video` and `topreward eval --videos` decode with the source's frames."""
from __future__ import annotations

import av
import numpy as np
import pytest
from test_cli import write_video

from topreward.cli import main
from topreward.offline.progress_video import success_time, video_ours
from topreward.overlay import PANEL_HEIGHT, VIDEO_HEIGHT
from topreward.scoring.curve import Curve
from topreward.types import SuccessConfig

FAST = ["--frame-size", "64", "--prefixes", "4"]


def decoded(path) -> tuple[int, tuple[int, int], list[float]]:
    with av.open(str(path)) as container:
        frames = [(f.time, f.height, f.width) for f in container.decode(video=0)]
    return len(frames), frames[0][1:], [t for t, *_ in frames]


def test_score_writes_the_source_frames_with_the_curve(tmp_path, tiny_model_path):
    source, out = tmp_path / "episode.mp4", tmp_path / "progress.mp4"
    write_video(source, frames=33, fps=10, size=96)
    assert main(["score", str(source), "-i", "push the block", "--model", str(tiny_model_path), *FAST,
                 "--video", str(out), "--success-threshold", "-100", "-q"]) == 0
    count, size, times = decoded(out)
    assert count == 33 and size == (VIDEO_HEIGHT + PANEL_HEIGHT, 480)  # a square source, centred on 480 px
    assert times == pytest.approx([k / 10 for k in range(33)], abs=2e-3)  # the source's own frame times
    assert video_ours(out) and not video_ours(source)
    # Ours is replaced on the next run; somebody else's video never is (one line, exit 2, before scoring).
    assert main(["score", str(source), "-i", "push", "--model", str(tiny_model_path), *FAST, "--video", str(out),
                 "-q"]) == 0
    assert main(["score", str(source), "-i", "push", "--model", "/no/such/model", "--video", str(source)]) == 2


@pytest.mark.parametrize("name, message", [("progress.avi", "give a .mp4 file"), ("folder", "is a directory")])
def test_a_bad_video_path_is_one_line_before_the_model_loads(tmp_path, capsys, name, message):
    source = tmp_path / "episode.mp4"
    write_video(source, frames=12)
    (tmp_path / "folder").mkdir()
    assert main(["score", str(source), "-i", "push", "--model", "/no/such/model", "--video", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert message in err and "no/such/model" not in err and "Traceback" not in err


def test_eval_writes_one_video_per_episode(tmp_path, tiny_model_path):
    rows = ["video,instruction,success"]
    for k, n in enumerate((15, 24)):
        write_video(tmp_path / f"ep{k}.mp4", frames=n)
        rows.append(f"ep{k}.mp4,push the block,{'true' if k == 0 else 'false'}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "eval"
    assert main(["eval", str(tmp_path / "m.csv"), "--out", str(out), "--model", str(tiny_model_path), *FAST,
                 "--videos", "-q"]) == 0
    assert sorted(p.name for p in (out / "videos").iterdir()) == ["row_1.mp4", "row_2.mp4"]
    assert [decoded(out / "videos" / f"row_{k}.mp4")[0] for k in (1, 2)] == [15, 24]


def test_eval_refuses_a_foreign_file_where_a_video_goes_before_the_model_loads(tmp_path, capsys):
    write_video(tmp_path / "ep0.mp4", frames=12)
    (tmp_path / "m.csv").write_text("video,instruction\nep0.mp4,push the block\n")
    (tmp_path / "eval" / "videos").mkdir(parents=True)
    (tmp_path / "eval" / "videos" / "row_1.mp4").write_bytes(b"somebody else's video")
    assert main(["eval", str(tmp_path / "m.csv"), "--out", str(tmp_path / "eval"), "--model", "/no/such/model",
                 "--videos"]) == 2
    err = capsys.readouterr().err
    assert "row_1.mp4" in err and "no/such/model" not in err and "Traceback" not in err
    assert (tmp_path / "eval" / "videos" / "row_1.mp4").read_bytes() == b"somebody else's video"


def test_the_success_mark_is_the_node_rule_replayed_on_the_curve():
    raw = [-5.0, -3.0, -1.0, -0.8, -0.2]
    curve = Curve("m", "task", 2.0, [0.0, 0.5, 1.0, 1.5, 2.0], [1, 2, 3, 4, 5], [0.0, 0.5, 1.0, 1.5, 2.0], raw,
                  [v - 1 for v in raw], [0.7] * 5, list(np.linspace(0, 1, 5)), [2.0] * 5, 1.0, 2.0, 2.0)
    # Means of the last 3 raw values: -3, -1.6, -0.67. At or above -1.7 twice in a row: fires at 2.0 s.
    assert success_time(curve, SuccessConfig(-1.7, 2, 1.0)) == 2.0
    assert success_time(curve, SuccessConfig(-1.5, 2, 1.0)) is None  # -0.67 alone: once in a row
    assert success_time(curve, SuccessConfig(-1.7, 2, 2.5)) is None  # not before min_episode_duration


@pytest.mark.parametrize("fmt", ["lerobot", "bag"])
def test_eval_videos_for_datasets_and_bags(fmt, tmp_path, tiny_model_path):
    from offline_data import write_bag, write_lerobot_v3

    if fmt == "lerobot":
        source, extra, lengths = write_lerobot_v3(tmp_path / "ds", [12, 9]), [], [12, 9]
    else:
        source = write_bag(tmp_path / "bag", "mcap", count=20, reset_at=12, compressed=False)
        extra, lengths = ["--episode-topic", "/reset", "--instruction-topic", "/task"], [12, 8]
    out = tmp_path / "eval"
    assert main(["eval", str(source), "--out", str(out), "--model", str(tiny_model_path), *FAST, "--videos", "-q",
                 *extra]) == 0
    videos = sorted((out / "videos").iterdir())
    assert [decoded(v)[0] for v in videos] == lengths  # every recorded frame of each episode, at its own time
    for video in videos:
        times = decoded(video)[2]
        assert times[0] == 0.0 and times == sorted(times)
