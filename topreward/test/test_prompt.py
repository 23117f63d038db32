"""The prompt's exact token layout (PAPER.md 1b) against the real Qwen3 tokenizer and processor."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_frames

from topreward.scoring.prompt import PromptConfig, PromptTokens
from topreward.scoring.scorer import StreamingScorer
from topreward.types import ScheduleConfig

INSTRUCTION = "put the red cube in the box"


def test_answer_tokens_are_the_papers(backend):
    p = PromptTokens(backend.tokenizer)
    assert (p.answer_id, p.negative_id) == (3007, 3557)
    assert backend.tokenizer.decode([3007]) == " True"


def test_one_prefix_token_sequence(backend):
    """5 sampled frames at 256x256: 3 pairs (last one odd, duplicated), 64 pads each, then the question."""
    scorer = StreamingScorer(backend, INSTRUCTION, ScheduleConfig(sample_fps=2.0))
    # Capture times of a 10 fps camera sampled at 2 fps: 0.0, 0.5, ... with a clock that starts at 100 s.
    for k, frame in enumerate(random_frames(5)):
        assert scorer.append(frame, 100.0 + 0.5 * k)
    p = scorer.prompt
    ids = []
    for k in range(3):
        ids += scorer._pair_ids(k, min(2 * k + 1, 4))
    ids += scorer._question
    tok = backend.tokenizer
    assert ids[:3] == [151644, 872, 198]  # <|im_start|>user\n
    text = tok.decode(ids)
    pad = "<|video_pad|>" * 64
    expected = (
        f"<|im_start|>user\n<0.2 seconds><|vision_start|>{pad}<|vision_end|>"
        f"<1.2 seconds><|vision_start|>{pad}<|vision_end|>"
        f"<2.0 seconds><|vision_start|>{pad}<|vision_end|>"
        "The above video shows a robot manipulation trajectory that completes the following task: "
        f"{INSTRUCTION} Decide whether the above statement is True or not. The answer is: True"
    )
    assert text == expected
    assert ids == tok(expected, add_special_tokens=False)["input_ids"]
    assert ids[-1] == 3007 and ids.count(p.video_pad) == 3 * 64
    assert tok.convert_ids_to_tokens(151652) == "<|vision_start|>" and ids.count(151652) == 3
    assert "<|im_end|>" not in text and "system" not in text


def test_layout_matches_processor_given_bare_video_pad(backend):
    """Transformers' own processor, fed a bare <|video_pad|>, yields the same ids and pixels."""
    frames = random_frames(6, seed=3, size=(256, 256))
    scorer = StreamingScorer(backend, INSTRUCTION, ScheduleConfig(sample_fps=2.0))
    for k, frame in enumerate(frames):
        scorer.append(frame, k / 2.0)
    ids = []
    for k in range(3):
        ids += scorer._pair_ids(k, 2 * k + 1)
    ids += scorer._question
    c = PromptConfig()
    text = "<|im_start|>user\n<|video_pad|>" + c.prefix + INSTRUCTION + c.suffix + c.answer
    out = backend.processor(
        text=[text], videos=[np.stack(frames)], return_tensors="pt", do_resize=False, cap_pixels_per_frame=False,
        videos_kwargs={"do_sample_frames": False,
                       "video_metadata": {"fps": 30.0, "total_num_frames": 90,
                                          "frames_indices": [0, 15, 30, 45, 60, 75]}},
    )
    assert out["input_ids"][0].tolist() == ids
    pixels, _ = backend.encode_pairs(frames)
    torch.testing.assert_close(out["pixel_values_videos"], pixels)


def test_odd_prefix_timestamp_uses_lone_frame_time(backend):
    scorer = StreamingScorer(backend, INSTRUCTION, ScheduleConfig(sample_fps=1.0))
    for k, frame in enumerate(random_frames(3)):
        scorer.append(frame, 3.0 + 1.8 * k)  # real capture times, not k / fps
    tok = backend.tokenizer
    assert tok.decode(scorer._pair_ids(0, 1)).startswith("<|im_start|>user\n<0.9 seconds>")  # (0 + 1.8) / 2
    assert tok.decode(scorer._pair_ids(1, 2)).startswith("<3.6 seconds>")  # lone frame at 3.6 paired with itself


def test_custom_answer_must_be_one_token(backend):
    with pytest.raises(ValueError, match="exactly one"):
        PromptTokens(backend.tokenizer, PromptConfig(answer=" Absolutely-true"))


def test_chat_template_variant_closes_the_turn(backend):
    p = PromptTokens(backend.tokenizer, PromptConfig(chat_template=True))
    text = backend.tokenizer.decode(p.question("open the drawer"))
    assert text.endswith("True or not. The answer is:<|im_end|>\n<|im_start|>assistant\nTrue")
    assert p.answer_id == 2514  # "True" with no leading space


def test_custom_prompt_text_is_used(backend):
    p = PromptTokens(backend.tokenizer, PromptConfig(prefix="Task: ", suffix=". Is it done? Answer:"))
    assert backend.tokenizer.decode(p.question("open the door")) == "Task: open the door. Is it done? Answer: True"
