"""``minmo demo``: the main job on a fresh machine, end to end on the built-in corpus.

1. synthesize the corpus (``minmo synth-data``) unless it is there;
2. train the tiny voice encoder alone (CTC + rich heads: ``recipes/components/voice_encoder_ctc.yaml``);
3. run the tiny stage-1 chain (``recipes/tiny/stage1a/1b/1c``), the encoder initialising stage 1a, then
   tiny stage 4 (``recipes/tiny/stage4_duplex.yaml``: the duplex predictor, from stage 1c);
4. score every understanding task of stage 1c (ASR, the emotion proxy, translation, language ID, speaker,
   audio events, spoken QA, dialogue) and duplex turn-taking (stage 4, beside the VAD baseline) on the test
   splits (``minmo evaluate``), and print each task's headline figure beside its chance level;
5. converse: ``minmo chat`` on a few test dialogues (assistant channel, event log, timeline per dialogue);
   print where the reports are.

Each step is announced with its expected duration on a 2-core CPU, and followed by its elapsed time and the
estimated time left. Steps 1-3 are skipped ("done already") when finished; a training step stopped part-way
continues from its last.ckpt (``--ckpt_path last``; written every 100 steps); evaluation and the dialogues
resume what they wrote; so an interrupted demo resumes where it stopped. ``--quick`` shrinks
the training and evaluation to a smoke run of a few minutes (once the corpus exists).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from minmo_lightning.checkpoints import read_checkpoint

STAGES = ("stage1a_prealign", "stage1b_fullalign", "stage1c_sft", "stage4_duplex")
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
    "duplex": ("assistant_f1@240", None),
}
#: test dialogues ``minmo chat`` talks through at the end
CHATS = 3
#: written beside the voice encoder run when it ends (it stops on time, not on a step budget)
FINISHED = "finished"
DATA = Path(
    "data/builtin"
)  # where the tiny and eval recipes read the corpus (relative to the working directory)


def _missing_families() -> list[str]:
    """The built-in corpus's task folders not written yet."""
    from minmo_lightning.datamodules.corpus_tasks import CORPUS_TASKS

    return [task for task in CORPUS_TASKS if not (DATA / task / "dataset_dict.json").is_file()]


def recipe(relative: str) -> str:
    return str(resources.files("minmo_lightning.recipes").joinpath(relative))


def _fit(config: str, overrides: list[str]) -> None:
    from minmo_lightning.cli import lightning_main

    lightning_main(["fit", "--config", config, *overrides])


def _resume(checkpoint: Path) -> list[str]:
    """Continue a run a crash or Ctrl-C stopped from its last.ckpt (written every 100 steps)."""
    return ["--ckpt_path", "last"] if checkpoint.is_file() else []


def _newest(pattern: str, root: Path) -> Path | None:
    found = sorted(root.glob(pattern), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


#: minutes each step takes on a 2-core CPU (full run, --quick), from the timestamps of a demo run's outputs
#: (runs/tiny*/: the previous step's last file to the step's last.ckpt, reports or dialogues); the corpus
#: step's start left no file: its 8 minutes are an estimate
MINUTES = {
    "corpus": (8.0, 8.0),
    "voice_encoder": (14.1, 0.12),
    "stage1a": (3.6, 0.08),
    "stage1b": (3.3, 0.15),
    "stage1c": (14.0, 0.3),  # the understanding mixture: 1200 steps, the LLM in full (runs/fullft)
    "stage4": (9.9, 0.9),
    "evaluation": (2.0, 0.5),  # eight stage-1c tasks (~10 s each alone) and duplex
    "chat": (0.3, 0.2),
}


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


def run_steps(steps: list[Step], quick: bool, clock: Callable[[], float] = time.monotonic) -> float:
    """Run the steps not done already, announcing each with its expected duration, then its elapsed time
    and the estimated time left (the expected minutes of the steps to come, scaled by the pace so far).
    Returns the minutes the steps took."""
    expected = {step.key: MINUTES[step.key][1 if quick else 0] for step in steps}
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


def demo_steps(runs: Path, quick: bool) -> tuple[list[Step], list[Path], Path]:
    """The demo's steps, the reports they write and the folder of the dialogues."""
    fast = ["--trainer.max_steps", "4", "--trainer.val_check_interval", "4"] if quick else []
    encoder_dir = runs / "voice_encoder"
    stage_checkpoints = {stage: runs / stage.split("_")[0] / "checkpoints" / "last.ckpt" for stage in STAGES}

    def corpus() -> None:
        missing = _missing_families()
        if missing:  # a corpus built before some families existed gets just those
            from minmo_lightning.datamodules.synth import main as synth

            if synth(["--out", str(DATA), "--tasks", ",".join(missing)]) != 0:
                raise SystemExit(1)
        if not (DATA / "asr" / "am.mvn").is_file():  # a corpus built before synth-data wrote the statistics
            from minmo_lightning.components.voice_encoder.cmvn import main as cmvn

            cmvn(["--data", str(DATA / "asr"), "--out", str(DATA / "asr" / "am.mvn")])

    def voice_encoder() -> None:
        checkpoints = encoder_dir / "checkpoints"
        where = [
            "--trainer.default_root_dir",
            str(encoder_dir),
            "--trainer.callbacks.init_args.dirpath",
            str(checkpoints),
        ]
        _fit(recipe("components/voice_encoder_ctc.yaml"), where + fast + _resume(checkpoints / "last.ckpt"))
        if not (checkpoints / "last.ckpt").is_file():
            raise RuntimeError(f"the voice encoder run wrote no last.ckpt in {checkpoints}")
        (encoder_dir / FINISHED).touch()  # a max_time run: its checkpoint does not say it finished

    def stage_run(stage: str, previous: Path | None) -> Callable[[], None]:
        def run() -> None:
            checkpoint = stage_checkpoints[stage]
            where = ["--trainer.default_root_dir", str(checkpoint.parent.parent)]
            where += ["--trainer.callbacks.init_args.dirpath", str(checkpoint.parent)]
            start = (
                ["--model.init_args.init_checkpoint", str(previous)]
                if previous
                else [
                    "--model.init_args.init_blocks",
                    f"{{voice_encoder: {_newest('**/last.ckpt', encoder_dir)}}}",
                ]
            )
            _fit(recipe(f"tiny/{stage}.yaml"), where + fast + start + _resume(checkpoint))

        return run

    def finished(stage: str) -> Path | None:
        """The stage's last.ckpt once it reached its step budget (one written before is resumed)."""
        checkpoint = stage_checkpoints[stage]
        budget = (
            4
            if quick
            else yaml.safe_load(Path(recipe(f"tiny/{stage}.yaml")).read_text())["trainer"]["max_steps"]
        )
        if checkpoint.is_file() and read_checkpoint(checkpoint, mmap=True).get("global_step", 0) >= budget:
            return checkpoint
        return None

    speech_to_text, duplex = stage_checkpoints["stage1c_sft"], stage_checkpoints[STAGES[-1]]
    evaluations = [(task, speech_to_text) for task in UNDERSTANDING_TASKS] + [("duplex", duplex)]
    reports = [runs / f"eval-{task}" / "report.md" for task, _ in evaluations]

    def evaluation() -> None:  # always run: minmo evaluate resumes what it scored already
        from minmo_lightning.evaluation.cli import main as evaluate

        limit = ["--limit", "2"] if quick else []
        for (task, checkpoint), report in zip(evaluations, reports):
            config = recipe(f"eval/{task}_builtin.yaml")
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
            lambda: None if _missing_families() else DATA / "asr" / "am.mvn",
        ),
        Step(
            "voice_encoder",
            "voice encoder alone (CTC + rich heads)",
            voice_encoder,
            # a run of a demo before resumable steps left lightning_logs/version_0/checkpoints/last.ckpt
            lambda: (
                encoder_dir / FINISHED
                if (encoder_dir / FINISHED).is_file()
                else _newest("lightning_logs/*/checkpoints/last.ckpt", encoder_dir)
            ),
        ),
    ]
    previous = None
    for stage in STAGES:
        tag = stage.split("_")[0]
        checkpoint = stage_checkpoints[stage]
        title = f"{tag} (recipes/tiny/{stage}.yaml)"
        steps.append(Step(tag, title, stage_run(stage, previous), lambda s=stage: finished(s)))
        previous = checkpoint
    chats = runs / "chat"
    steps.append(Step("evaluation", f"evaluation ({', '.join(UNDERSTANDING_TASKS)}, duplex)", evaluation))
    steps.append(
        Step("chat", "minmo chat on test dialogues", lambda: converse(duplex, chats, 1 if quick else CHATS))
    )
    return steps, reports, chats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="minmo demo", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small corpus and a few steps per stage")
    args = parser.parse_args(argv)
    runs = Path("runs/tiny-quick" if args.quick else "runs/tiny")
    steps, reports, chats = demo_steps(runs, args.quick)
    minutes = run_steps(steps, args.quick)
    for line in headlines(reports):
        _say(line)
    _say(
        f"demo finished in {minutes:.1f} min; reports: {', '.join(map(str, reports))}; "
        f"dialogues (output.wav, events.json, timeline.png): {chats}"
    )
    return 0


def converse(checkpoint: Path, out: Path, count: int) -> Path:
    """``minmo chat`` on the first ``count`` test dialogues of the duplex corpus: ``out/<id>/``."""
    import soundfile
    from datasets import load_from_disk

    from minmo_lightning.chat import chat_file, load_model
    from minmo_lightning.datamodules.audio import decode_audio
    from minmo_lightning.duplex import DuplexSession

    session = DuplexSession(load_model(str(checkpoint), "cpu"))
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
