"""``minmo evaluate``, ``minmo prepare`` and ``minmo synth-data`` print plain progress lines where stdout is not a
terminal (pytest's captured stdout is not one); ``MINMO_PROGRESS_SECONDS=0`` makes every step print."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import soundfile
import torch
from datasets import Audio, Dataset
from minmo_lightning.components.speech_tokenizer.s3tokenizer import S3TokenizerV2
from minmo_lightning.datamodules import prepare, synth
from minmo_lightning.datamodules.corpus_tasks import CorpusSize
from minmo_lightning.evaluation.runner import evaluate

from minmo_lightning.contracts import AudioBatch


@pytest.fixture(autouse=True)
def every_step(monkeypatch) -> None:
    monkeypatch.setenv("MINMO_PROGRESS_SECONDS", "0")


def _lines(text: str, label: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(label + ":")]


class EchoAsr(torch.nn.Module):
    def predict_step(self, batch, batch_idx):
        return [{"id": i, "hypothesis": t} for i, t in zip(batch["ids"], batch["text"])]


def test_evaluate_prints_batches_done_rate_and_eta(tmp_path, capsys, monkeypatch) -> None:
    import lightning as L

    class Clips(L.LightningDataModule):
        def test_dataloader(self):
            def collate(ids):
                waves = [torch.zeros(1600)] * len(ids)
                return {"ids": ids, "audio": AudioBatch.from_list(waves, 16000), "text": ["a b"] * len(ids)}

            return torch.utils.data.DataLoader([f"u{k}" for k in range(6)], batch_size=2, collate_fn=collate)

    monkeypatch.setattr("minmo_lightning.evaluation.runner.load_model", lambda spec, ckpt: EchoAsr())
    monkeypatch.setattr("minmo_lightning.evaluation.runner.build", lambda spec, base, what: Clips())
    recipe = {"model": {"class_path": "Echo"}, "data": {"class_path": "Clips"}}
    evaluate("asr", tmp_path / "out", {"normalizer": "none"}, recipe=recipe)
    lines = _lines(capsys.readouterr().out, "evaluate asr")
    assert lines[0].startswith("evaluate asr: 1/3 batches (33%)") and "ETA" in lines[0]
    assert lines[-1].startswith("evaluate asr: 3/3 batches (100%)") and lines[-1].endswith("done")


def test_prepare_prints_rows_per_split(tmp_path, capsys) -> None:
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(8000, np.float32), 16000, format="WAV")
    rows = {"audio": [{"bytes": buffer.getvalue(), "path": None}] * 5}
    Dataset.from_dict(rows).cast_column("audio", Audio(decode=False)).save_to_disk(str(tmp_path / "d"))
    torch.manual_seed(0)
    tokenizer = S3TokenizerV2.from_preset("tiny", dim=64, n_heads=2, n_layers=1, asr_vocab="", asr_layers=0)
    prepare.prepare_dataset(tmp_path / "d", tmp_path / "o", tokenizer.eval(), {}, shard_size=2)
    lines = _lines(capsys.readouterr().out, "tokenizing train")
    assert [re.match(r"tokenizing train: (\d+)/5 rows", line)[1] for line in lines] == ["2", "4", "5", "5"]
    assert lines[-1].endswith("done")


def test_synth_data_prints_rows_per_split(tmp_path, capsys) -> None:
    size = CorpusSize(asr_train=3, asr_eval=1)
    synth.build_corpus(tmp_path, size, tasks=["asr"], workers=1, log=lambda _: None, progress=True)
    out = capsys.readouterr().out
    finals = [
        line for split in ("train", "validation", "test") for line in _lines(out, f"synth-data asr {split}")
    ]
    assert any(
        line.startswith("synth-data asr train: 3/3 rows (100%)") and line.endswith("done") for line in finals
    )
    assert any(line.startswith("synth-data asr test: 1/1 rows") for line in finals)
