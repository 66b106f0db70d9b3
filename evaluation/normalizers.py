"""Text normalisers and tokenisers for error rates: a scheme is a named (normalise, tokenise) pair.

Error rates are only comparable under the same normalisation, so every report names the scheme it
used. Schemes:

- ``whisper_english``: Whisper's ``EnglishTextNormalizer`` with its British->American spelling map
  (``whisper-normalizer`` ships ``english.json``; transformers' copy of the class does not), then words.
  This is the Open ASR Leaderboard convention, applied to references and hypotheses alike.
- ``basic``: multilingual basic normaliser: NFKC, case-fold, drop ``[..]``/``<..>``/``(..)`` spans,
  punctuation and symbols become spaces. Unlike Whisper's ``BasicTextNormalizer`` it keeps combining
  marks (category M), which Indic and other scripts need to stay readable (``ऋषि`` stays ``ऋषि``).
- ``chinese``: NFKC (full-width -> half-width), SenseVoice ``<|..|>`` tags and bracketed spans removed,
  Latin lower-cased, punctuation/symbols and all whitespace removed, one token per character (the
  FunASR CER convention). No Traditional->Simplified conversion (OpenCC is not a dependency).
- ``mixed``: code-switching MER tokens: each CJK character is a token, each run of Latin letters,
  digits or apostrophes is a token; everything else is dropped.
- ``none``: whitespace split only (jiwer's default word transform).

``unit="char"`` turns any word scheme into a CER: the normalised text's characters, with the single
spaces between words kept as characters (jiwer's ``cer`` convention).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

_BRACKETS = re.compile(r"<\|[^|]*\|>|\[[^\]]*\]|<[^>]*>|\([^)]*\)")
_SPACES = re.compile(r"\s+")
_CJK = (
    r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af"
    r"\U00020000-\U0002a6df\U0002a700-\U0002ebef"
)
_MIXED_TOKEN = re.compile(rf"[{_CJK}]|[a-z0-9']+")


def _strip_categories(text: str, drop: tuple[str, ...], replacement: str) -> str:
    return "".join(replacement if unicodedata.category(ch)[0] in drop else ch for ch in text)


def basic_normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _BRACKETS.sub(" ", text)
    text = _strip_categories(text, ("P", "S"), " ")
    return _SPACES.sub(" ", text).strip()


def chinese_normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = _BRACKETS.sub("", text)
    text = _strip_categories(text, ("P", "S", "Z", "C"), "")
    return _SPACES.sub("", text)


def mixed_normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(_MIXED_TOKEN.findall(_BRACKETS.sub(" ", text)))


def none_normalize(text: str) -> str:
    return " ".join(text.split())


@cache
def _whisper_english() -> Callable[[str], str]:
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


def whisper_english_normalize(text: str) -> str:
    return _whisper_english()(text)


@dataclass(frozen=True)
class TextScheme:
    """How a string becomes the token list that is aligned: ``tokens(text)``."""

    name: str
    normalize: Callable[[str], str]
    unit: str  # "word" | "char"

    def tokens(self, text: str) -> list[str]:
        normalized = self.normalize(text)
        return list(normalized) if self.unit == "char" else normalized.split()


NORMALIZERS: dict[str, Callable[[str], str]] = {
    "whisper_english": whisper_english_normalize,
    "basic": basic_normalize,
    "chinese": chinese_normalize,
    "mixed": mixed_normalize,
    "none": none_normalize,
}
#: The unit each normaliser implies when none is given (Chinese is scored per character).
DEFAULT_UNIT = {"chinese": "char"}
METRIC_NAME = {("mixed", "word"): "mer", ("chinese", "char"): "cer"}


def get_scheme(normalizer: str = "whisper_english", unit: str | None = None) -> TextScheme:
    if normalizer not in NORMALIZERS:
        raise ValueError(f"unknown normalizer {normalizer!r}; choose one of {', '.join(NORMALIZERS)}")
    unit = unit or DEFAULT_UNIT.get(normalizer, "word")
    if unit not in ("word", "char"):
        raise ValueError(f"unknown unit {unit!r}; choose 'word' (WER) or 'char' (CER)")
    return TextScheme(normalizer, NORMALIZERS[normalizer], unit)


def metric_name(scheme: TextScheme) -> str:
    """``wer``, ``cer`` or ``mer`` (mixed-language error rate), as the report labels the rate."""
    return METRIC_NAME.get((scheme.name, scheme.unit), "cer" if scheme.unit == "char" else "wer")
