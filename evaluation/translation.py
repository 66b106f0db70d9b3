"""Speech-to-text translation: corpus BLEU and chrF (sacrebleu), each target language with its own tokenizer.

A record has ``reference`` (the target-language text), ``hypothesis`` (the model's ``prediction_text``) and
``target_language`` (its English name; or the ``target_language`` setting for every record). BLEU
tokenizes by the target language (``TOKENIZERS``: ``13a`` for space-delimited scripts, ``zh`` for Chinese,
MeCab for Japanese and Korean where sacrebleu's extras are installed, else characters for Japanese); the
``tokenize`` setting forces one for all. chrF (character 6-grams, beta 2) needs no tokenizer.

Each language is one corpus; with several, the headline ``bleu`` / ``chrf`` is their unweighted mean (as
MinMo averages translation directions) and each language has its own row. BLEU is not a ratio of
per-record counts, so ``minmo evaluate --compare`` shows it without a bootstrap interval.

Beside the figures, the chance level: each reference scored against another record's reference of the same
language (the next one, in record order): an answer in the right language and style with the wrong content.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path

from minmo_lightning.evaluation.report import md_table
from minmo_lightning.evaluation.scorers import Scored, text_cell
from sacrebleu.metrics import BLEU, CHRF

#: target language (English name, lower case) -> sacrebleu tokenizers, the first one installed is used;
#: any other language: ``13a``
TOKENIZERS: dict[str, tuple[str, ...]] = {
    "chinese": ("zh",),
    "mandarin": ("zh",),
    "cantonese": ("zh",),
    "japanese": ("ja-mecab", "char"),
    "korean": ("ko-mecab", "13a"),
    "thai": ("char",),
    "lao": ("char",),
    "khmer": ("char",),
    "burmese": ("char",),
}
DEFAULT_TOKENIZER = "13a"


@cache
def installed(tokenizer: str) -> bool:
    """Whether sacrebleu can build ``tokenizer`` here (MeCab ones need ``sacrebleu[ja]`` / ``[ko]``)."""
    try:
        BLEU(tokenize=tokenizer)
    except (ImportError, RuntimeError):
        return False
    return True


def tokenizer_for(language: str) -> str:
    """The BLEU tokenizer of a target language (``TOKENIZERS``)."""
    choices = TOKENIZERS.get(language.strip().lower(), (DEFAULT_TOKENIZER,))
    return next((name for name in choices if installed(name)), choices[-1])


def corpus_scores(hypotheses: Sequence[str], references: Sequence[str], tokenize: str) -> dict:
    """Corpus BLEU and chrF of one language's records, with sacrebleu's signatures."""
    bleu, chrf = BLEU(tokenize=tokenize), CHRF()
    bleu_score = bleu.corpus_score(list(hypotheses), [list(references)])
    chrf_score = chrf.corpus_score(list(hypotheses), [list(references)])
    return {
        "bleu": bleu_score.score,
        "chrf": chrf_score.score,
        "bleu_precisions": bleu_score.precisions,
        "brevity_penalty": bleu_score.bp,
        "signature_bleu": str(bleu.get_signature()),
        "signature_chrf": str(chrf.get_signature()),
    }


def shuffled_reference_chance(references: Sequence[str], tokenize: str) -> dict | None:
    """BLEU and chrF of every reference against the next one's (``None`` with fewer than two records)."""
    if len(references) < 2:
        return None
    shifted = list(references[1:]) + [references[0]]
    scores = corpus_scores(shifted, references, tokenize)
    return {"bleu": scores["bleu"], "chrf": scores["chrf"]}


def translation_report(records: list[dict], settings: dict, out_dir: Path) -> Scored:
    """Settings: ``tokenize`` (``None``: by target language), ``target_language`` (for records without one)."""
    by_language: dict[str, list[dict]] = {}
    for record in records:
        language = record.get("target_language") or settings.get("target_language")
        if not language:
            raise ValueError(
                f"record {record['id']!r} has no target_language; add the field or set metrics.target_language"
            )
        by_language.setdefault(str(language), []).append(record)
    languages = {}
    for language, group in sorted(by_language.items()):
        tokenize = settings.get("tokenize") or tokenizer_for(language)
        refs, hyps = [r["reference"] for r in group], [r["hypothesis"] for r in group]
        languages[language] = {
            "n": len(group),
            "tokenize": tokenize,
            **corpus_scores(hyps, refs, tokenize),
            "chance": shuffled_reference_chance(refs, tokenize),
        }
    chrf = CHRF()
    out = [
        {**r, "sentence_chrf": chrf.sentence_score(r["hypothesis"], [r["reference"]]).score} for r in records
    ]
    summary = {
        "bleu": _mean([v["bleu"] for v in languages.values()]),
        "chrf": _mean([v["chrf"] for v in languages.values()]),
        "chance_bleu": _mean([v["chance"]["bleu"] for v in languages.values() if v["chance"]]),
        "chance_chrf": _mean([v["chance"]["chrf"] for v in languages.values() if v["chance"]]),
    }
    if len(languages) > 1:
        summary |= {f"bleu_{k}": v["bleu"] for k, v in languages.items()}
    table = md_table(
        ["target language", "n", "tokenizer", "BLEU", "chrF", "chance BLEU", "chance chrF", "BP"],
        [
            [
                k,
                v["n"],
                v["tokenize"],
                v["bleu"],
                v["chrf"],
                v["chance"]["bleu"] if v["chance"] else None,
                v["chance"]["chrf"] if v["chance"] else None,
                v["brevity_penalty"],
            ]
            for k, v in languages.items()
        ],
        digits=2,
    )
    note = (
        "Corpus BLEU and chrF per target language (sacrebleu; signatures in metrics.json); with several "
        "languages the headline is their unweighted mean. Chance: each reference scored against the next "
        "record's reference of the same language (right language, wrong content). BLEU has no bootstrap "
        "interval in comparisons: it is not a ratio of per-record counts."
    )
    if len(languages) > 1:
        note = f"Mean over {len(languages)} languages: BLEU {summary['bleu']:.2f}, chrF {summary['chrf']:.2f}.\n\n{note}"
    worst = sorted(out, key=lambda r: r["sentence_chrf"])[:10]
    sections = [
        ("Summary", table + "\n\n" + note),
        (
            "Lowest sentence chrF",
            md_table(
                ["id", "chrF", "reference", "hypothesis"],
                [
                    [r["id"], r["sentence_chrf"], text_cell(r["reference"]), text_cell(r["hypothesis"])]
                    for r in worst
                ],
                digits=1,
            ),
        ),
    ]
    return Scored(summary, {**summary, "languages": languages}, out, sections)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
