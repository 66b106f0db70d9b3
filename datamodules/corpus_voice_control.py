"""Instruction-controlled speech: a text, an instruction asking for a style, and the assistant's voice
reading it in that style and neutrally (24 kHz, the rate of MinMo's spoken output).

Styles are espeak-ng settings relative to the assistant voice: the emotion styles are exactly the
emotion proxy's (``STYLE_PROSODY``: a prosody pattern, not human emotion), rate and pitch styles
change one setting. Each row also holds the request spoken by a user (the text, then the instruction)
for speech-to-speech use, and espeak's phoneme count of the text (rate = duration per phoneme).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from minmo_lightning.datamodules.corpus_plan import (
    ASSISTANT_VOICE,
    SPEECH_OUT_RATE,
    STYLE_PROSODY,
    PhonemeCount,
    PlanInputs,
    Planned,
    Utterance,
    audio_cell,
    distinct_splits,
    numbered,
    user_says,
)
from minmo_lightning.datamodules.corpus_text import draw_exchange, punctuate

CONTROLS = ("emotion", "rate", "pitch")
TARGET_CONTROL = {
    "happy": "emotion",
    "sad": "emotion",
    "angry": "emotion",
    "slow": "rate",
    "fast": "rate",
    "high": "pitch",
    "low": "pitch",
}
TARGETS = tuple(TARGET_CONTROL)
PROSODY = {
    **{style: STYLE_PROSODY[style] for style in ("happy", "sad", "angry")},
    "slow": (0.7, 0, 100, 50),
    "fast": (1.4, 0, 100, 50),
    "high": (1.0, 25, 100, 50),
    "low": (1.0, -25, 100, 50),
}
"""Target -> (rate factor, pitch offset, volume, pitch range) applied to the assistant voice."""
NEUTRAL = STYLE_PROSODY["neutral"]
INSTRUCTIONS = {
    "happy": ("Speak in a happy voice.", "Say it cheerfully.", "Sound happy when you say it."),
    "sad": ("Speak in a sad voice.", "Say it sadly.", "Sound sad when you say it."),
    "angry": ("Speak in an angry voice.", "Say it angrily.", "Sound angry when you say it."),
    "slow": ("Say it slowly.", "Speak slowly.", "Please read it at a slow pace."),
    "fast": ("Say it quickly.", "Speak fast.", "Please read it at a fast pace."),
    "high": ("Use a high voice.", "Say it in a high pitch.", "Raise your pitch."),
    "low": ("Use a low voice.", "Say it in a deep voice.", "Lower your pitch."),
}
"""Natural wordings of each target's instruction; a row draws one."""


def assistant_reads(text: str, prosody: tuple[float, int, int, int], seed: int) -> Utterance:
    factor, offset, volume, pitch_range = prosody
    voice = ASSISTANT_VOICE
    return Utterance(
        text,
        voice["name"],
        round(voice["rate"] * factor),
        voice["pitch"] + offset,
        seed,
        volume=volume,
        range=pitch_range,
        sample_rate=SPEECH_OUT_RATE,
    )


def plan_voice_control(inputs: PlanInputs) -> Iterator[Planned]:
    """Targets in turn; the styled and the neutral reading share one seed (only the style differs). A row's
    wording, seeds and user voice come from a generator of its own id, so more training rows leave every
    held-out row as it was."""
    sentences = distinct_splits(inputs, draw_exchange, lambda exchange: exchange.user)
    for split, i, key, exchange in numbered("voice_control", sentences):
        rng = random.Random(f"{inputs.seed}:{key}")
        target = TARGETS[i % len(TARGETS)]
        instruction = rng.choice(INSTRUCTIONS[target])
        spoken, seed = punctuate(exchange.user, exchange.question), rng.getrandbits(31)
        request = f"{spoken} {instruction}"
        job = (
            assistant_reads(spoken, PROSODY[target], seed),
            assistant_reads(spoken, NEUTRAL, seed),
            user_says(rng, request),
            PhonemeCount(spoken, ASSISTANT_VOICE["name"]),
        )
        meta = {
            "id": key,
            "text": exchange.user,
            "instruction": instruction,
            "control": CONTROLS.index(TARGET_CONTROL[target]),
            "target": TARGETS.index(target),
            "request_text": request,
        }
        yield split, job, meta


def voice_control_row(meta: dict, results: tuple[dict, ...], frame_rate: float) -> dict:
    key = meta["id"]
    styled, neutral, request, phonemes = results
    return {
        **meta,
        "audio": audio_cell(key, styled),
        "neutral_audio": audio_cell(key, neutral, "-neutral"),
        "request_audio": audio_cell(key, request, "-request"),
        "phonemes": phonemes["phonemes"],
        "duration": styled["duration"],
        "neutral_duration": neutral["duration"],
        "request_duration": request["duration"],
    }
