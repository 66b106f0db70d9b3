"""Text side of the built-in corpus: a closed English vocabulary of commands, numbers and questions.

Every user sentence comes from an *intent*: user templates plus answer templates that reuse the same
slots, so a (question, answer) pair stays coherent for the speech-to-speech set. All draws take an
explicit ``random.Random`` so the corpus is reproducible from its seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import TypeVar

_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_words(n: int) -> str:
    """0 <= n < 1000 in words ("one hundred and five")."""
    if not 0 <= n < 1000:
        raise ValueError(f"number_words handles 0..999, got {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens - 2] + ("" if ones == 0 else " " + _ONES[ones])
    hundreds, rest = divmod(n, 100)
    return _ONES[hundreds] + " hundred" + ("" if rest == 0 else " and " + number_words(rest))


SLOTS: dict[str, list[str]] = {
    "room": [
        "kitchen",
        "bedroom",
        "bathroom",
        "garage",
        "office",
        "hallway",
        "basement",
        "attic",
        "garden",
        "nursery",
    ]
    + ["living room", "dining room"],
    "device": [
        "lights",
        "fan",
        "heater",
        "radio",
        "television",
        "oven",
        "kettle",
        "dishwasher",
        "printer",
        "speaker",
    ]
    + ["air conditioner", "coffee machine", "washing machine"],
    "name": [
        "anna",
        "peter",
        "maria",
        "john",
        "lucy",
        "david",
        "emma",
        "michael",
        "sarah",
        "james",
        "olivia",
        "daniel",
        "sophia",
        "thomas",
        "grace",
        "henry",
        "alice",
        "oscar",
        "julia",
        "robert",
        "nina",
        "victor",
        "laura",
        "simon",
        "clara",
        "ethan",
        "mia",
    ],
    "city": [
        "paris",
        "london",
        "tokyo",
        "berlin",
        "madrid",
        "rome",
        "sydney",
        "toronto",
        "chicago",
        "boston",
        "dublin",
        "vienna",
        "prague",
        "lisbon",
        "oslo",
        "seoul",
    ],
    "day": ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"],
    "item": [
        "milk",
        "bread",
        "eggs",
        "butter",
        "apples",
        "coffee",
        "tea",
        "rice",
        "pasta",
        "cheese",
        "tomatoes",
        "onions",
        "bananas",
        "sugar",
        "flour",
        "yogurt",
    ],
    "colour": ["red", "blue", "green", "yellow", "purple", "orange", "white", "pink"],
    "genre": ["jazz", "rock", "classical", "pop", "blues", "country", "reggae", "folk"],
    "weather": ["sunny", "cloudy", "rainy", "windy", "foggy", "snowy"],
    "food": ["pizza", "sushi", "pasta", "curry", "salad", "soup", "noodles", "tacos"],
    "hour": [number_words(h) for h in range(1, 13)],
    "minute": ["o'clock", "fifteen", "thirty", "forty five"],
    "small": [number_words(n) for n in range(1, 21)],
    "level": [number_words(n) for n in range(10, 101, 10)],
    "temp": [number_words(n) for n in range(16, 29)],
}
"""Slot fillers; every word of the vocabulary comes from here or from the templates."""
COUNTABLE_ITEMS: tuple[str, ...] = (
    "apples",
    "eggs",
    "tomatoes",
    "onions",
    "bananas",
    "lemons",
    "oranges",
    "cookies",
    "books",
    "tickets",
)
"""Plural nouns that take a number ("three apples"), for the spoken-QA passages and the dialogues."""


@dataclass(frozen=True)
class Intent:
    """User templates and the assistant answers that go with them (same ``{slot}`` names)."""

    name: str
    user: tuple[str, ...]
    answers: tuple[str, ...]


INTENTS: tuple[Intent, ...] = (
    Intent(
        "device_on",
        ("turn on the {device} in the {room}", "switch on the {room} {device} at {hour} {minute}"),
        ("okay, the {device} in the {room} is on now", "done, i turned on the {device}"),
    ),
    Intent(
        "device_off",
        ("turn off the {device} in the {room}", "switch off the {device} in {small} minutes"),
        ("okay, the {device} is off", "done, the {device} is switched off"),
    ),
    Intent(
        "set_level",
        ("set the {room} {device} to {level} percent", "dim the {room} lights to {level} percent"),
        ("okay, set to {level} percent", "done, it is at {level} percent now"),
    ),
    Intent(
        "thermostat",
        ("set the {room} to {temp} degrees", "make the {room} {temp} degrees by {hour} {minute}"),
        ("the {room} will be {temp} degrees soon", "okay, heating the {room} to {temp} degrees"),
    ),
    Intent(
        "alarm",
        ("wake me up at {hour} {minute} on {day}", "set an alarm for {hour} {minute} on {day}"),
        ("your alarm is set for {hour} {minute} on {day}", "okay, i will wake you at {hour} {minute}"),
    ),
    Intent(
        "timer",
        ("set a timer for {small} minutes in the {room}", "start a {small} minute timer for the {food}"),
        ("a timer for {small} minutes is running", "okay, {small} minutes starting now"),
    ),
    Intent(
        "weather",
        ("what is the weather in {city} on {day}", "will it be {weather} in {city} on {day}"),
        (
            "it will be {weather} in {city}, with a high of {temp} degrees",
            "expect {weather} skies in {city} on {day}",
        ),
    ),
    Intent(
        "time",
        ("what time is it in {city} when it is {hour} {minute} here", "how late is it in {city} right now"),
        ("it is {hour} {minute} in {city}", "right now it is {hour} {minute} in {city}"),
    ),
    Intent(
        "call",
        ("call {name} on {day} at {hour} {minute}", "send a message to {name} about the {food}"),
        ("okay, i will contact {name} on {day}", "i sent {name} a message"),
    ),
    Intent(
        "remind",
        ("remind me to call {name} on {day}", "remind me to buy {item} for {name} {day}"),
        ("i will remind you on {day}", "okay, a reminder for {name} is set for {day}"),
    ),
    Intent(
        "shopping",
        ("put {small} {item} on the shopping list", "do we need more {item} and {item2} for {day}"),
        ("i added {item} to your list", "{item} is on the list now"),
    ),
    Intent(
        "music",
        ("play some {genre} music in the {room}", "play {genre} at {level} percent in the {room}"),
        ("playing {genre} music in the {room}", "here is some {genre} for you"),
    ),
    Intent(
        "arithmetic",
        ("what is {a} plus {b}", "what is {a} times {b}", "how much is {a} minus {b}"),
        ("the answer is {result}", "that makes {result}"),
    ),
    Intent(
        "food",
        ("order {small} {food} for {hour} {minute}", "where can i get {food} in {city} on {day}"),
        ("i found a good {food} place in {city}", "your {food} will arrive at {hour} {minute}"),
    ),
    Intent(
        "colour",
        ("change the {room} lights to {colour} at {hour} {minute}", "make the {room} {device} {colour}"),
        ("the {room} lights are {colour} now", "okay, switching to {colour}"),
    ),
    Intent(
        "calendar",
        ("do i have a meeting with {name} on {day}", "when do i see {name} and {name2} in {city}"),
        ("you meet {name} at {hour} {minute} on {day}", "you have {small} meetings on {day}"),
    ),
    Intent(
        "travel",
        (
            "how long does it take from {city} to {city2}",
            "book a train to {city} on {day} at {hour} {minute}",
        ),
        ("the trip to {city} takes {small} hours", "i booked your trip to {city} for {day}"),
    ),
    Intent(
        "status",
        ("is the {device} still on in the {room}", "did i leave the {device} on in the {room} on {day}"),
        ("yes, the {device} is still on", "no, the {device} in the {room} is off"),
    ),
)

POLITE: tuple[str, ...] = ("", "", "please ", "can you ", "hey ")
"""Prefixes for commands (not questions), for more variety at the same vocabulary."""

QUESTION_WORDS = frozenset(["what", "where", "when", "how", "is", "do", "did", "will", "can"])
"""A user sentence that starts with one of these is read as a question ("?")."""

FOLLOW_UPS: tuple[str, ...] = (
    "is there anything else i can do for you",
    "let me know if you need more help with that",
    "i can also set a reminder if you like",
    "just ask me again whenever you want",
    "i hope that helps you today",
)
"""Second sentences that make assistant turns long enough to be interrupted."""

BACKCHANNELS: tuple[str, ...] = ("uh-huh", "yeah", "right", "okay", "mm-hmm", "i see", "sure")
"""Short listener responses that must not stop the assistant."""

T = TypeVar("T")


def _fill(template: str, values: dict[str, str]) -> str:
    return template.format(**values)


def _draw_values(rng: random.Random) -> dict[str, str]:
    values = {slot: rng.choice(options) for slot, options in SLOTS.items()}
    a, b = rng.randint(2, 12), rng.randint(2, 12)
    values["a"], values["b"] = number_words(a), number_words(b)
    values["_ab"] = f"{a},{b}"
    for slot in ("item", "name", "city"):
        values[slot + "2"] = rng.choice([x for x in SLOTS[slot] if x != values[slot]])
    return values


def _arithmetic_result(template: str, values: dict[str, str]) -> str:
    a, b = (int(x) for x in values["_ab"].split(","))
    if "plus" in template:
        return number_words(a + b)
    if "times" in template:
        return number_words(a * b)
    return number_words(abs(a - b)) if a >= b else "minus " + number_words(b - a)


@dataclass(frozen=True)
class Exchange:
    """One user sentence and a matching assistant answer (lower case, no final punctuation)."""

    user: str
    answer: str
    question: bool


def draw_exchange(rng: random.Random) -> Exchange:
    intent = rng.choice(INTENTS)
    template = rng.choice(intent.user)
    values = _draw_values(rng)
    values["result"] = _arithmetic_result(template, values) if intent.name == "arithmetic" else ""
    user = _fill(template, values)
    if user.split()[0] not in QUESTION_WORDS:
        user = rng.choice(POLITE) + user
    answer = _fill(rng.choice(intent.answers), values)
    return Exchange(user, answer, user.split()[0] in QUESTION_WORDS)


def punctuate(sentence: str, question: bool, final: bool = True) -> str:
    """Add the final mark espeak reads as intonation: "," continues (rising), "." / "?" ends."""
    return sentence + ("," if not final else "?" if question else ".")


def draw_distinct(
    rng: random.Random,
    draw: Callable[[random.Random], T],
    count: int,
    key: Callable[[T], Hashable],
    exclude: Iterable[Hashable] = (),
    distinct: bool = True,
) -> list[T]:
    """``count`` draws with keys not in ``exclude``, distinct unless ``distinct=False``.

    Raises when the grammar cannot produce that many items.
    """
    seen, out = set(exclude), []
    tries = 0
    while len(out) < count:
        item = draw(rng)
        tries += 1
        if key(item) not in seen:
            if distinct:
                seen.add(key(item))
            out.append(item)
        elif tries > 50 * count + 1000:
            raise ValueError(f"could only draw {len(out)} allowed items out of {count} asked for")
    return out


def unique_exchanges(rng: random.Random, count: int, exclude: set[str] = frozenset()) -> list[Exchange]:
    """``count`` exchanges with distinct user sentences not in ``exclude`` (the pool is ~10^6)."""
    return draw_distinct(rng, draw_exchange, count, lambda exchange: exchange.user, exclude)


def exchanges_outside(rng: random.Random, count: int, exclude: frozenset[str]) -> list[Exchange]:
    """``count`` exchanges as the grammar draws them, none whose user sentence is in ``exclude``.

    Repeats are kept: distinct draws run a template with few fillings (``what is {a} plus {b}``: 363
    sentences) dry and leave it almost unheard, while held-out sentences come from the full grammar.
    """
    return draw_distinct(rng, draw_exchange, count, lambda exchange: exchange.user, exclude, distinct=False)


def vocabulary() -> set[str]:
    """Every word the corpus can say (for the dataset card)."""
    words: set[str] = set()
    for options in SLOTS.values():
        for option in options:
            words.update(option.split())
    for intent in INTENTS:
        for template in intent.user + intent.answers:
            words.update(w for w in template.replace(",", " ").split() if not w.startswith("{"))
    words.update(number_words(n) for n in range(0, 145))
    for phrase in BACKCHANNELS:
        words.update(phrase.split())
    return {w for word in words for w in word.split()}
