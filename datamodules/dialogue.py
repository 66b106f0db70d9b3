"""Multi-turn spoken dialogue: the last user turn's speech, the earlier turns as history, the answer.

A row's ``history`` is a list of ``{"role": "user" | "assistant", "text", "audio"}``; a user turn whose
``audio`` holds a clip is heard (its speech enters the prompt), one without is read as text. Batches:
``{"ids", "audio", "text", "answer_text", "history", "history_audio", "supervises"}``, where ``history``
holds per item its turns as ``{"role", "text", "audio": index into history_audio or None}`` and
``history_audio`` is every heard history clip of the batch in one ``AudioBatch`` (``None``: none).
A source without a history column (a spoken question and its answer, as ``data/builtin/s2s`` with
``columns: {audio: user_audio, text: user_text}``) trains single-turn chat.
"""

from __future__ import annotations

from typing import Any

from minmo_lightning.datamodules.audio import AudioError
from minmo_lightning.datamodules.base import ColumnMapping, Columns, Waves, pad_audio
from minmo_lightning.datamodules.tasks import SpeechToTextDataModule, column_texts

HISTORY_ROLES = ("user", "assistant")


def _turns(columns: Columns, mapping: ColumnMapping, row: int) -> list[dict]:
    """The row's earlier turns; none where the source has no history column."""
    if mapping.get("history") is None:
        return []
    return columns[mapping["history"]][row] or []


def _clip(turn: dict) -> Any:
    """The stored audio of a heard user turn (raw WAV bytes are wrapped as ``Audio`` stores them); ``None``
    for an assistant turn or a user turn given as text."""
    audio = turn.get("audio")
    if turn.get("role") != "user" or not audio:
        return None
    if isinstance(audio, bytes):
        return {"bytes": audio, "path": None}
    if isinstance(audio, dict) and not (
        audio.get("bytes") or audio.get("path") or audio.get("array") is not None
    ):
        return None
    return audio


class DialogueDataModule(SpeechToTextDataModule):
    """Spoken dialogue with history -> the assistant's answer to the last turn (task ``chat``)."""

    task = "dialogue"
    supervises = ("chat",)

    def __init__(self, path: str = "data/builtin/dialogue", **kwargs: Any) -> None:
        super().__init__(path, **kwargs)

    def decode(
        self, columns: Columns, mapping: ColumnMapping, role: str = "train"
    ) -> tuple[Waves, list[int], list[dict]]:
        """The current turn's audio as for any source, then each good row's heard history clips; a row whose
        history does not decode (or names an unknown role) is skipped and recorded like any bad row."""
        waves, good, skipped = super().decode(columns, mapping, role)
        kept_rows, kept_audio, history_waves = [], [], []
        for row, wave in zip(good, waves["audio"]):
            try:
                history_waves.append(self._history_waves(_turns(columns, mapping, row)))
            except AudioError as error:
                row_id = self.ids(columns, mapping, [row])[0]
                skipped.append(self._skip_record(role, row_id, error.reason, f"history: {error}"))
                continue
            kept_rows.append(row)
            kept_audio.append(wave)
        return {"audio": kept_audio, "history": history_waves}, kept_rows, skipped

    def _history_waves(self, turns: list[dict]) -> list[Any]:
        clips = []
        for turn in turns:
            if turn.get("role") not in HISTORY_ROLES:
                raise AudioError(
                    f"a history turn has role {turn.get('role')!r}, not user or assistant", "bad_history"
                )
            clip = _clip(turn)
            clips.append(None if clip is None else self._decode_field(clip, "history", self.sample_rate))
        return clips

    def batch_fields(
        self, columns: Columns, mapping: ColumnMapping, waves: Waves, rows: list[int]
    ) -> dict[str, Any]:
        clips, histories = [], []
        for row, row_clips in zip(rows, waves["history"]):
            turns = _turns(columns, mapping, row)
            history = []
            for turn, clip in zip(turns, row_clips):
                history.append({"role": turn["role"], "text": turn.get("text") or "", "audio": None})
                if clip is not None:
                    history[-1]["audio"] = len(clips)
                    clips.append(clip)
            histories.append(history)
        return {
            "audio": pad_audio(waves["audio"], self.sample_rate),
            "text": column_texts(columns, mapping, "text", rows),
            "answer_text": column_texts(columns, mapping, "answer_text", rows),
            "history": histories,
            "history_audio": pad_audio(clips, self.sample_rate) if clips else None,
        }
