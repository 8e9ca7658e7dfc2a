"""Memory for large backbones: gradient checkpointing, gradient accumulation, 4-bit QLoRA,
and the per-backbone defaults that fit one 80 GB GPU (README: Memory)."""

from __future__ import annotations

import importlib.util
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.errors import InstantiationException
from torch.utils.data import DataLoader
from transformers import get_linear_schedule_with_warmup

from r2r.data.collate import ExampleCollator
from r2r.lit_reranker import RerankerModule, val_check_batches
from r2r.losses import infonce
from r2r.models import backbones
from r2r.models.backbones import (
    Backbone,
    BackboneUnavailableError,
    checkpoint_activations,
    load_hub,
    load_tiny,
)
from r2r.models.experts import add_lora
from r2r.models.scorer import RerankerScorer
from r2r.models.templates import QWEN3_RERANKER, PairEncoder
from r2r.models.tiny import build_tiny
from r2r.types import Passage, Query, TrainingExample

LORA = {
    "r": 4,
    "alpha": 8,
    "dropout": 0.0,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
}
INFONCE = partial(infonce, temperature=1.0)
QUERIES = ["bail for the accused", "sentence imposed", "side effects of aspirin", "q3 revenue"]


def groups(n: int) -> list[TrainingExample]:
    """`n` groups of 1 positive + 2 negatives, documents of different lengths."""
    return [
        TrainingExample(
            "legal",
            Query(f"q{i}", QUERIES[i % len(QUERIES)]),
            tuple(
                Passage(f"d{i}{j}", text)
                for j, text in enumerate(
                    [f"answer {i} " * (i + 1), "appeal dismissed by the court", "bail refused"]
                )
            ),
            (1.0, 0.0, 0.0),
        )
        for i in range(n)
    ]


def collate(backbone: Backbone, examples: list[TrainingExample]) -> dict:
    encoder = PairEncoder(
        backbone.tokenizer,
        backbone.template,
        max_length=160,
        max_query_length=16,
        instruction=None,
    )
    return ExampleCollator(encoder, grouped=True)(examples)


def lora_model(*, checkpointing: bool) -> tuple[Backbone, torch.nn.Module]:
    """A fresh tiny Qwen with a seeded LoRA whose B is not zero (B = 0 leaves A no gradient)."""
    backbone = load_tiny("qwen", template=QWEN3_RERANKER, seed=0)
    if checkpointing:
        checkpoint_activations(backbone.model)
    model = add_lora(backbone.model, **LORA)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if "lora_" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=generator))
    return backbone, model


def lora_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


# ---------------------------------------------------------------- gradient checkpointing
def test_checkpointing_keeps_the_loss_and_lora_gradients_and_saves_less() -> None:
    results = {}
    for checkpointing in (False, True):
        backbone, model = lora_model(checkpointing=checkpointing)
        scorer = RerankerScorer.from_backbone(backbone, model, share_prefix=True, chunk_tokens=None)
        scorer.train()  # HF checkpoints in train mode only
        batch = collate(backbone, groups(2))
        saved: list[int] = []

        def pack(t: torch.Tensor, saved: list[int] = saved) -> torch.Tensor:
            saved.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            scores = scorer(batch["input_ids"], batch["attention_mask"]).view(-1, 3)
        loss = INFONCE(scores, batch["labels"])
        loss.backward()
        layers = backbone.model.model.layers
        results[checkpointing] = (
            loss.item(),
            {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad},
            [layer.gradient_checkpointing for layer in layers],
            sum(saved),
        )
    (loss_off, grads_off, flags_off, saved_off), (loss_on, grads_on, flags_on, saved_on) = (
        results[False],
        results[True],
    )
    assert (flags_off, flags_on) == ([False, False], [True, True])
    assert loss_on == pytest.approx(loss_off, abs=1e-6)
    assert grads_on.keys() == grads_off.keys() and len(grads_on) == 2 * 2 * 4  # A, B x 2 x 4
    assert all(g.abs().sum() > 0 for g in grads_off.values())
    for name, grad in grads_off.items():
        torch.testing.assert_close(grads_on[name], grad, rtol=1e-5, atol=1e-7)
    # Only the layer inputs (and what lies outside the layers) are kept for backward.
    assert saved_on < saved_off / 4


def test_checkpointing_leaves_scoring_in_eval_mode_unchanged() -> None:
    plain, checkpointed = (load_tiny("qwen", template=QWEN3_RERANKER, seed=0) for _ in range(2))
    checkpoint_activations(checkpointed.model)
    batch = collate(plain, groups(2))
    with torch.no_grad():
        got = RerankerScorer.from_backbone(checkpointed, share_prefix=True, chunk_tokens=None)(
            batch["input_ids"], batch["attention_mask"]
        )
        want = RerankerScorer.from_backbone(plain, share_prefix=True, chunk_tokens=None)(
            batch["input_ids"], batch["attention_mask"]
        )
    assert torch.equal(got, want)


# ---------------------------------------------------------------- gradient accumulation
def fit(
    batches: list[dict], *, accumulate: int, max_steps: int, seen: list[int] | None = None
) -> tuple[dict[str, torch.Tensor], L.Trainer]:
    """Train a fresh seeded LoRA with SGD on `batches` in order; its weights afterwards."""
    backbone, model = lora_model(checkpointing=False)

    class Counting(RerankerModule):
        def training_step(self, batch, batch_idx):
            if seen is not None:
                seen.append(batch["input_ids"].shape[0])
            return super().training_step(batch, batch_idx)

    module = Counting(
        RerankerScorer.from_backbone(backbone, model, share_prefix=True, chunk_tokens=None),
        loss=INFONCE,
        optimizer=partial(torch.optim.SGD, lr=0.5),
        scheduler=partial(
            get_linear_schedule_with_warmup, num_warmup_steps=0, num_training_steps=4
        ),
        log_prefix="",
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        accumulate_grad_batches=accumulate,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None, collate_fn=None))
    return lora_state(model), trainer


def test_two_accumulated_batches_of_two_make_the_step_of_one_batch_of_four() -> None:
    backbone = load_tiny("qwen", template=QWEN3_RERANKER, seed=0)
    examples = groups(4)
    whole, _ = fit([collate(backbone, examples)], accumulate=1, max_steps=1)
    halves = [collate(backbone, examples[:2]), collate(backbone, examples[2:])]
    accumulated, _ = fit(halves, accumulate=2, max_steps=1)
    start = lora_state(lora_model(checkpointing=False)[1])
    assert all(not torch.equal(whole[n], start[n]) for n in whole)  # the step moved A and B
    for name, weight in whole.items():
        torch.testing.assert_close(accumulated[name], weight, rtol=1e-5, atol=1e-6)


def test_max_steps_and_the_scheduler_count_optimizer_steps_under_accumulation() -> None:
    backbone = load_tiny("qwen", template=QWEN3_RERANKER, seed=0)
    batches = [collate(backbone, [g]) for g in groups(4)] * 2  # 8 micro-batches of 1 group
    seen: list[int] = []
    _, trainer = fit(batches, accumulate=2, max_steps=2, seen=seen)
    assert seen == [3, 3, 3, 3]  # 2 optimizer steps x 2 micro-batches of 3 rows
    assert trainer.global_step == 2
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.last_epoch == 2  # stepped per optimizer step: lr 0.5 * (4 - 2) / 4
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.25)


def test_val_check_interval_counts_optimizer_steps() -> None:
    # r2r's config says "validate every N optimizer steps"; Lightning counts batches.
    assert val_check_batches(100, 4) == 400
    assert val_check_batches(3, 1) == 3
    assert val_check_batches(0.5, 4) == 0.5  # a fraction of an epoch stays one


# ---------------------------------------------------------------- per-backbone defaults
@pytest.mark.parametrize(
    ("backbone", "batch", "accumulate", "checkpointing"),
    [("qwen", 2, 4, False), ("gemma", 2, 4, False), ("mistral", 8, 1, True)],
)
def test_real_backbones_fit_the_default_step_on_one_gpu(
    make_cfg, backbone, batch, accumulate, checkpointing
) -> None:
    """README: Memory. Every real backbone keeps the default step of 8 groups of 8 (64
    sequences), split into micro-batches or checkpointed to fit one 80 GB GPU; the backbone's
    settings survive the trainer group that is composed after it."""
    cfg = make_cfg(f"backbone={backbone}", "trainer=gpu")
    assert cfg.datamodule.train_batch_size == batch
    assert cfg.trainer.get("accumulate_grad_batches", 1) == accumulate
    assert batch * accumulate == 8 and cfg.mining.group_size == 8
    assert cfg.backbone.gradient_checkpointing is checkpointing
    assert cfg.backbone.quantization is None and cfg.backbone.dtype == "bfloat16"
    assert cfg.routing.trainer.accumulate_grad_batches == 1  # a router head: a step per batch


# ---------------------------------------------------------------- 4-bit QLoRA
@pytest.fixture
def no_bitsandbytes(monkeypatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "bitsandbytes" else find_spec(name, *a),
    )


def test_4bit_without_bitsandbytes_or_cuda_fails_before_looking_for_the_model(
    monkeypatch, no_bitsandbytes
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackboneUnavailableError) as info:
        load_hub(
            "/no/such/model",
            template=QWEN3_RERANKER,
            dtype="bfloat16",
            quantization="4bit",
            gradient_checkpointing=True,
        )
    assert str(info.value) == (
        "backbone.quantization=4bit needs the bitsandbytes package (pip install 'r2r[qlora]') "
        "and a CUDA GPU (bitsandbytes' 4-bit kernels run on CUDA). Fix: install what is "
        "missing, or set backbone.quantization=null to load the weights in backbone.dtype."
    )


def test_4bit_names_only_what_is_missing(monkeypatch, no_bitsandbytes) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(BackboneUnavailableError, match=r"needs the bitsandbytes package \(") as e:
        backbones.four_bit()
    assert "CUDA" not in str(e.value)
    monkeypatch.undo()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    with pytest.raises(BackboneUnavailableError, match=r"needs a CUDA GPU \(") as e:
        backbones.four_bit()
    assert "bitsandbytes package" not in str(e.value)


def test_an_unknown_quantization_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"backbone.quantization='8bit'; expected null or '4bit'"):
        load_hub(
            "/no/such/model",
            template=QWEN3_RERANKER,
            dtype="bfloat16",
            quantization="8bit",
            gradient_checkpointing=False,
        )


def test_pipeline_fails_on_4bit_before_any_data_work(make_cfg, monkeypatch, tmp_path) -> None:
    from r2r import pipeline

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = make_cfg("backbone=qwen", "backbone.quantization=4bit")
    # Hydra wraps what the loader raised; its message is kept whole.
    with pytest.raises(InstantiationException, match=r"backbone\.quantization=4bit needs"):
        pipeline.prepare(cfg, [])
    assert not (tmp_path / "cache").exists()  # no mining, no data


@pytest.mark.gpu
def test_4bit_tiny_model_trains_one_step(tmp_path: Path) -> None:
    if not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None:
        pytest.skip("needs CUDA and bitsandbytes (pip install 'r2r[qlora]')")
    model, tokenizer = build_tiny("qwen", seed=0)
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    backbone = load_hub(
        str(tmp_path / "tiny"),
        template=QWEN3_RERANKER,
        dtype="bfloat16",
        quantization="4bit",
        gradient_checkpointing=True,
    )
    linear = type(backbone.model.model.layers[0].self_attn.q_proj).__name__
    assert linear == "Linear4bit" and backbone.model.is_loaded_in_4bit
    peft_model = add_lora(backbone.model, **LORA)
    before = lora_state(peft_model)
    module = RerankerModule(
        RerankerScorer.from_backbone(backbone, peft_model, share_prefix=True, chunk_tokens=None),
        loss=INFONCE,
        optimizer=partial(torch.optim.AdamW, lr=1e-3),
        scheduler=None,
        log_prefix="",
    )
    trainer = L.Trainer(
        accelerator="gpu",
        devices=1,
        precision="bf16-mixed",
        max_steps=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    batches = [collate(backbone, groups(2))]
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    after = lora_state(peft_model)
    assert trainer.global_step == 1
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert any(not torch.equal(after[n].cpu(), before[n].cpu()) for n in before)
