from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from r2r.files import MARKER
from r2r.models.backbones import Backbone, freeze
from r2r.models.experts import ADAPTER_FILES, ExpertBank, add_lora, load_adapter, save_adapter
from r2r.models.scorer import RerankerScorer, yes_no_ids
from r2r.models.templates import QWEN3_RERANKER, encode_pairs
from r2r.models.tiny import build_tiny
from r2r.types import CandidateList, Passage, Query

# The paper's LoRA (conf/config.yaml `lora`): rank 32, alpha 64 on q/k/v/o.
PAPER = {"r": 32, "alpha": 64}
REST = {"dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}

SIZES = dict(hidden_size=64, num_heads=4, num_kv_heads=2)


def fresh_base(arch: str = "qwen"):
    model, tok = build_tiny(arch, seed=0, **SIZES)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, tok


def scores(model, tok, pairs) -> torch.Tensor:
    yes_id, no_id = yes_no_ids(tok, QWEN3_RERANKER)
    enc = encode_pairs(tok, QWEN3_RERANKER, *pairs, max_length=128, max_query_length=16)
    with torch.no_grad():
        return RerankerScorer(
            model, yes_id=yes_id, no_id=no_id, share_prefix=True, chunk_tokens=None
        )(**enc)


def perturb(model: PeftModel, seed: int, adapter_name: str = "default") -> None:
    """Random LoRA B weights (peft starts them at 0) so the adapter changes the scores."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if f"lora_B.{adapter_name}." in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)


def test_only_lora_params_train_and_they_are_few():
    base, _ = fresh_base()
    n_base = sum(p.numel() for p in base.parameters())
    model = add_lora(base, r=8, alpha=16, **REST)
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    # 2 layers x (q, k, v, o) x (A, B)
    assert len(trainable) == 16
    # r=8 on 64-wide projections: q,o 2*8*64 each; k,v 8*64 + 32*8 each -> 3584 per layer.
    assert sum(trainable.values()) == 2 * 3584
    assert sum(trainable.values()) / n_base < 0.05
    config = model.peft_config["default"]
    assert (config.r, config.lora_alpha, set(config.target_modules)) == (
        8, 16, {"q_proj", "k_proj", "v_proj", "o_proj"},
    )  # fmt: skip


def test_fresh_lora_leaves_scores_unchanged_and_is_active_in_the_scorer(pairs):
    base, tok = fresh_base()
    before = scores(base, tok, pairs)
    model = add_lora(base, **PAPER, **REST)
    torch.testing.assert_close(scores(model, tok, pairs), before, atol=1e-6, rtol=0)
    perturb(model, seed=0)
    after = scores(model, tok, pairs)
    assert (after - before).abs().min() > 1e-3
    # Through the adapter, the scorer still equals the full LM forward (margin at last token).
    yes_id, no_id = yes_no_ids(tok, QWEN3_RERANKER)
    enc = encode_pairs(
        tok, QWEN3_RERANKER, pairs[0][:1], pairs[1][:1], max_length=128, max_query_length=16
    )
    with torch.no_grad():
        logits = model(**enc).logits[0, -1]
    torch.testing.assert_close(after[0], logits[yes_id] - logits[no_id], atol=1e-5, rtol=0)


def test_save_load_round_trip_is_adapter_only_and_exact(tmp_path, pairs):
    base, tok = fresh_base()
    model = add_lora(base, **PAPER, **REST)
    perturb(model, seed=1)
    expected = scores(model, tok, pairs)
    folder = save_adapter(model, tmp_path / "experts" / "legal")

    assert sorted(p.name for p in folder.iterdir()) == sorted([MARKER, *ADAPTER_FILES])
    assert [p.name for p in (tmp_path / "experts").iterdir()] == ["legal"]  # no temp dirs left
    tensors = load_file(folder / "adapter_model.safetensors")
    assert tensors and all("lora_A" in k or "lora_B" in k for k in tensors)
    n_saved = sum(t.numel() for t in tensors.values())
    assert n_saved == sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert n_saved < sum(p.numel() for p in base.parameters() if p.dtype.is_floating_point) / 2
    config = json.loads((folder / "adapter_config.json").read_text())
    assert (config["peft_type"], config["task_type"], config["r"]) == ("LORA", "CAUSAL_LM", 32)
    # peft holds target_modules as a set (hash order varies by process); r2r writes it sorted.
    assert config["target_modules"] == ["k_proj", "o_proj", "q_proj", "v_proj"]

    fresh, _ = fresh_base()
    loaded = load_adapter(fresh, folder)
    torch.testing.assert_close(scores(loaded, tok, pairs), expected, atol=1e-6, rtol=0)
    assert not any(p.requires_grad for p in loaded.parameters())
    # Loaded and saved again: the same bytes (a reused expert is a byte-identical copy).
    again = save_adapter(loaded, tmp_path / "again")
    for name in ADAPTER_FILES:
        assert (again / name).read_bytes() == (folder / name).read_bytes(), name

    # Plain peft, no r2r involved, reads the same folder.
    plain = PeftModel.from_pretrained(fresh_base()[0], folder)
    torch.testing.assert_close(scores(plain, tok, pairs), expected, atol=1e-6, rtol=0)


def test_load_trainable_and_overwrite(tmp_path, pairs):
    base, tok = fresh_base("mistral")
    model = add_lora(base, r=4, alpha=8, **REST)
    perturb(model, seed=2)
    folder = save_adapter(model, tmp_path / "finance")
    perturb(model, seed=3)
    save_adapter(model, folder)  # overwrite in place
    expected = scores(model, tok, pairs)
    loaded = load_adapter(fresh_base("mistral")[0], folder, trainable=True)
    trainable = [n for n, p in loaded.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    torch.testing.assert_close(scores(loaded, tok, pairs), expected, atol=1e-6, rtol=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["finance"]


def test_several_experts_on_one_base(tmp_path, pairs):
    base, tok = fresh_base()
    model = add_lora(base, r=4, alpha=8, **REST, adapter_name="legal")
    add_lora(model, r=4, alpha=8, **REST, adapter_name="medical")
    perturb(model, seed=4, adapter_name="legal")
    perturb(model, seed=5, adapter_name="medical")
    expected = {}
    for name in ("legal", "medical"):
        model.set_adapter(name)
        expected[name] = scores(model, tok, pairs)
        save_adapter(model, tmp_path / name, adapter_name=name)
    assert not torch.allclose(expected["legal"], expected["medical"])

    routed = load_adapter(fresh_base()[0], tmp_path / "legal", adapter_name="legal")
    routed = load_adapter(routed, tmp_path / "medical", adapter_name="medical")
    assert routed.active_adapter == "medical"
    assert not any(p.requires_grad for p in routed.parameters())
    torch.testing.assert_close(scores(routed, tok, pairs), expected["medical"], atol=1e-6, rtol=0)
    routed.set_adapter("legal")
    torch.testing.assert_close(scores(routed, tok, pairs), expected["legal"], atol=1e-6, rtol=0)


def test_bad_folders_and_names_raise(tmp_path):
    base, _ = fresh_base()
    with pytest.raises(FileNotFoundError, match="missing"):
        load_adapter(base, tmp_path)
    model = add_lora(base, r=4, alpha=8, **REST)
    with pytest.raises(ValueError, match="no adapter 'legal'"):
        save_adapter(model, tmp_path / "x", adapter_name="legal")


def test_the_expert_bank_scores_each_adapter_as_plain_peft_does(tmp_path, pairs):
    """One bank, two adapters and the bare backbone: each scored as the adapter alone on
    its own base would be, lists scored as their flat pairs; closing leaves the base bare."""
    base, tok = fresh_base()
    bare = scores(base, tok, pairs)
    model = add_lora(base, r=4, alpha=8, **REST, adapter_name="legal")
    add_lora(model, r=4, alpha=8, **REST, adapter_name="medical")
    perturb(model, seed=4, adapter_name="legal")
    perturb(model, seed=5, adapter_name="medical")
    for name in ("legal", "medical"):
        save_adapter(model, tmp_path / name, adapter_name=name)
    alone = {
        name: scores(load_adapter(fresh_base()[0], tmp_path / name), tok, pairs)
        for name in ("legal", "medical")
    }
    backbone = Backbone(freeze(fresh_base()[0]), tok, QWEN3_RERANKER, name="tiny")
    inputs = {"max_length": 128, "max_query_length": 16, "instruction": None}
    bank = ExpertBank(
        backbone,
        {n: tmp_path / n for n in ("legal", "medical")},
        inputs=inputs,
        batch_size=2,
        scorer={"share_prefix": True, "chunk_tokens": None},
    )
    assert bank.names == ["legal", "medical"]
    for name in ("legal", "medical"):
        got = torch.tensor(bank.score(name, *pairs))
        torch.testing.assert_close(got, alone[name], atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.tensor(bank.score(None, *pairs)), bare, atol=1e-5, rtol=0)
    queries, documents = pairs
    lists = [
        CandidateList(
            "legal",
            Query("q0", queries[0]),
            tuple(Passage(f"d{i}", d) for i, d in enumerate(documents)),
            (3.0, 2.0, 1.0),
        ),
        CandidateList("legal", Query("q1", queries[1]), (Passage("d1", documents[1]),), (1.0,)),
    ]
    scored = bank.score_lists("legal", lists)
    flat = bank.score("legal", [queries[0]] * 3 + [queries[1]], [*documents, documents[1]])
    assert [s.scores for s in scored] == [tuple(flat[:3]), tuple(flat[3:])]
    assert [s.candidates for s in scored] == lists
    with pytest.raises(KeyError, match="no expert 'tax'"):
        bank.score("tax", *pairs)
    bank.close()
    assert not any("lora_" in n for n, _ in backbone.model.named_parameters())
    torch.testing.assert_close(scores(backbone.model, tok, pairs), bare, atol=1e-6, rtol=0)
