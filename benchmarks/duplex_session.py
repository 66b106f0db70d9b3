"""Duplex session engine: cost per chunk over a long session, memory, and the response latency decomposition.

One ``DuplexSession`` listens to ``--minutes`` of synthetic user audio chunk by chunk and answers every
``--every`` seconds (decisions forced through the session's hook, so the figures measure the engine, not a
predictor's habits). It reports

- the mean wall-clock compute per chunk in the first and in the last minute, and their ratio (bounded state
  keeps it near 1; target <= 1.2), and the real-time factor (compute / audio);
- the process's resident memory after the first and the last minute, and its peak;
- MinMo's response latency decomposition (Table 21: predictor 250 + first 5 text tokens 150 + first 15
  speech tokens 70 + first audio 130 ms on an L20) as this engine spends it: the decision chunk's listen +
  LLM + predictor time, then the first voice-decoder step's LLM (prefill and 5 tokens), voice token LM
  (15 tokens) and the token2wav time until the first audio.

Without ``--ckpt`` the model is the tiny chain's sizes (recipes/tiny) with random weights plus the tiny
speech side; speed does not depend on the weights.

    python benchmarks/duplex_session.py [--ckpt CKPT] [--minutes 30] [--every 20] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
from pathlib import Path

import torch
import yaml
from minmo_lightning.components.output_projector.query_linear import QueryLinearProjector
from minmo_lightning.components.token2wav.token2wav import CosyVoice2Token2Wav
from minmo_lightning.components.voice_token_lm.cosyvoice2_lm import CosyVoice2LM

from minmo_lightning.blocks import Block
from minmo_lightning.contracts import AudioBatch
from minmo_lightning.duplex import KEEP_LISTENING, RESPOND, DuplexSession
from minmo_lightning.generation import TextSamplingConfig
from minmo_lightning.model import MinMo
from minmo_lightning.registry import resolve_class
from minmo_lightning.timing import describe_device

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny" / "stage4_duplex.yaml"
PAPER_MS = {"decision": 250, "first_5_text_tokens": 150, "first_15_speech_tokens": 70, "first_audio": 130}


def tiny_model() -> MinMo:
    """The tiny stage-4 recipe's blocks (random weights) with the tiny speech side."""
    torch.manual_seed(0)
    args = yaml.safe_load(RECIPE.read_text())["model"]["init_args"]
    blocks = {}
    for slot in ("voice_encoder", "input_projector", "llm", "duplex_predictor"):
        spec = args[slot]
        init = {**spec["init_args"], **({"cmvn_file": None} if slot == "voice_encoder" else {})}
        blocks[slot] = resolve_class(spec["class_path"], Block, slot)(**init)
    voice_lm = CosyVoice2LM.from_preset("tiny")
    model = MinMo(
        **blocks,
        output_projector=QueryLinearProjector.from_preset(
            "tiny", llm_hidden_size=blocks["llm"].hidden_size, output_dim=voice_lm.hidden_size
        ),
        voice_token_lm=voice_lm,
        token2wav=CosyVoice2Token2Wav.from_preset("tiny", vocoder="hift", vocoder_preset="tiny"),
        objective="duplex",
        trainable={
            **dict.fromkeys(blocks, "frozen"),
            **dict.fromkeys(["output_projector", "voice_token_lm", "token2wav"], "frozen"),
        },
    )
    model.configure_model()
    return model.eval()


def resident_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", help="a MinMo checkpoint with a duplex predictor (default: random tiny)")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--every", type=float, default=20.0, help="seconds between forced answers")
    parser.add_argument("--text-tokens", type=int, default=20, help="length of each answer")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    if args.ckpt:
        from minmo_lightning.chat import load_model

        model = load_model(args.ckpt, "cpu")
    else:
        model = tiny_model()

    def answer_every(decisions: torch.Tensor, end: float) -> torch.Tensor:
        """Respond at the first chunk after each multiple of ``--every`` seconds."""
        forced = torch.full_like(decisions, KEEP_LISTENING)
        if int(end / args.every) != int((end - session.listener.chunk_seconds) / args.every):
            forced[:, -1] = RESPOND
        return forced

    session = DuplexSession(
        model, text_config=TextSamplingConfig(max_new_tokens=args.text_tokens), decision_hook=answer_every
    )
    size = session.listener.chunk_samples
    chunks = round(args.minutes * 60 / session.listener.chunk_seconds)
    per_minute = round(60 / session.listener.chunk_seconds)
    generator = torch.Generator().manual_seed(0)
    spent, memory, decisions = [], {}, []
    voice, first_audio = (
        [],
        [],
    )  # per answer: its voice-decoder step timings; token2wav time to its first audio
    for k in range(chunks):
        audio = 0.05 * torch.randn(1, size, generator=generator)
        step = session.push(AudioBatch(audio, torch.tensor([size]), 16000))
        spent.append(sum(step.timings.values()))
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
    answered = [steps for steps in voice if steps]
    if answered and first_audio:
        figures |= {
            "decision_ms": 1000 * statistics.mean(decisions),
            "first_5_text_tokens_ms": 1000 * statistics.mean(s[0]["llm"] for s in answered),
            "first_15_speech_tokens_ms": 1000 * statistics.mean(s[0]["voice_token_lm"] for s in answered),
            "first_audio_ms": 1000 * statistics.mean(first_audio),
        }
    device = describe_device(torch.device("cpu"))
    print(f"duplex session, {args.minutes:g} min of audio in {figures['chunk_ms']:g} ms chunks; {device}")
    for key, value in figures.items():
        print(f"  {key:<28} {value if not isinstance(value, float) else round(value, 3)}")
    if "first_audio_ms" in figures:
        print("  latency decomposition (ms)   this engine   MinMo on an L20")
        for key, paper in PAPER_MS.items():
            ours = figures[f"{key}_ms"]
            print(f"    {key:<26} {ours:>10.1f}   {paper:>8}")
    if args.json:
        targets = {"last_over_first_minute": "<= 1.2"}
        args.json.write_text(json.dumps({"figures": figures, "targets": targets, "device": device}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
