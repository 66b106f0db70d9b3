"""``minmo demo``: the main job on a fresh machine, end to end on the built-in corpus.

1. synthesize the corpus (``minmo synth-data``) unless it is there;
2. train the tiny voice encoder alone (CTC + rich heads: ``recipes/components/voice_encoder_ctc.yaml``);
3. run the tiny stage-1 chain (``recipes/tiny/stage1a/1b/1c``), the encoder initialising stage 1a;
4. the speech side: the speech tokenizer alone, speech tokens for the TTS, S2S and voice-control sets
   (``minmo prepare``), the voice token LM and token2wav's flow alone, then tiny stages 2a, 2b and 3;
5. tiny stage 4 (``recipes/tiny/stage4_duplex.yaml``: the duplex predictor, from stage 3, so the dialogues
   are answered aloud);
6. score every understanding task of stage 1c (ASR, the emotion proxy, translation, language ID, speaker,
   audio events, spoken QA, dialogue), spoken output (stage 2b reading the TTS test texts, stage 3 answering
   the S2S test questions, judged by the voice encoder's CTC head; stage 2b reading as instructed, its rate
   and pitch measured and its emotion heard by the encoder's emotion tag; their first WAVs stay with the reports)
   and duplex turn-taking (stage 4, beside the VAD baseline) on the test splits (``minmo evaluate``), and
   print each task's headline figure beside its chance level or ceiling;
7. converse: ``minmo chat`` on a few test dialogues (assistant channel, event log, timeline per dialogue);
   print where the reports are.

Each step is announced with its expected duration on a 2-core CPU, and followed by its elapsed time and the
estimated time left. Training steps are skipped ("done already") when finished; a training step stopped
part-way continues from its last.ckpt (``--ckpt_path last``; written every 100 or 200 steps); token preparation,
evaluation and the dialogues resume what they wrote; so an interrupted demo resumes where it stopped.
Plans: by default the demo fits in an hour on 2 cores (``runs/demo``): each training step stops on a time budget
of its own (``HOUR``: most to the voice encoder and stage 1c, the ASR chain; the rest so that every block
learns something), its learning rate annealed over that time. ``--full`` runs the recipes as written
(``runs/tiny``, about 4 hours: the figures in the component READMEs, and the starting points the ablations
read). ``--quick`` shrinks the training and evaluation to a smoke run of a few minutes (once the corpus
exists). Only ``--full`` writes the speech tokens the recipes read (``data/builtin-tokens``); the other plans
prepare their own under their runs folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from minmo_lightning.checkpoints import read_checkpoint

#: each tiny stage (``recipes/tiny/<stage>.yaml``) and the stage it starts from
STAGES = {
    "stage1a_prealign": None,
    "stage1b_fullalign": "stage1a_prealign",
    "stage1c_sft": "stage1b_fullalign",
    "stage2a_output_projector": "stage1c_sft",
    "stage2b_text_to_speech": "stage2a_output_projector",
    "stage3_speech_to_speech": "stage2b_text_to_speech",
    "stage4_duplex": "stage3_speech_to_speech",  # the whole assistant: it listens, takes turns and speaks
}
#: blocks trained alone (``recipes/components/<recipe>``), by demo step; each stops on its max_time
COMPONENTS = {
    "voice_encoder": "voice_encoder_ctc.yaml",
    "speech_tokenizer": "speech_tokenizer.yaml",
    "voice_lm": "voice_token_lm_tts.yaml",
    "flow": "token2wav_flow.yaml",
}
#: what a stage takes from a block trained alone: stage -> {block (or block.part): component step}
STAGE_BLOCKS = {
    "stage1a_prealign": {"voice_encoder": "voice_encoder"},
    "stage2a_output_projector": {"voice_token_lm": "voice_lm", "token2wav.flow": "flow"},
    "stage2b_text_to_speech": {"token2wav.flow": "flow"},
}
#: corpus task -> the (audio column, token column) pairs ``minmo prepare`` adds for the speech side, a pass
#: each; voice control's neutral readings are the evaluation's ceiling (styled vs neutral through token2wav)
SPEECH_TOKENS = {
    "tts": (("audio", "speech_tokens"),),
    "s2s": (("answer_audio", "answer_speech_tokens"),),
    "voice_control": (("audio", "speech_tokens"), ("neutral_audio", "neutral_speech_tokens")),
}
#: the TTS sentences only the voice LM of --full reads (``CorpusSize.tts_voice_lm_train``)
VOICE_LM_SPLIT = "voice_lm_train"
#: where the speech-side recipes read the prepared tokens (relative to the working directory)
TOKENS = Path("data/builtin-tokens")
#: what stage 1c is scored on (``recipes/eval/<task>_builtin.yaml``)
UNDERSTANDING_TASKS = ("asr", "emotion", "s2tt", "lid", "speaker", "aed", "sqa", "dialogue")
#: task -> (its headline in metrics.json's summary, the chance level or trivial baseline beside it)
HEADLINES = {
    "asr": ("wer", None),
    "emotion": ("wa", "chance_uniform"),
    "s2tt": ("bleu", "chance_bleu"),
    "lid": ("accuracy", "chance_uniform"),
    "speaker": ("joint_accuracy", "joint_chance_uniform"),
    "aed": ("event_f1", "prior_event_f1"),
    "sqa": ("exact_match", "baseline_exact_match"),
    "dialogue": ("exact_match", "baseline_exact_match"),
    "tts": ("wer", "ceiling_wer"),
    "s2s": ("wer", "ceiling_wer"),
    "voice_control": ("moved", "chance"),
    "duplex": ("assistant_f1@240", None),
}
#: what hears the emotion of voice control's spoken answers (the demo's encoder trained alone)
EMOTION_JUDGE = "minmo_lightning.evaluation.asr_judge.EmotionJudge"
#: spoken output: task -> the stage that speaks it
SPOKEN_TASKS = {
    "tts": "stage2b_text_to_speech",
    "s2s": "stage3_speech_to_speech",
    "voice_control": "stage2b_text_to_speech",
}
#: test dialogues ``minmo chat`` talks through at the end
CHATS = 3
#: written in a training step's run folder when its fit ends (a run on a time budget has no step count to check)
FINISHED = "finished"
DATA = Path(
    "data/builtin"
)  # where the tiny and eval recipes read the corpus (relative to the working directory)


def _missing_families(voice_lm_split: bool = True, log: Callable[[str], None] = print) -> list[str]:
    """The built-in corpus's task folders not written yet or written by an older plan of their task (said
    through ``log``), and a TTS folder written before it had its own training sentences (``tts_more_train``;
    ``tts_voice_lm_train`` where ``voice_lm_split``: the voice LM of --full reads them)."""
    from minmo_lightning.datamodules.corpus_plan import SIZES
    from minmo_lightning.datamodules.corpus_tasks import CORPUS_TASKS, stale_folder

    written = [task for task in CORPUS_TASKS if (DATA / task / "dataset_dict.json").is_file()]
    missing = set(CORPUS_TASKS) - set(written)
    for task in written:
        reason = stale_folder(DATA / task, task)
        if reason:
            log(
                f"{reason}: writing it again (runs trained on the earlier rows are kept; delete them to retrain)"
            )
            missing.add(task)
    if "tts" not in missing:
        from datasets import load_from_disk

        size, tts = SIZES["default"], load_from_disk(str(DATA / "tts"))
        voice_lm = tts[VOICE_LM_SPLIT].num_rows if VOICE_LM_SPLIT in tts else 0
        voice_lm_short = voice_lm_split and voice_lm < size.tts_voice_lm_train
        if tts["train"].num_rows < size.tts_train + size.tts_more_train or voice_lm_short:
            missing.add("tts")
    return [task for task in CORPUS_TASKS if task in missing]


def recipe(relative: str) -> str:
    return str(resources.files("minmo_lightning.recipes").joinpath(relative))


def _fit(config: str, overrides: list[str]) -> None:
    from minmo_lightning.cli import lightning_main

    lightning_main(["fit", "--config", config, *overrides])


def _resume(checkpoint: Path) -> list[str]:
    """Continue a run a crash or Ctrl-C stopped from its last.ckpt (the recipes write one every 100 or 200
    steps; the voice LM and the flow from their first validation on)."""
    return ["--ckpt_path", "last"] if checkpoint.is_file() else []


def _newest(pattern: str, root: Path) -> Path | None:
    found = sorted(root.glob(pattern), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


#: where each plan (the hour, --full, --quick) writes its runs
PLANS = {"hour": Path("runs/demo"), "full": Path("runs/tiny"), "quick": Path("runs/tiny-quick")}
#: the default plan's training budget per step, minutes on a 2-core CPU (``budget``: a block trained alone
#: stops on it, a stage gets the matching share of its steps): the whole demo in under an hour (measured: 54
#: min with the install). Most of it goes to the understanding chain (the encoder and stage 1c); the speech side gets what runs it
#: end to end (its speech is not intelligible in this plan: --full); stage 4 and stage 1c get their recipes' steps
HOUR = {
    "voice_encoder": 9.0,
    "stage1a": 1.32,
    "stage1b": 1.1,
    "stage1c": 14.8,
    "speech_tokenizer": 2.0,
    "voice_lm": 3.5,
    "flow": 2.5,
    "stage2a": 0.5,
    "stage2b": 1.5,
    "stage3": 1.0,
    "stage4": 6.0,
}
#: minutes each step takes on a 2-core CPU (--full, the hour plan, --quick), from the timestamps of demo runs'
#: outputs (runs/tiny*/: the previous step's last file to the step's last.ckpt, reports or dialogues; the
#: full corpus's 8 minutes are an estimate) and the hour plan's own run (a fresh clone of bee1a7d, 54 minutes with
#: the install; the steps' own durations)
MINUTES = {
    "corpus": (8.0, 3.0, 8.0),
    "voice_encoder": (14.1, 9.1, 0.12),
    "stage1a": (1.9, 1.4, 0.08),
    "stage1b": (1.8, 1.2, 0.15),
    "stage1c": (14.8, 16.0, 0.3),  # the understanding mixture: 1750 steps, the LLM in full
    "speech_tokenizer": (8.0, 2.0, 0.1),
    "speech_tokens": (1.0, 0.6, 0.3),
    "voice_lm": (50.0, 4.0, 0.1),
    "flow": (100.0, 3.0, 0.1),
    "stage2a": (1.6, 0.4, 0.1),
    "stage2b": (12.0, 1.2, 0.2),
    "stage3": (5.0, 0.9, 0.2),
    "stage4": (6.0, 6.0, 0.9),  # 3000 steps: a 2-minute first epoch (LLM states), then ~14 a second
    "evaluation": (6.5, 4.0, 4.0),  # eight stage-1c tasks (~10 s each), spoken output (3 tasks), duplex
    "chat": (0.3, 0.9, 0.2),
}
PLAN_COLUMN = {"full": 0, "hour": 1, "quick": 2}


@dataclass
class Step:
    """One demo step: ``run`` does it; it is done already when ``output`` (if given) names a file there."""

    key: str
    title: str
    run: Callable[[], None]
    output: Callable[[], Path | None] | None = None

    def done(self) -> Path | None:
        found = self.output() if self.output else None
        return found if found is not None and found.exists() else None


def expected_minutes(key: str, plan: str) -> float:
    return MINUTES[key][PLAN_COLUMN[plan]]


def run_steps(steps: list[Step], plan: str, clock: Callable[[], float] = time.monotonic) -> float:
    """Run the steps not done already, announcing each with its expected duration, then its elapsed time
    and the estimated time left (the expected minutes of the steps to come, scaled by the pace so far).
    Returns the minutes the steps took."""
    expected = {step.key: expected_minutes(step.key, plan) for step in steps}
    started, spent, planned = clock(), 0.0, 0.0
    for number, step in enumerate(steps, 1):
        tag = f"[demo {number}/{len(steps)}] {step.title}"
        done = step.done()
        if done is not None:
            _say(f"{tag}: done already ({done})")
            continue
        _say(f"{tag}: about {_minutes(expected[step.key])} on a 2-core CPU")
        step_started = clock()
        step.run()
        took = (clock() - step_started) / 60
        spent, planned = spent + took, planned + expected[step.key]
        pending = sum(expected[later.key] for later in steps[number:] if later.done() is None)
        pace = spent / planned if planned > 0 else 1.0
        _say(f"{tag}: done in {_minutes(took)}; about {_minutes(pending * pace)} left")
    return (clock() - started) / 60


def headlines(reports: list[Path]) -> list[str]:
    """One line per scored task: its headline figure and, beside it, chance or the trivial baseline."""
    lines = []
    for report in reports:
        metrics_file = report.parent / "metrics.json"
        if not metrics_file.is_file():
            continue
        metrics = json.loads(metrics_file.read_text())
        figure, chance = HEADLINES[metrics["task"]]
        summary = metrics["summary"]
        line = f"  {metrics['task']:<9} {figure} {summary[figure]:.3f}"
        if chance is not None and summary.get(chance) is not None:
            line += f"  ({chance} {summary[chance]:.3f})"
        lines.append(line)
    return lines


def _minutes(minutes: float) -> str:
    return f"{minutes:.0f} min" if minutes >= 1.5 else f"{minutes * 60:.0f} s"


def _say(line: str) -> None:
    print(line, flush=True)  # a log file (nohup, SLURM) shows each line when it happens


def max_time(minutes: float) -> str:
    """Lightning's ``max_time`` (DD:HH:MM:SS) for a budget in minutes."""
    seconds = round(minutes * 60)
    return f"00:{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def demo_steps(runs: Path, plan: str) -> tuple[list[Step], list[Path], Path]:
    """The demo's steps under ``plan`` (``PLANS``), the reports they write and the folder of the dialogues."""
    quick = plan == "quick"

    def budget(key: str, config: str) -> list[str]:
        """The plan's overrides of a training step. The hour plan: a block trained alone stops on its time
        budget (its recipe is on one already); a stage gets the share of its recipe's steps that fits its
        minutes, so its cosine still anneals by the steps. A smoke run: 4 steps, and validation after them
        where the recipe counts in steps."""
        trainer = yaml.safe_load(Path(config).read_text())["trainer"]
        if plan == "hour" and key in COMPONENTS:
            return ["--trainer.max_time", max_time(HOUR[key])]
        if plan == "hour":
            return [
                "--trainer.max_steps",
                str(max(1, round(trainer["max_steps"] * HOUR[key] / MINUTES[key][0]))),
            ]
        if not quick:
            return []
        in_steps = "val_check_interval" in trainer
        return ["--trainer.max_steps", "4"] + (["--trainer.val_check_interval", "4"] if in_steps else [])

    full = plan == "full"
    tokens = TOKENS if full else runs / "builtin-tokens"
    stage_checkpoints = {stage: runs / stage.split("_")[0] / "checkpoints" / "last.ckpt" for stage in STAGES}

    def corpus() -> None:
        missing = _missing_families(full)
        if missing:  # a corpus built before some families existed gets just those
            from minmo_lightning.datamodules.synth import main as synth

            # the voice LM's own 24,000 sentences serve --full's 50 minutes; the other plans read train alone
            sizes = [] if full else ["--tts-voice-lm-train", "0"]
            if synth(["--out", str(DATA), "--tasks", ",".join(missing), *sizes]) != 0:
                raise SystemExit(1)
        if not (DATA / "asr" / "am.mvn").is_file():  # a corpus built before synth-data wrote the statistics
            from minmo_lightning.components.voice_encoder.cmvn import main as cmvn

            cmvn(["--data", str(DATA / "asr"), "--out", str(DATA / "asr" / "am.mvn")])

    def local_recipe(relative: str, replace: dict[str, str] | None = None) -> str:
        """The recipe, reading the speech tokens from this demo's folder (a smoke run has its own) and with
        ``replace``'s other edits: a copy under ``runs/recipes`` when anything changes."""
        config = recipe(relative)
        edits = {f"{TOKENS}/": f"{tokens}/", **(replace or {})}
        original = Path(config).read_text()
        text = original
        for old, new in edits.items():
            text = text.replace(old, new)
        if text == original:
            return config
        copy = runs / "recipes" / relative
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(text)
        return str(copy)

    def component_root(key: str) -> Path:
        """Where a block trained alone runs: --full uses its recipe's own folder (what the tiny stage recipes,
        the ablations and the READMEs' commands read), the other plans ``runs/<key>``."""
        own = yaml.safe_load(Path(recipe(f"components/{COMPONENTS[key]}")).read_text())["trainer"]
        return Path(own["default_root_dir"]) if full and "default_root_dir" in own else runs / key

    def component_checkpoint(key: str) -> Path:
        checkpoint = component_root(key) / "checkpoints" / "last.ckpt"
        if not checkpoint.is_file() and key == "voice_encoder":  # a demo before resumable steps wrote
            return _newest("lightning_logs/*/checkpoints/last.ckpt", runs / key) or checkpoint  # it there
        return checkpoint

    def fit_and_mark(key: str, config: str, checkpoint: Path, overrides: list[str]) -> None:
        """Fit (or continue) the run whose last.ckpt is ``checkpoint``, then mark its folder finished."""
        where = ["--trainer.default_root_dir", str(checkpoint.parent.parent)]
        where += ["--trainer.callbacks.init_args.dirpath", str(checkpoint.parent)]
        _fit(config, where + budget(key, config) + overrides + _resume(checkpoint))
        if not checkpoint.is_file():
            raise RuntimeError(f"the {key} run wrote no last.ckpt in {checkpoint.parent}")
        _mark_finished(checkpoint.parent.parent)

    def component_run(key: str) -> Callable[[], None]:
        def run() -> None:
            own_split = {f"train_split: train+{VOICE_LM_SPLIT}": "train_split: train"}
            config = local_recipe(f"components/{COMPONENTS[key]}", None if full else own_split)
            fit_and_mark(key, config, component_checkpoint(key), [])

        return run

    def component_done(key: str) -> Path | None:
        if (component_root(key) / FINISHED).is_file():
            return component_root(key) / FINISHED
        legacy = component_checkpoint(key)  # a finished run of a demo before resumable steps
        return legacy if "lightning_logs" in legacy.parts and legacy.is_file() else None

    def tokens_current(task: str) -> bool:
        return _tokens_current(tokens / task, component_checkpoint("speech_tokenizer"))

    def speech_tokens() -> None:
        from minmo_lightning.datamodules.prepare import main as prepare

        tokenizer = component_checkpoint("speech_tokenizer")
        for task, passes in SPEECH_TOKENS.items():
            if tokens_current(task):
                continue
            source = DATA / task  # each pass adds one column to the previous one's folder; the last is kept
            for n, (audio, column) in enumerate(passes):
                out = tokens / task if n == len(passes) - 1 else tokens / f"{task}.{column}"
                shutil.rmtree(out, ignore_errors=True)  # tokens of an earlier tokenizer
                args = ["--dataset", str(source), "--out", str(out), "--checkpoint", str(tokenizer)]
                args += ["--audio-column", audio, "--column", column]
                args += ["--max-rows", "16"] if quick else []
                splits = json.loads((source / "dataset_dict.json").read_text())["splits"]
                if not full and VOICE_LM_SPLIT in splits:  # read only by --full's voice LM
                    args += ["--splits", ",".join(s for s in splits if s != VOICE_LM_SPLIT)]
                if prepare(args) != 0:
                    raise SystemExit(1)
                if source != DATA / task:
                    shutil.rmtree(source)
                source = out

    def stage_run(stage: str) -> Callable[[], None]:
        def run() -> None:
            previous = STAGES[stage]
            start = (
                ["--model.init_args.init_checkpoint", str(stage_checkpoints[previous])] if previous else []
            )
            blocks = {
                block: str(component_checkpoint(key)) for block, key in STAGE_BLOCKS.get(stage, {}).items()
            }
            if blocks:
                start += ["--model.init_args.init_blocks", json.dumps(blocks)]
            config = local_recipe(f"tiny/{stage}.yaml")
            fit_and_mark(stage.split("_")[0], config, stage_checkpoints[stage], start)

        return run

    def finished(stage: str) -> Path | None:
        """The stage's last.ckpt once its run ended (one stopped part-way is resumed); a run of a demo before
        the marker existed ended when its checkpoint reached the recipe's step cap."""
        checkpoint = stage_checkpoints[stage]
        if (checkpoint.parent.parent / FINISHED).is_file():
            return checkpoint
        cap = (
            4
            if quick
            else yaml.safe_load(Path(recipe(f"tiny/{stage}.yaml")).read_text())["trainer"]["max_steps"]
        )
        if checkpoint.is_file() and read_checkpoint(checkpoint, mmap=True).get("global_step", 0) >= cap:
            return checkpoint
        return None

    speech_to_text, duplex = stage_checkpoints["stage1c_sft"], stage_checkpoints["stage4_duplex"]
    evaluations = [(task, speech_to_text) for task in UNDERSTANDING_TASKS]
    evaluations += [(task, stage_checkpoints[stage]) for task, stage in SPOKEN_TASKS.items()]
    evaluations += [("duplex", duplex)]
    reports = [runs / f"eval-{task}" / "report.md" for task, _ in evaluations]

    def evaluation() -> None:  # always run: minmo evaluate resumes what it scored already
        from minmo_lightning.evaluation.cli import main as evaluate

        limit = ["--limit", "2"] if quick else []
        encoder = component_checkpoint("voice_encoder")
        judges = {  # this demo's encoder listens: its CTC head (tts, s2s), its emotion tag (voice control)
            "judge: null": f"judge: {encoder}",
            "metrics: {}": f"metrics: {{emotion_judge: {{class_path: {EMOTION_JUDGE}, init_args: "
            f"{{checkpoint: {encoder}}}}}}}",
        }
        for (task, checkpoint), report in zip(evaluations, reports):
            config = local_recipe(f"eval/{task}_builtin.yaml", judges if task in SPOKEN_TASKS else None)
            code = evaluate(
                ["--config", config, "--ckpt", str(checkpoint), "--out", str(report.parent), *limit]
            )
            if code:
                raise SystemExit(code)

    steps = [
        Step(
            "corpus",
            "built-in corpus (minmo synth-data, espeak-ng)",
            corpus,
            lambda: None if _missing_families(full) else DATA / "asr" / "am.mvn",
        ),
        Step(
            "voice_encoder",
            "voice encoder alone (CTC + rich heads)",
            component_run("voice_encoder"),
            lambda: component_done("voice_encoder"),
        ),
    ]
    titles = {
        "speech_tokenizer": "speech tokenizer alone (S3TokenizerV2, CTC on its codes)",
        "voice_lm": "voice token LM alone (text to speech tokens)",
        "flow": "token2wav's flow alone (speech tokens to mel)",
    }
    for stage in STAGES:
        tag = stage.split("_")[0]
        if stage == "stage2a_output_projector":  # the speech side's blocks, trained alone first
            steps.append(
                Step(
                    "speech_tokenizer",
                    titles["speech_tokenizer"],
                    component_run("speech_tokenizer"),
                    lambda: component_done("speech_tokenizer"),
                )
            )
            steps.append(
                Step(
                    "speech_tokens",
                    f"speech tokens of the {', '.join(SPEECH_TOKENS)} sets (minmo prepare)",
                    speech_tokens,
                    lambda: tokens if all(map(tokens_current, SPEECH_TOKENS)) else None,
                )
            )
            for key in ("voice_lm", "flow"):
                steps.append(Step(key, titles[key], component_run(key), lambda k=key: component_done(k)))
        title = f"{tag} (recipes/tiny/{stage}.yaml)"
        steps.append(Step(tag, title, stage_run(stage), lambda s=stage: finished(s)))
    chats = runs / "chat"
    scored = ", ".join((*UNDERSTANDING_TASKS, *SPOKEN_TASKS, "duplex"))
    steps.append(Step("evaluation", f"evaluation ({scored})", evaluation))
    steps.append(
        Step("chat", "minmo chat on test dialogues", lambda: converse(duplex, chats, 1 if quick else CHATS))
    )
    return steps, reports, chats


def _mark_finished(run: Path) -> None:
    """A run that stops on its time budget leaves a checkpoint that cannot say it finished: this does."""
    run.mkdir(parents=True, exist_ok=True)
    (run / FINISHED).touch()


def _tokens_current(folder: Path, tokenizer: Path) -> bool:
    """Tokens prepared to the end (``prepare_report.json``) by this tokenizer checkpoint, after it and the
    corpus folder (``DATA/<task>``) were written."""
    report, corpus = folder / "prepare_report.json", DATA / folder.name / "dataset_dict.json"
    return (
        report.is_file()
        and tokenizer.is_file()
        and json.loads(report.read_text()).get("checkpoint") == str(tokenizer.resolve())
        and report.stat().st_mtime >= tokenizer.stat().st_mtime
        and (not corpus.is_file() or report.stat().st_mtime >= corpus.stat().st_mtime)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="minmo demo", description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--full",
        action="store_true",
        help="the tiny recipes as written (runs/tiny, about 4 hours on 2 cores)",
    )
    which.add_argument("--quick", action="store_true", help="a smoke run: a few steps per stage")
    args = parser.parse_args(argv)
    plan = "full" if args.full else "quick" if args.quick else "hour"
    runs = PLANS[plan]
    steps, reports, chats = demo_steps(runs, plan)
    minutes = run_steps(steps, plan)
    for line in headlines(reports):
        _say(line)
    spoken = [str(runs / f"eval-{task}" / "audio") for task in SPOKEN_TASKS]
    _say(
        f"demo finished in {minutes:.1f} min; reports: {', '.join(map(str, reports))}; "
        f"spoken answers (WAV): {', '.join(spoken)}; dialogues (output.wav, events.json, timeline.png): {chats}"
    )
    return 0


def converse(checkpoint: Path, out: Path, count: int) -> Path:
    """``minmo chat`` on the first ``count`` test dialogues of the duplex corpus: ``out/<id>/``."""
    import soundfile
    from datasets import load_from_disk

    from minmo_lightning.chat import chat_file, load_model, session_predictor
    from minmo_lightning.datamodules.audio import decode_audio
    from minmo_lightning.duplex import DuplexSession

    model = load_model(str(checkpoint), "cpu")
    session = DuplexSession(model, predictor=session_predictor(model))  # as `minmo chat` talks
    test = load_from_disk(str(DATA / "duplex"))["test"]
    for row in test.select(range(min(count, len(test)))):
        folder = out / row["id"]
        if (folder / "events.json").is_file():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        wave, rate = decode_audio(row["user_audio"], target_rate=16000)
        soundfile.write(str(folder / "input.wav"), wave, rate)
        chat_file(session, folder / "input.wav", folder)
    return out
