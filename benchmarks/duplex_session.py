"""Duplex session engine: cost per chunk over a long session, memory, and the response latency decomposition.

One ``DuplexSession`` listens to ``--minutes`` of synthetic user audio chunk by chunk and answers every
``--every`` seconds from second 0 (decisions forced through the session's hook, so the figures measure the
engine, not a predictor's habits, and every minute holds the same share of speaking). It reports

- the mean wall-clock compute per chunk in the first and in the last minute, and their ratio (bounded state
  keeps it near 1; target <= 1.2), and the real-time factor (compute / audio);
- where each chunk's time goes (listen, LLM, predictor, speak) in the first and the last minute;
- the process's resident memory after the first and the last minute, and its peak (and the GPU's peak);
- MinMo's response latency decomposition (Table 21: predictor 250 + first 5 text tokens 150 + first 15
  speech tokens 70 + first audio 130 ms on an L20) as this engine spends it: the decision chunk's listen +
  LLM + predictor time, then the first voice-decoder step's LLM (prefill and 5 tokens), voice token LM
  (15 tokens) and the token2wav time until the first audio.

Without ``--ckpt`` the model is a stage-4 recipe's blocks with random weights (speed does not depend on the
weights): ``--size tiny`` (recipes/tiny, plus the tiny speech side) on this CPU, ``--size full``
(recipes/minmo: Whisper-large-v3 + Qwen2.5-7B bf16 + CosyVoice2-0.5B) on a GPU (``gpu_check.sh``'s
``duplex`` stage).

    python benchmarks/duplex_session.py [--ckpt CKPT | --size tiny|full] [--device cuda] [--minutes 30]
        [--every 20] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
from pathlib import Path

import torch
import yaml
from minmo_lightning.components.llm.hf_causal_lm import TINY_TOKENIZER
from minmo_lightning.components.output_projector.query_linear import QueryLinearProjector
from minmo_lightning.components.token2wav.token2wav import CosyVoice2Token2Wav
from minmo_lightning.components.voice_token_lm.cosyvoice2_lm import CosyVoice2LM

from minmo_lightning.blocks import Block
from minmo_lightning.contracts import AudioBatch
from minmo_lightning.duplex import KEEP_LISTENING, RESPOND, DuplexSession
from minmo_lightning.generation import TextSamplingConfig
from minmo_lightning.model import MinMo
from minmo_lightning.registry import import_modules, resolve_class
from minmo_lightning.timing import describe_device

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
SIZES = {"tiny": RECIPES / "tiny" / "stage4_duplex.yaml", "full": RECIPES / "minmo" / "stage4_duplex.yaml"}
PAPER_MS = {"decision": 250, "first_5_text_tokens": 150, "first_15_speech_tokens": 70, "first_audio": 130}
SLOTS = (
    "voice_encoder",
    "input_projector",
    "llm",
    "duplex_predictor",
    "output_projector",
    "voice_token_lm",
    "token2wav",
)
#: init arguments that name files a benchmark with random weights has no use for
FILE_ARGS = ("pretrained_path", "path", "cmvn_file", "tokenizer_path")


def recipe_model(recipe: Path, device: torch.device) -> MinMo:
    """A stage-4 recipe's blocks with random weights, built on ``device``; a recipe without the speech side
    (the tiny one) gets the tiny output projector, voice LM and token2wav."""
    import_modules("minmo_lightning.components")
    torch.manual_seed(0)
    args = yaml.safe_load(recipe.read_text())["model"]["init_args"]
    blocks = {}
    with device:
        for slot in SLOTS:
            if args.get(slot) is None:
                continue
            spec = args[slot]
            init = {**spec["init_args"], **{key: None for key in FILE_ARGS if key in spec["init_args"]}}
            if slot == "llm":
                init["tokenizer_path"] = TINY_TOKENIZER  # prompts need a tokenizer; any will do for timing
            blocks[slot] = resolve_class(spec["class_path"], Block, slot)(**init)
        if "voice_token_lm" not in blocks:
            blocks["voice_token_lm"] = CosyVoice2LM.from_preset("tiny")
            blocks["output_projector"] = QueryLinearProjector.from_preset(
                "tiny",
                llm_hidden_size=blocks["llm"].hidden_size,
                output_dim=blocks["voice_token_lm"].hidden_size,
            )
            blocks["token2wav"] = CosyVoice2Token2Wav.from_preset(
                "tiny", vocoder="hift", vocoder_preset="tiny"
            )
        model = MinMo(**blocks, objective="duplex", trainable=dict.fromkeys(blocks, "frozen"))
        model.configure_model()
    return model.eval()


def resident_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", help="a MinMo checkpoint with a duplex predictor (default: random weights)")
    parser.add_argument(
        "--size", choices=sorted(SIZES), default="tiny", help="whose stage-4 recipe sizes the random model"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--every", type=float, default=20.0, help="seconds between forced answers")
    parser.add_argument("--text-tokens", type=int, default=20, help="length of each answer")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    device = torch.device(args.device)
    if args.ckpt:
        from minmo_lightning.chat import load_model

        model = load_model(args.ckpt, device)
    else:
        model = recipe_model(SIZES[args.size], device)

    def answer_every(decisions: torch.Tensor, end: float) -> torch.Tensor:
        """Respond in the chunk that starts at each multiple of ``--every`` seconds, 0 included, so that every
        minute holds the same share of speaking and the first and last minutes compare like for like."""
        forced = torch.full_like(decisions, KEEP_LISTENING)
        chunk = session.listener.chunk_seconds
        if (end - chunk) // args.every != (end - 2 * chunk) // args.every:
            forced[:, -1] = RESPOND
        return forced

    session = DuplexSession(
        model, text_config=TextSamplingConfig(max_new_tokens=args.text_tokens), decision_hook=answer_every
    )
    size = session.listener.chunk_samples
    chunks = round(args.minutes * 60 / session.listener.chunk_seconds)
    per_minute = round(60 / session.listener.chunk_seconds)
    generator = torch.Generator().manual_seed(0)
    spent, per_block, memory, decisions = [], [], {}, []
    voice, first_audio = (
        [],
        [],
    )  # per answer: its voice-decoder step timings; token2wav time to its first audio
    for k in range(chunks):
        audio = 0.05 * torch.randn(1, size, generator=generator)
        step = session.push(AudioBatch(audio.to(device), torch.tensor([size], device=device), 16000))
        spent.append(sum(step.timings.values()))
        per_block.append(step.timings)
        for event in step.events:
            if event.kind == "turn_start":
                decisions.append(step.timings["listen"] + step.timings["llm"] + step.timings["predictor"])
                voice.append([])
            elif event.kind == "voice_chunk":
                voice[-1].append(event.value)
            elif event.kind == "audio" and len(first_audio) < len(voice):  # the flow waits for look-ahead
                first_audio.append(sum(t.get("token2wav", 0.0) for t in voice[-1]))
        if (k + 1) % per_minute == 0:
            memory[(k + 1) // per_minute] = resident_mib()

    session.reset()  # closes an answer still streaming now, not at interpreter exit
    first, last = spent[:per_minute], spent[-per_minute:]
    figures = {
        "chunk_ms": 1000 * session.listener.chunk_seconds,
        "minutes": args.minutes,
        "per_chunk_ms_minute_1": 1000 * statistics.mean(first),
        "per_chunk_ms_last_minute": 1000 * statistics.mean(last),
        "last_over_first_minute": statistics.mean(last) / statistics.mean(first),
        "real_time_factor": sum(spent) / (chunks * session.listener.chunk_seconds),
        "rss_mib_minute_1": memory.get(1),
        "rss_mib_last_minute": memory.get(max(memory)) if memory else None,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "answers": len(voice),
    }
    for name in per_block[0]:  # where the time goes: listen, llm, predictor, speak
        for label, rows in (("minute_1", per_block[:per_minute]), ("last_minute", per_block[-per_minute:])):
            figures[f"{name}_ms_{label}"] = 1000 * statistics.mean(r.get(name, 0.0) for r in rows)
    answered = [steps for steps in voice if steps]
    if answered and first_audio:
        figures |= {
            "decision_ms": 1000 * statistics.mean(decisions),
            "first_5_text_tokens_ms": 1000 * statistics.mean(s[0]["llm"] for s in answered),
            "first_15_speech_tokens_ms": 1000 * statistics.mean(s[0]["voice_token_lm"] for s in answered),
            "first_audio_ms": 1000 * statistics.mean(first_audio),
        }
    if device.type == "cuda":
        figures["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    what = f"checkpoint {args.ckpt}" if args.ckpt else f"{args.size} stage-4 recipe, random weights"
    device_name = describe_device(device)
    print(
        f"duplex session ({what}), {args.minutes:g} min of audio in {figures['chunk_ms']:g} ms chunks; {device_name}"
    )
    for key, value in figures.items():
        print(f"  {key:<28} {value if not isinstance(value, float) else round(value, 3)}")
    if "first_audio_ms" in figures:
        print("  latency decomposition (ms)   this engine   MinMo on an L20")
        for key, paper in PAPER_MS.items():
            ours = figures[f"{key}_ms"]
            print(f"    {key:<26} {ours:>10.1f}   {paper:>8}")
    if args.json:
        targets = {"last_over_first_minute": "<= 1.2"}
        setup = {"model": what, "device": device_name}
        args.json.write_text(json.dumps({"figures": figures, "targets": targets, **setup}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
