"""Column mappings: which dataset column feeds which field of a task's batch.

A *schema preset* lists candidate column names per field for a common dataset layout (first existing
candidate wins); ``columns`` in the recipe overrides single fields with an exact column name. Layouts
follow ``reference/eval.md`` §4 (LibriSpeech, FLEURS, Common Voice, AISHELL, IEMOCAP, MELD, CREMA-D).
"""

from __future__ import annotations

from collections.abc import Sequence

AUDIO_FIELDS = frozenset({"audio", "user_audio", "answer_audio", "assistant_audio", "neutral_audio"})

#: task -> field -> required?  (``duration``, when mapped, spares a pass over the audio headers)
TASK_FIELDS: dict[str, dict[str, bool]] = {
    "asr": {"audio": True, "text": True, "id": False, "duration": False},
    "emotion": {"audio": True, "emotion": True, "text": False, "id": False, "duration": False},
    "tts": {"audio": True, "text": True, "speech_tokens": False, "id": False, "duration": False},
    "s2s": {
        "user_audio": True,
        "answer_text": True,
        "answer_audio": True,
        "user_text": False,
        "answer_speech_tokens": False,
        "id": False,
        "duration": False,
    },
    "s2tt": {
        "audio": True,
        "translation": True,
        "target_language": False,  # or the datamodule's `target_language` (one language per dataset)
        "text": False,
        "source_language": False,
        "id": False,
        "duration": False,
    },
    "lid": {"audio": True, "language": True, "text": False, "id": False, "duration": False},
    "speaker": {
        "audio": True,
        "gender": False,
        "age": False,
        "speaker": False,
        "text": False,
        "id": False,
        "duration": False,
    },
    # ``events``: [{label, onset, offset}] per clip; or one ``event_label`` for the whole clip (ESC-50)
    "aed": {
        "audio": True,
        "events": False,
        "event_label": False,
        "text": False,
        "id": False,
        "duration": False,
    },
    "sqa": {
        "audio": True,
        "answer_text": True,
        "question": False,
        "answer_type": False,
        "passage": False,
        "id": False,
        "duration": False,
    },
    "dialogue": {
        "audio": True,
        "answer_text": True,
        "history": False,
        "text": False,
        "id": False,
        "duration": False,
    },
    "voice_control": {
        "audio": True,
        "text": True,
        "instruction": True,
        "control": False,
        "target": False,
        "neutral_audio": False,
        "phonemes": False,
        "speech_tokens": False,
        "neutral_speech_tokens": False,
        "id": False,
        "duration": False,
    },
    "duplex": {
        "user_audio": True,
        "assistant_audio": True,
        "events": True,
        "frame_labels": False,
        "frame_rate": False,
        "id": False,
        "duration": False,
    },
}

_TEXT = ("text", "sentence", "normalized_text", "transcript", "transcription")
PRESETS: dict[str, dict[str, tuple[str, ...]]] = {
    "builtin": {
        "audio": ("audio",),
        "text": ("text",),
        "emotion": ("prosody_style", "emotion"),
        "id": ("id",),
        "duration": ("duration",),
        "speech_tokens": ("speech_tokens",),
        "user_audio": ("user_audio",),
        "user_text": ("user_text",),
        "answer_text": ("answer_text", "answer"),
        "answer_audio": ("answer_audio",),
        "answer_speech_tokens": ("answer_speech_tokens",),
        "assistant_audio": ("assistant_audio",),
        "events": ("events",),
        "frame_labels": ("frame_labels",),
        "frame_rate": ("frame_rate",),
        "translation": ("translation",),
        "target_language": ("target_language",),
        "source_language": ("source_language",),
        "language": ("language",),
        "gender": ("gender",),
        "age": ("age",),
        "speaker": ("speaker",),
        "question": ("question",),
        "answer_type": ("answer_type",),
        "passage": ("passage",),
        "history": ("history",),
        "instruction": ("instruction",),
        "control": ("control",),
        "target": ("target",),
        "neutral_audio": ("neutral_audio",),
        "phonemes": ("phonemes",),
        "neutral_speech_tokens": ("neutral_speech_tokens",),
    },
    "librispeech_asr": {"audio": ("audio",), "text": ("text",), "id": ("id",)},
    # FLEURS also serves language ID (``language``: the English name) and speaker gender
    "fleurs": {
        "audio": ("audio",),
        "text": ("transcription", "raw_transcription"),
        "id": ("id",),
        "language": ("language",),
        "gender": ("gender",),
    },
    # CoVoST 2 (``facebook/covost2`` layout): one language pair per config; give the datamodule its
    # ``target_language``
    "covost2": {
        "audio": ("audio", "file"),
        "text": ("sentence",),
        "translation": ("translation",),
        "id": ("id",),
    },
    # ESC-50: one event per 5 s clip, its class name in ``category``
    "esc50": {"audio": ("audio", "filename"), "event_label": ("category",), "id": ("filename",)},
    # AudioSet-style event lists: [{label, onset, offset}] per clip
    "audioset_strong": {"audio": ("audio",), "events": ("events", "labels"), "id": ("id", "segment_id")},
    # VoxCeleb metadata joined to the clips (gender m/f; age from VoxCeleb enrichment where present)
    "voxceleb": {
        "audio": ("audio",),
        "speaker": ("speaker_id", "VoxCeleb1 ID", "id"),
        "gender": ("gender", "Gender"),
        "age": ("age_band", "age"),
        "id": ("id", "path"),
    },
    # spoken-QA sets in the AudioBench layout: audio ``context``, text question ``instruction``, ``answer``
    "audiobench_sqa": {
        "audio": ("context", "audio"),
        "question": ("instruction", "question"),
        "answer_text": ("answer",),
        "id": ("id",),
    },
    "common_voice": {"audio": ("audio",), "text": ("sentence",), "id": ("path",)},
    # The official AISHELL-1 release has no parquet; copies use these (AudioBench style: context/answer).
    "aishell": {"audio": ("audio", "context"), "text": (*_TEXT, "answer"), "id": ("id", "key")},
    "iemocap": {
        "audio": ("audio",),
        "emotion": ("label", "emotion", "major_emotion"),
        "text": ("text",),
        "id": ("id", "file"),
    },
    "meld": {"audio": ("audio",), "emotion": ("emotion",), "text": ("text",), "id": ("path", "id")},
    "crema_d": {
        "audio": ("audio",),
        "emotion": ("major_emotion",),
        "text": ("transcription",),
        "id": ("file",),
    },
    "generic": {
        "audio": ("audio",),
        "text": _TEXT,
        "emotion": ("emotion", "label"),
        "id": ("id", "key", "path", "file"),
    },
}

#: Canonical label order per preset (the index of a label is its class id in ``batch["emotion"]``).
EMOTION_LABELS: dict[str, tuple[str, ...]] = {
    "builtin": ("neutral", "happy", "sad", "angry"),
    "iemocap": ("neutral", "happy", "sad", "angry"),
    "meld": ("neutral", "happy", "sad", "angry", "surprise", "fear", "disgust"),
    "crema_d": ("neutral", "happy", "sad", "angry", "fear", "disgust"),
    "generic": ("neutral", "happy", "sad", "angry"),
}
#: Raw label spellings -> canonical names (IEMOCAP merges "excited" into happy, as EmoBox does).
EMOTION_ALIASES: dict[str, str] = {
    "neu": "neutral",
    "hap": "happy",
    "exc": "happy",
    "excited": "happy",
    "joy": "happy",
    "ang": "angry",
    "anger": "angry",
    "sadness": "sad",
    "fea": "fear",
    "fearful": "fear",
    "dis": "disgust",
    "sur": "surprise",
    "surprised": "surprise",
}


#: Raw spellings of closed-set attributes -> canonical names (VoxCeleb's m/f, FLEURS' gender ids' names).
ATTRIBUTE_ALIASES: dict[str, dict[str, str]] = {
    "gender": {"m": "male", "f": "female", "man": "male", "woman": "female"},
}


def canonical_attribute(field: str, label: str) -> str:
    """A label's canonical spelling: its alias if it has one, else the label as written (trimmed)."""
    label = str(label).strip()
    return ATTRIBUTE_ALIASES.get(field, {}).get(label.lower(), label)


def canonical_emotion(label: str) -> str:
    key = label.strip().lower()
    return EMOTION_ALIASES.get(key, key)


def resolve_columns(
    task: str, schema: str, overrides: dict[str, str | None] | None, existing: Sequence[str], where: str
) -> dict[str, str | None]:
    """Field -> column for ``task`` (None for an absent optional field).

    Raises ``KeyError`` for an unknown schema and ``ValueError`` naming the existing columns and the
    recipe setting to add when a required field has no column.
    """
    if task not in TASK_FIELDS:
        raise KeyError(f"unknown task {task!r}; tasks: {', '.join(TASK_FIELDS)}")
    if schema not in PRESETS:
        raise KeyError(f"unknown schema preset {schema!r}; presets: {', '.join(PRESETS)}")
    overrides = dict(overrides or {})
    fields = TASK_FIELDS[task]
    stray = sorted(set(overrides) - set(fields))
    if stray:
        raise ValueError(
            f"columns mapping has unknown field(s) {stray}; {task} fields are: {', '.join(fields)}"
        )
    existing = list(existing)
    resolved: dict[str, str | None] = {}
    for field, required in fields.items():
        if field in overrides:
            column = overrides[field]
            if column is not None and column not in existing:
                raise ValueError(
                    f"{where}: columns.{field} = {column!r} is not a column; existing columns: {existing}"
                )
            resolved[field] = column
            continue
        candidates = PRESETS[schema].get(field, ()) or PRESETS["builtin"].get(field, ())
        resolved[field] = next((c for c in candidates if c in existing), None)
        if resolved[field] is None and required:
            looked = f" (schema {schema!r} looks for {list(candidates)})" if candidates else ""
            raise ValueError(
                f"{where} has no column for the {task} field '{field}'{looked}; existing columns: {existing}. "
                f"Map it in the recipe: data.init_args.columns: {{{field}: <one of those columns>}}"
            )
    return resolved
