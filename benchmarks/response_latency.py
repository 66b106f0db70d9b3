"""Spoken-response latency: the first audio against MinMo's ``5*d_llm + 15*d_lm + 15*d_syn``, and batched sessions.

Per-token costs are measured in isolation: d_llm (one LLM decode step), d_lm (the voice token LM's ``step``
per speech token: 5 semantic vectors in, 15 tokens out, RAS sampling) and d_syn (token2wav's first step of a
fresh session fed one voice-LM step of 15 tokens, per token: the synthesis a first packet waits for). The
pipeline (``MinMo.respond``) is then timed from the first sampled text token to the first audio.

- formula: ``5*d_llm + 15*d_lm + 15*d_syn`` (MinMo §3.2).
- critical path: ``k*(5*d_llm + 15*d_lm) + 15*d_syn``, k the voice-LM steps the pipeline needed before its
  first audio (measured): 1 when token2wav's first chunk takes its look-ahead from the same step
  (``minmo_lightning/streaming.py``), 2 with chunks counted from the first speech token.
- measured / critical path near 1 says the pipeline hides no cost; the per-block split of the measured first
  packet says where the time goes (``pipeline_d_llm_ms``: the LLM step inside the pipeline, beside d_llm alone).
- the LLM step's memory-bandwidth bound: its weights' bytes over the bandwidth of a device copy measured in the
  same run (a batch-1 decode step reads every weight once).

Batched sessions: B independent responses in lockstep (``respond`` with B texts) for each of ``--batches``:
each row's first-packet latency and the text and speech tokens per second over ``--chunks`` voice-decoder
steps. ``--compile`` runs the compiled decode path (``respond(compile=True)``: static KV caches, CUDA graphs
on a GPU); its warm-up (compilation) is reported apart, and one greedy response is compared with eager's.

Random weights (speed does not depend on them); the tiny tokenizer stands in for Qwen's. The pipeline reads a
fixed text verbatim (the LLM still runs every step, teacher-forced): a random LLM free to sample may end its
answer after a few tokens. Sizes: ``tiny`` (every block tiny), ``small`` (Qwen2.5-0.5B in the LLM slot,
CosyVoice2-0.5B voice LM, flow and HiFT), ``full`` (Qwen2.5-7B).

``--profile DIR`` adds torch.profiler traces of isolated LLM steps and of a response's first chunk.

    python benchmarks/response_latency.py --size small [--compile] [--batches 1 8 32] [--profile DIR]
                                          [--json PATH]
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import resource
import shutil
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from minmo_lightning.components.llm.hf_causal_lm import TINY_TOKENIZER, HFCausalLM
from minmo_lightning.components.output_projector.query_linear import QueryLinearProjector
from minmo_lightning.components.token2wav.token2wav import CosyVoice2Token2Wav
from minmo_lightning.components.voice_token_lm.cosyvoice2_lm import CosyVoice2LM

from minmo_lightning.compiled import set_decoding
from minmo_lightning.contracts import SemanticChunk, SequenceBatch, TokenBatch, VoiceLMStreamOptions
from minmo_lightning.generation import TextCapReached, TextSamplingConfig, TextStream
from minmo_lightning.model import MinMo
from minmo_lightning.registry import import_modules
from minmo_lightning.timing import describe_device, synchronized_time, warm_up

TEXT = (
    "Turn on the kitchen lights and set the timer for twenty minutes, then remind me to call Peter. "
    "After that, read me the weather for tomorrow morning and the news headlines."
)
SIZES = {
    "tiny": {"llm": "tiny", "voice_lm": "tiny", "token2wav": "tiny"},
    "small": {"llm": "qwen2.5-0.5b-instruct", "voice_lm": "cosyvoice2-0.5b", "token2wav": "cosyvoice2-0.5b"},
    "full": {"llm": "qwen2.5-7b-instruct", "voice_lm": "cosyvoice2-0.5b", "token2wav": "cosyvoice2-0.5b"},
}


def build(llm: str, voice_lm: str, token2wav: str, dtype: str, device: torch.device) -> MinMo:
    """A speaking MinMo with random weights, made where it runs (a 7B LLM takes minutes to initialise on a CPU)."""
    # every component registered first: the vocoder's alias then resolves without importing the datamodules,
    # whose dataset and audio libraries a GPU image may lack
    import_modules("minmo_lightning.components")
    torch.manual_seed(0)
    with device:
        llm_block = HFCausalLM.from_preset(llm, tokenizer_path=TINY_TOKENIZER, dtype=dtype)
        voice = CosyVoice2LM.from_preset(voice_lm, dtype=dtype)
        model = MinMo(
            llm=llm_block,
            output_projector=QueryLinearProjector(llm_block.hidden_size, voice.hidden_size),
            voice_token_lm=voice,
            token2wav=CosyVoice2Token2Wav.from_preset(token2wav),
            objective="text_to_speech",
            trainable=dict.fromkeys(["llm", "output_projector", "voice_token_lm", "token2wav"], "frozen"),
        )
        model.configure_model()
    return model.eval()


@torch.no_grad()
def d_llm_seconds(model: MinMo, steps: int) -> float:
    """Median seconds of one LLM decode step (batch 1, a short prompt), the first two steps left out."""
    embeds, mask, _ = model.generation_prompt([f"Read this text aloud: {TEXT}"])
    config = TextSamplingConfig(max_new_tokens=steps + 2)
    text = TextStream(model.llm, embeds, mask, -1, model.prompts.pad_id, config)
    device = embeds.device
    times, last = [], synchronized_time(device)
    with warnings.catch_warnings():  # no end id (-1): it runs to max_new_tokens, as meant
        warnings.simplefilter("ignore", TextCapReached)
        for _ in text:
            now = synchronized_time(device)
            times.append(now - last)
            last = now
    return statistics.median(times[2:])


@torch.no_grad()
def d_lm_seconds(voice_lm: CosyVoice2LM, repeats: int) -> float:
    """Seconds per speech token of ``CosyVoice2LM.step`` in steady state: 5 semantic vectors in, 15 tokens out,
    with the block's own sampler (RAS), so per-chunk input and sampling costs are part of d_lm."""
    text_size, device = voice_lm.ratio.text, voice_lm.llm_decoder.weight.device
    generator = torch.Generator(device).manual_seed(0)
    times = []
    for _ in range(repeats):
        state = voice_lm.init_state(1, VoiceLMStreamOptions(generator=generator))
        for call in range(3):  # the first call also reads sos and the query; time the next ones
            vectors = 0.02 * torch.randn(
                1, text_size, voice_lm.hidden_size, generator=generator, device=device
            )
            chunk = SemanticChunk(SequenceBatch(vectors, torch.tensor([text_size], device=device)))
            start = synchronized_time(device)
            tokens = voice_lm.step(chunk, state)
            if call:
                times.append((synchronized_time(device) - start) / int(tokens.lengths[0]))
    return statistics.median(times)


@torch.no_grad()
def d_syn_seconds(token2wav: CosyVoice2Token2Wav, tokens_per_step: int, repeats: int) -> float:
    """Seconds per token of token2wav's first step in a fresh session fed one voice-LM step of tokens."""
    device = next(token2wav.flow.parameters()).device
    times = []
    for seed in range(repeats + 1):
        draw = torch.randint(0, 6561, (1, tokens_per_step), generator=torch.Generator().manual_seed(seed))
        state = token2wav.init_state(1)
        start = synchronized_time(device)
        audio = token2wav.step(
            TokenBatch(draw.to(device), torch.tensor([tokens_per_step], device=device)), state
        )
        times.append(synchronized_time(device) - start)
        if int(audio.lengths[0]) == 0:
            raise RuntimeError(
                f"token2wav gave no audio for one voice-LM step ({tokens_per_step} tokens): its first chunk waits "
                "for a later step; check the flow's chunk_size and pre_lookahead_len"
            )
    return statistics.median(times[1:]) / tokens_per_step


@torch.no_grad()
def lockstep_response(model: MinMo, batch: int, chunks: int) -> dict:
    """One response of ``batch`` rows in lockstep: per row the seconds to its first audio, the voice-LM steps
    it took, block seconds up to the last row's first audio, and tokens over ``chunks`` voice-decoder steps."""
    first: list[float | None] = [None] * batch
    spent: dict[str, float] = {}
    steps_to_audio = text = speech = 0
    elapsed = 0.0
    for index, chunk in enumerate(model.respond(texts=[TEXT] * batch, verbatim=True)):
        elapsed = chunk.elapsed
        text += int(chunk.text.lengths.sum())
        speech += int(chunk.speech.lengths.sum())
        if any(f is None for f in first):
            for name, seconds in chunk.timings.items():
                spent[name] = spent.get(name, 0.0) + seconds
            for row, samples in enumerate(chunk.audio.lengths.tolist()):
                if first[row] is None and samples > 0:
                    first[row] = chunk.elapsed
            steps_to_audio = index + 1
        if index + 1 >= chunks and all(f is not None for f in first):
            break
    if any(f is None for f in first):
        raise RuntimeError("the response ended before every row had audio; the text is too short")
    return {
        "first_audio_s": first,
        "steps_to_audio": steps_to_audio,
        "spent_s": spent,
        "text_tokens_per_s": text / elapsed,
        "speech_tokens_per_s": speech / elapsed,
    }


@torch.no_grad()
def compiled_against_eager(model: MinMo, mode: str, chunks: int) -> dict[str, float]:
    """One greedy response, eager then compiled: the share of speech tokens that agree (1.0 unless bf16 rounding
    flips a near tie) and the largest audio difference while they agree."""
    runs = []
    for decode in (False, mode):
        set_decoding(model, decode)
        response = model.respond(
            texts=[TEXT], verbatim=True, speech_sampler=lambda logp, history: logp.argmax(-1)
        )
        steps = list(itertools.islice(response, chunks))
        tokens = torch.cat([c.speech.tokens[0, : c.speech.lengths[0]] for c in steps])
        audio = torch.cat([c.audio.waveform[0, : c.audio.lengths[0]] for c in steps])
        runs.append((tokens, audio))
    (eager_tokens, eager_audio), (tokens, audio) = runs
    common = min(tokens.numel(), eager_tokens.numel())
    agree = tokens[:common] == eager_tokens[:common]
    identical = bool(agree.all()) and tokens.numel() == eager_tokens.numel()
    samples = min(audio.shape[0], eager_audio.shape[0]) if identical else 0
    difference = (audio[:samples] - eager_audio[:samples]).abs()
    return {
        "speech_tokens_agree_with_eager": int(agree.sum()) / max(tokens.numel(), eager_tokens.numel()),
        "audio_max_abs_diff_vs_eager": float(difference.max()) if samples else float("nan"),
    }


def memory_bandwidth_bytes_per_s(device: torch.device, gib: float = 1.0) -> float:
    """Bytes read plus written per second by a large device-to-device copy (median of 5)."""
    source = torch.empty(int(gib * 2**30), dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    times = []
    for _ in range(6):
        start = synchronized_time(device)
        target.copy_(source)
        times.append(synchronized_time(device) - start)
    return 2 * source.numel() / statistics.median(times[1:])


def peak_memory_gib(device: torch.device) -> float:
    """The GPU's peak allocated memory, or this process's peak resident memory on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def measure(
    model: MinMo, args: argparse.Namespace, figures: dict[str, float], save: Callable[[], None]
) -> None:
    """Every figure into ``figures``, the single-row ones first, saving after each phase: a run stopped by a
    time limit keeps what it measured."""
    device = model.device
    voice_lm, token2wav = model.voice_token_lm, model.token2wav
    text_step, speech_step = voice_lm.ratio.text, voice_lm.ratio.speech
    start = time.perf_counter()
    lockstep_response(model, 1, args.chunks)  # warm-up: compilation, if any, happens here
    figures["warmup_s"] = time.perf_counter() - start
    d_llm = d_llm_seconds(model, steps=10)
    d_lm = d_lm_seconds(voice_lm, args.repeats)
    d_syn = d_syn_seconds(token2wav, speech_step, args.repeats)
    runs = sorted(
        (lockstep_response(model, 1, 1) for _ in range(args.repeats)), key=lambda r: r["first_audio_s"]
    )
    run = runs[len(runs) // 2]  # the median run
    k, spent, measured = run["steps_to_audio"], run["spent_s"], run["first_audio_s"][0]
    formula = text_step * d_llm + speech_step * d_lm + speech_step * d_syn
    critical = k * (text_step * d_llm + speech_step * d_lm) + speech_step * d_syn
    weights = sum(p.numel() * p.element_size() for p in model.llm.parameters())
    bound = weights / memory_bandwidth_bytes_per_s(device)  # a decode step reads every weight once
    figures |= {
        "d_llm_ms": 1000 * d_llm,
        "d_lm_ms": 1000 * d_lm,
        "d_syn_ms": 1000 * d_syn,
        "formula_ms": 1000 * formula,
        "first_packet_steps": k,
        "critical_path_ms": 1000 * critical,
        "first_packet_ms": 1000 * measured,
        "first_packet_over_formula": measured / formula,
        "first_packet_over_critical_path": measured / critical,
        "pipeline_d_llm_ms": 1000 * spent.get("llm", 0.0) / (text_step * k),
        "pipeline_d_lm_ms": 1000 * spent.get("voice_token_lm", 0.0) / (speech_step * k),
        "pipeline_token2wav_ms": 1000 * spent.get("token2wav", 0.0),
        "llm_weights_gib": weights / 2**30,
        "d_llm_bound_ms": 1000 * bound,
        "d_llm_over_bound": d_llm / bound,
    }
    save()
    smallest = min(args.batches)
    for batch in sorted(args.batches):
        lockstep_response(model, batch, args.chunks)  # warm-up at this batch size and length
        rows = lockstep_response(model, batch, args.chunks)
        figures |= {
            f"b{batch}_first_packet_ms": 1000 * max(rows["first_audio_s"]),
            f"b{batch}_text_tokens_per_s": rows["text_tokens_per_s"],
            f"b{batch}_speech_tokens_per_s": rows["speech_tokens_per_s"],
            f"b{batch}_speech_tokens_per_s_per_row": rows["speech_tokens_per_s"] / batch,
        }
        if batch != smallest:
            figures[f"b{batch}_over_b{smallest}_speech_tokens_per_s"] = (
                figures[f"b{batch}_speech_tokens_per_s"] / figures[f"b{smallest}_speech_tokens_per_s"]
            )
        save()


@torch.no_grad()
def profile(model: MinMo, out: Path) -> dict[str, float]:
    """torch.profiler traces of 10 isolated LLM decode steps and of one response's first chunk (chrome traces,
    gzipped, and their operator tables in ``profile_summary.txt``), for the isolated-vs-pipeline d_llm gap:
    host time per step far above device time says the step waits on kernel launches."""
    cuda = model.device.type == "cuda"
    activities = [torch.profiler.ProfilerActivity.CPU] + (
        [torch.profiler.ProfilerActivity.CUDA] if cuda else []
    )
    figures, tables = {}, []
    for name, run, steps in (
        ("isolated", lambda: d_llm_seconds(model, steps=10), 12),
        ("pipeline", lambda: lockstep_response(model, 1, 1), 1),
    ):
        with torch.profiler.profile(activities=activities) as trace:
            run()
        events = trace.key_averages()
        host = sum(e.self_cpu_time_total for e in events) / 1000
        device = sum(e.self_device_time_total for e in events) / 1000
        unit = "per LLM step" if name == "isolated" else "for the first chunk"
        figures |= {f"profile_{name}_host_ms": host / steps, f"profile_{name}_device_ms": device / steps}
        sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
        tables.append(f"== {name}: host {host / steps:.2f} ms, device {device / steps:.2f} ms {unit}\n")
        tables.append(events.table(sort_by=sort, row_limit=25) + "\n")
        plain = out / f"trace_{name}.json"
        trace.export_chrome_trace(str(plain))
        with plain.open("rb") as source, gzip.open(f"{plain}.gz", "wb") as target:
            shutil.copyfileobj(source, target)
        plain.unlink()
    (out / "profile_summary.txt").write_text("".join(tables))
    return figures


def targets_for(args: argparse.Namespace, device: torch.device, figures: dict[str, float]) -> dict[str, str]:
    """The issue's targets that apply to this run (#17)."""
    targets = {"first_packet_over_formula": "<= 1.1"}
    if device.type == "cuda" and args.size == "full":
        targets |= {"first_packet_ms": "<= 300", "d_llm_over_bound": "<= 2"}
        if "b8_over_b1_speech_tokens_per_s" in figures:
            targets["b8_over_b1_speech_tokens_per_s"] = ">= 6"
    return targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--llm", default=None, help="an HFCausalLM preset (default: the size's)")
    parser.add_argument("--voice-lm", default=None, help="a CosyVoice2LM preset (default: the size's)")
    parser.add_argument(
        "--token2wav", default=None, help="a CosyVoice2Token2Wav preset (default: the size's)"
    )
    parser.add_argument("--dtype", default=None, help="LLM and voice LM dtype (default: bfloat16 on GPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--compile", action="store_true", help="compiled decode steps (respond(compile=True))"
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32], help="lockstep batch sizes")
    parser.add_argument("--chunks", type=int, default=6, help="voice-decoder steps per batched response")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per isolated figure (median)")
    parser.add_argument("--profile", type=Path, default=None, help="folder for torch.profiler traces")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    dtype = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    presets = {key: getattr(args, key) or value for key, value in SIZES[args.size].items()}
    model = build(presets["llm"], presets["voice_lm"], presets["token2wav"], dtype, device)
    mode = set_decoding(model, args.compile)
    warm_up(device)
    described = describe_device(device)
    what = f"{presets['llm']} + {presets['voice_lm']} + {presets['token2wav']}, {dtype}, random weights"
    setup = {**presets, "dtype": dtype, "decode": mode or "eager", "batches": args.batches}
    figures: dict[str, float] = {}

    def save() -> None:
        figures["peak_memory_gib"] = peak_memory_gib(device)
        if args.json:
            report = {
                "figures": figures,
                "targets": targets_for(args, device, figures),
                "device": described,
                "setup": setup,
            }
            args.json.write_text(json.dumps(report, indent=2))

    if mode is not None:
        figures |= compiled_against_eager(model, mode, args.chunks)  # compiles the batch-1 steps too
    measure(model, args, figures, save)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        figures |= profile(model, args.profile)
        save()
    print(f"{what}; decode {mode or 'eager'}; {described}")
    print("formula: 5*d_llm + 15*d_lm + 15*d_syn; critical path: k*(5*d_llm + 15*d_lm) + 15*d_syn")
    for name, value in figures.items():
        print(f"  {name:44s} {value:12.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
