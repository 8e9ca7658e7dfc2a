"""Tiny random-weight decoders built in-process: the offline backbone of tests and debug runs.

The tokenizer (tiny_tokenizer.json) is a byte-level BPE trained on the synthetic corpus plus
the template strings, with ChatML special tokens, so the real reranker templates tokenize
sensibly and the answer words are single tokens. Same seed, same weights; one shipped vocab.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from tokenizers import Tokenizer
from transformers import (
    MistralConfig,
    MistralForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen3Config,
    Qwen3ForCausalLM,
)

TinyArch = Literal["qwen", "mistral"]

PAD, BOS_OF_TURN, EOS_OF_TURN = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (PAD, BOS_OF_TURN, EOS_OF_TURN, "<think>", "</think>")
ANSWER_WORDS = ("yes", "no", "Yes", "No")
# Trained by `python -m r2r.data.synthetic.tokenizer` (tests/data/test_synthetic_tokenizer.py
# checks it is current); shipped so that building a tiny model trains nothing.
TOKENIZER_FILE = Path(__file__).with_name("tiny_tokenizer.json")


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A fresh tiny tokenizer read from the shipped file; right padding."""
    if not TOKENIZER_FILE.is_file():
        raise FileNotFoundError(
            f"{TOKENIZER_FILE} is missing (an install without package data?); "
            "regenerate it with `python -m r2r.data.synthetic.tokenizer`"
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_file(str(TOKENIZER_FILE)),
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
