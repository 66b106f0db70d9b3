"""Streaming token2wav speed on this CPU: our bounded chunk streaming vs the reference's full-prefix recompute.

    python benchmarks/token2wav.py [--preset cosyvoice2-0.5b] [--seconds 60] [--reference-seconds 60]
                                   [--chunk 15] [--left-chunks 2] [--prompt-seconds 3] [--json PATH]

Random weights (speed does not depend on them). Both sides run the same flow + HiFT and see 15-token
chunks (plus the flow's 3 look-ahead tokens) after a prompt:

- ours: ``CosyVoice2Token2Wav.step``: one attention chunk per call, left context bounded to ``--left-chunks``
  chunks by caches of keys/values and conv frames, exact HiFT streaming.
- reference style (CosyVoice2Model.token2wav): every call re-encodes and re-samples the whole prompt +
  prefix (chunk mask, all left context), keeps the new frames and vocodes them with 8 cached mel frames.

Figures: first-packet latency (15 + 3 tokens in -> first audio out), RTF, per-chunk time at the end of the
response over the start (flat = 1), and the max |streaming mel - offline mel| with the same chunk mask.
The reference-style run stops at ``--reference-seconds`` (its per-chunk cost grows with the prefix).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from minmo_lightning.components.token2wav.flow import CosyVoice2Flow, SpeakerPrompt, Token2WavStreamOptions
from minmo_lightning.components.token2wav.token2wav import CosyVoice2Token2Wav

from minmo_lightning.contracts import TokenBatch

TOKEN_RATE, FRAMES_PER_TOKEN, SAMPLES_PER_FRAME = 25, 2, 480


def build(preset: str, chunk: int, left: int, timesteps: int) -> CosyVoice2Token2Wav:
    torch.manual_seed(0)
    args = CosyVoice2Token2Wav.preset_args(preset)
    args["flow"] = {**args["flow"], "chunk_size": chunk, "num_left_chunks": left, "n_timesteps": timesteps}
    return CosyVoice2Token2Wav(**args).eval()


def make_prompt(model: CosyVoice2Token2Wav, seconds: float) -> SpeakerPrompt:
    tokens = int(seconds * TOKEN_RATE)
    return SpeakerPrompt(
        embedding=torch.randn(1, model.flow.hparams.spk_embed_dim),
        tokens=TokenBatch(torch.randint(0, 6561, (1, tokens)), torch.tensor([tokens])),
        mel=torch.randn(1, FRAMES_PER_TOKEN * tokens, 80) - 5,
    )


def feeds(tokens: torch.Tensor, chunk: int, lookahead: int) -> list[torch.Tensor]:
    """What the voice token LM hands over: the first chunk with its look-ahead, then ``chunk`` tokens a call."""
    first = chunk + lookahead
    return [tokens[:, :first]] + [tokens[:, i : i + chunk] for i in range(first, tokens.shape[1], chunk)]


@torch.no_grad()
def run_ours(model, prompt, tokens) -> tuple[list[float], int]:
    state = model.init_state(1, Token2WavStreamOptions(prompt))
    times, samples = [], 0
    pieces = feeds(tokens, model.flow.chunk_size, model.flow.lookahead)
    for index, piece in enumerate(pieces):
        if index == len(pieces) - 1:
            state.end_input([0])
        start = time.perf_counter()
        audio = model.step(TokenBatch(piece, torch.tensor([piece.shape[1]])), state)
        times.append(time.perf_counter() - start)
        samples += int(audio.lengths[0])
        print(f"  ours chunk {index}: {times[-1]:.3f} s", flush=True)
    return times, samples


@torch.no_grad()
def run_reference_style(model, prompt, tokens, mel_cache: int = 8) -> list[float]:
    """Each call: flow.inference on prompt + all tokens so far (finalize=False keeps the look-ahead out)."""
    flow, chunk, lookahead = model.flow, model.flow.chunk_size, model.flow.lookahead
    times, done, cache = [], 0, None
    for end in range(chunk + lookahead, tokens.shape[1] + 1, chunk):
        start = time.perf_counter()
        final = end + chunk > tokens.shape[1]
        end = tokens.shape[1] if final else end
        mel, _, _ = flow.inference(
            TokenBatch(tokens[:, :end], torch.tensor([end])),
            prompt,
            chunk_size=chunk,
            num_left_chunks=-1,
            align_chunks_to_prompt=False,
            finalize=final,
        )
        new = mel[:, :, FRAMES_PER_TOKEN * done :]
        window = new if cache is None else torch.cat([cache, new], dim=2)
        audio = model.vocoder(window)[:, (window.shape[2] - new.shape[2]) * SAMPLES_PER_FRAME :]
        cache, done = window[:, :, -mel_cache:], mel.shape[2] // FRAMES_PER_TOKEN
        times.append(time.perf_counter() - start)
        assert audio.shape[1] == new.shape[2] * SAMPLES_PER_FRAME
        print(
            f"  reference-style chunk {len(times) - 1} (prefix {end} tokens): {times[-1]:.3f} s", flush=True
        )
    return times


def edges(times: list[float], count: int = 5) -> tuple[float, float]:
    """Mean time of the first and of the last ``count`` full chunks (not the first packet, not the final flush)."""
    body = times[1:-1] or times
    count = max(1, min(count, len(body) // 2))
    return statistics.mean(body[:count]), statistics.mean(body[-count:])


@torch.no_grad()
def mel_difference(model, prompt, seconds: float) -> float:
    flow: CosyVoice2Flow = model.flow
    tokens = torch.randint(0, 6561, (1, int(seconds * TOKEN_RATE)))
    offline, lengths, _ = flow.inference(
        TokenBatch(tokens, torch.tensor([tokens.shape[1]])), prompt, flow.chunk_size, flow.num_left_chunks
    )
    state, pieces = flow.init_state(1, Token2WavStreamOptions(prompt)), []
    chunks = feeds(tokens, flow.chunk_size, flow.lookahead)
    for index, piece in enumerate(chunks):
        if index == len(chunks) - 1:
            state.end_input([0])
        mel, n = flow.step(TokenBatch(piece, torch.tensor([piece.shape[1]])), state)
        pieces.append(mel[0, :, : n[0]])
    streamed = torch.cat(pieces, dim=1)
    return float((streamed - offline[0, :, : lengths[0]]).abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cosyvoice2-0.5b")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the streamed response")
    parser.add_argument(
        "--reference-seconds", type=float, default=60.0, help="stop the recompute baseline here"
    )
    parser.add_argument(
        "--compare-seconds", type=float, default=6.0, help="length for streaming vs offline mel"
    )
    parser.add_argument("--prompt-seconds", type=float, default=3.0)
    parser.add_argument("--chunk", type=int, default=15)
    parser.add_argument("--left-chunks", type=int, default=2)
    parser.add_argument("--timesteps", type=int, default=10)
    parser.add_argument(
        "--threads", type=int, default=1, help="intra-op threads (1 is fastest on a shared CPU)"
    )
    parser.add_argument("--json", type=str, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = build(args.preset, args.chunk, args.left_chunks, args.timesteps)
    prompt = make_prompt(model, args.prompt_seconds)
    tokens = torch.randint(0, 6561, (1, int(args.seconds * TOKEN_RATE)))
    run_ours(model, prompt, tokens[:, : 2 * args.chunk + 3])  # warm-up

    ours, samples = run_ours(model, prompt, tokens)
    audio_seconds = samples / 24000
    reference = run_reference_style(model, prompt, tokens[:, : int(args.reference_seconds * TOKEN_RATE)])
    ref_seconds = min(args.reference_seconds, args.seconds)
    mel_diff = mel_difference(model, prompt, args.compare_seconds)

    ours_first, ours_last = edges(ours)
    ref_first, ref_last = edges(reference)
    figures = {
        "first_packet_s": ours[0],
        "rtf": sum(ours) / audio_seconds,
        "per_chunk_first_s": ours_first,
        "per_chunk_last_s": ours_last,
        "per_chunk_last_over_first": ours_last / ours_first,
        "reference_first_packet_s": reference[0],
        "reference_rtf": sum(reference) / ref_seconds,
        "reference_per_chunk_first_s": ref_first,
        "reference_per_chunk_last_s": ref_last,
        "reference_per_chunk_last_over_first": ref_last / ref_first,
        "streaming_vs_offline_mel_max_abs_diff": mel_diff,
    }
    targets = {
        "per_chunk_last_over_first": "<= 1.2",
        "streaming_vs_offline_mel_max_abs_diff": "<= 1e-4",
        "rtf": "< 1",
    }
    device = f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    print(
        f"token2wav streaming, preset {args.preset}, {args.chunk}-token chunks, {args.timesteps} Euler steps ({device})"
    )
    print(f"{'':34}{'ours (bounded)':>18}{'reference-style':>18}")
    print(f"{'response length (s)':34}{audio_seconds:>18.1f}{ref_seconds:>18.1f}")
    rows = [
        ("first packet (s)", "first_packet_s", "reference_first_packet_s"),
        ("RTF", "rtf", "reference_rtf"),
        ("per chunk, first full chunks (s)", "per_chunk_first_s", "reference_per_chunk_first_s"),
        ("per chunk, last full chunks (s)", "per_chunk_last_s", "reference_per_chunk_last_s"),
        ("last / first", "per_chunk_last_over_first", "reference_per_chunk_last_over_first"),
    ]
    for label, mine, theirs in rows:
        print(f"{label:34}{figures[mine]:>18.3f}{figures[theirs]:>18.3f}")
    print(
        f"streaming vs offline mel, same chunk mask, {args.compare_seconds:g} s: max |diff| = {mel_diff:.2e}"
    )
    if args.json:
        payload = {
            "figures": figures,
            "targets": targets,
            "device": device,
            "args": vars(args),
            "per_chunk_s": {"ours": ours, "reference_style": reference},
        }
        with open(args.json, "w") as handle:
            json.dump(payload, handle, indent=2)


if __name__ == "__main__":
    main()
