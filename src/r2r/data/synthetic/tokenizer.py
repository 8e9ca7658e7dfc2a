"""Train the tiny backbones' tokenizer: a byte-level BPE on the synthetic corpus.

The result ships as `r2r/models/tiny_tokenizer.json` (loaded by r2r.models.tiny), so the
model layer needs neither this corpus nor a second of training per process. Regenerate it
after changing the generator's words or the prompt templates:

    python -m r2r.data.synthetic.tokenizer           # rewrite the shipped file
    python -m r2r.data.synthetic.tokenizer --check   # exit 1 if the shipped file is stale

tests/data/test_synthetic_tokenizer.py retrains and compares, so the file cannot drift.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from r2r.data.synthetic import tokenizer_training_text
from r2r.files import write_text_atomic
from r2r.models.templates import TEMPLATES
from r2r.models.tiny import ANSWER_WORDS, SPECIAL_TOKENS, TOKENIZER_FILE

__all__ = ["QWEN_SPLIT", "TINY_VOCAB_SIZE", "main", "train_tiny_tokenizer", "training_text"]

TINY_VOCAB_SIZE = 3000
# Qwen2/3's pre-tokenizer split: keeps e.g. "?\n" in one pre-token, as the real models do,
# so tests meet tokens that straddle a field boundary.
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def training_text() -> list[str]:
    """The synthetic corpus's vocabulary, the template strings and the answer words."""
    texts = list(tokenizer_training_text())
    for t in TEMPLATES.values():
        texts += [t.prefix, t.body, t.suffix, t.instruction]
    # Standalone answer words, often enough that BPE merges each into one token (checked).
    texts += [" \n".join(ANSWER_WORDS)] * 200
    return texts


def train_tiny_tokenizer() -> str:
    """The trained tokenizer as `tokenizers` JSON (~1 s); deterministic, byte for byte."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    # trim_offsets=False: a "Ġword" token's offsets include its space, as in Qwen's tokenizer.
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(training_text(), trainer=trainer)
    for word in ANSWER_WORDS:
        if len(tok.encode(word, add_special_tokens=False).ids) != 1:
            raise RuntimeError(f"tiny tokenizer: {word!r} is not a single token after training")
    return tok.to_str()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Retrain the tiny backbones' tokenizer and write it where r2r.models ships it."
    )
    parser.add_argument(
        "--check", action="store_true", help="compare with the shipped file; write nothing"
    )
    args = parser.parse_args(argv)
    trained = train_tiny_tokenizer()
    shipped = TOKENIZER_FILE.read_text(encoding="utf-8") if TOKENIZER_FILE.is_file() else None
    if shipped == trained:
        print(f"{TOKENIZER_FILE} is up to date")
        return 0
    if args.check:
        print(f"{TOKENIZER_FILE} is stale: run python -m r2r.data.synthetic.tokenizer")
        return 1
    write_text_atomic(TOKENIZER_FILE, trained)
    print(f"wrote {TOKENIZER_FILE} ({len(trained.encode())} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
