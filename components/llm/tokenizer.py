"""The tiny test/demo tokenizer: a byte-level BPE with Qwen2's ChatML special tokens and template.

Real recipes use the tokenizer files in the Qwen2.5 folder. The tiny one is built by this module from a
fixed English word list (deterministic, under a second) and shipped in ``assets/tiny_tokenizer``.
"""

from __future__ import annotations

from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# The ChatML template Qwen2.5 uses, without tool calls (system prompt optional).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_WORDS = """
a about after again all also am an and answer any are as ask at audio back be because been before begin being
below between blue both but by call can change close cold come could day did do does done down during each east
eight eighteen eighty eleven emotion end every fast fifteen fifty find first five for forty four fourteen from
gain get give go good green happy has have he hello help her here high him his hold home hour how hundred i if
in into is it its just keep know language last late left light like listen little long look low make many me
minute more morning most move much music my name near neutral new next night nine nineteen ninety no north not
now number of off on once one only open or other our out over pause play please question quiet read red repeat
right sad say second see set seven seventeen seventy she should show sixteen sixty six slow some speak speech start
stop sure system take tell ten than thank that the their them then there these they thing thirteen thirty this
three time to today tomorrow too transcribe translate turn twelve twenty two under up us user use very voice wait
want warm was water way we weather well west what when where which while who why will with word work would yes
yesterday you your zero angry calm assistant transcription translation detect events spoken
"""


def training_text() -> list[str]:
    words = _WORDS.split()
    lines = [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)]
    lines += [w.capitalize() + "." for w in words] + [f"{n}, {n * 7}." for n in range(200)]
    return lines + ["What is the emotion of the speaker?", "Transcribe the speech.", "Hello? Yes! No."]


def build_tiny_tokenizer(out_dir: str | Path, vocab_size: int = 512) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(training_text(), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    fast.chat_template = CHATML_TEMPLATE
    out_dir = Path(out_dir)
    fast.save_pretrained(str(out_dir))
    return out_dir


if __name__ == "__main__":
    import sys

    print(
        build_tiny_tokenizer(
            sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "assets/tiny_tokenizer"
        )
    )
