"""``minmo prepare``: token columns on a tiny HF dataset, resume after interruption, skipped rows."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from minmo_lightning.components.speech_tokenizer.s3tokenizer import S3TokenizerV2
from minmo_lightning.datamodules import prepare
from minmo_lightning.datamodules.audio import decode_audio

from minmo_lightning.contracts import AudioBatch


def wav_bytes(seconds: float, rate: int, seed: int) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    wave = 0.3 * np.sin(2 * math.pi * (150 + 400 * seed) * t) + 0.02 * rng.standard_normal(t.shape)
    buffer = io.BytesIO()
    sf.write(buffer, wave.astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@pytest.fixture
def dataset(tmp_path):
    from datasets import Audio, Dataset, DatasetDict

    rows = {
        "id": ["a", "b", "empty", "c", "garbage", "d", "short"],
        "audio": [
            {"bytes": wav_bytes(0.8, 16000, 1), "path": "a.wav"},
            {"bytes": wav_bytes(1.1, 22050, 2), "path": "b.wav"},
            {"bytes": wav_bytes(0.0, 16000, 3), "path": "empty.wav"},
            {"bytes": wav_bytes(0.5, 16000, 4), "path": "c.wav"},
            {"bytes": b"not audio at all", "path": "garbage.wav"},
            {"bytes": wav_bytes(0.3, 16000, 5), "path": "d.wav"},
            {"bytes": wav_bytes(0.01, 16000, 6), "path": "short.wav"},
        ],
        "text": ["one", "two", "three", "four", "five", "six", "seven"],
    }
    split = Dataset.from_dict(rows).cast_column("audio", Audio(decode=False))
    path = tmp_path / "data"
    DatasetDict({"train": split, "test": split.select([0, 3])}).save_to_disk(str(path))
    return path


@pytest.fixture
def tokenizer():
    torch.manual_seed(0)
    return S3TokenizerV2.from_preset("tiny", dim=64, n_heads=2, n_layers=1, asr_vocab="", asr_layers=0).eval()


def expected_tokens(tokenizer, audio: dict) -> list[int]:
    wave, _ = decode_audio(audio, 16000)
    with torch.inference_mode():
        out = tokenizer(AudioBatch.from_list([torch.from_numpy(wave)], 16000))
    return out.tokens[0].tolist()


def test_adds_columns_and_reports_skipped_rows(dataset, tmp_path, tokenizer):
    from datasets import load_from_disk

    out = tmp_path / "out"
    report = prepare.prepare_dataset(
        dataset, out, tokenizer, {"test": 1}, batch_size=3, shard_size=4, show_progress=False
    )
    assert (report.rows, report.tokenized, report.skipped_count()) == (9, 6, 3)
    result = load_from_disk(str(out))
    train = result["train"]
    assert train["id"] == ["a", "b", "c", "d"]
    source = load_from_disk(str(dataset))["train"].cast_column("audio", train.features["audio"])
    for row in train:
        original = source[["a", "b", "empty", "c", "garbage", "d", "short"].index(row["id"])]
        assert row["speech_tokens"] == expected_tokens(tokenizer, original["audio"])
        assert row["speech_tokens_lengths"] == len(row["speech_tokens"]) > 0
    assert len(train[1]["speech_tokens"]) == 28  # 1.1 s resampled from 22.05 kHz -> 110 frames -> 28 tokens
    reasons = {
        r["row"]: r["reason"]
        for r in json.loads((out / "prepare_report.json").read_text())["skipped"]["train"]
    }
    assert set(reasons) == {2, 4, 6}
    assert "empty audio" in reasons[2] and "unreadable audio" in reasons[4] and "too short" in reasons[6]
    assert not (tmp_path / "out.work").exists()


def test_resumes_after_interruption(dataset, tmp_path, tokenizer, monkeypatch):
    from datasets import load_from_disk

    real = prepare._tokenize_shard
    calls = []

    def interrupted(*args):
        calls.append(len(args[1]))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(prepare, "_tokenize_shard", interrupted)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        prepare.prepare_dataset(dataset, out, tokenizer, {"test": 1}, shard_size=4, show_progress=False)
    assert sorted(p.name for p in (tmp_path / "out.work" / "train").iterdir()) == ["shard-000000000.json"]

    calls.clear()
    monkeypatch.setattr(prepare, "_tokenize_shard", lambda *a: (calls.append(len(a[1])), real(*a))[1])
    with pytest.raises(ValueError, match="different tokenizer"):
        prepare.prepare_dataset(dataset, out, tokenizer, {"test": 2}, shard_size=4, show_progress=False)
    prepare.prepare_dataset(dataset, out, tokenizer, {"test": 1}, shard_size=4, show_progress=False)
    assert calls == [3, 2]  # train rows 4-6 and the test split; train rows 0-3 came from the finished shard
    fresh = tmp_path / "fresh"
    prepare.prepare_dataset(dataset, fresh, tokenizer, {"test": 1}, shard_size=3, show_progress=False)
    assert (
        load_from_disk(str(out))["train"]["speech_tokens"]
        == load_from_disk(str(fresh))["train"]["speech_tokens"]
    )


def test_cli_with_checkpoint(dataset, tmp_path, tokenizer, capsys):
    from datasets import load_from_disk
    from safetensors.torch import save_file

    full = S3TokenizerV2.from_preset("tiny")
    save_file(full.state_dict(), str(tmp_path / "model.safetensors"))
    out = tmp_path / "cli_out"
    code = prepare.main(
        [
            "--dataset",
            str(dataset),
            "--out",
            str(out),
            "--preset",
            "tiny",
            "--checkpoint",
            str(tmp_path / "model.safetensors"),
        ]
    )
    assert code == 0
    assert "6 of 9 rows tokenized" in capsys.readouterr().out
    assert load_from_disk(str(out))["test"]["speech_tokens_lengths"] == [20, 13]
    with pytest.raises(FileExistsError, match="not empty"):
        prepare.main(
            ["--dataset", str(dataset), "--out", str(out), "--preset", "tiny", "--checkpoint", str(tmp_path)]
        )


def test_missing_audio_column_is_named(dataset, tmp_path, tokenizer):
    with pytest.raises(KeyError, match="--audio-column"):
        prepare.prepare_dataset(
            dataset, tmp_path / "o", tokenizer, {}, audio_column="speech", show_progress=False
        )


def test_only_the_named_splits_are_tokenized(dataset, tmp_path, tokenizer):
    from datasets import load_from_disk

    out = tmp_path / "out"
    report = prepare.prepare_dataset(
        dataset, out, tokenizer, {"test": 1}, show_progress=False, only_splits=["test"]
    )
    assert report.rows == 2 and list(load_from_disk(str(out))) == ["test"]
    with pytest.raises(ValueError, match=r"has no split\(s\) \['dev'\]; it has train, test"):
        prepare.prepare_dataset(dataset, tmp_path / "x", tokenizer, {"test": 1}, only_splits=["dev"])
