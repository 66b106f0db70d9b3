"""Voice-decoder intelligibility from speech tokens, no vocoder needed.

A MinMo stage-2/3 checkpoint reads each test text aloud (``MinMo.respond(texts, verbatim=True)``: the LLM
is teacher forced on the text, so only the output projector and voice token LM are judged; speech tokens
sampled as CosyVoice2 does, seeded), or a voice token LM trained alone reads it through its own TTS decoder
(``--voice-lm``: CosyVoice2's unistream ``generate``; with ``--bistream``, MinMo's streaming route at the LM's
mix ratio, ``CosyVoice2LM.step``, fed the LM's own text embeddings: the route with a perfect output
projector). A speech tokenizer trained with a CTC head on its codes
(``recipes/components/speech_tokenizer.yaml``) then reads the tokens back to text, and the WER against the
text is reported next to the same tokenizer's WER on the reference tokens (the ceiling: what the tokens of
real speech give). Useful while no trained token2wav exists for the tiny models, and cheaper
than a vocoder + ASR round trip at any size.

    python -m minmo_lightning.evaluation.speech_tokens --ckpt runs/tiny/stage2b/checkpoints/last.ckpt \\
        --tokenizer runs/speech_tokenizer/checkpoints/last.ckpt --data data/builtin-tokens/tts --out report.json
    python -m minmo_lightning.evaluation.speech_tokens --voice-lm runs/voice_token_lm_tts/checkpoints/last.ckpt \
        --greedy --tokenizer runs/speech_tokenizer/checkpoints/last.ckpt --data data/builtin-tokens/tts --limit 40
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from minmo_lightning.evaluation.asr import score_asr
from minmo_lightning.evaluation.normalizers import get_scheme

from minmo_lightning.contracts import TokenBatch


def _rows(batch: TokenBatch) -> list[list[int]]:
    return [batch.tokens[i, : batch.lengths[i]].tolist() for i in range(batch.tokens.shape[0])]


def spoken_by_minmo(model, texts: list[str], generator: torch.Generator) -> list[list[int]]:
    """MinMo's route: the LLM teacher forced on each text, the voice decoder streaming its tokens."""
    speech: list[list[int]] = [[] for _ in texts]
    for chunk in model.respond(texts=texts, verbatim=True, synthesize=False, generator=generator):
        for i, row in enumerate(_rows(chunk.speech)):
            speech[i] += row
    return speech


def spoken_by_voice_lm(model, texts: list[str], generator: torch.Generator) -> list[list[int]]:
    """A voice token LM trained alone: CosyVoice2's TTS decoder on the text tokens."""
    from minmo_lightning.components.voice_token_lm.generation import generate

    from minmo_lightning.contracts import VoiceLMStreamOptions

    return _rows(generate(model, model.tokenize(texts), options=VoiceLMStreamOptions(generator=generator)))


def spoken_by_voice_lm_bistream(model, texts: list[str], generator: torch.Generator) -> list[list[int]]:
    """A voice token LM trained alone, on MinMo's route (``CosyVoice2LM.step``): its own text embeddings,
    ``ratio.text`` per step, where MinMo brings projected LLM states; ``ratio.speech`` tokens out per step."""
    from minmo_lightning.contracts import SemanticChunk, SequenceBatch, VoiceLMStreamOptions

    text = model.tokenize(texts)
    embeds = model.built_backbone().embed_text(text.tokens)
    per_step, lengths = model.ratio.text, text.lengths.to(embeds.device)
    state = model.init_state(len(texts), VoiceLMStreamOptions(generator=generator))
    speech: list[list[int]] = [[] for _ in texts]
    start, cap = 0, int(lengths.max()) // per_step + 1 + _speech_steps_after_text(model, lengths)
    for _ in range(cap):
        if bool(state.finished.all()):
            return speech
        count = (lengths - start).clamp(0, per_step)
        chunk = embeds[:, start : start + per_step]
        if chunk.shape[1] < per_step:
            chunk = torch.nn.functional.pad(chunk, (0, 0, 0, per_step - chunk.shape[1]))
        state.end_input(count < per_step)  # a short chunk brings the last of the row's text
        tokens = model.step(SemanticChunk(SequenceBatch(chunk, count)), state)
        for i, row in enumerate(_rows(tokens)):
            speech[i] += row
        start += per_step
    raise RuntimeError(f"speech did not end within {cap} voice-decoder steps")


def _speech_steps_after_text(model, text_lengths: torch.Tensor) -> int:
    """Steps that speech may need once the text is read (``max_token_text_ratio`` bounds it)."""
    from minmo_lightning.components.voice_token_lm.generation import ratio_cap

    return int(ratio_cap(model, text_lengths).max()) // model.ratio.speech + 2


@torch.no_grad()
def evaluate(model, tokenizer, loader, limit: int | None, seed: int, speak=spoken_by_minmo) -> dict:
    generator = torch.Generator(device=model.device).manual_seed(seed)
    ids, texts, generated, reference, lengths = [], [], [], [], []
    started = time.perf_counter()
    for batch in loader:
        speech = speak(model, list(batch["text"]), generator)
        generated += tokenizer.transcribe_tokens(TokenBatch.from_list(speech))
        reference += tokenizer.transcribe_tokens(batch["speech_tokens"])
        ids += batch["ids"]
        texts += batch["text"]
        lengths += [(len(s), int(n)) for s, n in zip(speech, batch["speech_tokens"].lengths)]
        if limit is not None and len(ids) >= limit:
            break
    scheme = get_scheme("whisper_english", "word")
    ours, ceiling = score_asr(texts, generated, ids, scheme), score_asr(texts, reference, ids, scheme)
    ratio = sum(g for g, _ in lengths) / max(sum(r for _, r in lengths), 1)
    return {
        "utterances": len(ids),
        "wer_generated_tokens": ours.rate,
        "wer_reference_tokens": ceiling.rate,
        "generated_over_reference_length": ratio,
        "seconds": time.perf_counter() - started,
        "examples": [
            {"id": i, "text": t, "from_generated": g, "from_reference": r}
            for i, t, g, r in list(zip(ids, texts, generated, reference))[:10]
        ],
    }


def main(argv: list[str] | None = None) -> int:
    from minmo_lightning.components.speech_tokenizer.s3tokenizer import S3TokenizerV2
    from minmo_lightning.components.voice_token_lm.cosyvoice2_lm import CosyVoice2LM
    from minmo_lightning.components.voice_token_lm.sampling import SpeechSamplingConfig
    from minmo_lightning.datamodules.tasks import TTSDataModule

    from minmo_lightning.model import MinMo

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    speaker = parser.add_mutually_exclusive_group(required=True)
    speaker.add_argument("--ckpt", help="MinMo checkpoint with an output projector and voice token LM")
    speaker.add_argument("--voice-lm", help="a voice token LM trained alone (CosyVoice2LM checkpoint)")
    parser.add_argument(
        "--bistream",
        action="store_true",
        help="with --voice-lm: read the text 5 tokens per step as MinMo's route does (default: all first)",
    )
    parser.add_argument(
        "--greedy",
        action="store_true",
        help="decode speech tokens greedily (default: the checkpoint's sampling)",
    )
    parser.add_argument(
        "--tokenizer", required=True, help="S3TokenizerV2 checkpoint trained with its CTC head"
    )
    parser.add_argument(
        "--data", required=True, help="TTS dataset with speech-token columns (`minmo prepare`)"
    )
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=None, help="stop after about this many utterances")
    parser.add_argument("--seconds-per-batch", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.bistream and not args.voice_lm:
        parser.error(
            "--bistream reads a voice LM trained alone (--voice-lm); MinMo's route is bistream already"
        )

    if args.ckpt:
        model, speak = MinMo.load_from_checkpoint(args.ckpt, map_location="cpu").eval(), spoken_by_minmo
        voice_lm = model.voice_token_lm
    else:
        model = voice_lm = CosyVoice2LM.load_from_checkpoint(args.voice_lm, map_location="cpu").eval()
        speak = spoken_by_voice_lm_bistream if args.bistream else spoken_by_voice_lm
    if args.greedy:
        voice_lm.sampling = SpeechSamplingConfig(greedy=True)
    tokenizer = S3TokenizerV2.load_from_checkpoint(args.tokenizer, map_location="cpu").eval()
    data = TTSDataModule(
        args.data,
        train_split=None,
        val_split=None,
        test_split=args.split,
        max_seconds_per_batch=args.seconds_per_batch,
        shuffle=False,
    )
    data.setup("test")
    result = evaluate(model, tokenizer, data.test_dataloader(), args.limit, args.seed, speak)
    for key, value in result.items():
        if key != "examples":
            print(f"{key:34s} {value}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
