"""Episode videos (online/episode_video.py): written on the writer's own thread, failures reported, frames kept."""
from __future__ import annotations

import threading

import av
import numpy as np
import pytest

from topreward.online import episode_video
from topreward.online.episode_video import EpisodeVideoWriter


def smooth_frames(count: int) -> list[np.ndarray]:
    """Pictures a codec keeps close (random noise would not survive 4:2:0 chroma), each its own."""
    ramp = np.linspace(0, 160, 64, dtype=np.float32)
    rows, columns = np.meshgrid(ramp, ramp, indexing="ij")
    return [np.stack([rows + 9 * k, columns, np.full((64, 64), 25.0 * k)], axis=-1).clip(0, 255).astype(np.uint8)
            for k in range(count)]


def test_videos_are_written_on_the_writers_thread_and_a_failure_is_reported(tmp_path, monkeypatch):
    started, release, threads = threading.Event(), threading.Event(), []
    real = episode_video.write_episode_video

    def slow_disk(path, frames, times):
        threads.append(threading.current_thread().name)
        started.set()
        release.wait(60)  # the first video is held: submit() must not wait for it
        return real(path, frames, times)

    monkeypatch.setattr(episode_video, "write_episode_video", slow_disk)
    errors = []
    writer = EpisodeVideoWriter(lambda path, exc: errors.append((path, exc)))
    frames, times = smooth_frames(5), [1.0, 1.5, 2.0, 2.5, 3.0]
    writer.submit(tmp_path / "a.mp4", frames, times)
    assert started.wait(60)
    (tmp_path / "blocked").write_text("a file where the folder would go")
    writer.submit(tmp_path / "blocked" / "b.mp4", frames, times)  # returns while the writer is still held
    assert not (tmp_path / "a.mp4").exists()
    release.set()
    assert writer.close() and writer.written == 1
    assert threads == ["topreward-episode-video"] * 2  # never the caller's thread
    assert [path.name for path, _ in errors] == ["b.mp4"] and isinstance(errors[0][1], OSError)
    with av.open(str(tmp_path / "a.mp4")) as container:
        decoded = [(f.time, f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    assert [t for t, _ in decoded] == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0], abs=2e-3)  # the capture times
    assert max(np.abs(p.astype(int) - f.astype(int)).mean() for (_, p), f in zip(decoded, frames, strict=True)) < 4
