"""Score episodes, several at a time, and keep every finished one in `curves.jsonl` at once.

Knows nothing of formats: it takes `Episode`s from any reader. The model is loaded only when the first
episode that needs it has been read, so a bad source fails in a second rather than after minutes. Up to
`batch_episodes` episodes are read ahead and scored together in packed passes (scoring/packed.py).
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from topreward.frames.schedule import FrameSchedule
from topreward.frames.tiling import tile_views
from topreward.model.backend import ModelLoadError, Qwen3VLBackend, load_model
from topreward.offline.episode import Episode, EpisodeError, Skipped
from topreward.output_files import claim, json_with, open_append, write_atomic
from topreward.scoring.curve import Curve, prefix_lengths, score_curves
from topreward.scoring.metrics import minmax_normalize, value_order_correlation
from topreward.scoring.prompt import PromptConfig
from topreward.scoring.scorer import StreamingScorer
from topreward.types import ModelConfig, ScheduleConfig


@dataclass(frozen=True)
class ScoringConfig:
    """How every episode is scored; written into each curve's `settings`."""

    schedule: ScheduleConfig = ScheduleConfig()
    prompt: PromptConfig = PromptConfig()
    prefixes: int | None = 15  # None: every sampled frame
    tau: float = 2.0
    delta_max: float = 2.0
    static_check: bool = False
    cameras: tuple[str, ...] = ()
    model: ModelConfig = ModelConfig()  # which checkpoint, where: not a setting of the curves (they name the model)
    # How the work is laid out, not what is computed (the values are the same either way): not in `settings`.
    batch_tokens: int | None = None  # tokens per packed pass (memory bound); None: the device's default; 0: none
    batch_episodes: int = 8  # episodes read ahead and scored together

    def settings(self) -> dict:
        return {
            "requested_sample_fps": self.schedule.sample_fps, "frame_size": list(self.schedule.frame_size),
            "max_frames": self.schedule.max_frames, "prefixes": self.prefixes, "prompt_prefix": self.prompt.prefix,
            "prompt_suffix": self.prompt.suffix, "chat_template": self.prompt.chat_template,
            "cameras": list(self.cameras), "static_check": self.static_check,
        }


def sample_episode(episode: Episode, config: ScheduleConfig) -> FrameSchedule:
    """The episode's frames as the model sees them: sampled on the schedule's grid, views tiled as the node does."""
    sampled = FrameSchedule(config)
    for views, t in episode.read(sampled.wants):
        frame = views[0] if len(views) == 1 else tile_views(views, config.frame_size)
        try:
            sampled.offer(frame, t)
        except ValueError as exc:  # a non-finite stamp or a frame that is not RGB uint8
            raise EpisodeError(f"frame at {t} s: {exc}") from None
    if len(sampled) < 2:
        raise EpisodeError(f"{len(sampled)} sampled frame(s) at {config.sample_fps:g} fps: at least one frame pair "
                           "(2) is needed (episode too short)")
    return sampled


def static_schedule(sampled: FrameSchedule) -> FrameSchedule:
    """The first sampled frame repeated at every sampled time: a video in which nothing happens."""
    still = FrameSchedule(sampled.config)
    for t in sampled.times:
        still.offer(sampled.frames[0], t)
    return still


def score_episodes(backend, episodes: list[tuple[Episode, FrameSchedule]], config: ScoringConfig,
                   on_prefix: Callable[[int], None] | None = None) -> list[Curve]:
    """The episodes' curves (and their static twins with --static-check), scored together in packed passes."""
    requests = []
    for episode, sampled in episodes:
        lengths = prefix_lengths(len(sampled), config.prefixes)
        schedules = [sampled, static_schedule(sampled)] if config.static_check else [sampled]
        for frames in schedules:
            scorer = StreamingScorer(backend, episode.instruction, config.schedule, config.prompt)
            scorer.reset(frames=frames)
            requests.append((scorer, lengths))
    heard = None if on_prefix is None else (lambda request, n: on_prefix(n))
    curves = iter(score_curves(requests, config.tau, config.delta_max, heard, config.batch_tokens))
    finished = []
    for episode, _ in episodes:
        curve = replace(next(curves), key=episode.key, episode_id=episode.episode_id, source=episode.source,
                        success=episode.success, settings=config.settings())
        if config.static_check:
            raw = next(curves).log_prob_true
            curve = replace(curve, static_log_prob_true=raw, static_normalized=minmax_normalize(raw).tolist(),
                            static_voc=value_order_correlation(raw))
        finished.append(curve)
    return finished


CURVES_FILE = json_with("log_prob_true", "prefix_lengths")  # an curves.jsonl: one Curve a line


class CurveLog:
    """`curves.jsonl`: one curve per line, flushed to disk as each episode finishes."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[Curve]:
        """The finished curves; a line cut short by a crash is dropped (and cut from the file)."""
        if not self.path.is_file():
            return []
        curves, good = [], 0
        with self.path.open("rb") as f:
            for line in f:
                try:
                    if not line.endswith(b"\n"):
                        raise ValueError("unterminated")
                    curves.append(Curve.from_json(json.loads(line)))
                except (ValueError, TypeError):
                    break
                good += len(line)
        if good < self.path.stat().st_size:
            with self.path.open("r+b") as f:
                f.truncate(good)
        return curves

    def start(self, resume: bool) -> list[Curve]:
        """Ready to append: kept as it is (a cut last line dropped) with `resume`, else emptied; created if missing.

        Never through a symbolic link, never over a file that is not an curves file (core/output_files.py).
        """
        claim(self.path, CURVES_FILE)
        if resume and self.path.is_file():
            return self.load()
        write_atomic(self.path, "", CURVES_FILE)
        return []

    def append(self, curve: Curve) -> None:
        with open_append(self.path, CURVES_FILE) as f:
            f.write(json.dumps(curve.to_json(), allow_nan=False) + "\n")
            f.flush()
            os.fsync(f.fileno())


@dataclass
class Outcome:
    """What a run produced: curves in source order and the episodes it could not use."""

    curves: list[Curve] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    resumed: int = 0
    interrupted: bool = False


def select(items: list, spec: str | None) -> list:
    """`--episodes`: positions in the source's order, as `A:B` (Python slice) or `A,B,C`."""
    if not spec:
        return items
    try:
        if ":" in spec:
            parts = [int(p) if p.strip() else None for p in spec.split(":")]
            return items[slice(*parts)]
        return [items[int(p)] for p in spec.split(",") if int(p) < len(items)]
    except ValueError:
        raise ValueError(f"--episodes expects A:B or A,B,C (positions), got {spec!r}") from None


def load_backend(config: ScoringConfig) -> Qwen3VLBackend:
    """The configured model, loaded now; a setting this model cannot serve is a ModelLoadError."""
    backend = load_model(config.model)
    try:
        StreamingScorer(backend, "the task", config.schedule, config.prompt)
    except ValueError as exc:  # a frame size this model cannot patch, a prompt that swallows the answer token
        raise ModelLoadError(f"{config.model.model}: {exc}") from None
    return backend


def evaluate(items: Iterable[Episode | Skipped], log: CurveLog, config: ScoringConfig,
             done: dict[str, Curve] | None = None, resume: bool = False,
             on_event: Callable[[str, object], None] = lambda kind, value: None,
             on_prefix: Callable[[int], None] | None = None) -> Outcome:
    """Score every episode not in `done` into the log; `on_event` hears "done", "skipped" and "resumed" as they happen.

    `done` holds the episodes already finished anywhere (this log, another rank's part, the merged file), by key.
    A bad episode is skipped with its reason and the run goes on. Episodes are read ahead `config.batch_episodes`
    at a time and scored together; each is logged as its batch finishes. Ctrl-C abandons the batch in progress;
    everything finished is already on disk.
    """
    outcome = Outcome()
    done = dict(done or {})
    log.start(resume)
    backend = None
    pending: list[tuple[Episode, FrameSchedule]] = []

    def score_pending() -> None:
        nonlocal backend
        if not pending:
            return
        if backend is None:  # loaded once the first episode has been read: a bad source fails fast
            backend = load_backend(config)
        for curve in score_episodes(backend, pending, config, on_prefix):
            log.append(curve)
            outcome.curves.append(curve)
            on_event("done", curve)
        pending.clear()

    try:
        for item in items:
            if isinstance(item, Skipped):
                outcome.skipped.append(item)
                on_event("skipped", item)
                continue
            if item.key in done:
                outcome.curves.append(done[item.key])
                outcome.resumed += 1
                on_event("resumed", done[item.key])
                continue
            try:
                if not item.instruction:
                    raise EpisodeError("no instruction: give --instruction")
                pending.append((item, sample_episode(item, config.schedule)))
            except EpisodeError as exc:
                skip = Skipped(item.key, item.source, str(exc), item.episode_id)
                outcome.skipped.append(skip)
                on_event("skipped", skip)
                continue
            if len(pending) >= max(config.batch_episodes, 1):
                score_pending()
        score_pending()
    except KeyboardInterrupt:
        outcome.interrupted = True
    return outcome


def finite(values: Iterable[float | None]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]
