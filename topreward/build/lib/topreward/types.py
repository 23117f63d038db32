"""Plain data of the core: configurations and results.

Imports neither torch, cv2 nor rclpy, so a learner, a notebook or a parameter check imports it in milliseconds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_MODEL = "Qwen/Qwen3-VL-8B-Instruct"
SUCCESS_METRICS = ("log_prob_true", "p_true")


@dataclass(frozen=True)
class ModelConfig:
    """Which checkpoint to load, and where and how to run it."""

    model: str = DEFAULT_MODEL  # hub id or local directory
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    attn_implementation: str = "auto"  # auto (flash_attention_2 when installed, else sdpa) | sdpa | eager | ...
    trust_remote_code: bool = False
    allow_pickle_weights: bool = False  # .bin/.pt weights can run code when unpickled: safetensors only unless set
    revision: str = ""  # hub branch, tag or commit ("": the default branch); the commit loaded is in the name


MAX_INSTRUCTION_CHARS = 1000  # a task, not a document: longer text is rejected with this limit named


def instruction_error(text: str) -> str | None:
    """Why `text` cannot be a task instruction, or None ('' is no task yet, which callers decide about)."""
    if text and not text.strip():
        return "must not be only whitespace (an empty string means: no task yet)"
    if len(text) > MAX_INSTRUCTION_CHARS:
        return f"is {len(text)} characters; at most {MAX_INSTRUCTION_CHARS}"
    return None


FRAME_SIZE_MULTIPLE = 32  # Qwen3-VL: 16-pixel patches, merged 2x2 into one token


def frame_size_error(size) -> str | None:
    """Why `size` cannot be a frame size ((height, width), each a positive multiple of 32), or None."""
    if len(size) != 2 or any(v < FRAME_SIZE_MULTIPLE or v % FRAME_SIZE_MULTIPLE for v in size):
        return f"must be (height, width), each a multiple of {FRAME_SIZE_MULTIPLE} and >= 32, got {tuple(size)}"
    return None


@dataclass(frozen=True)
class ScheduleConfig:
    """Sampling rate, fixed frame size and frame cap of the schedule."""

    sample_fps: float = 2.0
    frame_size: tuple[int, int] = (256, 256)  # (height, width) in pixels
    max_frames: int = 64

    def __post_init__(self) -> None:
        if not (self.sample_fps > 0 and math.isfinite(self.sample_fps)):
            raise ValueError(f"sample_fps must be a positive number, got {self.sample_fps}")
        if error := frame_size_error(self.frame_size):
            raise ValueError(f"frame_size {error}")
        if self.max_frames < 2:
            raise ValueError(f"max_frames must be at least 2, got {self.max_frames}")


@dataclass(frozen=True)
class SuccessConfig:
    """When an episode counts as successful."""

    threshold: float = -0.5  # in the metric's unit: nats for log_prob_true, probability for p_true
    consecutive: int = 2  # evaluations in a row at or above the threshold
    min_episode_duration: float = 2.0  # [s] no event before this much of the episode was seen
    metric: str = "log_prob_true"  # mean of the last 3 raw log p(True) (paper), or of the last 3 p_true
    window: int = 3

    def __post_init__(self) -> None:
        if self.metric not in SUCCESS_METRICS:
            raise ValueError(f"success metric must be one of {SUCCESS_METRICS}, got {self.metric!r}")
        if self.metric == "p_true" and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"a p_true threshold must be in [0, 1], got {self.threshold}")
        if self.metric == "log_prob_true" and self.threshold > 0.0:
            raise ValueError(f"a log_prob_true threshold must be <= 0 (a log-probability), got {self.threshold}")
        if self.consecutive < 1 or self.window < 1:
            raise ValueError("success consecutive and window must be >= 1")
        if self.min_episode_duration < 0:
            raise ValueError("min_episode_duration must be >= 0")


@dataclass(frozen=True)
class PrefixScore:
    """TOPReward values of one prefix."""

    num_frames: int  # sampled frames in the prefix
    time: float  # capture time of the prefix's newest frame [s], on the caller's clock
    elapsed: float  # time since the episode's first frame [s]
    log_prob_true: float
    log_prob_false: float
    stamp_ns: int = 0  # the newest frame's capture stamp, exact [ns]

    @property
    def finite(self) -> bool:
        """Whether both log-probabilities are numbers (a float16 overflow gives NaN or infinity)."""
        return math.isfinite(self.log_prob_true) and math.isfinite(self.log_prob_false)

    @property
    def p_true(self) -> float:
        """p(True) / (p(True) + p(False)): a logistic of the gap, never overflowing however wide it is."""
        gap = self.log_prob_true - self.log_prob_false
        if gap >= 0:
            return 1.0 / (1.0 + math.exp(-gap))
        e = math.exp(gap)
        return e / (1.0 + e)


@dataclass(frozen=True)
class SuccessEvent:
    """The evaluation at which an episode was judged successful."""

    score: float
    threshold: float
    consecutive: int
    elapsed: float
    num_frames: int


@dataclass(frozen=True)
class Step:
    """What one scored prefix means for the live episode."""

    score: PrefixScore
    progress: float
    reward: float
    success: SuccessEvent | None  # set on the one step that fires the episode's event


@dataclass(frozen=True)
class RewardStep:
    """One scored prefix of a live episode: the values a Progress message carries, and its success event."""

    episode_id: int
    instruction: str
    num_frames: int  # sampled frames in the prefix
    stamp_ns: int  # capture stamp of the prefix's newest frame, exactly as given [ns]
    elapsed: float  # time from the episode's first frame to the newest one [s]
    log_prob_true: float  # the raw TOPReward value [nats, <= 0]
    log_prob_false: float
    p_true: float  # p(True) / (p(True) + p(False))
    progress: float  # causal progress in [0, 1] from this episode's prefixes so far
    reward: float  # dense reward: the change of progress since the episode's previous step
    success: SuccessEvent | None  # set on the one step at which the episode is judged successful
    inference_time: float  # [s] spent scoring this prefix
    model: str  # the checkpoint that scored it (id@commit for hub models)

    @classmethod
    def of(cls, episode_id: int, instruction: str, step: Step, inference_time: float, model: str) -> RewardStep:
        score = step.score
        return cls(episode_id, instruction, score.num_frames, score.stamp_ns, score.elapsed, score.log_prob_true,
                   score.log_prob_false, score.p_true, step.progress, step.reward, step.success, inference_time,
                   model)
