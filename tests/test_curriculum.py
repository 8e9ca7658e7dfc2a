"""EAG curriculum: stage 1 on the masked union, stage 2 experts start from stage 1."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from safetensors.torch import load_file

from r2r.models.backbones import load_tiny
from r2r.models.experts import add_lora, save_adapter, start_expert
from r2r.models.templates import QWEN3_RERANKER
from r2r.pipeline import run

LORA = {
    "r": 4,
    "alpha": 8,
    "dropout": 0.0,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
}


def lora_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def test_stage2_expert_starts_from_the_stage1_weights(tmp_path: Path) -> None:
    base = load_tiny("qwen", template=QWEN3_RERANKER, seed=0).model
    stage1 = add_lora(base, **LORA)
    with torch.no_grad():
        for name, p in stage1.named_parameters():
            if "lora_B" in name:
                p.normal_(generator=torch.Generator().manual_seed(1))
    expected = lora_state(stage1)
    save_adapter(stage1, tmp_path / "stage1")
    stage1.unload()

    expert = start_expert(base, init_from=tmp_path / "stage1", **LORA)
    got = lora_state(expert)
    assert got.keys() == expected.keys()
    for name in expected:
        assert torch.equal(got[name], expected[name]), name
    assert all(p.requires_grad for n, p in expert.named_parameters() if "lora_" in n)
    assert not any(p.requires_grad for n, p in expert.named_parameters() if "lora_" not in n)
    expert.unload()

    fresh = start_expert(base, **LORA)  # direct fine-tuning: B = 0
    assert all(torch.count_nonzero(p) == 0 for n, p in fresh.named_parameters() if "lora_B" in n)
    fresh.unload()


def test_eag_pipeline_hands_stage1_to_every_expert(make_cfg) -> None:
    """With zero stage-2 steps, every saved expert must equal the stage-1 adapter."""
    cfg = make_cfg(
        "debug=fast",
        "domain=all",
        "curriculum=eag",
        "masking=entity",
        "routing.enabled=false",
        "trainer.max_steps=0",
        "curriculum.stage1.max_steps=4",
        "curriculum.stage1.monitor=val/all/precision@5",
    )
    metrics = run(cfg)
    out = Path(cfg.paths.output)
    stage1 = load_file(out / "stage1" / "adapter_model.safetensors")
    assert stage1 and any(torch.count_nonzero(t) for k, t in stage1.items() if "lora_B" in k)
    for domain in ("legal", "medical", "finance"):
        expert = load_file(out / "experts" / domain / "adapter_model.safetensors")
        assert expert.keys() == stage1.keys()
        assert all(torch.equal(expert[k], stage1[k]) for k in stage1), domain
    assert {"stage1/all/precision@5", "stage1/legal/ndcg@10", "fine_tuned/all/ndcg@10"} <= set(
        metrics
    )
    assert "| stage1 | all |" in (out / "results.md").read_text()


def test_optional_rows_and_stage1_trainer_settings(make_cfg) -> None:
    """zero_shot=false and stage1.test=false drop those rows; stage1.trainer validates stage 1
    alone (every 2 of its 4 steps) while stage 2 keeps `trainer`'s no-validation setting.
    (Stage 1 on predictive masking here; entity in the test above, random in test_pipeline.)"""
    cfg = make_cfg(
        "debug=fast",
        "domain=legal",
        "curriculum=eag",
        "masking=predictive",
        "logger=csv",
        "zero_shot=false",
        "trainer.limit_val_batches=0",
        "curriculum.stage1.max_steps=4",
        "curriculum.stage1.test=false",
        "curriculum.stage1.trainer={limit_val_batches:1.0,val_check_interval:2}",
    )
    metrics = run(cfg)
    assert {key.split("/")[0] for key in metrics} == {
        "bm25",
        "bm25:test_seen",
        "fine_tuned",
        "fine_tuned:test_seen",
        "fused",
        "fused:test_seen",
    }
    rows = list(
        csv.DictReader((Path(cfg.paths.output) / "csv" / "version_0" / "metrics.csv").open())
    )
    # Stage 1 logs under its own prefix, apart from the expert's curves.
    validations = [r for r in rows if r.get("stage1/val/all/precision@5")]
    assert not any(r.get("val/all/precision@5") for r in rows)
    assert any(r.get("stage1/train/loss") for r in rows) and any(
        r.get("legal/train/loss") for r in rows
    )
    assert len(validations) == 2
    assert sorted(p.name for p in (Path(cfg.paths.output) / "runs").iterdir()) == [
        "bm25.test_seen.trec",
        "bm25.trec",
        "fine_tuned.test_seen.trec",
        "fine_tuned.trec",
        "fused.test_seen.trec",
        "fused.trec",
        "qrels.test.trec",
        "qrels.test_seen.trec",
    ]
