"""The readers on recordings written in the real formats: the right frames, times, instructions and labels."""
from __future__ import annotations

import pytest
from offline_data import FPS, TASKS, frame_number, write_bag, write_lerobot_v3, write_lerobot_v21, write_mp4

from topreward.offline.episode import Episode, Skipped, SourceError
from topreward.offline.readers import SourceOptions, detect_format, read_source

LENGTHS = [12, 9, 11]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("readers")
    write_lerobot_v3(root / "v3", LENGTHS)
    write_lerobot_v21(root / "v21", LENGTHS[:2])
    write_bag(root / "bag_sqlite", "sqlite3")
    write_bag(root / "bag_mcap", "mcap")
    return root


def everything(episode: Episode) -> list:
    return list(episode.read(lambda t: True))


def test_detects_each_format(data, tmp_path):
    (tmp_path / "m.csv").write_text("video,instruction\n")
    write_mp4(tmp_path / "one.mp4", [0, 1])
    assert [detect_format(p) for p in (data / "v3", data / "v21", data / "bag_sqlite", data / "bag_mcap",
                                       tmp_path / "m.csv", tmp_path / "one.mp4")] == \
        ["lerobot", "lerobot", "bag", "bag", "manifest", "video"]
    assert detect_format(next((data / "bag_mcap").glob("*.mcap"))) == "bag"  # a lone .mcap file


def test_lerobot_v3_shared_mp4_reads_each_episode_from_its_offset(data):
    episodes = list(read_source(data / "v3", None, SourceOptions()))
    assert [e.key for e in episodes] == ["episode 0", "episode 1", "episode 2"]
    assert [e.first_index for e in episodes] == [0, 12, 21]
    assert [e.instruction for e in episodes] == [TASKS[0], TASKS[1], TASKS[0]]
    starts = [0, 12, 21]
    for episode, start, n in zip(episodes, starts, LENGTHS, strict=True):
        frames = everything(episode)
        # The second episode starts mid-file (1.2 s): its frames are recorded frames 12..20, not 0..8.
        assert [frame_number(views[0]) for views, _ in frames] == list(range(start, start + n))
        assert [t for _, t in frames] == pytest.approx([k / FPS for k in range(n)])
    assert "file-000.mp4@1.20s" in episodes[1].source


def test_lerobot_image_feature_in_parquet_and_two_cameras(data):
    options = SourceOptions(cameras=["observation.images.top", "observation.images.wrist"])
    episode = list(read_source(data / "v3", None, options))[1]
    frames = everything(episode)
    assert [frame_number(v[0]) for v, _ in frames] == list(range(12, 21))
    assert [frame_number(v[1]) for v, _ in frames] == [(g + 40) % 64 for g in range(12, 21)]  # PNG bytes


def test_lerobot_v21_one_mp4_per_episode(data):
    episodes = list(read_source(data / "v21", None, SourceOptions()))
    assert [e.first_index for e in episodes] == [0, 12]
    assert [frame_number(v[0]) for v, _ in everything(episodes[1])] == list(range(12, 21))
    assert episodes[1].instruction == TASKS[1]


def test_lerobot_missing_camera_lists_the_ones_there(data):
    with pytest.raises(SourceError, match="no camera 'observation.images.side'; cameras: observation.images.top, "
                                          "observation.images.wrist"):
        list(read_source(data / "v3", None, SourceOptions(cameras=["observation.images.side"])))


@pytest.mark.parametrize("bag", ["bag_sqlite", "bag_mcap"])
@pytest.mark.parametrize("topic", ["/cam/image_raw", "/cam/image_raw/compressed"])
def test_bag_split_at_episode_topic_with_header_stamps(data, bag, topic):
    options = SourceOptions(cameras=[topic], instruction_topic="/task", episode_topic="/reset")
    episodes = list(read_source(data / bag, None, options))
    assert [e.key for e in episodes] == [f"{bag}#0", f"{bag}#1"]
    assert [e.instruction for e in episodes] == ["pick up the cube", "place the cube"]
    second = everything(episodes[1])
    assert [frame_number(v[0]) for v, _ in second] == list(range(15, 30))
    assert [t for _, t in second] == pytest.approx([100 + g / FPS for g in range(15, 30)])


def test_bag_without_the_topic_is_skipped_with_the_topics_there(data):
    items = list(read_source(data / "bag_mcap", None, SourceOptions(cameras=["/front/image"], instruction="x")))
    assert len(items) == 1 and isinstance(items[0], Skipped)
    assert "no image topic '/front/image'; image topics: /cam/image_raw, /cam/image_raw/compressed" in items[0].reason


def test_manifest_rows(tmp_path):
    write_mp4(tmp_path / "a.mp4", list(range(10)))
    (tmp_path / "m.jsonl").write_text(
        '{"video": "a.mp4", "instruction": "do it", "success": true, "episode_id": 7}\n'
        '{"video": "a.mp4", "success": "maybe"}\n'
        '{"video": "a.mp4", "instruction": "do it", "success": "maybe"}\n'
        'not json\n')
    items = list(read_source(tmp_path / "m.jsonl", None, SourceOptions()))
    assert isinstance(items[0], Episode) and (items[0].key, items[0].success, items[0].episode_id) == \
        ("episode 7", True, 7)
    assert [type(i).__name__ for i in items[1:]] == ["Skipped"] * 3
    assert "no instruction" in items[1].reason and "bad success value 'maybe'" in items[2].reason
    assert "not valid JSON" in items[3].reason
