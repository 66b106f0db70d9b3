"""Speech-to-text prompts: ChatML from the LLM's own tokenizer, with an audio span spliced in.

A prompt is the tokenizer's chat template applied to a user turn whose content holds the audio
placeholder ``<|audio|>``. The placeholder is never tokenized: the text on each side is, and the
projected audio embeddings (one per frame) take its place. Loss covers only the response tokens and
the closing ``<|im_end|>``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from minmo_lightning.contracts import IGNORE_INDEX, SequenceBatch

AUDIO_PLACEHOLDER = "<|audio|>"
ANSWER_PLACEHOLDER = "<|answer|>"


@dataclass(frozen=True)
class SpeechTask:
    """A speech-to-text task: the instruction the user turn carries and the batch field its answer comes
    from (``label_field``: the field holds class indices, answered with the class name)."""

    instruction: str
    answer_field: str
    label_field: bool = False

    def answer(self, batch: Mapping[str, Any], item: int, labels: Sequence[str]) -> str:
        value = batch[self.answer_field][item]
        return labels[int(value)] if self.label_field else value


#: task -> spec; ``{...}`` fields of the instruction come from per-item arguments (target_language, labels).
#: Only asr and ser have answers of their own in today's data; the others read the transcript until the
#: task-range work (#16) gives them theirs.
SPEECH_TASKS: dict[str, SpeechTask] = {
    "asr": SpeechTask("Transcribe the speech.", "text"),
    "s2tt": SpeechTask("Translate the speech into {target_language}.", "text"),
    "lid": SpeechTask("Which language is spoken?", "text"),
    "ser": SpeechTask("What is the emotion of the speaker? Answer with one of: {labels}.", "emotion", True),
    "aed": SpeechTask("Which audio events occur in the recording?", "text"),
    "speaker": SpeechTask("Describe the speaker's gender and age.", "text"),
    "chat": SpeechTask("Answer the user's spoken question.", "text"),
}
#: the text-only user turn of text-to-speech alignment (stage 2); the answer is the same text.
TTS_INSTRUCTION = "Read this text aloud: {text}"


@dataclass
class PromptBatch:
    """Token ids with audio slots: ``audio_mask`` marks positions the audio frames fill."""

    token_ids: Tensor  # [B, L], pad id at audio and padding positions
    audio_mask: Tensor  # [B, L] bool
    attention_mask: Tensor  # [B, L] long
    labels: Tensor  # [B, L], IGNORE_INDEX except response tokens

    def to_device(self, device: torch.device | str) -> PromptBatch:
        return PromptBatch(
            *(t.to(device) for t in (self.token_ids, self.audio_mask, self.attention_mask, self.labels))
        )

    @property
    def position_ids(self) -> Tensor:
        """Positions that skip left padding (0 at each item's first real token)."""
        return (self.attention_mask.cumsum(-1) - 1).clamp(min=0)


@dataclass(frozen=True)
class DuplexTurns:
    """Token ids of the pieces a duplex context is made of, in ChatML: ``first_user`` (system prompt, user
    header and instruction) before the session's first audio; ``assistant_open`` where the assistant
    starts to speak; ``assistant_close`` after the text it spoke (it closes that turn and opens the next
    user turn, whose audio follows)."""

    first_user: list[int]
    assistant_open: list[int]
    assistant_close: list[int]


class SpeechPromptBuilder:
    """Builds batched prompts for ``(instruction, audio frames, response)`` triples."""

    def __init__(
        self,
        tokenizer: Any,
        user_template: str = "{instruction}\n" + AUDIO_PLACEHOLDER,
        system_prompt: str | None = None,
    ) -> None:
        if user_template.count(AUDIO_PLACEHOLDER) != 1:
            raise ValueError(
                f"the user template must contain the audio placeholder {AUDIO_PLACEHOLDER} exactly once, "
                f"got {user_template!r}; e.g. '{{instruction}}\\n{AUDIO_PLACEHOLDER}'"
            )
        self.tokenizer = tokenizer
        self.user_template = user_template
        self.system_prompt = system_prompt
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def _prompt_halves(self, instruction: str) -> tuple[list[int], list[int]]:
        messages = [{"role": "user", "content": self.user_template.format(instruction=instruction)}]
        if self.system_prompt is not None:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if text.count(AUDIO_PLACEHOLDER) != 1:
            raise ValueError(f"the chat template lost or repeated the audio placeholder: {text!r}")
        left, right = text.split(AUDIO_PLACEHOLDER)
        return self.encode(left), self.encode(right)

    def duplex_turns(self, instruction: str) -> DuplexTurns:
        """The ChatML pieces of a duplex conversation, cut from the tokenizer's own chat template."""
        messages = [
            {"role": "user", "content": self.user_template.format(instruction=instruction)},
            {"role": "assistant", "content": ANSWER_PLACEHOLDER},
            {"role": "user", "content": self.user_template.format(instruction=instruction)},
        ]
        if self.system_prompt is not None:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        first_user, rest = text.split(AUDIO_PLACEHOLDER, 1)
        assistant_open, rest = rest.split(ANSWER_PLACEHOLDER)
        assistant_close, last_open = rest.split(AUDIO_PLACEHOLDER)
        if last_open != assistant_open:
            raise ValueError(f"the chat template opens assistant turns inconsistently: {text!r}")
        return DuplexTurns(self.encode(first_user), self.encode(assistant_open), self.encode(assistant_close))

    def build(
        self,
        instructions: Sequence[str],
        audio_lengths: Tensor,
        responses: Sequence[str] | None = None,
        padding_side: str = "right",
    ) -> PromptBatch:
        """Right padding for training, left padding for generation (all prompts end together)."""
        if len(instructions) != len(audio_lengths):
            raise ValueError(f"{len(instructions)} instructions for {len(audio_lengths)} audio clips")
        rows: list[tuple[list[int], list[bool], list[int]]] = []
        for i, instruction in enumerate(instructions):
            left, right = self._prompt_halves(instruction)
            n_audio = int(audio_lengths[i])
            ids = left + [self.pad_id] * n_audio + right
            is_audio = [False] * len(left) + [True] * n_audio + [False] * len(right)
            labels = [IGNORE_INDEX] * len(ids)
            if responses is not None:
                answer = self.encode(responses[i]) + [self.end_id]
                ids, is_audio, labels = ids + answer, is_audio + [False] * len(answer), labels + answer
            rows.append((ids, is_audio, labels))
        return self._pad(rows, padding_side)

    def _pad(self, rows: list[tuple[list[int], list[bool], list[int]]], padding_side: str) -> PromptBatch:
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        width = max(len(ids) for ids, _, _ in rows)
        batch = len(rows)
        token_ids = torch.full((batch, width), self.pad_id, dtype=torch.long)
        audio_mask = torch.zeros(batch, width, dtype=torch.bool)
        attention = torch.zeros(batch, width, dtype=torch.long)
        labels = torch.full((batch, width), IGNORE_INDEX, dtype=torch.long)
        for b, (ids, is_audio, lab) in enumerate(rows):
            span = slice(width - len(ids), width) if padding_side == "left" else slice(0, len(ids))
            token_ids[b, span] = torch.tensor(ids)
            audio_mask[b, span] = torch.tensor(is_audio)
            attention[b, span] = 1
            labels[b, span] = torch.tensor(lab)
        return PromptBatch(token_ids, audio_mask, attention, labels)


def splice_audio(text_embeddings: Tensor, audio_mask: Tensor, audio: SequenceBatch) -> Tensor:
    """Put each valid audio frame where the prompt has an audio slot, in order, for the whole batch."""
    frames = audio.values[audio.mask]
    if frames.shape[0] != int(audio_mask.sum()):
        raise ValueError(
            f"the prompts hold {int(audio_mask.sum())} audio slots but the audio has {frames.shape[0]} frames; "
            "build the prompts with the projector's output lengths"
        )
    out = text_embeddings.clone()
    out[audio_mask] = frames.to(out.dtype)
    return out
