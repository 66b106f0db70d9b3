"""``minmo prepare``: add speech-token columns to an HF dataset (saved with ``save_to_disk``).

Every TTS / speech-to-speech / token2wav recipe trains on S3Tokenizer v2 tokens; computing them once
here keeps the tokenizer out of the training loop. For each row the audio column (``{"bytes","path"}``
structs, read as ``Audio(decode=False)`` and decoded with soundfile, resampled with soxr) becomes
``speech_tokens`` (int32 ids) and ``speech_token_lengths``.

Resumable: rows are processed in shards whose results land in ``OUT.work/`` as they finish; a rerun
with the same tokenizer skips the finished shards. Rows whose audio cannot be tokenized (undecodable,
empty, shorter than a frame) are left out of the output, counted, and listed with the reason in
``OUT/prepare_report.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from minmo_lightning.datamodules.audio import AudioError, decode_audio

from minmo_lightning.contracts import AudioBatch

SAMPLE_RATE = 16000


@dataclass
class PrepareReport:
    rows: int = 0
    tokenized: int = 0
    skipped: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def skipped_count(self) -> int:
        return sum(len(v) for v in self.skipped.values())


def _tokenize_shard(
    tokenizer, rows: list[dict[str, Any] | None], root: Path, batch_size: int, min_samples: int
):
    """Token lists (None for skipped rows) and ``{row_offset: reason}`` for one shard."""
    tokens: list[list[int] | None] = [None] * len(rows)
    skipped: dict[int, str] = {}
    waves: dict[int, torch.Tensor] = {}
    for offset, value in enumerate(rows):
        try:
            wave, _ = decode_audio(value, SAMPLE_RATE, root)
        except AudioError as reason:
            skipped[offset] = str(reason)
            continue
        if len(wave) < min_samples:
            skipped[offset] = f"audio too short: {len(wave)} samples at {SAMPLE_RATE} Hz, need {min_samples}"
        else:
            waves[offset] = torch.from_numpy(wave)
    # Longest first, so each batch pads little (batched tokens equal per-item tokens).
    order = sorted(waves, key=lambda i: -len(waves[i]))
    for first in range(0, len(order), batch_size):
        chunk = order[first : first + batch_size]
        with torch.inference_mode():
            out = tokenizer(AudioBatch.from_list([waves[i] for i in chunk], SAMPLE_RATE))
        for row, offset in enumerate(chunk):
            tokens[offset] = out.tokens[row, : out.lengths[row]].cpu().tolist()
    return tokens, skipped


def _write_json(path: Path, payload: Any) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(payload))
    os.replace(temporary, path)


def prepare_split(
    dataset,
    tokenizer,
    work: Path,
    root: Path,
    audio_column: str,
    batch_size: int,
    shard_size: int,
    advance: Callable[[int], None] | None = None,
) -> tuple[list[list[int] | None], dict[int, str]]:
    """Tokenize one ``datasets.Dataset``; finished shards in ``work`` are reused, not recomputed.
    ``advance(rows)`` is told of every shard done."""
    from datasets import Audio

    if audio_column not in dataset.column_names:
        raise KeyError(
            f"dataset has no audio column {audio_column!r} (columns: {', '.join(dataset.column_names)}); "
            "pass --audio-column"
        )
    audio = dataset.select_columns([audio_column]).cast_column(audio_column, Audio(decode=False))
    work.mkdir(parents=True, exist_ok=True)
    tokens: list[list[int] | None] = []
    skipped: dict[int, str] = {}
    for start in range(0, len(audio), shard_size):
        shard_file = work / f"shard-{start:09d}.json"
        if shard_file.is_file():
            shard = json.loads(shard_file.read_text())
        else:
            rows = audio[start : start + shard_size][audio_column]
            shard_tokens, shard_skipped = _tokenize_shard(
                tokenizer, rows, root, batch_size, tokenizer.frontend.min_samples()
            )
            shard = {"tokens": shard_tokens, "skipped": {str(k): v for k, v in shard_skipped.items()}}
            _write_json(shard_file, shard)
        tokens += shard["tokens"]
        skipped.update({start + int(k): v for k, v in shard["skipped"].items()})
        if advance is not None:
            advance(len(shard["tokens"]))
    return tokens, skipped


def prepare_dataset(
    dataset_path: str | Path,
    out: str | Path,
    tokenizer,
    identity: dict[str, Any],
    audio_column: str = "audio",
    column: str = "speech_tokens",
    batch_size: int = 16,
    shard_size: int = 256,
    show_progress: bool = True,
    max_rows: int | None = None,
    only_splits: list[str] | None = None,
) -> PrepareReport:
    """Write ``out`` = the dataset plus ``column`` and ``column + '_lengths'`` (see the module docstring);
    ``max_rows``: only the first rows of each split (a smoke run); ``only_splits``: these splits alone."""
    from datasets import Dataset, DatasetDict, Sequence, Value, load_from_disk
    from rich.progress import Progress

    from minmo_lightning.progress import plain_progress_wanted

    dataset_path, out = Path(dataset_path), Path(out)
    if out.resolve() == dataset_path.resolve():
        raise ValueError("--out must differ from --dataset (a dataset cannot be rewritten while it is read)")
    work = Path(str(out) + ".work")
    if out.exists() and any(out.iterdir()):
        if not work.is_dir() or (out / "prepare_report.json").is_file():
            raise FileExistsError(f"{out} already exists and is not empty; choose another --out or delete it")
        shutil.rmtree(out)  # a run killed while writing it: written again from the finished shards
    loaded = load_from_disk(str(dataset_path))
    splits = dict(loaded) if isinstance(loaded, DatasetDict) else {"train": loaded}
    if only_splits is not None:
        unknown = sorted(set(only_splits) - set(splits))
        if unknown:
            raise ValueError(f"{dataset_path} has no split(s) {unknown}; it has {', '.join(splits)}")
        splits = {name: split for name, split in splits.items() if name in only_splits}
    if max_rows is not None:
        splits = {name: split.select(range(min(max_rows, len(split)))) for name, split in splits.items()}
    for name, split in splits.items():
        if column in split.column_names:
            raise ValueError(f"split {name!r} already has a {column!r} column; choose another --column")

    work.mkdir(parents=True, exist_ok=True)
    identity_file = work / "tokenizer.json"
    identity = {**identity, "audio_column": audio_column, "shard_size": shard_size, "max_rows": max_rows}
    identity |= {"splits": sorted(splits)}
    if identity_file.is_file() and json.loads(identity_file.read_text()) != identity:
        raise ValueError(
            f"{work} holds partial results from a different tokenizer or settings "
            f"({identity_file.read_text()}); delete {work} to start over"
        )
    _write_json(identity_file, identity)

    report = PrepareReport()
    results: dict[str, Dataset] = {}
    plain = show_progress and plain_progress_wanted()
    with Progress(disable=not show_progress or plain) as bar:
        for name, split in splits.items():
            with _split_progress(bar, f"tokenizing {name}", len(split), plain) as advance:
                tokens, skipped = prepare_split(
                    split, tokenizer, work / name, dataset_path, audio_column, batch_size, shard_size, advance
                )
            keep = [i for i, t in enumerate(tokens) if t is not None]
            kept = split.select(keep) if len(keep) < len(split) else split
            kept = kept.add_column(column, [tokens[i] for i in keep], feature=Sequence(Value("int32")))
            kept = kept.add_column(
                f"{column}_lengths", [len(tokens[i]) for i in keep], feature=Value("int32")
            )
            results[name] = kept
            report.rows += len(split)
            report.tokenized += len(keep)
            report.skipped[name] = [{"row": i, "reason": r} for i, r in sorted(skipped.items())]

    final = DatasetDict(results) if isinstance(loaded, DatasetDict) else results["train"]
    final.save_to_disk(str(out))
    _write_json(
        out / "prepare_report.json",
        {**identity, "rows": report.rows, "tokenized": report.tokenized, "skipped": report.skipped},
    )
    shutil.rmtree(work)
    return report


@contextlib.contextmanager
def _split_progress(bar, label: str, rows: int, plain: bool) -> Iterator[Callable[[int], None]]:
    """``advance(rows)`` for one split: a task of Rich's ``bar`` on a terminal, else a plain line every 30 s
    (``minmo_lightning.progress.ProgressLine``) for logs that are not one."""
    if plain:
        from minmo_lightning.progress import ProgressLine

        with ProgressLine(label, rows, unit="rows") as line:
            yield line.advance
    else:
        task = bar.add_task(label, total=rows)
        yield lambda done: bar.advance(task, done)


def build_tokenizer(preset: str, checkpoint: str, device: str):
    """The official preset + its weights, or a Lightning ``.ckpt`` of a trained tokenizer."""
    from minmo_lightning.components.speech_tokenizer.s3tokenizer import S3TokenizerV2

    if checkpoint.endswith(".ckpt"):
        model = S3TokenizerV2.load_from_checkpoint(checkpoint, map_location="cpu")
    else:
        model = S3TokenizerV2.from_preset(preset)
        model.load_pretrained(checkpoint)
    return model.to(device).eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="minmo prepare", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset", required=True, help="folder written by save_to_disk (Dataset or DatasetDict)"
    )
    parser.add_argument("--out", required=True, help="output folder (the dataset plus the token columns)")
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="speech_tokenizer_v2.onnx, a state dict (.safetensors/.pt) or its folder, or a trained .ckpt",
    )
    parser.add_argument(
        "--preset", default="speech-tokenizer-v2-25hz", help="S3TokenizerV2 preset (not for .ckpt)"
    )
    parser.add_argument("--audio-column", default="audio")
    parser.add_argument("--column", default="speech_tokens", help="name of the new token column")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--shard-size", type=int, default=256, help="rows per resumable shard")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-rows", type=int, default=None, help="only the first rows of each split")
    parser.add_argument("--splits", help="comma-separated splits to tokenize and write (default: all)")
    args = parser.parse_args(argv)

    tokenizer = build_tokenizer(args.preset, args.checkpoint, args.device)
    from_ckpt = args.checkpoint.endswith(".ckpt")
    identity = {
        "preset": "hyperparameters saved in the .ckpt" if from_ckpt else args.preset,
        "checkpoint": str(Path(args.checkpoint).resolve()),
        "column": args.column,
    }
    report = prepare_dataset(
        args.dataset,
        args.out,
        tokenizer,
        identity,
        audio_column=args.audio_column,
        column=args.column,
        batch_size=args.batch_size,
        shard_size=args.shard_size,
        max_rows=args.max_rows,
        only_splits=args.splits.split(",") if args.splits else None,
    )
    print(
        f"{report.tokenized} of {report.rows} rows tokenized into {args.out}; {report.skipped_count()} skipped"
    )
    for split, rows in report.skipped.items():
        for reason, count in Counter(r["reason"] for r in rows).most_common():
            print(f"  skipped in {split}: {count} x {reason}")
    return 0
