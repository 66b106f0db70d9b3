"""Stage 0 of the tiny chain: the LLM block trained alone on the corpus's text."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset, DatasetDict
from minmo_lightning.components.llm.hf_causal_lm import HFCausalLM
from minmo_lightning.datamodules import TextDataModule


def corpus(tmp_path) -> str:
    train = Dataset.from_dict(
        {
            "text": ["turn on the light", "turn on the light", "what time is it"],
            "history": [[{"role": "user", "text": "hi"}], [], []],
        }
    )
    validation = Dataset.from_dict({"text": ["what day is it"], "history": [[]]})
    test = Dataset.from_dict({"text": ["a test sentence"], "history": [[]]})
    DatasetDict({"train": train, "validation": validation, "test": test}).save_to_disk(str(tmp_path / "c"))
    return str(tmp_path / "c")


def test_texts_join_fields_drop_repeats_and_never_read_the_test_split(tmp_path):
    data = TextDataModule([{"path": corpus(tmp_path), "fields": ["history", "text"]}], batch_size=8)
    data.setup("fit")
    assert data.texts["train"] == ["hi turn on the light", "turn on the light", "what time is it"]
    assert data.texts["validation"] == ["what day is it"]
    (batch,) = list(data.train_dataloader())
    assert sorted(batch["text"]) == sorted(data.texts["train"]) and len(batch["ids"]) == 3


def test_a_source_naming_a_missing_column_says_so(tmp_path):
    data = TextDataModule([{"path": corpus(tmp_path), "fields": ["sentence"]}])
    with pytest.raises(ValueError, match=r"has no column\(s\) \['sentence'\].*fix its `fields`"):
        data.setup("fit")
    with pytest.raises(ValueError, match="each text source is"):
        TextDataModule([{"path": "x"}])


def test_the_llm_learns_next_tokens_alone():
    torch.manual_seed(0)
    llm = HFCausalLM.from_preset("tiny", learning_rate=1e-2, warmup_steps=0)
    llm.configure_model()
    batch = {"text": ["turn on the light", "what time is it"]}
    optimizer = torch.optim.AdamW(llm.parameters(), lr=1e-2)
    first = llm.text_loss(batch, "train").item()
    for _ in range(30):
        optimizer.zero_grad()
        llm.text_loss(batch, "train").backward()
        optimizer.step()
    assert llm.text_loss(batch, "train").item() < 0.3 * first
