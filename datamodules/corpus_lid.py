"""Language identification: parallel-grammar sentences read by espeak-ng voices of five languages."""

from __future__ import annotations

from collections.abc import Iterator

from minmo_lightning.datamodules.corpus_parallel import CODES, LANGUAGES, parallel_pools
from minmo_lightning.datamodules.corpus_plan import USER_VOICES, PlanInputs, Planned, numbered, user_says
from minmo_lightning.datamodules.corpus_text import punctuate

LANGUAGE_NAMES = tuple(LANGUAGES.values())
"""The labels of every language column (``ClassLabel`` names), in the order of ``LANGUAGES``."""
LANGUAGE_VOICES: dict[str, tuple[str, ...]] = {
    "en": USER_VOICES,
    "es": ("es", "es+f2", "es+m3", "es-419", "es-419+f4", "es+m7"),
    "de": ("de", "de+f2", "de+m3", "de+f4", "de+m7"),
    "fr": ("fr", "fr+f2", "fr+m3", "fr-BE+f4", "fr+m7"),
    "it": ("it", "it+f2", "it+m3", "it+f4", "it+m7"),
}
"""The espeak-ng voices that read each language (base voice and +variants)."""


def language_label(code: str) -> int:
    return CODES.index(code)


def plan_lid(inputs: PlanInputs) -> Iterator[Planned]:
    """Languages in turn, so every split holds each language equally often."""
    rng = inputs.own_rng
    for split, i, key, sentence in numbered("lid", parallel_pools(inputs)["lid"]):
        code = CODES[i % len(CODES)]
        text = sentence.texts[code]
        job = user_says(rng, punctuate(text, sentence.question), LANGUAGE_VOICES[code])
        yield split, job, {"id": key, "text": text, "language": language_label(code), "speaker": job.voice}
