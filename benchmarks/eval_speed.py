"""Scoring speed of the evaluation package: corpus WER over 100k synthetic (reference, hypothesis) pairs.

    python benchmarks/eval_speed.py [--pairs 100000] [--builtin data/builtin] [--json PATH]

Figures: wall and CPU seconds and utterances/s for WER with the ``none`` normaliser (alignment + counting
only; the target is < 5 s for 100k pairs), for CER, and for WER with the default ``whisper_english``
normaliser on a 10k slice (the normaliser, not the alignment, dominates there); optionally
the end-to-end ``minmo evaluate --predictions`` time on the built-in ASR test split (predictions made by
perturbing its references, since scoring speed does not depend on the model).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import tempfile
import time
from pathlib import Path

import jiwer
from minmo_lightning.evaluation.asr import score_asr
from minmo_lightning.evaluation.normalizers import get_scheme

WORDS = [
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "is",
    "it",
    "you",
    "that",
    "he",
    "was",
    "for",
    "on",
    "are",
    "with",
    "as",
    "his",
    "they",
    "be",
    "at",
    "one",
    "have",
    "this",
    "from",
    "or",
    "had",
    "by",
    "word",
    "but",
    "what",
    "some",
    "we",
    "can",
    "out",
    "other",
    "were",
    "all",
    "there",
    "when",
    "up",
    "use",
    "your",
    "how",
    "said",
    "an",
    "each",
    "she",
    "which",
    "do",
    "their",
    "time",
    "if",
    "will",
    "way",
    "about",
    "many",
    "then",
    "them",
    "write",
    "would",
    "like",
    "so",
    "these",
    "her",
    "long",
]


def synthetic_pairs(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Lower-case references of 5-25 words; hypotheses with ~5% substitutions, 3% deletions, 2% insertions
    (about a quarter of the pairs come out error-free, as in a decent ASR system's output)."""
    rng = random.Random(seed)
    refs, hyps = [], []
    for _ in range(n):
        ref = rng.choices(WORDS, k=rng.randint(5, 25))
        hyp = []
        for word in ref:
            r = rng.random()
            if r < 0.05:
                hyp.append(rng.choice(WORDS))
            elif r < 0.08:
                continue
            else:
                hyp.append(word)
            if rng.random() < 0.02:
                hyp.append(rng.choice(WORDS))
        refs.append(" ".join(ref))
        hyps.append(" ".join(hyp))
    return refs, hyps


def timed(fn) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds of this process, result): CPU time is the stable figure on a shared box."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def builtin_end_to_end(root: Path) -> float | None:
    """Wall time of ``minmo evaluate --predictions`` (CLI entry, report, plots) on the built-in ASR test split."""
    from minmo_lightning.datamodules.sources import load_source
    from minmo_lightning.evaluation.cli import main

    path = root / "asr"
    if not path.exists():
        return None
    test = load_source(str(path))[0]["test"].select_columns(["id", "text"])
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        preds = Path(tmp) / "preds.jsonl"
        with preds.open("w") as f:
            for row in test:
                words = row["text"].split()
                if words and rng.random() < 0.3:
                    words[rng.randrange(len(words))] = "x"
                f.write(json.dumps({"id": row["id"], "hypothesis": " ".join(words)}) + "\n")
        start = time.perf_counter()
        main(
            [
                "--predictions",
                str(preds),
                "--task",
                "asr",
                "--references",
                str(path),
                "--split",
                "test",
                "--out",
                str(Path(tmp) / "report"),
                "--no-progress",
            ]
        )
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument(
        "--normalized-pairs", type=int, default=10_000, help="pairs for the whisper_english run"
    )
    parser.add_argument("--builtin", default="data/builtin", help="built-in corpus root (skipped if absent)")
    parser.add_argument("--json", help="write figures as JSON here")
    args = parser.parse_args()

    refs, hyps = synthetic_pairs(args.pairs)
    n = len(refs)
    written = [r.capitalize() + "." for r in refs]  # cased, punctuated references for the normaliser run
    figures: dict[str, float | None] = {}
    runs = (
        ("wer_none", get_scheme("none"), n),
        ("cer_none", get_scheme("none", "char"), n),
        # the Whisper normaliser costs ~1 ms per string: measured on a slice, not the full set
        ("wer_whisper_english", get_scheme("whisper_english"), min(n, args.normalized_pairs)),
    )
    for label, scheme, count in runs:
        source = written if scheme.name == "whisper_english" else refs
        wall, cpu, result = timed(lambda s=scheme, c=count, r=source: score_asr(r[:c], hyps[:c], scheme=s))
        figures[f"{label}_pairs"] = count
        figures[f"{label}_wall_s"] = wall
        figures[f"{label}_cpu_s"] = cpu
        figures[f"{label}_utt_per_s"] = count / wall
        figures[f"{label}_rate"] = result.rate
    # the floor: jiwer's own corpus WER on the same pairs (no per-utterance records)
    wall, cpu, _ = timed(lambda: jiwer.wer(refs, hyps))
    figures["plain_jiwer_wer_wall_s"], figures["plain_jiwer_wer_cpu_s"] = wall, cpu
    figures["builtin_evaluate_s"] = builtin_end_to_end(Path(args.builtin))

    print(f"{'figure':<34}{'value':>14}")
    for name, value in figures.items():
        print(f"{name:<34}{'n/a' if value is None else f'{value:14.4f}':>14}")
    target = {"wer_none_wall_s": "<= 5.0"}
    met = "met" if figures["wer_none_wall_s"] <= 5.0 else "NOT met"
    print(f"\ntarget: WER over {n} pairs in <= 5.0 s wall: {met} (CPU {figures['wer_none_cpu_s']:.2f} s)")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "figures": figures,
                    "targets": target,
                    "device": f"cpu ({platform.processor() or platform.machine()})",
                    "pairs": n,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
