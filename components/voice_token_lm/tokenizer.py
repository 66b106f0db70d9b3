"""CosyVoice2's text tokenizer: the Qwen tokenizer of the model folder plus CosyVoice2's special tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Special tokens CosyVoice2's tokenizer adds to the Qwen tokenizer, in its order (ids follow the base vocab).
COSYVOICE2_SPECIAL_TOKENS = [
    "<|im_start|>", "<|im_end|>", "<|endofprompt|>", "[breath]", "<strong>", "</strong>", "[noise]",
    "[laughter]", "[cough]", "[clucking]", "[accent]", "[quick_breath]", "<laughter>", "</laughter>",
    "[hissing]", "[sigh]", "[vocalized-noise]", "[lipsmack]", "[mn]",
]  # fmt: skip
#: ends an instruction before the text to speak (CosyVoice2's instruct mode)
END_OF_PROMPT = "<|endofprompt|>"
#: the tokenizer's folder inside the official CosyVoice2-0.5B folder
TOKENIZER_FOLDER = "CosyVoice-BlankEN"


def load_cosyvoice2_tokenizer(folder: str | Path, vocab_size: int) -> Any:
    """The Qwen tokenizer in ``folder`` plus CosyVoice2's special tokens (as ``CosyVoice2Tokenizer`` does).

    ``builtin:tiny-tokenizer`` names the small byte-level BPE shipped with the LLM component (tiny recipes).
    """
    from minmo_lightning.components.llm.hf_causal_lm import resolve_tokenizer_path
    from transformers import AutoTokenizer

    folder = resolve_tokenizer_path(str(folder))
    if not folder.is_dir() or not any((folder / n).is_file() for n in ("tokenizer.json", "vocab.json")):
        raise FileNotFoundError(
            f"no tokenizer in {folder}: expected tokenizer.json (or vocab.json + merges.txt); for the official model "
            f"this is the {TOKENIZER_FOLDER}/ folder inside CosyVoice2-0.5B"
        )
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    tokenizer.add_special_tokens(
        {
            "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
            "additional_special_tokens": COSYVOICE2_SPECIAL_TOKENS,
        }
    )
    if len(tokenizer) > vocab_size:
        raise ValueError(
            f"the tokenizer in {folder} has {len(tokenizer)} ids (with CosyVoice2's special tokens) but the text "
            f"embedding has only {vocab_size} rows; use the tokenizer that belongs to this model"
        )
    return tokenizer
