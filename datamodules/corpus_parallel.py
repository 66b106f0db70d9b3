"""A parallel template grammar: the same sentences in English, Spanish, German, French and Italian.

Every template is written once per language and every slot value is a tuple of its renderings (with
the article, preposition or case the template needs), so one draw of template and slots gives exact,
deterministic translations: the translation set and the language-ID set read it. Text is lower case
without a final mark, like the rest of the corpus (``punctuate`` adds the mark espeak reads).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from operator import attrgetter

from minmo_lightning.datamodules.corpus_plan import PlanInputs
from minmo_lightning.datamodules.corpus_text import draw_distinct

LANGUAGES = {"en": "English", "es": "Spanish", "de": "German", "fr": "French", "it": "Italian"}
"""espeak-ng language code -> the language's English name (the label the data carries)."""
CODES = tuple(LANGUAGES)

_NUMBERS = (
    ("two", "dos", "zwei", "deux", "due"),
    ("three", "tres", "drei", "trois", "tre"),
    ("four", "cuatro", "vier", "quatre", "quattro"),
    ("five", "cinco", "fünf", "cinq", "cinque"),
    ("six", "seis", "sechs", "six", "sei"),
    ("seven", "siete", "sieben", "sept", "sette"),
    ("eight", "ocho", "acht", "huit", "otto"),
    ("nine", "nueve", "neun", "neuf", "nove"),
    ("ten", "diez", "zehn", "dix", "dieci"),
    ("eleven", "once", "elf", "onze", "undici"),
    ("twelve", "doce", "zwölf", "douze", "dodici"),
)
_DAYS = (
    ("monday", "lunes", "montag", "lundi", "lunedì"),
    ("tuesday", "martes", "dienstag", "mardi", "martedì"),
    ("wednesday", "miércoles", "mittwoch", "mercredi", "mercoledì"),
    ("thursday", "jueves", "donnerstag", "jeudi", "giovedì"),
    ("friday", "viernes", "freitag", "vendredi", "venerdì"),
    ("saturday", "sábado", "samstag", "samedi", "sabato"),
    ("sunday", "domingo", "sonntag", "dimanche", "domenica"),
)
_NAMES = ("anna", "peter", "maria", "david", "laura", "carlos", "sofia", "paul", "elena", "marco", "julia")

SLOTS: dict[str, tuple[tuple[str, ...], ...]] = {
    "number": _NUMBERS,
    "at_hour": tuple(
        (f"at {en} o'clock", f"a las {es}", f"um {de} uhr", f"à {fr} heures", f"alle {it}")
        for en, es, de, fr, it in _NUMBERS
    ),
    "on_day": tuple((f"on {en}", f"el {es}", f"am {de}", fr, it) for en, es, de, fr, it in _DAYS),
    "name": tuple((name,) * len(LANGUAGES) for name in _NAMES),
    "city": (
        ("london", "londres", "london", "londres", "londra"),
        ("paris", "parís", "paris", "paris", "parigi"),
        ("rome", "roma", "rom", "rome", "roma"),
        ("berlin", "berlín", "berlin", "berlin", "berlino"),
        ("madrid", "madrid", "madrid", "madrid", "madrid"),
        ("vienna", "viena", "wien", "vienne", "vienna"),
        ("lisbon", "lisboa", "lissabon", "lisbonne", "lisbona"),
        ("prague", "praga", "prag", "prague", "praga"),
        ("athens", "atenas", "athen", "athènes", "atene"),
        ("dublin", "dublín", "dublin", "dublin", "dublino"),
        ("geneva", "ginebra", "genf", "genève", "ginevra"),
    ),
    "item": (
        ("apples", "manzanas", "äpfel", "pommes", "mele"),
        ("eggs", "huevos", "eier", "œufs", "uova"),
        ("books", "libros", "bücher", "livres", "libri"),
        ("tickets", "billetes", "fahrkarten", "billets", "biglietti"),
        ("oranges", "naranjas", "orangen", "oranges", "arance"),
        ("tomatoes", "tomates", "tomaten", "tomates", "pomodori"),
        ("lemons", "limones", "zitronen", "citrons", "limoni"),
        ("bottles of water", "botellas de agua", "flaschen wasser", "bouteilles d'eau", "bottiglie d'acqua"),
    ),
    "the_place": (
        ("the station", "la estación", "der bahnhof", "la gare", "la stazione"),
        ("the museum", "el museo", "das museum", "le musée", "il museo"),
        ("the hospital", "el hospital", "das krankenhaus", "l'hôpital", "l'ospedale"),
        ("the library", "la biblioteca", "die bibliothek", "la bibliothèque", "la biblioteca"),
        ("the airport", "el aeropuerto", "der flughafen", "l'aéroport", "l'aeroporto"),
        ("the market", "el mercado", "der markt", "le marché", "il mercato"),
        ("the bank", "el banco", "die bank", "la banque", "la banca"),
        ("the hotel", "el hotel", "das hotel", "l'hôtel", "l'albergo"),
    ),
    "at_place": (
        ("at the station", "en la estación", "am bahnhof", "à la gare", "alla stazione"),
        ("at the museum", "en el museo", "im museum", "au musée", "al museo"),
        ("at the hospital", "en el hospital", "im krankenhaus", "à l'hôpital", "all'ospedale"),
        ("at the library", "en la biblioteca", "in der bibliothek", "à la bibliothèque", "in biblioteca"),
        ("at the airport", "en el aeropuerto", "am flughafen", "à l'aéroport", "all'aeroporto"),
        ("at the market", "en el mercado", "auf dem markt", "au marché", "al mercato"),
        ("at the bank", "en el banco", "in der bank", "à la banque", "in banca"),
        ("at the hotel", "en el hotel", "im hotel", "à l'hôtel", "in albergo"),
    ),
}
"""Slot -> its values, each a tuple of renderings in the order of ``LANGUAGES``."""
SLOTS["name2"] = SLOTS["name"]


@dataclass(frozen=True)
class Template:
    texts: tuple[str, ...]
    """One rendering per language, in the order of ``LANGUAGES``."""
    question: bool = False


TEMPLATES: tuple[Template, ...] = (
    Template(
        (
            "i want to go to {city} {on_day}",
            "quiero ir a {city} {on_day}",
            "ich möchte {on_day} nach {city} fahren",
            "je veux aller à {city} {on_day}",
            "voglio andare a {city} {on_day}",
        )
    ),
    Template(
        (
            "please buy {number} {item}",
            "por favor compra {number} {item}",
            "bitte kauf {number} {item}",
            "achète {number} {item} s'il te plaît",
            "per favore compra {number} {item}",
        )
    ),
    Template(
        (
            "the train to {city} leaves {at_hour}",
            "el tren a {city} sale {at_hour}",
            "der zug nach {city} fährt {at_hour}",
            "le train pour {city} part {at_hour}",
            "il treno per {city} parte {at_hour}",
        )
    ),
    Template(
        (
            "when does the train to {city} leave",
            "cuándo sale el tren a {city}",
            "wann fährt der zug nach {city}",
            "quand part le train pour {city}",
            "quando parte il treno per {city}",
        ),
        question=True,
    ),
    Template(
        (
            "{name} lives in {city}",
            "{name} vive en {city}",
            "{name} wohnt in {city}",
            "{name} habite à {city}",
            "{name} abita a {city}",
        )
    ),
    Template(
        (
            "call {name} {on_day}",
            "llama a {name} {on_day}",
            "ruf {name} {on_day} an",
            "appelle {name} {on_day}",
            "chiama {name} {on_day}",
        )
    ),
    Template(
        (
            "we need {number} {item} for {name}",
            "necesitamos {number} {item} para {name}",
            "wir brauchen {number} {item} für {name}",
            "nous avons besoin de {number} {item} pour {name}",
            "abbiamo bisogno di {number} {item} per {name}",
        )
    ),
    Template(
        (
            "where is {the_place} in {city}",
            "dónde está {the_place} en {city}",
            "wo ist {the_place} in {city}",
            "où est {the_place} à {city}",
            "dov'è {the_place} a {city}",
        ),
        question=True,
    ),
    Template(
        (
            "{the_place} opens {at_hour}",
            "{the_place} abre {at_hour}",
            "{the_place} öffnet {at_hour}",
            "{the_place} ouvre {at_hour}",
            "{the_place} apre {at_hour}",
        )
    ),
    Template(
        (
            "{name} has {number} {item}",
            "{name} tiene {number} {item}",
            "{name} hat {number} {item}",
            "{name} a {number} {item}",
            "{name} ha {number} {item}",
        )
    ),
    Template(
        (
            "i will meet {name} {at_place} {on_day}",
            "voy a ver a {name} {at_place} {on_day}",
            "ich treffe {name} {on_day} {at_place}",
            "je vais voir {name} {at_place} {on_day}",
            "incontro {name} {at_place} {on_day}",
        )
    ),
    Template(
        (
            "how much are {number} {item}",
            "cuánto cuestan {number} {item}",
            "was kosten {number} {item}",
            "combien coûtent {number} {item}",
            "quanto costano {number} {item}",
        ),
        question=True,
    ),
    Template(
        (
            "{name} arrives in {city} {at_hour}",
            "{name} llega a {city} {at_hour}",
            "{name} kommt {at_hour} in {city} an",
            "{name} arrive à {city} {at_hour}",
            "{name} arriva a {city} {at_hour}",
        )
    ),
    Template(
        (
            "{name} is {at_place} with {name2}",
            "{name} está {at_place} con {name2}",
            "{name} ist mit {name2} {at_place}",
            "{name} est {at_place} avec {name2}",
            "{name} è {at_place} con {name2}",
        )
    ),
)


@dataclass(frozen=True)
class ParallelSentence:
    texts: dict[str, str]
    """Language code -> the sentence in that language."""
    question: bool

    @property
    def key(self) -> str:
        """The English rendering: two draws with the same English sentence are the same sentence."""
        return self.texts["en"]


def draw_parallel(rng: random.Random) -> ParallelSentence:
    template = rng.choice(TEMPLATES)
    picks = {slot: rng.randrange(len(values)) for slot, values in SLOTS.items()}
    if picks["name2"] == picks["name"]:
        picks["name2"] = (picks["name"] + 1) % len(SLOTS["name"])
    texts = {
        code: template.texts[i].format(**{slot: SLOTS[slot][pick][i] for slot, pick in picks.items()})
        for i, code in enumerate(CODES)
    }
    return ParallelSentence(texts, template.question)


READERS = ("s2tt", "lid")
"""The tasks that read this grammar; they share one pool of sentences (``parallel_pools``)."""


def parallel_pools(inputs: PlanInputs) -> dict[str, dict[str, list[ParallelSentence]]]:
    """The sentences of every reader, ``{task: {split: sentences}}``, whichever task asks.

    One pool with its own generator, held-out sentences first: no test sentence of one reader is a
    training sentence of another (a translation test pair must not be heard in training in either
    direction, nor read as a language-ID sentence), and none is in ``inputs.taken``.
    """
    rng, key = random.Random(f"{inputs.seed}/parallel"), attrgetter("key")
    sizes = {
        task: (getattr(inputs.size, f"{task}_train"), getattr(inputs.size, f"{task}_eval"))
        for task in READERS
    }
    held = draw_distinct(rng, draw_parallel, sum(2 * e for _, e in sizes.values()), key, inputs.taken)
    exclude = inputs.taken | {sentence.key for sentence in held}
    train = draw_distinct(rng, draw_parallel, sum(t for t, _ in sizes.values()), key, exclude)
    pools, held_at, train_at = {}, 0, 0
    for task, (train_size, eval_size) in sizes.items():
        pools[task] = {
            "train": train[train_at : train_at + train_size],
            "validation": held[held_at : held_at + eval_size],
            "test": held[held_at + eval_size : held_at + 2 * eval_size],
        }
        held_at, train_at = held_at + 2 * eval_size, train_at + train_size
    return pools
