"""Tasks as data (#16): every speech-to-text task answers from its own batch fields, a source says which tasks
it supervises, what cannot be supervised is an error at set-up, and multi-turn prompts put the loss on the
last answer only."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile
import torch
from builders import speaking_minmo, tiny_minmo
from datasets import Audio, ClassLabel, Dataset, DatasetDict
from minmo_lightning.datamodules import (
    ASRDataModule,
    AudioEventDataModule,
    DialogueDataModule,
    EmotionDataModule,
    LanguageIDDataModule,
    MixtureDataModule,
    S2TTDataModule,
    SpeakerDataModule,
    SpokenQADataModule,
    VoiceControlDataModule,
)

from minmo_lightning.answers import parse_events, render_events
from minmo_lightning.contracts import IGNORE_INDEX, TokenBatch
from minmo_lightning.model import OBJECTIVES
from minmo_lightning.prompts import SPEECH_TASKS, Turn, with_style

RATE = 16000


def wav(seconds: float, freq: float = 220.0) -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    buffer = io.BytesIO()
    soundfile.write(buffer, (0.1 * np.sin(2 * np.pi * freq * t)).astype(np.float32), RATE, format="WAV")
    return buffer.getvalue()


def save(tmp_path, name: str, columns: dict, features: dict | None = None) -> str:
    n = len(columns["id"])
    columns = {"audio": [{"bytes": wav(0.3 + 0.1 * i), "path": None} for i in range(n)], **columns}
    data = Dataset.from_dict(columns)
    data = data.cast_column("audio", Audio(decode=False))
    for column, feature in (features or {}).items():
        data = data.cast_column(column, feature)
    DatasetDict({"train": data}).save_to_disk(str(tmp_path / name))
    return str(tmp_path / name)


OPTIONS = {"val_split": None, "test_split": None, "shuffle": False, "max_seconds_per_batch": 60.0}


def one_batch(module) -> dict:
    module.setup("fit")
    (batch,) = list(module.train_dataloader())
    return batch


def test_each_task_answers_from_its_own_fields(tmp_path):
    path = save(
        tmp_path,
        "s2tt",
        {
            "id": ["a", "b"],
            "text": ["the red car", "el coche rojo"],
            "translation": ["el coche rojo", "the red car"],
            "target_language": ["Spanish", "English"],
        },
    )
    batch = one_batch(S2TTDataModule(path, tasks=["s2tt", "asr"], **OPTIONS))
    assert batch["supervises"] == ("s2tt", "asr")
    task = SPEECH_TASKS["s2tt"]
    assert [task.answer(batch, i, []) for i in range(2)] == ["el coche rojo", "the red car"]
    assert task.prompt(batch, 0, []) == "Translate the speech into Spanish."
    assert SPEECH_TASKS["asr"].answer(batch, 0, []) == "the red car"

    events = [
        [{"label": "click", "onset": 0.52, "offset": 0.6}, {"label": "tone", "onset": 0.1, "offset": 0.2}],
        [],
    ]
    batch = one_batch(
        AudioEventDataModule(save(tmp_path, "aed", {"id": ["a", "b"], "events": events}), **OPTIONS)
    )
    answers = [SPEECH_TASKS["aed"].answer(batch, i, []) for i in range(2)]
    assert answers == ["tone at 0.1 s; click at 0.5 s", "none"]
    assert parse_events(answers[0]) == [{"label": "tone", "onset": 0.1}, {"label": "click", "onset": 0.5}]
    assert render_events(parse_events(answers[0])) == answers[0]

    genders, ages = ClassLabel(names=["female", "male"]), ClassLabel(names=["child", "adult", "senior"])
    path = save(
        tmp_path, "spk", {"id": ["a", "b"], "gender": [1, 0], "age": [2, 1]}, {"gender": genders, "age": ages}
    )
    batch = one_batch(SpeakerDataModule(path, **OPTIONS))
    assert [SPEECH_TASKS["speaker"].answer(batch, i, []) for i in range(2)] == [
        "male, senior",
        "female, adult",
    ]

    path = save(tmp_path, "lid", {"id": ["a", "b"], "language": ["German", "English"]})
    batch = one_batch(LanguageIDDataModule(path, **OPTIONS))
    assert [SPEECH_TASKS["lid"].answer(batch, i, []) for i in range(2)] == ["German", "English"]


def test_a_spoken_question_stays_out_of_the_instruction_and_a_text_one_goes_in(tmp_path):
    path = save(tmp_path, "sqa", {"id": ["a"], "question": ["is it red?"], "answer": ["yes"]})
    spoken = one_batch(SpokenQADataModule(path, **OPTIONS))
    written = one_batch(SpokenQADataModule(path, question_in_prompt=True, **OPTIONS))
    task = SPEECH_TASKS["sqa"]
    assert task.answer(spoken, 0, []) == "yes"
    assert task.prompt(spoken, 0, []) == "Answer the question about the recording."
    assert task.prompt(written, 0, []) == "Answer the question about the recording. is it red?"


def test_a_clip_level_event_label_spans_its_clip(tmp_path):
    path = save(tmp_path, "esc", {"id": ["a"], "category": ["dog"]})
    batch = one_batch(AudioEventDataModule(path, schema="esc50", **OPTIONS))
    (event,) = batch["events"][0]
    assert event["label"] == "dog" and event["onset"] == 0.0 and event["offset"] == pytest.approx(0.3)


def test_what_a_source_cannot_supervise_is_an_error_naming_task_field_and_source(tmp_path):
    with pytest.raises(ValueError, match="unknown task 'translate'"):
        ASRDataModule(str(tmp_path), tasks=["translate"])
    with pytest.raises(ValueError, match="cannot supervise task 's2tt': its batches have no translation"):
        ASRDataModule(str(tmp_path), tasks=["s2tt"])
    path = save(tmp_path, "emo", {"id": ["a"], "emotion": ["happy"]})
    with pytest.raises(ValueError, match=r"task 'asr' needs field 'text'.*emo.*columns: \{text: COLUMN\}"):
        EmotionDataModule(path, tasks=["ser", "asr"], **OPTIONS).setup("fit")
    path = save(tmp_path, "covost", {"id": ["a"], "sentence": ["hi"], "translation": ["hola"]})
    with pytest.raises(ValueError, match="no target_language column; give the datamodule `target_language"):
        S2TTDataModule(path, schema="covost2", **OPTIONS).setup("fit")
    batch = one_batch(S2TTDataModule(path, schema="covost2", target_language="Spanish", **OPTIONS))
    assert batch["target_language"] == ["Spanish"] and batch["translation"] == ["hola"]


def test_the_model_trains_only_what_its_sources_supervise(tmp_path):
    model = tiny_minmo(tasks=["asr", "lid"])
    asr = ASRDataModule(save(tmp_path, "asr", {"id": ["a"], "text": ["hi"]}), **OPTIONS)
    with pytest.raises(
        ValueError, match=r"trains task\(s\) \['lid'\], which no source of the data supervises"
    ):
        model._check_supervision(MixtureDataModule([asr]))
    lid = LanguageIDDataModule(save(tmp_path, "lid", {"id": ["a"], "language": ["German"]}), **OPTIONS)
    model._check_supervision(MixtureDataModule([asr, lid]))

    batch = one_batch(lid)
    with pytest.raises(ValueError, match=r"supervises \['lid'\] reached a model that trains \['ser'\]"):
        tiny_minmo(tasks=["ser"])._item_tasks(batch)
    unlabelled = {k: v for k, v in batch.items() if k != "supervises"}
    with pytest.raises(ValueError, match="does not say which tasks it supervises"):
        model._item_tasks(unlabelled)
    instructions, answers = tiny_minmo(tasks=["lid"])._item_tasks(batch)
    assert instructions == ["Which language is spoken?"] and answers == ["German"]


def dialogue_dataset(tmp_path) -> str:
    history = [
        [
            {"role": "user", "text": "my name is ann", "audio": wav(0.4)},
            {"role": "assistant", "text": "hello ann", "audio": b""},
        ],
        [],
    ]
    return save(
        tmp_path,
        "dialogue",
        {
            "id": ["a", "b"],
            "text": ["what is my name", "hi"],
            "history": history,
            "answer_text": ["ann", "hello"],
        },
    )


def test_dialogue_batches_carry_the_history_with_its_speech(tmp_path):
    batch = one_batch(DialogueDataModule(dialogue_dataset(tmp_path), **OPTIONS))
    assert batch["supervises"] == ("chat",)
    by_id = dict(zip(batch["ids"], batch["history"]))
    assert [t["role"] for t in by_id["a"]] == ["user", "assistant"] and by_id["b"] == []
    assert by_id["a"][0]["audio"] == 0 and by_id["a"][1]["audio"] is None
    assert batch["history_audio"].lengths.tolist() == [int(0.4 * RATE)]


def test_a_source_without_history_trains_single_turn_chat(tmp_path):
    path = save(
        tmp_path, "qa", {"id": ["a", "b"], "question": ["hi", "is it on"], "answer_text": ["hello", "yes"]}
    )
    batch = one_batch(DialogueDataModule(path, columns={"text": "question"}, **OPTIONS))
    assert batch["supervises"] == ("chat",) and batch["history"] == [[], []]
    assert batch["history_audio"] is None and sorted(batch["answer_text"]) == ["hello", "yes"]


def test_multi_turn_prompts_splice_every_turn_and_learn_only_the_last_answer(tmp_path):
    model = tiny_minmo(tasks=["chat"])
    batch = one_batch(DialogueDataModule(dialogue_dataset(tmp_path), **OPTIONS))
    frames, histories = model.encode_conversation(batch)
    current = model.encode_audio(batch["audio"])
    past = model.encode_audio(batch["history_audio"])
    row = batch["ids"].index("a")
    assert frames.lengths[row] == current.lengths[row] + past.lengths[0]
    assert histories[row] == [Turn("user", audio_frames=int(past.lengths[0])), Turn("assistant", "hello ann")]
    instructions, answers = model._item_tasks(batch)
    prompt, _, _ = model._prompted_llm(instructions, answers, frames, histories)
    assert int(prompt.audio_mask[row].sum()) == int(frames.lengths[row])
    learned = prompt.labels[row][prompt.labels[row] != IGNORE_INDEX].tolist()
    assert learned == model.prompts.encode("ann") + [model.prompts.end_id]  # not "hello ann"
    # the earlier turn's speech precedes the current turn's in the prompt
    spans = torch.nonzero(prompt.audio_mask[row]).flatten()
    gap = int((spans[1:] - spans[:-1] > 1).nonzero()[0]) + 1
    assert gap == int(past.lengths[0])
    assert torch.isfinite(model.speech_to_text_loss(batch))


def test_a_model_predicts_each_family_by_its_first_task(tmp_path):
    path = save(tmp_path, "s2tt", {"id": ["a"], "translation": ["hola"], "target_language": ["Spanish"]})
    batch = one_batch(S2TTDataModule(path, **OPTIONS))
    (record,) = tiny_minmo(tasks=["s2tt"], max_new_tokens=3).predict_step(batch, 0)
    assert record["id"] == "a" and record["task"] == "s2tt" and isinstance(record["prediction_text"], str)
    batch = one_batch(DialogueDataModule(dialogue_dataset(tmp_path), **OPTIONS))
    records = tiny_minmo(tasks=["chat"], max_new_tokens=3).predict_step(batch, 0)
    assert [r["task"] for r in records] == ["chat", "chat"]


def test_a_turn_is_text_or_user_speech():
    with pytest.raises(ValueError, match="an assistant turn is text"):
        Turn("assistant", audio_frames=3)
    with pytest.raises(ValueError, match="role is 'user' or 'assistant'"):
        Turn("system", "x")


def test_voice_control_batches_carry_the_instruction_and_the_neutral_reading(tmp_path):
    neutral = [{"bytes": wav(0.5), "path": None}, {"bytes": wav(0.6), "path": None}]
    path = save(
        tmp_path,
        "vc",
        {
            "id": ["a", "b"],
            "text": ["turn on the light", "stop"],
            "instruction": ["Say it slowly.", "Use a high voice."],
            "control": ["rate", "pitch"],
            "target": ["slow", "high"],
            "neutral_audio": neutral,
            "phonemes": [14, 4],
        },
        {"neutral_audio": Audio(decode=False)},
    )
    batch = one_batch(VoiceControlDataModule(path, sample_rate=RATE, **OPTIONS))
    assert batch["instruction"] == ["Say it slowly.", "Use a high voice."]
    assert batch["control"] == ["rate", "pitch"] and batch["target"] == ["slow", "high"]
    assert batch["phonemes"] == [14, 4]
    assert batch["neutral_audio"].lengths.tolist() == [int(0.5 * RATE), int(0.6 * RATE)]


def test_a_style_instruction_comes_before_the_text_to_read():
    assert (
        with_style("Read this text aloud: hi", "Say it slowly.") == "Say it slowly. Read this text aloud: hi"
    )
    assert with_style("Read this text aloud: hi", None) == with_style("Read this text aloud: hi", " ")


def test_a_model_reads_each_text_as_asked_and_plainly():
    model = speaking_minmo(token2wav=True)
    batch = {
        "ids": ["a", "b"],
        "text": ["hello there", "stop"],
        "instruction": ["Say it slowly.", "Use a high voice."],
        "speech_tokens": TokenBatch.from_list([[5] * 30, [7] * 20]),
    }
    records = model.predict_step(batch, 0)
    assert [r["task"] for r in records] == ["voice_control"] * 2
    for record in records:
        for field in ("output_audio", "neutral_audio"):
            assert record[field]["waveform"].ndim == 1 and np.isfinite(record[field]["waveform"]).all()
    model.objective = OBJECTIVES["text_to_speech"]  # the same batch trains the voice decoder, style first
    seen, build = [], model.prompts.build
    model.prompts.build = lambda instructions, *args, **kwargs: (
        seen.append(instructions) or build(instructions, *args, **kwargs)
    )
    assert torch.isfinite(model.voice_decoder_forward(batch).loss)
    assert seen == [
        ["Say it slowly. Read this text aloud: hello there", "Use a high voice. Read this text aloud: stop"]
    ]


def test_a_spoken_answer_sees_the_conversation_so_far(tmp_path):
    model = speaking_minmo(token2wav=False)
    batch = one_batch(DialogueDataModule(dialogue_dataset(tmp_path), **OPTIONS))
    frames, histories = model.encode_conversation(batch)
    embeds, _, _ = model.generation_prompt(["Answer the user's spoken question."] * 2, frames, histories)
    plain, _, _ = model.generation_prompt(
        ["Answer the user's spoken question."] * 2, model.encode_audio(batch["audio"])
    )
    assert embeds.shape[1] > plain.shape[1]  # the history's turns are in the prompt
    chunks = model.respond(
        audio=batch["audio"], history=batch["history"], history_audio=batch["history_audio"], synthesize=False
    )
    first = next(iter(chunks))
    assert first.text.tokens.shape[0] == 2
