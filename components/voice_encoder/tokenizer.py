"""CTC tokenizers of the voice encoder: SenseVoice's sentencepiece model, or a built-in character set.

Both share SenseVoice's rich tags (``<|en|>``, ``<|HAPPY|>``, ``<|Speech|>``, ``<|woitn|>``...), which the
encoder predicts on its four query frames, and reserve id 0 for the CTC blank.
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Protocol

LANGUAGES = ("zh", "en", "yue", "ja", "ko", "nospeech")
EMOTIONS = ("HAPPY", "SAD", "ANGRY", "NEUTRAL", "FEARFUL", "DISGUSTED", "SURPRISED", "EMO_UNKNOWN")
EVENTS = ("Speech", "BGM", "Laughter", "Applause", "Cry", "Sneeze", "Breath", "Cough")
TEXT_NORMS = ("withitn", "woitn")
#: the CTC blank, id 0 in every tokenizer here (and in SenseVoice's sentencepiece model)
BLANK_ID = 0


def tag(name: str) -> str:
    return f"<|{name}|>"


class Tokenizer(Protocol):
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def token_to_id(self, token: str) -> int: ...

    def id_to_token(self, index: int) -> str: ...

    def normalize(self, text: str) -> str: ...


class CharTokenizer:
    """Lower-case letters, digits, apostrophe and space, after blank/sos/eos and the rich tags.

    ``normalize`` lower-cases, turns other punctuation into spaces and collapses whitespace (the "woitn"
    target); a character outside the set after that is an error, never silently dropped.
    """

    ALPHABET = " abcdefghijklmnopqrstuvwxyz'0123456789"
    _PUNCTUATION = re.compile("[" + re.escape(string.punctuation.replace("'", "")) + "]")

    def __init__(self) -> None:
        specials = ["<blank>", "<s>", "</s>"] + [
            tag(t) for t in (*LANGUAGES, *EMOTIONS, *EVENTS, *TEXT_NORMS)
        ]
        self.tokens = specials + list(self.ALPHABET)
        self._ids = {t: i for i, t in enumerate(self.tokens)}
        self.vocab_size = len(self.tokens)
        self._first_char = len(specials)

    def normalize(self, text: str) -> str:
        return " ".join(self._PUNCTUATION.sub(" ", text.lower()).split())

    def encode(self, text: str) -> list[int]:
        text = self.normalize(text)
        unknown = sorted({c for c in text if c not in self._ids})
        if unknown:
            raise ValueError(
                f"CharTokenizer cannot encode {unknown!r} in {text!r}; it covers {self.ALPHABET!r}. "
                "Spell numbers/symbols out or use a sentencepiece tokenizer"
            )
        return [self._ids[c] for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.tokens[i] for i in ids if i >= self._first_char).strip()

    def token_to_id(self, token: str) -> int:
        if token not in self._ids:
            raise KeyError(f"CharTokenizer has no token {token!r}")
        return self._ids[token]

    def id_to_token(self, index: int) -> str:
        return self.tokens[index]


class SentencePieceTokenizer:
    """SenseVoice's ``chn_jpn_yue_eng_ko_spectok.bpe.model`` (or any sentencepiece model with the tags)."""

    def __init__(self, path: str | Path) -> None:
        import sentencepiece

        if not Path(path).is_file():
            raise FileNotFoundError(f"sentencepiece model not found: {path}")
        self.model = sentencepiece.SentencePieceProcessor(model_file=str(path))
        self.vocab_size = self.model.get_piece_size()

    def normalize(self, text: str) -> str:
        return text

    def encode(self, text: str) -> list[int]:
        return list(self.model.encode(text))

    def decode(self, ids: list[int]) -> str:
        return self.model.decode(ids)

    def token_to_id(self, token: str) -> int:
        index = self.model.piece_to_id(token)
        if index == self.model.unk_id() and token != self.model.id_to_piece(index):
            raise KeyError(f"sentencepiece model has no token {token!r}")
        return index

    def id_to_token(self, index: int) -> str:
        return self.model.id_to_piece(index)


def build_tokenizer(spec: str | None) -> Tokenizer | None:
    """``"char"`` -> ``CharTokenizer``; a path -> ``SentencePieceTokenizer``; ``None`` -> no tokenizer."""
    if spec is None:
        return None
    if spec == "char":
        return CharTokenizer()
    return SentencePieceTokenizer(spec)
