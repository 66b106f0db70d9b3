"""Every bad audio input answered, nothing lost: a table of inputs -> behaviour.

- the Python API (``MinMo.transcribe`` / ``respond``, the voice encoders, streaming ``step``): a short error
  naming the row, or a warning for clipped audio;
- each datamodule: the bad row skipped, counted and listed by id (``skipped_rows``), the good ones batched;
- ``minmo evaluate fdb`` and ``minmo asr-judge`` on sample folders: per-sample errors, the rest scored.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import soundfile
import torch
from datasets import Audio, Dataset
from minmo_lightning.components.voice_encoder.sensevoice import SenseVoiceEncoder
from minmo_lightning.components.voice_encoder.whisper import WhisperEncoder
from minmo_lightning.datamodules import (
    ASRDataModule,
    DuplexDataModule,
    EmotionDataModule,
    S2SDataModule,
    TTSDataModule,
)
from minmo_lightning.datamodules.sources import load_source
from minmo_lightning.evaluation import asr_judge
from minmo_lightning.evaluation.cli import main as evaluate_main

from minmo_lightning.contracts import AudioBatch

sys.path.insert(0, str(Path(__file__).parent))
from builders import speaking_minmo, tiny_minmo  # noqa: E402

RATE = 16000
MAX_MESSAGE = 500


def tone(seconds: float, rate: int = RATE, channels: int = 1, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    wave = (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def with_bad(wave: np.ndarray, count: int, value: float = float("nan")) -> np.ndarray:
    wave = wave.copy()
    wave[100 : 100 + count] = value
    return wave


def wav_bytes(wave: np.ndarray, rate: int = RATE, fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, wave, rate, format=fmt, subtype="FLOAT" if fmt == "WAV" else None)
    return buffer.getvalue()


def short_error(error: pytest.ExceptionInfo, fragment: str) -> None:
    message = str(error.value)
    assert fragment in message, message
    assert len(message) < MAX_MESSAGE, message


# ---- the Python API ---------------------------------------------------------------------------------
def batch(*waves: np.ndarray, rate: int = RATE) -> AudioBatch:
    return AudioBatch.from_list([torch.from_numpy(w) for w in waves], rate)


API_ERRORS = {
    "nan": (lambda: batch(tone(1), with_bad(tone(1), 13)), "audio row 1 has 13 NaN samples"),
    "inf": (lambda: batch(with_bad(tone(1), 2, float("inf"))), "audio row 0 has 2 Inf samples"),
    "nan_and_inf_rows": (
        lambda: batch(with_bad(tone(1), 3), with_bad(tone(1), 1, -float("inf"))),
        "audio rows 0, 1 have NaN and Inf samples (3 in row 0)",
    ),
    "empty_row": (lambda: batch(tone(1), np.zeros(0, np.float32)), "audio row 1 is an empty waveform"),
    "no_rows": (
        lambda: AudioBatch(torch.zeros(0, 0), torch.zeros(0, dtype=torch.long), RATE),
        "got an empty batch",
    ),
    "wrong_rate": (
        lambda: batch(tone(1, 8000), rate=8000),
        "expects 16000 Hz audio, got 8000 Hz; resample it from 8000 to 16000 Hz",
    ),
    "int16_pcm": (
        lambda: AudioBatch(torch.ones(1, RATE, dtype=torch.int16), torch.tensor([RATE]), RATE),
        "int16 PCM: divide by 32768",
    ),
}


@pytest.fixture(scope="module")
def models() -> dict:
    whisper = WhisperEncoder.from_preset("tiny")
    whisper.configure_model()
    minmo = tiny_minmo().eval()
    return {
        "MinMo.transcribe": minmo.transcribe,
        "MinMo.respond": lambda audio: speaking_minmo().respond(audio=audio),
        "SenseVoiceEncoder": SenseVoiceEncoder.from_preset("tiny", max_seconds=2.0).eval(),
        "WhisperEncoder": whisper.eval(),
    }


@pytest.mark.parametrize(
    "entry", ["MinMo.transcribe", "MinMo.respond", "SenseVoiceEncoder", "WhisperEncoder"]
)
@pytest.mark.parametrize("case", sorted(API_ERRORS))
def test_the_api_names_the_bad_row(models, entry, case) -> None:
    make, fragment = API_ERRORS[case]
    with pytest.raises(ValueError) as error:
        models[entry](make())
    short_error(error, fragment)


@pytest.mark.parametrize("encoder", ["SenseVoiceEncoder", "WhisperEncoder"])
def test_over_long_audio_names_the_limit_and_the_fix(models, encoder) -> None:
    limit = 2 if encoder == "SenseVoiceEncoder" else 30
    with pytest.raises(ValueError) as error:
        models[encoder](batch(tone(1), tone(limit + 1)))
    short_error(
        error, f"accepts at most {limit} s of audio, but audio row 1 lasts {limit + 1}.0 s; split the clip"
    )


def test_streaming_step_checks_every_chunk() -> None:
    encoder = SenseVoiceEncoder.from_preset("tiny").eval()
    state = encoder.init_state(1)
    chunk = with_bad(tone(0.96), 5)
    with pytest.raises(ValueError) as error:
        encoder.step(batch(chunk), state)
    short_error(error, "SenseVoiceEncoder.step: audio row 0 has 5 NaN samples")


@pytest.mark.parametrize(
    "shape, fragment",
    [
        ((2, RATE), "audio row 0 has shape (2, 16000): several channels"),  # AudioBatch.from_list, [C, T]
        ((RATE, 2), "audio row 0 has shape (16000, 2): several channels"),  # soundfile's [T, C]
    ],
)
def test_stereo_is_refused_with_the_downmix(shape, fragment) -> None:
    with pytest.raises(ValueError) as error:
        AudioBatch.from_list([torch.zeros(shape)], RATE)
    short_error(error, fragment)
    with pytest.raises(ValueError) as error:
        AudioBatch(torch.zeros(1, 2, RATE), torch.tensor([RATE]), RATE)
    short_error(error, "mix stereo down to mono")
    assert AudioBatch.from_list([np.zeros((1, 100), np.float32)], RATE).waveform.shape == (1, 100)


@pytest.mark.parametrize(
    "amplitude, fragment", [(1.5, "clipped audio (over 1% of the samples"), (3e4, "unscaled? int16 PCM")]
)
def test_clipped_audio_warns_once_and_is_still_transcribed(models, amplitude, fragment) -> None:
    audio = batch(tone(1), np.clip(tone(1, amplitude=amplitude), -amplitude, amplitude))
    with pytest.warns(UserWarning) as caught:
        texts = models["MinMo.transcribe"](audio)
    assert len(texts) == 2
    messages = [str(w.message) for w in caught if "audio row" in str(w.message)]
    assert len(messages) == 1 and fragment in messages[0] and "in audio row 1" in messages[0]


# ---- datamodules ------------------------------------------------------------------------------------
def struct(data: bytes | None = None, path: str | None = None) -> dict:
    return {"bytes": data, "path": path}


def save(rows: list[dict], folder: Path, audio_columns: tuple[str, ...] = ("audio",)) -> str:
    data = Dataset.from_list(rows)
    for column in audio_columns:
        data = data.cast_column(column, Audio(decode=False))
    data.save_to_disk(str(folder))
    return str(folder)


def save_jsonl(folder: Path, files: dict[str, bytes | None]) -> str:
    """A JSON-lines dataset whose audio column holds file paths (None: a path to no file)."""
    folder.mkdir()
    lines = []
    for name, data in files.items():
        if data is not None:
            (folder / f"{name}.wav").write_bytes(data)
        lines.append(json.dumps({"id": name, "audio": f"{name}.wav", "text": f"say {name}"}))
    (folder / "train.jsonl").write_text("\n".join(lines))
    return str(folder / "train.jsonl")


def flac_cut_short() -> bytes:
    """A FLAC whose header promises 1 s but whose frames are cut: it passes the header probe, then fails."""
    return wav_bytes(tone(1), fmt="FLAC")[:2000]


def asr_rows(with_duration: bool) -> list[dict]:
    rows = {
        "good": wav_bytes(tone(1)),
        "stereo_44k": wav_bytes(tone(1, 44100, channels=2), 44100, fmt="FLAC"),
        "clipped": wav_bytes(tone(1, amplitude=1.5)),
        "corrupt": b"not audio at all",
        "cut_short": flac_cut_short(),
        "empty": wav_bytes(np.zeros(0, np.float32)),
        "nan": wav_bytes(with_bad(tone(1), 13)),
        "inf": wav_bytes(with_bad(tone(1), 2, float("inf"))),
        "too_long": wav_bytes(tone(6)),
    }
    out = [{"id": k, "audio": struct(v), "text": f"say {k}"} for k, v in rows.items()]
    if with_duration:  # the column says 1 s everywhere: nothing is probed, the decoder finds the truth
        out = [{**row, "duration": 1.0} for row in out]
    return out


#: kind -> (datamodule, its rows) built by ``loaded``; cases below: (kind, row id) -> "kept" or the reason
DATAMODULE_CASES = {
    ("asr", "good"): "kept",
    ("asr", "stereo_44k"): "kept",  # mixed down and resampled
    ("asr", "clipped"): "kept",
    ("asr", "corrupt"): "unreadable_audio",  # found by the header probe in setup
    ("asr", "cut_short"): "unreadable_audio",  # found while decoding
    ("asr", "empty"): "empty_audio",
    ("asr", "nan"): "non_finite_audio",
    ("asr", "inf"): "non_finite_audio",
    ("asr", "too_long"): "longer_than_5s",
    ("asr_duration_column", "good"): "kept",
    ("asr_duration_column", "corrupt"): "unreadable_audio",
    ("asr_duration_column", "empty"): "empty_audio",
    ("asr_duration_column", "nan"): "non_finite_audio",
    ("asr_duration_column", "too_long"): "longer_than_5s",  # the duration column lied
    ("asr_files", "good"): "kept",
    ("asr_files", "missing_file"): "unreadable_audio",
    ("asr_files", "nan"): "non_finite_audio",
    ("asr_files", "corrupt"): "unreadable_audio",
    ("emotion", "good"): "kept",
    ("emotion", "nan"): "non_finite_audio",
    ("emotion", "corrupt"): "unreadable_audio",
    ("tts", "good_22k"): "kept",
    ("tts", "nan"): "non_finite_audio",
    ("tts", "empty"): "empty_audio",
    ("s2s", "good"): "kept",
    ("s2s", "nan_answer"): "non_finite_audio",
    ("s2s", "corrupt_question"): "unreadable_audio",
    ("duplex", "good"): "kept",
    ("duplex", "stereo_user"): "kept",
    ("duplex", "inf_assistant"): "non_finite_audio",
}


def _datamodules(root: Path) -> dict:
    options = {"val_split": None, "test_split": None, "shuffle": False, "max_duration": 5.0}
    asr = [ASRDataModule(save(asr_rows(d), root / f"asr{d}"), **options) for d in (False, True)]
    files = {"good": wav_bytes(tone(1)), "missing_file": None, "nan": wav_bytes(with_bad(tone(1), 5))}
    files["corrupt"] = b"RIFF" + bytes(40)
    emotion_rows = [
        {"id": k, "audio": struct(v), "emotion": "happy"}
        for k, v in {
            "good": wav_bytes(tone(1)),
            "nan": wav_bytes(with_bad(tone(1), 4)),
            "corrupt": b"\x00" * 64,
        }.items()
    ]
    tts_rows = [
        {"id": k, "audio": struct(v), "text": "read this"}
        for k, v in {
            "good_22k": wav_bytes(tone(1, 22050), 22050),
            "nan": wav_bytes(with_bad(tone(1, 24000), 4), 24000),
            "empty": wav_bytes(np.zeros(0, np.float32), 24000),
        }.items()
    ]
    answer = wav_bytes(tone(1, 24000), 24000)
    s2s_rows = [
        {"id": "good", "user_audio": struct(wav_bytes(tone(1))), "answer_audio": struct(answer)},
        {
            "id": "nan_answer",
            "user_audio": struct(wav_bytes(tone(1))),
            "answer_audio": struct(wav_bytes(with_bad(tone(1, 24000), 9), 24000)),
        },
        {"id": "corrupt_question", "user_audio": struct(b"RIFF????"), "answer_audio": struct(answer)},
    ]
    s2s_rows = [{**row, "answer_text": "an answer"} for row in s2s_rows]
    events = [{"type": "turn_end", "start": 0.5, "end": 0.5, "text": ""}]
    duplex_rows = [
        {"id": k, "user_audio": struct(user), "assistant_audio": struct(assistant), "events": events}
        for k, user, assistant in (
            ("good", wav_bytes(tone(2)), wav_bytes(tone(2))),
            ("stereo_user", wav_bytes(tone(2, channels=2)), wav_bytes(tone(2))),
            ("inf_assistant", wav_bytes(tone(2)), wav_bytes(with_bad(tone(2), 3, float("inf")))),
        )
    ]
    duplex = ("user_audio", "assistant_audio")
    return {
        "asr": asr[0],
        "asr_duration_column": asr[1],
        "asr_files": ASRDataModule(save_jsonl(root / "files", files), schema="generic", **options),
        "emotion": EmotionDataModule(save(emotion_rows, root / "emotion"), **options),
        "tts": TTSDataModule(save(tts_rows, root / "tts"), **options),
        "s2s": S2SDataModule(save(s2s_rows, root / "s2s", ("user_audio", "answer_audio")), **options),
        "duplex": DuplexDataModule(save(duplex_rows, root / "duplex", duplex), frame_rate=12.5, **options),
    }


@pytest.fixture(scope="module")
def loaded(tmp_path_factory) -> dict:
    """kind -> (ids of the rows batched, {id: skip record}, the datamodule, its batches), after setup and one
    pass over the loader."""
    out = {}
    for kind, module in _datamodules(tmp_path_factory.mktemp("datasets")).items():
        module.setup("fit")
        batches = [b for b in module.train_dataloader() if b is not None]
        kept = [i for b in batches for i in b["ids"]]
        out[kind] = (kept, {r["id"]: r for r in module.skipped_rows}, module, batches)
    return out


def _all_ids(module) -> list[str]:
    return load_source(module.path)[0]["train"]["id"]


@pytest.mark.parametrize("kind, row", sorted(DATAMODULE_CASES))
def test_each_datamodule_keeps_or_skips_each_row(loaded, kind, row) -> None:
    kept, skipped, module, _ = loaded[kind]
    expected = DATAMODULE_CASES[(kind, row)]
    if expected == "kept":
        assert row in kept and row not in skipped
        return
    assert row not in kept
    record = skipped[row]
    assert record["reason"] == expected and record["source"] == module.path and record["split"] == "train"
    assert len(record["detail"]) < MAX_MESSAGE
    # every row is accounted for: batched once or skipped once
    assert sorted(kept + list(skipped)) == sorted(_all_ids(module))


def test_kept_rows_are_mono_at_the_target_rate(loaded) -> None:
    _, _, _, batches = loaded["asr"]
    for b in batches:
        for i, row in enumerate(b["ids"]):
            if row == "stereo_44k":
                assert abs(int(b["audio"].lengths[i]) - RATE) <= 2  # 1 s at 16 kHz, one channel
            if row == "clipped":
                assert float(b["audio"].waveform[i].abs().max()) > 1.0  # kept as it is
    duplex = loaded["duplex"][3][0]
    assert duplex["user_audio"].waveform.dim() == 2 and duplex["user_audio"].sample_rate == RATE


def test_every_row_bad_is_a_setup_error_naming_the_source(tmp_path) -> None:
    rows = [{"id": f"u{i}", "audio": struct(b"garbage"), "text": "x"} for i in range(3)]
    path = save(rows, tmp_path / "bad")
    with pytest.raises(ValueError) as error:
        ASRDataModule(path, val_split=None, test_split=None).setup("fit")
    short_error(
        error, f"every row of {path!r} split 'train' was skipped: 3 rows skipped (unreadable_audio: 3)"
    )
    assert "first ids: u0, u1, u2" in str(error.value)


class _AudioEnergy(L.LightningModule):
    """Trains on the batch's audio energy: enough for a fit loop over a datamodule."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def training_step(self, batch, batch_idx):
        return (self.scale * batch["audio"].waveform.pow(2).mean()).abs()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("workers", [0, 2])
def test_skips_reach_the_run_output_from_worker_processes(tmp_path, workers, caplog) -> None:
    """One row per batch, so a bad row empties its batch (None, skipped by Lightning); the ids reach
    ``<default_root_dir>/skipped_rows.jsonl`` and the epoch's warning line, from workers too."""
    path = save(asr_rows(with_duration=True), tmp_path / "asr")
    module = ASRDataModule(
        path, val_split=None, test_split=None, max_batch_size=1, num_workers=workers, max_duration=5.0
    )
    trainer = L.Trainer(
        max_epochs=1,
        default_root_dir=tmp_path / "run",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    with caplog.at_level(logging.WARNING, logger="minmo_lightning.datamodules"):
        trainer.fit(_AudioEnergy(), datamodule=module)
    written = [
        json.loads(line) for line in (tmp_path / "run" / "skipped_rows.jsonl").read_text().splitlines()
    ]
    bad = {"corrupt", "cut_short", "empty", "nan", "inf", "too_long"}
    assert {r["id"] for r in written} == bad and len(written) == len(bad)
    assert module.skipped["decode"].total() == len(bad)
    assert {
        r.getMessage().split(" of ")[0] for r in caplog.records if r.getMessage().startswith("skipping")
    } == {f"skipping {row}" for row in bad}
    epoch = [r.getMessage() for r in caplog.records if "epoch 0" in r.getMessage()]
    assert len(epoch) == 1 and "6 rows skipped" in epoch[0] and "first ids:" in epoch[0]
    assert str(tmp_path / "run" / "skipped_rows.jsonl") in epoch[0]


# ---- Full-Duplex-Bench folders --------------------------------------------------------------------------
WORDS = {
    "text": "one two three four",
    "chunks": [{"text": w, "timestamp": [1.0 + k, 1.5 + k]} for k, w in enumerate("abcd")],
}

#: sample folder -> (files it holds, the error fragment or None when it is scored)
FDB_CASES = {
    "ok": ({"output.json": WORDS, "output.wav": (tone(2), RATE)}, None),
    "stereo_wav": ({"output.json": WORDS, "output.wav": (tone(2, 44100, channels=2), 44100)}, None),
    "resampled_wav": ({"output.json": WORDS, "output.wav": (tone(2, 24000), 24000)}, None),
    "json_only": ({"output.json": WORDS}, None),  # FDB's own asr.py output: enough to score
    "nothing": ({}, "has neither output.json nor output.wav: run the model on it"),
    "corrupt_wav": ({"output.wav": b"RIFF but nothing else"}, "output.wav is not readable audio"),
    "empty_wav": ({"output.wav": (np.zeros(0, np.float32), RATE)}, "output.wav is empty (0 samples)"),
    "wav_only": ({"output.wav": (tone(2), RATE)}, "transcribe output.wav with `minmo asr-judge --root"),
    "corrupt_json": (
        {"output.json": "{'text': trunc", "output.wav": (tone(2), RATE)},
        "output.json is not valid JSON",
    ),
}


def write_folder(folder: Path, files: dict) -> None:
    folder.mkdir(parents=True)
    for name, content in files.items():
        if isinstance(content, tuple):
            soundfile.write(str(folder / name), content[0], content[1], subtype="FLOAT")
        elif isinstance(content, bytes):
            (folder / name).write_bytes(content)
        else:
            (folder / name).write_text(content if isinstance(content, str) else json.dumps(content))


@pytest.fixture(scope="module")
def fdb_report(tmp_path_factory) -> tuple[dict, str, str]:
    root = tmp_path_factory.mktemp("fdb") / "pause_handling"
    for name, (files, _) in FDB_CASES.items():
        write_folder(root / name, files)
    stdout = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdout", stdout)
        assert evaluate_main(["fdb", "--task", "pause_handling", "--root", str(root)]) == 0
    metrics = json.loads((root / "metrics.json").read_text())
    return metrics, (root / "report.md").read_text(), stdout.getvalue()


@pytest.mark.parametrize("sample", sorted(FDB_CASES))
def test_fdb_lists_each_bad_sample_and_scores_the_rest(fdb_report, sample) -> None:
    metrics, report, printed = fdb_report
    errors = {e["sample"]: e["error"] for e in metrics["errors"]}
    fragment = FDB_CASES[sample][1]
    scored = {r["id"] for r in metrics["per_sample"]}
    if fragment is None:
        assert sample in scored and sample not in errors
        assert next(r for r in metrics["per_sample"] if r["id"] == sample)["tor"] == 1
        return
    assert sample not in scored and fragment in errors[sample] and len(errors[sample]) < MAX_MESSAGE
    assert f"| {sample} |" in report.split("## Published")[0]  # in the "Not scored" section
    assert metrics["n_samples"] + metrics["n_errors"] == len(FDB_CASES)
    assert f"not scored: {metrics['n_errors']} samples" in printed


def test_fdb_with_no_scorable_sample_is_one_error(tmp_path) -> None:
    write_folder(tmp_path / "a", {})
    write_folder(tmp_path / "b", {"output.json": "not json"})
    with pytest.raises(FileNotFoundError) as error:
        from minmo_lightning.evaluation.fdb import evaluate_fdb

        evaluate_fdb(tmp_path, "pause_handling")
    short_error(error, f"no sample of {tmp_path} could be scored; the first, a: a has neither output.json")


#: output.wav of a folder -> the judge's verdict: None (output.json written) or the error fragment
JUDGE_CASES = {
    "stereo_44k": ((tone(1, 44100, channels=2), 44100), None),
    "rate_8k": ((tone(1, 8000), 8000), None),
    "nan": ((with_bad(tone(1), 7), RATE), "7 of 16000 samples are NaN or Inf"),
    "corrupt": (b"not a wav", "unreadable audio"),
    "empty": ((np.zeros(0, np.float32), RATE), "empty audio (0 samples)"),
    "stale_json": (b"garbage", "unreadable audio"),  # an older output.json must not survive
}


@pytest.fixture(scope="module")
def judged(tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("judge")
    for name, (wav, _) in JUDGE_CASES.items():
        write_folder(root / name, {"output.wav": wav})
    (root / "stale_json" / "output.json").write_text(json.dumps(WORDS))
    os.utime(root / "stale_json" / "output.json", (1, 1))  # older than output.wav: judged again
    encoder = SenseVoiceEncoder.from_preset("tiny").eval()
    judged_count, up_to_date, failed = asr_judge.judge_root(root, encoder)
    assert judged_count == 2 and up_to_date == 0
    return root, failed


@pytest.mark.parametrize("folder", sorted(JUDGE_CASES))
def test_asr_judge_goes_on_past_bad_outputs(judged, folder) -> None:
    root, failed = judged
    fragment = JUDGE_CASES[folder][1]
    lines = [line for line in failed if line.startswith(f"{root / folder}:")]
    if fragment is None:
        assert not lines and "chunks" in json.loads((root / folder / "output.json").read_text())
        return
    assert len(lines) == 1 and fragment in lines[0] and len(lines[0]) < MAX_MESSAGE
    assert not (root / folder / "output.json").exists()
