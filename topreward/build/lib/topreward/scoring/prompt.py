r"""The TOPReward prompt as token ids, built piece by piece so that a KV cache can grow pair by pair.

Layout of one prefix (PAPER.md 1b, identical to the reference's under transformers 4.57.1):

    <|im_start|>user\n<0.2 seconds><|vision_start|><|video_pad|>*N<|vision_end|><1.2 seconds>...
    <|vision_end|>The above video shows ... task: {instruction} Decide whether ... The answer is: True

The text between two special tokens is tokenized as one piece, exactly as the tokenizer splits a
whole prompt string at its special tokens, so the concatenated pieces equal the tokenized string.
"""
from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "The above video shows a robot manipulation trajectory that completes the following task: "
DEFAULT_SUFFIX = " Decide whether the above statement is True or not. The answer is:"


@dataclass(frozen=True)
class PromptConfig:
    """Wording of the question; the defaults are the paper's."""

    prefix: str = DEFAULT_PREFIX
    suffix: str = DEFAULT_SUFFIX
    answer: str = " True"
    negative: str = " False"
    # The paper's ablation (Table 5): close the user turn and score the answer as the assistant's reply.
    chat_template: bool = False


class PromptTokens:
    """Token ids of the prompt's pieces for one tokenizer."""

    def __init__(self, tokenizer, config: PromptConfig = PromptConfig()) -> None:
        self.config = config
        self._tok = tokenizer
        self.im_start = self._special("<|im_start|>")
        self.im_end = self._special("<|im_end|>")
        self.vision_start = self._special("<|vision_start|>")
        self.vision_end = self._special("<|vision_end|>")
        self.video_pad = self._special("<|video_pad|>")
        # In the chat variant the answer opens the assistant's line, so it carries no leading space.
        strip = str.lstrip if config.chat_template else str
        self.answer_id = self._single_token(strip(config.answer))
        self.negative_id = self._single_token(strip(config.negative))

    def _special(self, token: str) -> int:
        token_id = self._tok.convert_tokens_to_ids(token)
        if token_id is None or token_id == self._tok.unk_token_id:
            raise ValueError(f"tokenizer has no {token} token: not a Qwen3-VL tokenizer")
        return int(token_id)

    def _single_token(self, text: str) -> int:
        ids = self.encode(text)
        if len(ids) != 1:
            raise ValueError(f"answer {text!r} is {len(ids)} tokens in this vocabulary; it must be exactly one")
        return ids[0]

    def encode(self, text: str) -> list[int]:
        return list(self._tok(text, add_special_tokens=False)["input_ids"])

    @staticmethod
    def timestamp(seconds: float) -> str:
        return f"<{seconds:.1f} seconds>"

    def pair(self, index: int, seconds: float, tokens_per_pair: int) -> list[int]:
        """Ids of one frame pair: its timestamp text then its vision block; the first pair opens the turn."""
        if index == 0:
            head = [self.im_start] + self.encode("user\n" + self.timestamp(seconds))
        else:
            head = self.encode(self.timestamp(seconds))
        return head + [self.vision_start] + [self.video_pad] * tokens_per_pair + [self.vision_end]

    def question(self, instruction: str) -> list[int]:
        """Ids after the last vision block, ending with the scored answer token."""
        c = self.config
        if not c.chat_template:
            ids = self.encode(c.prefix + instruction + c.suffix + c.answer)
        else:
            ids = (
                self.encode(c.prefix + instruction + c.suffix)
                + [self.im_end] + self.encode("\n") + [self.im_start]
                + self.encode("assistant\n" + c.answer.lstrip())
            )
        if ids[-1] != self.answer_id:
            raise ValueError(
                f"the prompt does not end with the answer token {c.answer!r} after tokenization; "
                "the suffix must end where the answer begins"
            )
        return ids
