"""Spoken-output evaluation (tasks tts and s2s): a model speaks, a judge listens, WER against what it should say."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from builders import speaking_minmo
from minmo_lightning.evaluation import spoken
from minmo_lightning.evaluation.runner import _with_audio_files, evaluate

from minmo_lightning.contracts import AudioBatch, TokenBatch

TEXTS = {"a": "the cat sat down", "b": "open the door", "c": "stop right now"}


def _clip(path: Path, seconds: float, relative: bool = True) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), 0.1 * np.sin(np.arange(int(seconds * 24000)) / 5).astype(np.float32), 24000)
    return str(path.relative_to(path.parent.parent)) if relative else str(path)


@pytest.fixture
def judged_by_text(monkeypatch: pytest.MonkeyPatch):
    """A judge that 'hears' what a clip's name says: the text registered for it (no model needed)."""
    heard: dict[str, str] = {}
    monkeypatch.setattr(spoken._Judge, "__call__", lambda self, path: heard[Path(path).name])
    return heard


def test_a_judge_hearing_the_reference_gives_zero_wer(tmp_path: Path, judged_by_text: dict) -> None:
    records = []
    for uid, text in TEXTS.items():
        output = _clip(tmp_path / "audio" / f"{uid}.output_audio.wav", 1.5, relative=False)
        ceiling = _clip(tmp_path / "audio" / f"{uid}.ceiling_audio.wav", 1.0, relative=False)
        judged_by_text[f"{uid}.output_audio.wav"] = text
        judged_by_text[f"{uid}.ceiling_audio.wav"] = text
        records.append(
            {"id": uid, "reference": text, "output_audio_path": output, "ceiling_audio_path": ceiling}
        )
    (tmp_path / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    metrics = evaluate(
        "tts", tmp_path / "report", {"keep_wavs": 1}, predictions=tmp_path / "predictions.jsonl"
    )
    summary = metrics["summary"]
    assert summary["wer"] == 0.0 and summary["ceiling_wer"] == 0.0
    assert summary["duration_ratio"] == pytest.approx(1.5)
    assert (
        len(list((tmp_path / "audio").iterdir())) == 6
    )  # clips named by absolute paths are the user's: kept


def test_errors_against_the_ceiling_and_wavs_beyond_keep_are_removed(
    tmp_path: Path, judged_by_text: dict
) -> None:
    records = []
    for uid, text in TEXTS.items():
        records.append(
            {
                "id": uid,
                "reference": text,
                "output_audio_path": _clip(tmp_path / "audio" / f"{uid}.output_audio.wav", 1.0),
                "ceiling_audio_path": _clip(tmp_path / "audio" / f"{uid}.ceiling_audio.wav", 1.0),
            }
        )
        judged_by_text[f"{uid}.output_audio.wav"] = text.replace("the", "a")  # 'the' misheard where it occurs
        judged_by_text[f"{uid}.ceiling_audio.wav"] = text
    scored = spoken.spoken_report(records, {"keep_wavs": 1}, tmp_path)
    assert scored.summary["wer"] == pytest.approx(2 / 10) and scored.summary["ceiling_wer"] == 0.0
    assert sorted(p.name for p in (tmp_path / "audio").iterdir()) == [
        "a.ceiling_audio.wav",
        "a.output_audio.wav",
    ]
    assert "answer_text_wer" not in scored.summary  # tts: the text to speak is the reference itself
    judged_by_text.clear()  # transcripts are kept in the records: rescoring needs neither audio nor judge
    again = spoken.spoken_report(scored.records, {"keep_wavs": 1}, tmp_path)
    assert again.summary["wer"] == scored.summary["wer"]


def test_s2s_reports_how_far_the_text_answers_are_from_the_corpus_answers(
    tmp_path: Path, judged_by_text: dict
) -> None:
    answers = {"a": "the cat sat down", "b": "open the window"}  # b's text answer has one word wrong
    records = []
    for uid, text in TEXTS.items():
        if uid not in answers:
            continue
        records.append(
            {
                "id": uid,
                "reference": text,
                "ceiling_reference": answers[uid],
                "output_audio_path": _clip(tmp_path / "audio" / f"{uid}.output_audio.wav", 1.0),
            }
        )
        judged_by_text[f"{uid}.output_audio.wav"] = text
    scored = spoken.spoken_report(records, {}, tmp_path)
    assert scored.summary["wer"] == 0.0 and scored.summary["answer_text_wer"] == pytest.approx(1 / 7)
    assert "The model's text answers against the corpus answers: WER 0.1429" in scored.sections[0][1]


def test_records_without_spoken_output_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no spoken output to judge"):
        spoken.spoken_report([{"id": "a", "reference": "hi"}], {}, tmp_path)


def test_a_model_without_token2wav_cannot_speak() -> None:
    model = speaking_minmo(token2wav=False)
    batch = {"ids": ["a"], "text": ["hello"], "speech_tokens": TokenBatch.from_list([[1, 2, 3]])}
    with pytest.raises(ValueError, match="no token2wav block"):
        model.predict_step(batch, 0)


def test_model_mode_speaks_and_the_runner_writes_wavs(tmp_path: Path) -> None:
    model = speaking_minmo(token2wav=True)
    tts = {
        "ids": ["a", "b"],
        "text": ["hello there", "stop"],
        "speech_tokens": TokenBatch.from_list([[5] * 30, [7] * 20]),
    }
    records = model.predict_step(tts, 0)
    assert [r["task"] for r in records] == ["tts", "tts"] and all("reference" not in r for r in records)
    for record in records:
        clip = record["output_audio"]
        assert (
            clip["sample_rate"] == 24000
            and clip["waveform"].ndim == 1
            and np.isfinite(clip["waveform"]).all()
        )
        assert len(record["ceiling_audio"]["waveform"]) > 0
    written = _with_audio_files(records[0], tmp_path / "audio", "a")
    assert written["output_audio_path"] == "audio/a.output_audio.wav" and "output_audio" not in written
    assert soundfile.info(str(tmp_path / written["output_audio_path"])).samplerate == 24000

    g = torch.Generator().manual_seed(0)
    question = AudioBatch.from_list([0.1 * torch.randn(16000, generator=g)], 16000)
    s2s = {
        "ids": ["q"],
        "user_audio": question,
        "answer_text": ["an answer"],
        "answer_speech_tokens": TokenBatch.from_list([[3] * 25]),
    }
    (record,) = model.predict_step(s2s, 0)
    assert record["task"] == "s2s" and isinstance(record["reference"], str)
    assert record["answer_text"] == "an answer" and "ceiling_audio" in record
    assert model.predict_step(s2s, 0)[0]["reference"] == record["reference"]  # seeded: the same answer again


def test_the_readme_respond_snippet_yields_audio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's ``MinMo.respond`` example, run as written on a tiny stage-3-like checkpoint."""
    import re

    import lightning as L

    from minmo_lightning.model import MinMo

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    snippet = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "model.respond(" in b)
    path = re.search(r'load_from_checkpoint\("([^"]+)"\)', snippet).group(1)
    trainer = L.Trainer(max_steps=0, default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    trainer.strategy.connect(speaking_minmo(token2wav=True))
    monkeypatch.chdir(tmp_path)
    trainer.save_checkpoint(path)
    played: list[AudioBatch] = []
    user_audio = AudioBatch.from_list(
        [0.1 * torch.randn(16000, generator=torch.Generator().manual_seed(0))], 16000
    )
    exec(snippet, {"MinMo": MinMo, "user_audio": user_audio, "play": played.append})  # noqa: S102
    assert played and all(isinstance(a, AudioBatch) and a.sample_rate == 24000 for a in played)
    assert sum(int(a.lengths.sum()) for a in played) > 0


def test_respond_speaks_in_the_voice_of_a_prompt(tmp_path: Path) -> None:
    """``respond(prompt_audio=...)``: CAM++ hears the prompt; its x-vector conditions the flow (audio changes)."""
    from minmo_lightning.components.token2wav.token2wav import CosyVoice2Token2Wav

    model = speaking_minmo(token2wav=True)
    model.token2wav = CosyVoice2Token2Wav.from_preset(
        "tiny", vocoder="griffin_lim", speaker_encoder="tiny"
    ).eval()
    g = torch.Generator().manual_seed(0)
    voices = [AudioBatch.from_list([0.3 * torch.randn(16000, generator=g)], 16000) for _ in range(2)]

    def spoken(prompt) -> torch.Tensor:
        generator = torch.Generator().manual_seed(1)
        chunks = model.respond(
            texts=["hello", "stop"], verbatim=True, prompt_audio=prompt, generator=generator
        )
        return torch.cat([c.audio.waveform[0, : c.audio.lengths[0]] for c in chunks])

    first, again, other = spoken(voices[0]), spoken(voices[0]), spoken(voices[1])
    assert torch.equal(first, again) and first.shape == other.shape and not torch.allclose(first, other)
    model.token2wav = CosyVoice2Token2Wav.from_preset("tiny", vocoder="griffin_lim").eval()
    with pytest.raises(ValueError, match="no speaker encoder"):
        spoken(voices[0])


def test_an_answer_cut_at_max_new_tokens_says_so() -> None:
    from minmo_lightning.generation import TextCapReached, TextSamplingConfig

    model = speaking_minmo(token2wav=False)
    question = AudioBatch.from_list(
        [0.1 * torch.randn(16000, generator=torch.Generator().manual_seed(0))], 16000
    )
    with pytest.warns(TextCapReached, match=r"max_new_tokens=2 in row\(s\) \[0\]"):
        chunks = list(model.respond(audio=question, text_config=TextSamplingConfig(max_new_tokens=2)))
    assert bool(chunks[-1].text_cut[0])
    forced = list(model.respond(texts=["hi"], verbatim=True))  # a forced text always ends: never cut
    assert not bool(forced[-1].text_cut[0])


def test_a_speech_to_text_minmo_can_judge(tmp_path: Path) -> None:
    import lightning as L
    from builders import tiny_minmo

    trainer = L.Trainer(max_steps=0, default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    trainer.strategy.connect(tiny_minmo(tasks=["asr"]))
    trainer.save_checkpoint(tmp_path / "asr.ckpt")
    clip = tmp_path / "a.wav"
    soundfile.write(
        str(clip), 0.1 * np.random.default_rng(0).standard_normal(24000).astype(np.float32), 24000
    )
    heard = spoken._Judge(str(tmp_path / "asr.ckpt"))(clip)  # resampled to 16 kHz, transcribed by the LLM
    assert isinstance(heard, str)


def test_speech_chain_scores_each_link_with_the_same_listener(tmp_path: Path) -> None:
    """Real speech, its vocoded mel, the tokens and the flow per temperature are judged alike; a listener that
    hears the text gives 0 %, a tokenizer that drops a word shows in the tokens link alone."""
    from minmo_lightning.components.token2wav.token2wav import CosyVoice2Token2Wav
    from minmo_lightning.evaluation.speech_chain import score_chain

    torch.manual_seed(0)
    token2wav = CosyVoice2Token2Wav.from_preset("tiny").eval()
    token2wav.flow.decoder.n_timesteps = 2
    rows = [
        {
            "text": text,
            "speech_tokens": torch.randint(0, 6561, (n,)).tolist(),
            "audio": _clip(tmp_path / f"{n}.wav", 0.3, relative=False),
        }
        for text, n in (("turn it on", 9), ("stop", 6))
    ]
    heard = iter(["turn it on", "turn it on", "turn it on", "turn it on"] + ["stop"] * 4)
    lengths = []

    def listen(audio: AudioBatch) -> str:
        lengths.append(int(audio.lengths[0]))
        return next(heard)

    class DropsLastWord:
        def transcribe_tokens(self, tokens: TokenBatch) -> list[str]:
            return [" ".join(rows[0]["text"].split()[:-1]) if tokens.lengths[0] == 9 else "stop"]

    figures = score_chain(rows, listen, token2wav, DropsLastWord(), temperatures=(1.0, 0.2))
    assert figures["utterances"] == 2 and len(lengths) == 8 and min(lengths) > 0
    assert figures["wer"] == {"real": 0.0, "vocoder": 0.0, "tokens": 0.25, "flow@1": 0.0, "flow@0.2": 0.0}
    assert token2wav.flow.decoder.temperature == 1.0  # restored
