"""Bytes autograd keeps for backward per token per decoder layer, for the real backbones'
shapes, with the experts' LoRA (r=32 on q/k/v/o) under bf16 autocast (as bf16-mixed).

    python benchmarks/activation_memory.py                 # all three, 1024 tokens
    python benchmarks/activation_memory.py mistral-7b --length 256

Random weights, 1 and 2 decoder layers (the difference is one layer), on the CPU: the count
is of the tensors saved for backward (saved-tensor hooks, parameters excluded), not of an
allocator's peak. The README's memory arithmetic (section "Memory: 7B backbones on one GPU")
rests on these figures.
"""

from __future__ import annotations

import argparse

import torch
from transformers import (
    GemmaConfig,
    GemmaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from r2r.models.experts import add_lora

# Decoder-layer shapes of Mistral-7B-v0.3, Qwen3-Reranker-0.6B and gemma-2b
# (bge-reranker-v2-gemma); the vocabulary is cut (the scorer reads two LM-head rows only).
SHAPES = {
    "mistral-7b": (
        MistralConfig,
        MistralForCausalLM,
        {"hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
         "num_key_value_heads": 8},
    ),
    "qwen3-0.6b": (
        Qwen3Config,
        Qwen3ForCausalLM,
        {"hidden_size": 1024, "intermediate_size": 3072, "num_attention_heads": 16,
         "num_key_value_heads": 8, "head_dim": 128},
    ),
    "gemma-2b": (
        GemmaConfig,
        GemmaForCausalLM,
        {"hidden_size": 2048, "intermediate_size": 16384, "num_attention_heads": 8,
         "num_key_value_heads": 1, "head_dim": 256},
    ),
}  # fmt: skip


def saved_bytes(shape: str, layers: int, length: int) -> int:
    """Bytes saved for backward by one forward of one `length`-token sequence."""
    config_class, model_class, sizes = SHAPES[shape]
    torch.manual_seed(0)
    config = config_class(
        num_hidden_layers=layers, vocab_size=1024, max_position_embeddings=4096, **sizes
    )
    base = model_class(config).to(torch.bfloat16).requires_grad_(False)
    model = add_lora(
        base, r=32, alpha=64, dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]
    ).train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    ids = torch.randint(0, 1024, (1, length))
    with (
        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
        torch.autocast("cpu", dtype=torch.bfloat16),
    ):
        model(input_ids=ids, attention_mask=torch.ones_like(ids), logits_to_keep=1)
    return sum(saved.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shapes", nargs="*", help=f"of {list(SHAPES)} (default: all)")
    parser.add_argument("--length", type=int, default=1024)
    args = parser.parse_args()
    if unknown := set(args.shapes) - set(SHAPES):
        parser.error(f"unknown shapes {sorted(unknown)}; choose from {list(SHAPES)}")
    for shape in args.shapes or SHAPES:
        per_layer = saved_bytes(shape, 2, args.length) - saved_bytes(shape, 1, args.length)
        hidden = SHAPES[shape][2]["hidden_size"]
        print(
            f"{shape}: {per_layer / args.length / 1e3:.1f} kB per token per layer "
            f"({per_layer / args.length / hidden:.1f} x hidden bytes); "
            f"{per_layer / 1e6:.0f} MB per {args.length}-token sequence per layer"
        )


if __name__ == "__main__":
    main()
