"""Where spoken output loses its words: each link of the speech chain scored alone by the same ASR judge.

On a token-prepared TTS split (``minmo prepare``), per utterance:

- ``real``: the recorded speech, judged (the judge's own floor);
- ``vocoder``: its log-mel inverted by Griffin-Lim, judged (what the vocoder loses);
- ``tokens``: the reference speech tokens read by the speech tokenizer's CTC head (what the tokens carry);
- ``flow@T``: the reference tokens through the flow at sampling temperature ``T`` and Griffin-Lim, judged
  (the ``tts`` evaluation's ceiling, per temperature).

    python -m minmo_lightning.evaluation.speech_chain --flow runs/token2wav_flow/checkpoints/last.ckpt \\
        --tokenizer runs/speech_tokenizer/checkpoints/last.ckpt --data data/builtin-tokens/tts \\
        --limit 40 --temperatures 1.0 0.2 --out chain.json

The judge is a ``SenseVoiceEncoder`` checkpoint with its CTC head (default: the tiny encoder ``minmo demo``
trains). WER with the ``asr`` task's Whisper English normaliser.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from minmo_lightning.evaluation.asr import score_asr
from minmo_lightning.evaluation.asr_judge import SAMPLE_RATE, default_checkpoint, load_judge, transcribe
from minmo_lightning.evaluation.normalizers import get_scheme

from minmo_lightning.contracts import AudioBatch, TokenBatch


def _flow_token2wav(checkpoint: str):
    """The flow of a flow run (or of a MinMo stage checkpoint's token2wav) before Griffin-Lim."""
    from minmo_lightning.components.token2wav.flow import CosyVoice2Flow
    from minmo_lightning.components.token2wav.token2wav import CosyVoice2Token2Wav

    from minmo_lightning.checkpoints import read_checkpoint

    state = read_checkpoint(checkpoint, mmap=True)
    if "token2wav" in (state.get("hyper_parameters") or {}):
        from minmo_lightning.model import MinMo

        flow = MinMo.load_from_checkpoint(checkpoint, map_location="cpu").token2wav.flow
    else:
        flow = CosyVoice2Flow.load_from_checkpoint(checkpoint, map_location="cpu")
    token2wav = CosyVoice2Token2Wav(flow=dict(flow.hparams), vocoder="griffin_lim")
    token2wav.flow.load_state_dict(flow.state_dict())
    return token2wav.eval()


def ctc_listener(judge) -> Callable[[AudioBatch], str]:
    """One-row audio -> the judge's greedy CTC transcript (at the judge's 16 kHz)."""
    from minmo_lightning.datamodules.audio import resample

    def listen(audio: AudioBatch) -> str:
        wave = audio.waveform[0, : int(audio.lengths[0])].float().numpy()
        return transcribe(judge, resample(wave, audio.sample_rate, SAMPLE_RATE).astype(np.float32))["text"]

    return listen


@torch.no_grad()
def score_chain(rows, listen, token2wav, tokenizer=None, temperatures=(1.0,)) -> dict:
    """``rows``: dicts with ``text``, ``speech_tokens`` and ``audio`` (any stored audio value); ``listen``:
    one-row ``AudioBatch`` -> transcript; ``token2wav``: a flow with Griffin-Lim (its temperature is restored)."""
    from minmo_lightning.components.token2wav.flow_features import log_mel
    from minmo_lightning.datamodules.audio import decode_audio

    links = ["real", "vocoder"] + (["tokens"] if tokenizer is not None else [])
    links += [f"flow@{t:g}" for t in temperatures]
    heard: dict[str, list[str]] = {link: [] for link in links}
    texts = []
    decoder = token2wav.flow.decoder
    kept_temperature = decoder.temperature
    for row in rows:
        texts.append(row["text"])
        wave, rate = decode_audio(row["audio"])
        heard["real"].append(listen(AudioBatch.from_list([torch.from_numpy(wave)], rate)))
        at_24k, _ = decode_audio(row["audio"], target_rate=token2wav.sample_rate)
        mel, lengths = log_mel(AudioBatch.from_list([torch.from_numpy(at_24k)], token2wav.sample_rate))
        heard["vocoder"].append(listen(token2wav.vocode(mel.transpose(1, 2), lengths)))
        tokens = TokenBatch.from_list([row["speech_tokens"]])
        if tokenizer is not None:
            heard["tokens"].append(tokenizer.transcribe_tokens(tokens)[0])
        for temperature in temperatures:
            decoder.temperature = temperature
            heard[f"flow@{temperature:g}"].append(listen(token2wav(tokens)))
    decoder.temperature = kept_temperature
    ids = [str(i) for i in range(len(texts))]
    scheme = get_scheme("whisper_english", "word")
    return {
        "utterances": len(texts),
        "wer": {link: score_asr(texts, said, ids, scheme).rate for link, said in heard.items()},
        "examples": [
            {"text": texts[i], **{k: v[i] for k, v in heard.items()}} for i in range(min(5, len(texts)))
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m minmo_lightning.evaluation.speech_chain", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--flow", required=True, help="a flow run's checkpoint, or a MinMo stage checkpoint with token2wav"
    )
    parser.add_argument("--data", required=True, help="a token-prepared TTS dataset folder (minmo prepare)")
    parser.add_argument("--split", default="test")
    parser.add_argument(
        "--judge", help="SenseVoiceEncoder checkpoint with its CTC head (default: minmo demo's)"
    )
    parser.add_argument("--tokenizer", help="speech tokenizer checkpoint with a CTC head (the tokens link)")
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0])
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args(argv)

    from datasets import load_from_disk

    judge_path = args.judge or default_checkpoint()
    if judge_path is None:
        parser.error("no judge: pass --judge (a SenseVoiceEncoder checkpoint trained with CTC)")
    split = load_from_disk(args.data)[args.split]
    split = split.select(range(min(args.limit, len(split))))
    tokenizer = None
    if args.tokenizer:
        from minmo_lightning.components.speech_tokenizer.s3tokenizer import S3TokenizerV2

        tokenizer = S3TokenizerV2.load_from_checkpoint(args.tokenizer, map_location="cpu").eval()
    listen = ctc_listener(load_judge(judge_path))
    figures = score_chain(split, listen, _flow_token2wav(args.flow), tokenizer, args.temperatures)
    figures.update(judge=str(judge_path), flow=args.flow, data=args.data, split=args.split)
    print(json.dumps(figures["wer"], indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
