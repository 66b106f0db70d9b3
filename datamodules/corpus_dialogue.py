"""Multi-turn spoken dialogue: 2-4 user turns whose last answer needs something said earlier.

A dialogue is a scenario (its first turn sets a fact, its last turn asks about it or refers back to it:
"turn it off again", "and what is that times three") with small-talk turns added before it or, where
nothing in them could be mistaken for the fact, between its turns.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from minmo_lightning.datamodules.corpus_plan import (
    PlanInputs,
    Planned,
    Utterance,
    audio_cell,
    distinct_splits,
    numbered,
    user_voice,
)
from minmo_lightning.datamodules.corpus_text import (
    COUNTABLE_ITEMS,
    QUESTION_WORDS,
    SLOTS,
    number_words,
    punctuate,
)

MAX_USER_TURNS = 4
QUESTION_STARTS = QUESTION_WORDS | {"are", "and"}
"""First words of the user turns read with a question's intonation ("are you still there", "and what is ...")."""


@dataclass(frozen=True)
class Scenario:
    turns: tuple[tuple[tuple[str, ...], str], ...]
    """(ways the user says it, the assistant's answer) per turn; ``{slot}`` templates."""
    small_talk_between: bool
    """Whether small talk may come between the turns (False where it could take the reference: "it")."""


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        (
            (("turn on the {device} in the {room}",), "okay, the {device} in the {room} is on"),
            (("turn it off again", "switch it off again"), "okay, the {device} in the {room} is off now"),
        ),
        small_talk_between=False,
    ),
    Scenario(
        (
            (("put {count} {item} on the shopping list",), "i added {count} {item} to your list"),
            (
                ("how many {item} did i ask for", "how many {item} are on the list"),
                "you asked for {count} {item}",
            ),
        ),
        small_talk_between=True,
    ),
    Scenario(
        (
            (("book a train to {city} on {day}",), "okay, a train to {city} on {day}"),
            (("make it {day2} instead",), "okay, i moved it to {day2}"),
            (
                ("where am i going and when", "remind me where i am going"),
                "you are going to {city} on {day2}",
            ),
        ),
        small_talk_between=True,
    ),
    Scenario(
        (
            (("my friend {name} lives in {city}",), "nice, {name} lives in {city}"),
            (("what is the weather like there",), "it is {weather} in {city} today"),
        ),
        small_talk_between=True,
    ),
    Scenario(
        (
            (("what is {a} plus {b}",), "that makes {sum}"),
            (("and what is that times {c}",), "that makes {product}"),
        ),
        small_talk_between=False,
    ),
    Scenario(
        (
            (("i meet {name} on {day} at {hour} {minute}",), "okay, i noted your meeting with {name}"),
            (
                ("when do i meet {name}", "when is my meeting with {name}"),
                "you meet {name} on {day} at {hour} {minute}",
            ),
        ),
        small_talk_between=True,
    ),
    Scenario(
        (
            (("my name is {name}",), "nice to meet you, {name}"),
            (("what is my name", "do you remember my name"), "your name is {name}"),
        ),
        small_talk_between=True,
    ),
    Scenario(
        (
            (("set a timer for {count} minutes",), "a timer for {count} minutes is running"),
            (("add {more} more minutes",), "okay, the timer is now {total} minutes"),
        ),
        small_talk_between=True,
    ),
)
SMALL_TALK: tuple[tuple[str, str], ...] = (
    ("thank you", "you are welcome"),
    ("how are you today", "i am fine, thank you for asking"),
    ("what can you do", "i can set timers, keep lists and answer questions"),
    ("tell me a joke", "i am better at timers than at jokes"),
    ("are you still there", "yes, i am listening"),
    ("that sounds good", "great, just let me know"),
)
"""Turns that name nothing a scenario asks about."""


def _values(rng: random.Random) -> dict[str, str]:
    values = {slot: rng.choice(SLOTS[slot]) for slot in ("device", "room", "city", "day", "name", "weather")}
    values |= {slot: rng.choice(SLOTS[slot]) for slot in ("hour", "minute")}
    values["day2"] = rng.choice([day for day in SLOTS["day"] if day != values["day"]])
    values["item"] = rng.choice(COUNTABLE_ITEMS)
    a, b, c, count, more = (
        rng.randint(2, 12),
        rng.randint(2, 12),
        rng.randint(2, 5),
        rng.randint(2, 12),
        rng.randint(2, 10),
    )
    numbers = {
        "a": a,
        "b": b,
        "c": c,
        "sum": a + b,
        "product": (a + b) * c,
        "count": count,
        "more": more,
        "total": count + more,
    }
    return values | {slot: number_words(n) for slot, n in numbers.items()}


@dataclass(frozen=True)
class Dialogue:
    turns: tuple[tuple[str, str], ...]
    """(user, assistant) per turn; the last assistant text is the answer to learn."""

    @property
    def key(self) -> tuple[tuple[str, str], ...]:
        return self.turns


def draw_dialogue(rng: random.Random) -> Dialogue:
    scenario = rng.choice(SCENARIOS)
    values = _values(rng)
    core = [(rng.choice(users).format(**values), answer.format(**values)) for users, answer in scenario.turns]
    small_talk = rng.sample(SMALL_TALK, rng.randint(0, MAX_USER_TURNS - len(core)))
    at = 1 if scenario.small_talk_between else 0
    return Dialogue(tuple(core[:at] + small_talk + core[at:]))


def plan_dialogue(inputs: PlanInputs) -> Iterator[Planned]:
    """One user voice per dialogue; the assistant's turns are text (its voice is not the task here)."""
    rng = inputs.own_rng
    dialogues = distinct_splits(inputs, draw_dialogue, lambda dialogue: dialogue.key)
    for split, _, key, dialogue in numbered("dialogue", dialogues):
        voice, rate, pitch = user_voice(rng)
        job = tuple(
            Utterance(
                punctuate(user, user.split()[0] in QUESTION_STARTS), voice, rate, pitch, rng.getrandbits(31)
            )
            for user, _ in dialogue.turns
        )
        yield split, job, {"id": key, "turns": dialogue.turns, "speaker": voice}


def dialogue_row(meta: dict, results: tuple[dict, ...], frame_rate: float) -> dict:
    """The last user turn is the row's audio; the earlier turns, with the answers to them, its history."""
    key, turns = meta["id"], meta["turns"]
    history = []
    for (user, assistant), result in zip(turns[:-1], results[:-1]):
        history.append({"role": "user", "text": user, "audio": result["bytes"]})
        history.append({"role": "assistant", "text": assistant, "audio": b""})
    return {
        "id": key,
        "audio": audio_cell(key, results[-1]),
        "text": turns[-1][0],
        "history": history,
        "answer_text": turns[-1][1],
        "speaker": meta["speaker"],
        "duration": results[-1]["duration"],
    }
