"""Speech-to-text prompts: ChatML from the LLM's own tokenizer, with an audio span spliced in.

A prompt is the tokenizer's chat template applied to a user turn whose content holds the audio
placeholder ``<|audio|>``, after any earlier turns of the conversation (the user's speech or text, the
assistant's text). A placeholder is never tokenized: the text between placeholders is, and the projected
audio embeddings (one per frame) take their places. Loss covers only the response to the last turn and
its closing ``<|im_end|>``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from minmo_lightning.answers import render_attributes, render_events
from minmo_lightning.contracts import IGNORE_INDEX, SequenceBatch

AUDIO_PLACEHOLDER = "<|audio|>"
ANSWER_PLACEHOLDER = "<|answer|>"


def _text(values: tuple, labels: Sequence[str]) -> str:
    return str(values[0])


def _class_name(values: tuple, labels: Sequence[str]) -> str:
    return labels[int(values[0])]


def _events(values: tuple, labels: Sequence[str]) -> str:
    return render_events(values[0])


def _attributes(values: tuple, labels: Sequence[str]) -> str:
    return render_attributes([str(v) for v in values])


@dataclass(frozen=True)
class SpeechTask:
    """A speech-to-text task: the instruction the user turn carries, the batch fields its answer comes from
    and how they are written as text (``render``: the item's values of ``answer_fields`` and the model's
    emotion classes -> the answer). ``instruction_fields``: placeholders of the instruction filled from
    per-item batch fields (``{target_language}`` from ``batch["target_language"]``); ``{labels}`` is the
    model's emotion classes."""

    instruction: str
    answer_fields: tuple[str, ...]
    render: Callable[[tuple, Sequence[str]], str] = _text
    instruction_fields: tuple[str, ...] = ()

    def prompt(self, batch: Mapping[str, Any], item: int, labels: Sequence[str]) -> str:
        values = {name: batch[name][item] for name in self.instruction_fields}
        return self.instruction.format(labels=", ".join(labels), **values)

    def answer(self, batch: Mapping[str, Any], item: int, labels: Sequence[str]) -> str:
        return self.render(tuple(batch[name][item] for name in self.answer_fields), labels)

    @property
    def fields(self) -> tuple[str, ...]:
        """Every batch field an item of this task reads."""
        return self.answer_fields + self.instruction_fields


#: task -> spec. A datamodule names the tasks it supervises (``SpeechDataModule.tasks``); each must find
#: its fields in that datamodule's batches, checked when the data is set up.
SPEECH_TASKS: dict[str, SpeechTask] = {
    "asr": SpeechTask("Transcribe the speech.", ("text",)),
    "s2tt": SpeechTask(
        "Translate the speech into {target_language}.",
        ("translation",),
        instruction_fields=("target_language",),
    ),
    "lid": SpeechTask("Which language is spoken?", ("language",)),
    "ser": SpeechTask(
        "What is the emotion of the speaker? Answer with one of: {labels}.", ("emotion",), _class_name
    ),
    "aed": SpeechTask("Which sound events occur, and when?", ("events",), _events),
    "speaker": SpeechTask("What are the speaker's gender and age group?", ("gender", "age"), _attributes),
    # ``question``: empty when the question is spoken after the passage, else " " + its text
    "sqa": SpeechTask(
        "Answer the question about the recording.{question}",
        ("answer_text",),
        instruction_fields=("question",),
    ),
    "chat": SpeechTask("Answer the user's spoken question.", ("answer_text",)),
}

#: the text-only user turn of text-to-speech alignment (stage 2); the answer is the same text.
TTS_INSTRUCTION = "Read this text aloud: {text}"


def with_style(instruction: str, style: str | None, separator: str = " ") -> str:
    """``instruction`` after an instruction on how to speak (``"Say it slowly."``) and ``separator``, when one
    is given."""
    return f"{style.strip()}{separator}{instruction}" if style and style.strip() else instruction


@dataclass
class PromptBatch:
    """Token ids with audio slots: ``audio_mask`` marks positions the audio frames fill; ``turn_mask`` the
    current user turn, from its content (instruction, audio) to the end of the prompt (the assistant's
    header included, the answer not): the voice decoder's query reads these positions (MinMo §3.2)."""

    token_ids: Tensor  # [B, L], pad id at audio and padding positions
    audio_mask: Tensor  # [B, L] bool
    attention_mask: Tensor  # [B, L] long
    labels: Tensor  # [B, L], IGNORE_INDEX except response tokens
    turn_mask: Tensor  # [B, L] bool

    def to_device(self, device: torch.device | str) -> PromptBatch:
        fields = (self.token_ids, self.audio_mask, self.attention_mask, self.labels, self.turn_mask)
        return PromptBatch(*(t.to(device) for t in fields))

    @property
    def position_ids(self) -> Tensor:
        """Positions that skip left padding (0 at each item's first real token)."""
        return (self.attention_mask.cumsum(-1) - 1).clamp(min=0)


@dataclass(frozen=True)
class Turn:
    """An earlier turn of a conversation: the assistant's text, or the user's text or speech (``audio_frames``
    projected frames, spliced in where the turn's audio placeholder is)."""

    role: str
    text: str = ""
    audio_frames: int | None = None

    def __post_init__(self) -> None:
        if self.role not in ("user", "assistant"):
            raise ValueError(f"a turn's role is 'user' or 'assistant', got {self.role!r}")
        if self.role == "assistant" and self.audio_frames is not None:
            raise ValueError(
                "an assistant turn is text: the assistant's speech enters the context as its words"
            )

    def message(self) -> dict[str, str]:
        return {
            "role": self.role,
            "content": AUDIO_PLACEHOLDER if self.audio_frames is not None else self.text,
        }


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

    def _prompt_pieces(self, instruction: str, history: Sequence[Turn] = ()) -> tuple[list[list[int]], int]:
        """The prompt's token ids between its audio spans: one more piece than spans (the history's audio
        turns, then the current turn's audio), and how many ids of the last-but-one piece come before the
        current user turn's content (the turn starts there)."""
        content = self.user_template.format(instruction=instruction)
        messages = [turn.message() for turn in history]
        messages.append({"role": "user", "content": content})
        if self.system_prompt is not None:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        spans = 1 + sum(turn.audio_frames is not None for turn in history)
        if text.count(AUDIO_PLACEHOLDER) != spans:
            raise ValueError(
                f"the prompt should hold {spans} audio placeholder(s) {AUDIO_PLACEHOLDER}, the chat template "
                f"made {text.count(AUDIO_PLACEHOLDER)} (a turn's text must not contain it): {text!r}"
            )
        pieces = text.split(AUDIO_PLACEHOLDER)
        # the current turn's content holds its audio placeholder, so it starts in the last-but-one piece
        opening = content.split(AUDIO_PLACEHOLDER)[0]
        if not pieces[-2].endswith(opening):
            raise ValueError(f"the chat template rewrote the user turn {content!r}: {text!r}")
        before_turn = pieces[-2][: len(pieces[-2]) - len(opening)]
        return [self.encode(piece) for piece in pieces], len(self.encode(before_turn))

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
        histories: Sequence[Sequence[Turn]] | None = None,
    ) -> PromptBatch:
        """Right padding for training, left padding for generation (all prompts end together).

        ``histories``: earlier turns per item, before the current user turn; the audio of an item's history
        turns precedes its current audio in the frames spliced in (``splice_audio``). Loss covers only the
        response to the current turn."""
        if len(instructions) != len(audio_lengths):
            raise ValueError(f"{len(instructions)} instructions for {len(audio_lengths)} audio clips")
        if histories is not None and len(histories) != len(instructions):
            raise ValueError(f"{len(histories)} histories for {len(instructions)} prompts")
        rows: list[tuple[list[int], list[bool], list[int], list[bool]]] = []
        for i, instruction in enumerate(instructions):
            history = histories[i] if histories is not None else ()
            pieces, before_turn = self._prompt_pieces(instruction, history)
            spans = [t.audio_frames for t in history if t.audio_frames is not None] + [int(audio_lengths[i])]
            ids, is_audio = list(pieces[0]), [False] * len(pieces[0])
            for frames, piece in zip(spans, pieces[1:]):
                ids += [self.pad_id] * frames + piece
                is_audio += [True] * frames + [False] * len(piece)
            turn_start = len(ids) - len(pieces[-1]) - spans[-1] - len(pieces[-2]) + before_turn
            in_turn = [False] * turn_start + [True] * (len(ids) - turn_start)
            labels = [IGNORE_INDEX] * len(ids)
            if responses is not None:
                answer = self.encode(responses[i]) + [self.end_id]
                ids, is_audio, labels = ids + answer, is_audio + [False] * len(answer), labels + answer
                in_turn += [False] * len(answer)
            rows.append((ids, is_audio, labels, in_turn))
        return self._pad(rows, padding_side)

    def _pad(
        self, rows: list[tuple[list[int], list[bool], list[int], list[bool]]], padding_side: str
    ) -> PromptBatch:
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        width = max(len(row[0]) for row in rows)
        batch = len(rows)
        token_ids = torch.full((batch, width), self.pad_id, dtype=torch.long)
        audio_mask = torch.zeros(batch, width, dtype=torch.bool)
        attention = torch.zeros(batch, width, dtype=torch.long)
        labels = torch.full((batch, width), IGNORE_INDEX, dtype=torch.long)
        turn_mask = torch.zeros(batch, width, dtype=torch.bool)
        for b, (ids, is_audio, lab, in_turn) in enumerate(rows):
            span = slice(width - len(ids), width) if padding_side == "left" else slice(0, len(ids))
            token_ids[b, span] = torch.tensor(ids)
            audio_mask[b, span] = torch.tensor(is_audio)
            attention[b, span] = 1
            labels[b, span] = torch.tensor(lab)
            turn_mask[b, span] = torch.tensor(in_turn)
        return PromptBatch(token_ids, audio_mask, attention, labels, turn_mask)


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
