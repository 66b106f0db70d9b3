"""``minmo demo``: the main job on a fresh machine, end to end on the built-in corpus.

1. synthesize the corpus (``minmo synth-data``) unless it is there;
2. train the tiny voice encoder alone (CTC + rich heads: ``recipes/components/voice_encoder_ctc.yaml``);
3. run the tiny stage-1 chain (``recipes/tiny/stage1a/1b/1c``), the encoder initialising stage 1a, then
   tiny stage 4 (``recipes/tiny/stage4_duplex.yaml``: the duplex predictor, from stage 1c);
4. score ASR and the emotion proxy (stage 1c) and duplex turn-taking (stage 4, beside the VAD baseline) on
   the test splits (``minmo evaluate``);
5. converse: ``minmo chat`` on a few test dialogues (assistant channel, event log, timeline per dialogue);
   print where the reports are.

Every step is skipped when its output exists, so an interrupted demo resumes where it stopped.
``--quick`` shrinks everything to a smoke run of a few minutes.
"""

from __future__ import annotations

import argparse
import time
from importlib import resources
from pathlib import Path

STAGES = ("stage1a_prealign", "stage1b_fullalign", "stage1c_sft", "stage4_duplex")
#: test dialogues ``minmo chat`` talks through at the end
CHATS = 3
DATA = Path(
    "data/builtin"
)  # where the tiny and eval recipes read the corpus (relative to the working directory)


def recipe(relative: str) -> str:
    return str(resources.files("minmo_lightning.recipes").joinpath(relative))


def _fit(config: str, overrides: list[str]) -> None:
    from minmo_lightning.cli import lightning_main

    lightning_main(["fit", "--config", config, *overrides])


def _newest(pattern: str, root: Path) -> Path | None:
    found = sorted(root.glob(pattern), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="minmo demo", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small corpus and a few steps per stage")
    args = parser.parse_args(argv)
    runs = Path("runs/tiny-quick" if args.quick else "runs/tiny")
    started = time.time()

    if not (DATA / "asr" / "dataset_dict.json").is_file():
        from minmo_lightning.datamodules.synth import main as synth

        if synth(["--out", str(DATA)]) != 0:
            return 1
    if not (DATA / "asr" / "am.mvn").is_file():  # a corpus built before synth-data wrote the statistics
        from minmo_lightning.components.voice_encoder.cmvn import main as cmvn

        cmvn(["--data", str(DATA / "asr"), "--out", str(DATA / "asr" / "am.mvn")])

    quick = ["--trainer.max_steps", "4", "--trainer.val_check_interval", "4"] if args.quick else []
    encoder_dir = runs / "voice_encoder"
    encoder_ckpt = _newest("**/last.ckpt", encoder_dir)
    if encoder_ckpt is None:
        _fit(
            recipe("components/voice_encoder_ctc.yaml"),
            ["--trainer.default_root_dir", str(encoder_dir), *quick],
        )
        encoder_ckpt = _newest("**/last.ckpt", encoder_dir)
        if encoder_ckpt is None:
            raise RuntimeError(f"the voice encoder run wrote no last.ckpt under {encoder_dir}")

    previous = None
    for stage in STAGES:
        tag = stage.split("_")[0]
        checkpoint = runs / tag / "checkpoints" / "last.ckpt"
        if not checkpoint.is_file():
            where = ["--trainer.default_root_dir", str(runs / tag)]
            where += ["--trainer.callbacks.init_args.dirpath", str(checkpoint.parent)]
            overrides = (
                where
                + quick
                + (
                    ["--model.init_args.init_checkpoint", str(previous)]
                    if previous
                    else ["--model.init_args.init_blocks", f"{{voice_encoder: {encoder_ckpt}}}"]
                )
            )
            _fit(recipe(f"tiny/{stage}.yaml"), overrides)
        previous = checkpoint

    from minmo_lightning.evaluation.cli import main as evaluate

    limit = ["--limit", "2"] if args.quick else []
    speech_to_text = runs / "stage1c" / "checkpoints" / "last.ckpt"
    reports = []
    for task, checkpoint in (("asr", speech_to_text), ("emotion", speech_to_text), ("duplex", previous)):
        report = runs / f"eval-{task}"
        config = recipe(f"eval/{task}_builtin.yaml")
        evaluate(["--config", config, "--ckpt", str(checkpoint), "--out", str(report), *limit])
        reports.append(str(report / "report.md"))
    chats = converse(previous, runs / "chat", 1 if args.quick else CHATS)
    print(
        f"demo finished in {(time.time() - started) / 60:.1f} min; reports: {', '.join(reports)}; "
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
