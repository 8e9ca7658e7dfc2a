"""Model layer: backbones, prompt templates, the yes/no scorer and LoRA experts."""

from __future__ import annotations

from r2r.models.backbones import (
    Backbone,
    BackboneUnavailableError,
    load_backbone,
    load_gguf_smollm2,
    load_hub,
    load_tiny,
)
from r2r.models.experts import add_lora, load_adapter, save_adapter
from r2r.models.scorer import RerankerScorer, yes_no_ids
from r2r.models.templates import (
    BGE_RERANKER_V2_GEMMA,
    CHATML_RERANKER,
    QWEN3_RERANKER,
    PromptTemplate,
    encode_pairs,
    named_template,
    render,
)
from r2r.models.tiny import build_tiny

__all__ = [
    "BGE_RERANKER_V2_GEMMA",
    "CHATML_RERANKER",
    "QWEN3_RERANKER",
    "Backbone",
    "BackboneUnavailableError",
    "PromptTemplate",
    "RerankerScorer",
    "add_lora",
    "build_tiny",
    "encode_pairs",
    "load_adapter",
    "load_backbone",
    "load_gguf_smollm2",
    "load_hub",
    "load_tiny",
    "named_template",
    "render",
    "save_adapter",
    "yes_no_ids",
]
