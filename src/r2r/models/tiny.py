"""Tiny random-weight decoders built in-process: the offline backbone of tests and debug runs.

The tokenizer is a byte-level BPE trained on the synthetic corpus plus the template
strings, with ChatML special tokens, so the real reranker templates tokenize sensibly
and the answer words are single tokens. Same seed, same weights; same corpus, same vocab.
"""

from __future__ import annotations

import functools
from typing import Literal

import torch
from transformers import (
    MistralConfig,
    MistralForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from r2r.models.templates import TEMPLATES

TinyArch = Literal["qwen", "mistral"]

PAD, BOS_OF_TURN, EOS_OF_TURN = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (PAD, BOS_OF_TURN, EOS_OF_TURN, "<think>", "</think>")
ANSWER_WORDS = ("yes", "no", "Yes", "No")
TINY_VOCAB_SIZE = 3000
# Qwen2/3's pre-tokenizer split: keeps e.g. "?\n" in one pre-token, as the real models do,
# so tests meet tokens that straddle a field boundary.
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _training_text() -> list[str]:
    # Imported here: the synthetic corpus module is only needed when a tokenizer is trained.
    from r2r.data.synthetic import tokenizer_training_text

    texts = list(tokenizer_training_text())
    for t in TEMPLATES.values():
        texts += [t.prefix, t.body, t.suffix, t.instruction]
    # Standalone answer words, often enough that BPE merges each into one token (checked).
    texts += [" \n".join(ANSWER_WORDS)] * 200
    return texts


@functools.lru_cache(maxsize=1)
def _tokenizer_json() -> str:
    """Train the byte-level BPE once per process (~1 s); a JSON string, so callers get fresh copies."""
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
    tok.train_from_iterator(_training_text(), trainer=trainer)
    for word in ANSWER_WORDS:
        if len(tok.encode(word, add_special_tokens=False).ids) != 1:
            raise RuntimeError(f"tiny tokenizer: {word!r} is not a single token after training")
    return tok.to_str()


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A fresh wrapper around the (cached) trained tiny tokenizer; right padding."""
    from tokenizers import Tokenizer

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json()),
        pad_token=PAD,
        eos_token=EOS_OF_TURN,
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
        padding_side="right",
    )


def build_tiny(
    arch: TinyArch,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    max_position_embeddings: int = 1024,
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """A random-weight Qwen3 or Mistral causal LM and the tiny tokenizer, in eval mode.

    Qwen ties input and output embeddings (as Qwen3-0.6B does), Mistral does not, so
    tests cover both LM-head layouts. Weights depend only on the arguments.
    """
    tokenizer = tiny_tokenizer()
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        head_dim=hidden_size // num_heads,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        # Wider than the usual 0.02 so random yes/no margins differ visibly between pairs.
        initializer_range=0.1,
    )
    if arch == "qwen":
        config, cls = Qwen3Config(**common, tie_word_embeddings=True), Qwen3ForCausalLM
    elif arch == "mistral":
        config = MistralConfig(**common, tie_word_embeddings=False, sliding_window=None)
        cls = MistralForCausalLM
    else:
        raise ValueError(f"build_tiny: arch={arch!r}; expected 'qwen' or 'mistral'")
    # fork_rng: seeding must not disturb the caller's global RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
    model.eval()
    return model, tokenizer
