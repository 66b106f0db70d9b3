"""Spoken question answering: a spoken passage of 2-4 facts, then a spoken question about one of them.

The answer is a span of the passage or yes/no. Within a passage every slot value (name, city, item,
hour, ...) is used once, so every question has one answer.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from minmo_lightning.datamodules.corpus_plan import (
    USER_VOICES,
    Concatenation,
    PlanInputs,
    Planned,
    Utterance,
    distinct_splits,
    numbered,
    user_voice,
)
from minmo_lightning.datamodules.corpus_text import COUNTABLE_ITEMS, SLOTS, number_words

ANSWER_TYPES = ("span", "yesno")
SPAN_PROBABILITY = 0.6
"""The other questions are yes/no, half of them answered yes."""


@dataclass(frozen=True)
class Fact:
    sentence: str
    span_questions: tuple[tuple[str, str], ...]
    """(question, answer) templates; the answer is a span of ``sentence``."""
    yes_no: str
    """A question that the fact answers yes; with ``swap`` changed to a value the passage lacks, no."""
    swap: str


FACTS: tuple[Fact, ...] = (
    Fact(
        "{name} bought {count} {item} on {day}",
        (
            ("what did {name} buy", "{count} {item}"),
            ("who bought {item}", "{name}"),
            ("when did {name} buy the {item}", "{day}"),
            ("how many {item} did {name} buy", "{count}"),
        ),
        "did {name} buy {item}",
        "item",
    ),
    Fact(
        "{name} flew to {city} on {day}",
        (
            ("where did {name} fly to", "{city}"),
            ("who flew to {city}", "{name}"),
            ("when did {name} fly to {city}", "{day}"),
        ),
        "did {name} fly to {city}",
        "city",
    ),
    Fact(
        "{name} likes {genre} music",
        (("what music does {name} like", "{genre}"), ("who likes {genre} music", "{name}")),
        "does {name} like {genre} music",
        "genre",
    ),
    Fact(
        "{name} has a meeting at {hour} {minute}",
        (
            ("at what time is the meeting of {name}", "{hour} {minute}"),
            ("who has a meeting at {hour} {minute}", "{name}"),
        ),
        "does {name} have a meeting at {hour} {minute}",
        "hour",
    ),
    Fact(
        "{name} lives in {city}",
        (("where does {name} live", "{city}"), ("who lives in {city}", "{name}")),
        "does {name} live in {city}",
        "city",
    ),
    Fact(
        "{name} drives a {colour} car",
        (("what colour is the car of {name}", "{colour}"), ("who drives a {colour} car", "{name}")),
        "does {name} drive a {colour} car",
        "colour",
    ),
    Fact(
        "the {device} is in the {room}",
        (("where is the {device}", "the {room}"), ("what is in the {room}", "the {device}")),
        "is the {device} in the {room}",
        "room",
    ),
)
VALUES: dict[str, tuple[str, ...]] = {
    **{
        slot: tuple(SLOTS[slot])
        for slot in ("name", "city", "day", "genre", "hour", "minute", "colour", "room")
    },
    "device": tuple(device for device in SLOTS["device"] if device != "lights"),  # "the lights is" is wrong
    "item": COUNTABLE_ITEMS,
    "count": tuple(number_words(n) for n in range(2, 13)),
}
"""Slot -> the values a passage draws from (each at most once per passage)."""


@dataclass(frozen=True)
class QuestionItem:
    passage: str
    question: str
    answer: str
    answer_type: str

    @property
    def key(self) -> tuple[str, str]:
        return self.passage, self.question


def draw_question_item(rng: random.Random) -> QuestionItem:
    pools = {slot: rng.sample(values, len(values)) for slot, values in VALUES.items()}
    facts = [(fact, {}) for fact in rng.choices(FACTS, k=rng.randint(2, 4))]
    for fact, values in facts:
        for slot in VALUES:
            if "{" + slot + "}" in fact.sentence:
                values[slot] = pools[slot].pop()
    fact, values = rng.choice(facts)
    if rng.random() < SPAN_PROBABILITY:
        question, answer = rng.choice(fact.span_questions)
        question, answer, answer_type = question.format(**values), answer.format(**values), "span"
    elif rng.random() < 0.5:
        question, answer, answer_type = fact.yes_no.format(**values), "yes", "yesno"
    else:
        absent = pools[fact.swap].pop()  # a value no fact of the passage holds
        question, answer, answer_type = fact.yes_no.format(**{**values, fact.swap: absent}), "no", "yesno"
    passage = " ".join(f"{fact.sentence.format(**values)}." for fact, values in facts)
    return QuestionItem(passage, f"{question}?", answer, answer_type)


def plan_sqa(inputs: PlanInputs) -> Iterator[Planned]:
    """The passage and the question in two different user voices, 0.5-1 s apart."""
    rng = inputs.own_rng
    items = distinct_splits(inputs, draw_question_item, lambda item: item.key)
    for split, _, key, item in numbered("sqa", items):
        reader, asker = rng.sample(USER_VOICES, 2)
        parts = tuple(
            Utterance(text, *user_voice(rng, (voice,)), rng.getrandbits(31))
            for text, voice in ((item.passage, reader), (item.question, asker))
        )
        job = Concatenation(parts, (round(rng.uniform(0.5, 1.0), 3),))
        meta = {
            "id": key,
            "passage": item.passage,
            "question": item.question,
            "answer": item.answer,
            "answer_type": ANSWER_TYPES.index(item.answer_type),
        }
        yield split, job, meta
