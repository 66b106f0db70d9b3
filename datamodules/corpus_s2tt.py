"""Speech-to-text translation: English speech -> Spanish text, and Spanish speech -> English text.

Both sides come from one draw of the parallel grammar (``corpus_parallel``), so each translation is
exact; rows alternate the two directions.
"""

from __future__ import annotations

from collections.abc import Iterator

from minmo_lightning.datamodules.corpus_lid import LANGUAGE_VOICES, language_label
from minmo_lightning.datamodules.corpus_parallel import parallel_pools
from minmo_lightning.datamodules.corpus_plan import PlanInputs, Planned, numbered, user_says
from minmo_lightning.datamodules.corpus_text import punctuate

DIRECTIONS = (("en", "es"), ("es", "en"))
"""(spoken language, written language) of the rows, in turn."""


def plan_s2tt(inputs: PlanInputs) -> Iterator[Planned]:
    rng = inputs.own_rng
    for split, i, key, sentence in numbered("s2tt", parallel_pools(inputs)["s2tt"]):
        source, target = DIRECTIONS[i % len(DIRECTIONS)]
        text = sentence.texts[source]
        job = user_says(rng, punctuate(text, sentence.question), LANGUAGE_VOICES[source])
        meta = {
            "id": key,
            "text": text,
            "source_language": language_label(source),
            "translation": sentence.texts[target],
            "target_language": language_label(target),
            "speaker": job.voice,
        }
        yield split, job, meta
