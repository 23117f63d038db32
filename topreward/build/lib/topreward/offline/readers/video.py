"""A single video file as one episode (what `topreward score` takes)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from topreward.frames.video import VideoReadError, read_frames
from topreward.offline.episode import Episode, EpisodeError, ViewsAt, WantsFn


def video_frames(path: Path, wants: WantsFn) -> Iterator[ViewsAt]:
    """Frames of a whole video, container timestamps as capture times."""
    try:
        for frame, t in read_frames(path, wants=wants):
            yield [frame], t
    except VideoReadError as exc:
        raise EpisodeError(str(exc)) from None


def video_episode(path: Path, key: str, instruction: str | None, success: bool | None = None,
                  episode_id: int | str | None = None, source: str | None = None) -> Episode:
    return Episode(key=key, source=source or str(path), read=lambda wants: video_frames(path, wants),
                   instruction=instruction, success=success, episode_id=episode_id)


def read_video(path: Path, instruction: str | None) -> Iterator[Episode]:
    """The one episode of a video file."""
    yield video_episode(path, key=path.name, instruction=instruction, source=str(path))
