"""Speaker attributes: English sentences read by synthetic speakers with a gender and an age band.

espeak-ng has no speaker or age model. A *speaker* here is one fixed voice setting (accent voice,
variant, pitch, rate); its gender is the variant's (``+fN`` female, ``+mN`` male, ...) and its age
band is a proxy drawn from the variant and the prosody (see ``CELLS``). Every (gender, age) cell has
its own speakers in every split, and no speaker is in two splits.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from minmo_lightning.datamodules.corpus_plan import PlanInputs, Planned, Utterance, distinct_splits, numbered
from minmo_lightning.datamodules.corpus_text import draw_exchange, punctuate

GENDERS = ("female", "male")
AGES = ("child", "adult", "senior")
ACCENTS = ("en-us", "en", "en-GB-x-rp", "en-GB-scotland", "en-029", "en-US-nyc")
"""espeak-ng English voices a speaker's variant is applied to."""


@dataclass(frozen=True)
class Cell:
    """How espeak renders one (gender, age) cell: the variants and the ranges of the speaker settings."""

    variants: tuple[str, ...]
    pitch: tuple[int, int]
    """espeak pitch (0-100, relative to the variant's own base)."""
    rate: tuple[int, int]
    """words per minute."""


CELLS: dict[tuple[str, str], Cell] = {
    # child: the variants with raised formants and a high base pitch (F0 ~230-320 Hz)
    ("female", "child"): Cell(("Annie", "Alicia"), (45, 75), (165, 200)),
    ("male", "child"): Cell(("zac",), (10, 45), (165, 200)),
    # adult: espeak's standard female and male variants (F0 ~150-215 Hz and ~85-115 Hz)
    ("female", "adult"): Cell(("f1", "f2", "f4", "f5"), (35, 65), (145, 190)),
    ("male", "adult"): Cell(("m1", "m2", "m3", "m4", "m6", "m7"), (35, 65), (145, 190)),
    # senior: the variants with pitch jitter (flutter) and breathy voicing, read slower; F0 as adults
    ("female", "senior"): Cell(("grandma",), (25, 50), (110, 140)),
    ("male", "senior"): Cell(("grandpa", "croak"), (25, 50), (110, 140)),
}
SPEAKERS_PER_CELL = {"train": 8, "validation": 2, "test": 2}


@dataclass(frozen=True)
class Speaker:
    id: str
    voice: str
    pitch: int
    rate: int
    gender: str
    age: str


def draw_speakers(rng: random.Random) -> dict[str, list[Speaker]]:
    """Disjoint speakers per split, ``SPEAKERS_PER_CELL`` of every cell, with opaque shuffled ids."""
    drawn, settings = [], set()
    for (gender, age), cell in CELLS.items():
        for j in range(sum(SPEAKERS_PER_CELL.values())):
            variant = cell.variants[j % len(cell.variants)]
            while True:  # distinct settings: two speakers never sound the same
                setting = (
                    f"{rng.choice(ACCENTS)}+{variant}",
                    rng.randint(*cell.pitch),
                    rng.randint(*cell.rate),
                )
                if setting not in settings:
                    break
            settings.add(setting)
            drawn.append((gender, age, j, setting))
    numbers = rng.sample(range(len(drawn)), len(drawn))
    bounds, start = {}, 0
    for split, count in SPEAKERS_PER_CELL.items():
        bounds[split], start = (start, start + count), start + count
    speakers: dict[str, list[Speaker]] = {split: [] for split in SPEAKERS_PER_CELL}
    for number, (gender, age, j, (voice, pitch, rate)) in zip(numbers, drawn):
        split = next(split for split, (lo, hi) in bounds.items() if lo <= j < hi)
        speakers[split].append(Speaker(f"spk{number:03d}", voice, pitch, rate, gender, age))
    for split_speakers in speakers.values():
        rng.shuffle(split_speakers)  # rows take speakers in turn: interleave the cells
    return speakers


def plan_speaker(inputs: PlanInputs) -> Iterator[Planned]:
    rng = inputs.own_rng
    speakers = draw_speakers(rng)
    sentences = distinct_splits(inputs, draw_exchange, lambda exchange: exchange.user)
    for split, i, key, exchange in numbered("speaker", sentences):
        speaker = speakers[split][i % len(speakers[split])]
        job = Utterance(
            punctuate(exchange.user, exchange.question),
            speaker.voice,
            round(speaker.rate * rng.uniform(0.95, 1.05)),  # a speaker never reads twice at one speed
            speaker.pitch + rng.randint(-3, 3),
            rng.getrandbits(31),
            gain_db=round(rng.uniform(-6, 6), 2),  # loudness must not give the speaker away
        )
        meta = {
            "id": key,
            "text": exchange.user,
            "speaker": speaker.id,
            "gender": GENDERS.index(speaker.gender),
            "age": AGES.index(speaker.age),
            "voice": speaker.voice,
        }
        yield split, job, meta
