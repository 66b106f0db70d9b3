"""Datamodules over every supported on-disk format, bucketing, DDP shards and bad-input handling.

Datasets here are built by hand from numpy tones (no espeak), a few rows each, so the file stays fast.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from datasets import Audio, ClassLabel, Dataset, DatasetDict
from lightning.fabric.utilities.data import _set_sampler_epoch
from minmo_lightning.datamodules import (
    ASRDataModule,
    DuplexDataModule,
    EmotionDataModule,
    S2SDataModule,
    TTSDataModule,
)
from minmo_lightning.datamodules.sampler import DurationBatchSampler
from minmo_lightning.datamodules.synth import wav_bytes
from minmo_lightning.datamodules.timeline import KEEP_LISTENING, RESPOND, STOP_SPEAKING
from torch.utils.data import DistributedSampler

TEXTS = ["turn on the lights", "what time is it", "call anna now", "play some jazz"]
SECONDS = [1.0, 0.5, 0.75, 1.25]


def tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def encode(wave: np.ndarray, rate: int, fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, wave, rate, format=fmt)
    return buffer.getvalue()


def audio_struct(values: list[bytes | None], paths: list[str | None]) -> list[dict]:
    return [{"bytes": b, "path": p} for b, p in zip(values, paths)]


def asr_dataset(rate: int = 16000, channels: int = 1, fmt: str = "WAV") -> Dataset:
    audio = audio_struct(
        [encode(tone(s, rate, channels), rate, fmt) for s in SECONDS], [f"{i}.wav" for i in range(4)]
    )
    data = Dataset.from_dict({"id": [f"u{i}" for i in range(4)], "audio": audio, "text": TEXTS})
    return data.cast_column("audio", Audio(decode=False))


def expected_lengths(rate: int = 16000) -> dict[str, int]:
    return {f"u{i}": round(s * rate) for i, s in enumerate(SECONDS)}


def collect(loader) -> list[dict]:
    return list(loader)


def check_asr_batches(module: ASRDataModule, role: str = "train", rate: int = 16000) -> None:
    module.setup("fit")
    loader = {"train": module.train_dataloader, "validation": module.val_dataloader}[role]()
    seen = {}
    for batch in collect(loader):
        audio = batch["audio"]
        assert audio.sample_rate == rate and audio.waveform.dtype == torch.float32
        assert audio.waveform.shape == (len(batch["ids"]), int(audio.lengths.max()))
        for i, key in enumerate(batch["ids"]):
            seen[key] = (int(audio.lengths[i]), batch["text"][i])
            assert audio.waveform[i, int(audio.lengths[i]) :].abs().sum() == 0  # zero padding
    want = expected_lengths(rate)
    assert {k: v[0] for k, v in seen.items()} == pytest.approx(want, abs=2)
    assert {k: v[1] for k, v in seen.items()} == {f"u{i}": t for i, t in enumerate(TEXTS)}


# ---- every on-disk format ----------------------------------------------------------------------
def test_save_to_disk_dataset_dict(tmp_path):
    DatasetDict({"train": asr_dataset(), "validation": asr_dataset()}).save_to_disk(str(tmp_path / "d"))
    check_asr_batches(ASRDataModule(str(tmp_path / "d"), max_seconds_per_batch=2.0), "validation")


def test_parquet_with_embedded_bytes_at_another_rate_in_stereo_flac(tmp_path):
    # A 44.1 kHz stereo FLAC source: decoded, mixed down and resampled to 16 kHz.
    asr_dataset(44100, channels=2, fmt="FLAC").to_parquet(str(tmp_path / "train.parquet"))
    check_asr_batches(ASRDataModule(str(tmp_path / "train.parquet"), val_split=None, test_split=None))


def test_folder_of_parquet_splits(tmp_path):
    (tmp_path / "p").mkdir()
    asr_dataset().to_parquet(str(tmp_path / "p" / "train-00000.parquet"))
    asr_dataset().to_parquet(str(tmp_path / "p" / "validation-00000.parquet"))
    check_asr_batches(ASRDataModule(str(tmp_path / "p")), "validation")


def test_json_lines_with_relative_audio_paths(tmp_path):
    rows = []
    for i, (s, text) in enumerate(zip(SECONDS, TEXTS)):
        soundfile.write(tmp_path / f"clip{i}.wav", tone(s, 22050), 22050)
        rows.append({"id": f"u{i}", "audio": f"clip{i}.wav", "sentence": text})
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    module = ASRDataModule(str(tmp_path / "train.jsonl"), schema="common_voice", columns={"id": "id"})
    check_asr_batches(module)


@pytest.mark.parametrize("metadata", ["metadata.jsonl", "metadata.csv"])
def test_audio_folder(tmp_path, metadata):
    folder = tmp_path / "train"
    folder.mkdir()
    for i, s in enumerate(SECONDS):
        soundfile.write(folder / f"u{i}.flac", tone(s, 16000), 16000)
    if metadata.endswith("jsonl"):
        lines = [
            json.dumps({"file_name": f"u{i}.flac", "id": f"u{i}", "transcription": t})
            for i, t in enumerate(TEXTS)
        ]
    else:
        lines = ["file_name,id,transcription"] + [f"u{i}.flac,u{i},{t}" for i, t in enumerate(TEXTS)]
    (folder / metadata).write_text("\n".join(lines))
    check_asr_batches(ASRDataModule(str(tmp_path), schema="fleurs"))


def test_dataset_saved_with_decoding_on_and_array_values(tmp_path):
    decoding = asr_dataset().cast_column("audio", Audio(sampling_rate=16000))  # decode=True
    assert decoding.features["audio"].decode
    decoding.save_to_disk(str(tmp_path / "on"))
    check_asr_batches(ASRDataModule(str(tmp_path / "on"), val_split=None, test_split=None))
    arrays = [{"array": tone(s, 8000).tolist(), "sampling_rate": 8000} for s in SECONDS]
    Dataset.from_dict({"id": [f"u{i}" for i in range(4)], "audio": arrays, "text": TEXTS}).save_to_disk(
        str(tmp_path / "arrays")
    )
    check_asr_batches(ASRDataModule(str(tmp_path / "arrays"), val_split=None, test_split=None))


def test_hub_id_resolves_from_the_local_cache_only(tmp_path, monkeypatch):
    import datasets

    parquet = tmp_path / "src" / "train.parquet"
    parquet.parent.mkdir()
    asr_dataset().to_parquet(str(parquet))
    cache = tmp_path / "cache"
    built = datasets.load_dataset("parquet", data_files={"train": str(parquet)}, cache_dir=str(cache))
    assert len(built["train"]) == 4
    # Lay the prepared cache out where a previous load_dataset("someone/tiny_asr") would have put it.
    prepared = next(p for p in (cache / "parquet").iterdir() if p.is_dir())
    target = cache / "someone___tiny_asr" / "default"
    shutil.copytree(prepared, target)
    for arrow in target.rglob("parquet-*.arrow"):
        arrow.rename(arrow.with_name(arrow.name.replace("parquet-", "tiny_asr-")))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    check_asr_batches(ASRDataModule("someone/tiny_asr", val_split=None, test_split=None))
    with pytest.raises(FileNotFoundError, match="not in the local HF datasets cache"):
        ASRDataModule("someone/missing_set", val_split=None).setup("fit")


# ---- every task ----------------------------------------------------------------------------------
def test_emotion_labels_from_classlabel_and_strings(tmp_path):
    audio = asr_dataset()["audio"]
    raw = Dataset.from_dict({"audio": audio, "label": [0, 1, 2, 3]}, features=None)
    raw = raw.cast_column("label", ClassLabel(names=["ang", "hap", "neu", "sad"])).cast_column(
        "audio", Audio(decode=False)
    )
    raw.save_to_disk(str(tmp_path / "iemocap"))
    module = EmotionDataModule(str(tmp_path / "iemocap"), schema="iemocap", val_split=None, test_split=None)
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    labels = dict(zip(batch["ids"], batch["emotion"].tolist()))
    names = ["angry", "happy", "neutral", "sad"]
    assert {k: module.emotion_labels[v] for k, v in labels.items()} == {
        f"row {i}": names[i] for i in range(4)
    }
    assert batch["text"] == [""] * 4  # no transcript column: empty strings, the key is always there
    # MELD-style strings; "surprise" is outside a 4-class label set: skipped and counted.
    meld = Dataset.from_dict(
        {"audio": audio, "emotion": ["joy", "anger", "surprise", "neutral"], "text": TEXTS}
    )
    meld.cast_column("audio", Audio(decode=False)).save_to_disk(str(tmp_path / "meld"))
    module = EmotionDataModule(
        str(tmp_path / "meld"),
        schema="meld",
        emotion_labels=["neutral", "happy", "sad", "angry"],
        val_split=None,
    )
    module.setup("fit")
    assert module.skipped["train"] == {"label_not_in_emotion_labels": 1}
    rows = [r for b in module.train_dataloader() for r in b["emotion"].tolist()]
    assert sorted(rows) == [0, 1, 3]


def test_emotion_batch_is_the_asr_batch_plus_the_emotion_ids(tmp_path):
    data = asr_dataset().add_column("emotion", ["angry", "happy", "neutral", "sad"])
    data.save_to_disk(str(tmp_path / "emotion"))
    options = {"val_split": None, "test_split": None, "shuffle": False, "max_seconds_per_batch": 2.0}
    asr = ASRDataModule(str(tmp_path / "emotion"), **options)
    emotion = EmotionDataModule(str(tmp_path / "emotion"), **options)
    asr.setup("fit")
    emotion.setup("fit")
    asr_batches, emotion_batches = collect(asr.train_dataloader()), collect(emotion.train_dataloader())
    assert len(asr_batches) == len(emotion_batches) > 1
    for plain, labelled in zip(asr_batches, emotion_batches):
        assert sorted(labelled) == sorted([*plain, "emotion"])
        assert plain["supervises"] == ("asr",) and labelled["supervises"] == ("ser",)
        assert labelled["ids"] == plain["ids"] and labelled["text"] == plain["text"]
        assert torch.equal(labelled["audio"].waveform, plain["audio"].waveform)
        assert torch.equal(labelled["audio"].lengths, plain["audio"].lengths)
        assert labelled["audio"].sample_rate == plain["audio"].sample_rate
        assert labelled["emotion"].dtype == torch.long
        expected = [emotion.emotion_labels.index(data[int(i[1:])]["emotion"]) for i in labelled["ids"]]
        assert labelled["emotion"].tolist() == expected


def test_tts_and_s2s_batches_with_speech_tokens(tmp_path):
    audio = audio_struct([encode(tone(s, 22050), 22050) for s in SECONDS], [None] * 4)
    tokens = [[1, 2, 3], [4], [5, 6], [7, 8, 9, 10]]
    tts = Dataset.from_dict({"audio": audio, "text": TEXTS, "speech_tokens": tokens}).cast_column(
        "audio", Audio(decode=False)
    )
    tts.save_to_disk(str(tmp_path / "tts"))
    module = TTSDataModule(str(tmp_path / "tts"), val_split=None, test_split=None, shuffle=False)
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    assert batch["audio"].sample_rate == 24000
    by_text = dict(zip(batch["text"], range(len(batch["text"]))))
    row = by_text["call anna now"]
    assert (
        batch["speech_tokens"].tokens[row, :2].tolist() == [5, 6]
        and int(batch["speech_tokens"].lengths[row]) == 2
    )
    assert int(batch["audio"].lengths[row]) == pytest.approx(0.75 * 24000, abs=2)

    s2s = Dataset.from_dict(
        {
            "question": audio_struct([encode(tone(s, 16000), 16000) for s in SECONDS], [None] * 4),
            "answer_text": TEXTS,
            "answer_audio": audio,
        }
    )
    for column in ("question", "answer_audio"):
        s2s = s2s.cast_column(column, Audio(decode=False))
    s2s.save_to_disk(str(tmp_path / "s2s"))
    module = S2SDataModule(
        str(tmp_path / "s2s"), columns={"user_audio": "question"}, val_split=None, test_split=None
    )
    module.setup("fit")
    batches = collect(module.train_dataloader())
    assert sum(len(b["ids"]) for b in batches) == 4
    batch = batches[0]
    assert batch["user_audio"].sample_rate == 16000 and batch["answer_audio"].sample_rate == 24000
    assert batch["user_text"] == [""] * len(batch["ids"]) and "answer_speech_tokens" not in batch
    assert (
        batch["answer_audio"].lengths.float() / 24000 - batch["user_audio"].lengths.float() / 16000
    ).abs().max() < 1e-3


def _duplex_dataset(tmp_path) -> Path:
    rows = []
    for i, seconds in enumerate([6.0, 4.0]):
        events = [
            {"type": "user_speech", "start": 0.5, "end": 1.5, "text": "hello"},
            {"type": "turn_end", "start": 1.5, "end": 1.5, "text": ""},
            {"type": "assistant_speech", "start": 2.0, "end": 3.2, "text": "hi"},
            {"type": "barge_in", "start": 2.6, "end": 2.6, "text": ""},
        ]
        user = audio_struct([encode(tone(seconds, 16000), 16000)], [None])[0]
        assistant = audio_struct([encode(tone(seconds, 24000), 24000)], [None])[0]
        stored = [0] * int(seconds * 10)
        rows.append(
            {
                "id": f"s{i}",
                "user_audio": user,
                "assistant_audio": assistant,
                "events": events,
                "frame_labels": stored,
            }
        )
    data = Dataset.from_list(rows)
    for column in ("user_audio", "assistant_audio"):
        data = data.cast_column(column, Audio(decode=False))
    data.save_to_disk(str(tmp_path / "duplex"))
    return tmp_path / "duplex"


def test_duplex_labels_stored_or_recomputed(tmp_path):
    path = str(_duplex_dataset(tmp_path))
    stored = DuplexDataModule(path, val_split=None, test_split=None, max_seconds_per_batch=30)
    stored.setup("fit")
    batch = next(iter(stored.train_dataloader()))
    assert sorted(batch["frame_lengths"].tolist()) == [40, 60]
    short = batch["frame_lengths"].argmin()
    assert (batch["frame_labels"][short, 40:] == -100).all()
    module = DuplexDataModule(
        path, frame_rate=12.5, val_split=None, test_split=None, max_seconds_per_batch=30
    )
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    assert batch["user_audio"].waveform.shape[0] == 2 and batch["assistant_audio"].sample_rate == 16000
    assert sorted(batch["frame_lengths"].tolist()) == [50, 75]
    labels = batch["frame_labels"][batch["frame_lengths"].argmax()]
    assert labels[18:21].tolist() == [RESPOND] * 3 and labels[32:35].tolist() == [STOP_SPEAKING] * 3
    assert batch["events"][0][1]["type"] == "turn_end"
    no_labels = Dataset.load_from_disk(path).remove_columns("frame_labels")
    no_labels.save_to_disk(str(tmp_path / "nolabels"))
    with pytest.raises(ValueError, match="set frame_rate"):
        DuplexDataModule(str(tmp_path / "nolabels"), val_split=None, test_split=None).setup("fit")
    delayed = DuplexDataModule(
        path, frame_rate=12.5, stop_delay=0.16, val_split=None, test_split=None, max_seconds_per_batch=30
    )
    delayed.setup("fit")
    batch = next(iter(delayed.train_dataloader()))
    labels = batch["frame_labels"][batch["frame_lengths"].argmax()]
    assert labels[18:21].tolist() == [RESPOND] * 3 and labels[34:37].tolist() == [STOP_SPEAKING] * 3
    assert labels[32:34].tolist() == [KEEP_LISTENING] * 2
    with pytest.raises(ValueError, match="stop_delay needs frame_rate"):
        DuplexDataModule(path, stop_delay=0.16)
    held = DuplexDataModule(
        path,
        frame_rate=12.5,
        respond_until_answer=True,
        val_split=None,
        test_split=None,
        max_seconds_per_batch=30,
    )
    held.setup("fit")
    batch = next(iter(held.train_dataloader()))
    labels = batch["frame_labels"][batch["frame_lengths"].argmax()]
    assert labels[18:25].tolist() == [RESPOND] * 7 and labels[25] != RESPOND  # until the answer at 2.0 s
    with pytest.raises(ValueError, match="respond_until_answer needs frame_rate"):
        DuplexDataModule(path, respond_until_answer=True)


# ---- bucketing and shards ------------------------------------------------------------------------
def test_buckets_respect_the_budget_and_cover_every_item_once():
    durations = np.random.default_rng(0).uniform(0.5, 12.0, size=500)
    sampler = DurationBatchSampler(durations, max_seconds=40.0, seed=1)
    batches = list(sampler)
    assert all(len(b) * durations[b].max() <= 40.0 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(500))
    padded = sum(len(b) * durations[b].max() for b in batches)
    assert padded < 1.1 * durations.sum()  # sorting inside pools keeps padding low
    assert list(DurationBatchSampler(durations, 40.0, seed=1)) == batches  # reproducible
    sampler.set_epoch(1)
    assert list(sampler) != batches  # reshuffled per epoch
    capped = list(DurationBatchSampler(durations, 40.0, max_batch_size=3))
    assert max(len(b) for b in capped) == 3


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_get_disjoint_shards_with_equal_step_counts(world):
    durations = np.random.default_rng(1).uniform(0.5, 12.0, size=101)
    shards = [
        list(DurationBatchSampler(durations, 40.0, seed=5, num_replicas=world, rank=r)) for r in range(world)
    ]
    assert len({len(s) for s in shards}) == 1
    items = [i for s in shards for b in s for i in b]
    assert sorted(items) == list(range(101))  # disjoint and complete: nothing dropped or repeated


def test_lightning_sees_a_rank_aware_sampler_and_sets_its_epoch(tmp_path):
    DatasetDict({"train": asr_dataset()}).save_to_disk(str(tmp_path / "d"))
    module = ASRDataModule(str(tmp_path / "d"), val_split=None, test_split=None, max_seconds_per_batch=2.0)
    module.setup("fit")
    loader = module.train_dataloader()
    assert isinstance(loader.sampler, DistributedSampler)  # so Lightning does not inject its own
    _set_sampler_epoch(loader, 3)
    assert loader.sampler.epoch == 3


def test_workers_give_the_same_batches(tmp_path):
    DatasetDict({"train": asr_dataset()}).save_to_disk(str(tmp_path / "d"))
    ids = []
    for workers in (0, 2):
        module = ASRDataModule(
            str(tmp_path / "d"),
            val_split=None,
            test_split=None,
            max_seconds_per_batch=2.0,
            num_workers=workers,
        )
        module.setup("fit")
        ids.append([b["ids"] for b in module.train_dataloader()])
    assert ids[0] == ids[1]


# ---- bad input -----------------------------------------------------------------------------------
def test_missing_column_names_the_columns_and_the_fix(tmp_path):
    asr_dataset().rename_column("text", "words").save_to_disk(str(tmp_path / "d"))
    with pytest.raises(ValueError) as error:
        ASRDataModule(str(tmp_path / "d"), val_split=None).setup("fit")
    message = str(error.value)
    assert "'text'" in message and "['id', 'audio', 'words']" in message and "columns: {text:" in message
    module = ASRDataModule(str(tmp_path / "d"), columns={"text": "words"}, val_split=None, test_split=None)
    module.setup("fit")
    with pytest.raises(ValueError, match="not a column"):
        ASRDataModule(str(tmp_path / "d"), columns={"text": "wordz"}, val_split=None).setup("fit")
    with pytest.raises(ValueError, match="has no split 'nope'"):
        ASRDataModule(str(tmp_path / "d"), train_split="nope", columns={"text": "words"}).setup("fit")


def test_bad_rows_are_skipped_counted_and_logged(tmp_path, caplog):
    good = [encode(tone(s, 16000), 16000) for s in SECONDS]
    audio = audio_struct(
        good
        + [
            b"not audio at all",
            encode(np.zeros(0, np.float32), 16000),
            good[0],
            encode(tone(9.0, 16000), 16000),
        ],
        [None] * 8,
    )
    texts = TEXTS + ["unreadable", "empty audio", "   ", "too long"]
    data = Dataset.from_dict({"id": [f"u{i}" for i in range(8)], "audio": audio, "text": texts})
    data.cast_column("audio", Audio(decode=False)).save_to_disk(str(tmp_path / "d"))
    module = ASRDataModule(str(tmp_path / "d"), max_duration=5.0, val_split=None, test_split=None)
    with caplog.at_level(logging.WARNING, logger="minmo_lightning.datamodules"):
        module.setup("fit")
        ids = [i for b in module.train_dataloader() for i in b["ids"]]
    assert sorted(ids) == ["u0", "u1", "u2", "u3"]
    assert module.skipped["train"] == {
        "unreadable_audio": 1,
        "empty_audio": 1,
        "empty_transcript": 1,
        "longer_than_5s": 1,
    }
    epoch_lines = [r.getMessage() for r in caplog.records if "epoch 0" in r.getMessage()]
    assert epoch_lines and "unreadable_audio" in epoch_lines[0]


def test_a_file_that_vanishes_after_setup_is_skipped_at_decode(tmp_path, caplog):
    folder = tmp_path / "train"
    folder.mkdir()
    for i, s in enumerate(SECONDS):
        soundfile.write(folder / f"u{i}.wav", tone(s, 16000), 16000)
    (folder / "metadata.jsonl").write_text(
        "\n".join(json.dumps({"file_name": f"u{i}.wav", "text": t}) for i, t in enumerate(TEXTS))
    )
    module = ASRDataModule(str(tmp_path), val_split=None, test_split=None)
    module.setup("fit")
    (folder / "u2.wav").unlink()
    with caplog.at_level(logging.WARNING, logger="minmo_lightning.datamodules"):
        texts = [t for b in module.train_dataloader() for t in b["text"]]
    assert sorted(texts) == sorted(TEXTS[:2] + TEXTS[3:])
    assert module.skipped["decode"] == {"unreadable_audio": 1}
    assert any("does not exist" in r.getMessage() for r in caplog.records)


def test_interleaved_loader_runs_every_batch_once_in_a_seeded_order() -> None:
    from minmo_lightning.datamodules.mixture import InterleavedLoader

    loaders = [[("asr", i) for i in range(6)], [("emotion", i) for i in range(2)]]
    mixed = InterleavedLoader(loaders, seed=0)
    first, second = list(mixed), list(mixed)
    assert len(mixed) == 8 and sorted(first) == sorted(loaders[0] + loaders[1])
    for epoch in (first, second):  # each source keeps its own order
        assert [b for b in epoch if b[0] == "asr"] == loaders[0]
    assert first != second  # the interleaving changes from epoch to epoch
    assert list(InterleavedLoader(loaders, seed=0)) == first  # and is reproducible
    upsampled = list(InterleavedLoader(loaders, seed=0, repeats=[1, 3]))
    assert len(upsampled) == 12 and upsampled.count(("emotion", 1)) == 3
    with pytest.raises(ValueError, match="repeats"):
        InterleavedLoader(loaders, seed=0, repeats=[1])


def test_mixture_reports_its_sources_emotion_labels() -> None:
    from minmo_lightning.datamodules.mixture import MixtureDataModule

    def source(labels: list[str] | None) -> object:
        return type("DM", (), {"emotion_labels": labels})()

    four = ["neutral", "happy", "sad", "angry"]
    assert MixtureDataModule([source(None), source(four)]).emotion_labels == four
    assert MixtureDataModule([source(None)]).emotion_labels is None
    with pytest.raises(ValueError, match="disagree on emotion_labels"):
        _ = MixtureDataModule([source(four), source(four[:2])]).emotion_labels


def test_a_split_may_join_several_with_plus(tmp_path: Path) -> None:
    """``train+more``: both splits' rows, each screened as usual; a missing part is named."""
    clip = {"bytes": wav_bytes(tone(0.5, 16000), 16000), "path": None}

    def split(prefix: str, count: int) -> Dataset:
        return Dataset.from_dict(
            {
                "id": [f"{prefix}{i}" for i in range(count)],
                "audio": [clip] * count,
                "text": [f"text {prefix}{i}" for i in range(count)],
                "duration": [0.5] * count,
            }
        ).cast_column("audio", Audio(decode=False))

    DatasetDict({"train": split("a", 3), "more": split("b", 2), "test": split("t", 1)}).save_to_disk(
        str(tmp_path / "corpus")
    )
    module = ASRDataModule(str(tmp_path / "corpus"), train_split="train+more", val_split=None)
    module.setup("fit")
    ids = sorted(i for batch in module.train_dataloader() for i in batch["ids"])
    assert ids == ["a0", "a1", "a2", "b0", "b1"]
    with pytest.raises(ValueError, match="has no split 'extra'"):
        ASRDataModule(str(tmp_path / "corpus"), train_split="train+extra", val_split=None).setup("fit")
    with pytest.raises(ValueError, match="joins splits, which a streamed corpus cannot"):
        ASRDataModule(str(tmp_path / "corpus"), train_split="train+more", streaming=True).setup("fit")
