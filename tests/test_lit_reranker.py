from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from r2r.data.collate import ExampleCollator, PairCollator, eval_pairs
from r2r.data.sampler import DomainBatchSampler, ResumableLoader
from r2r.lit_reranker import BestAdapter, RerankerModule
from r2r.losses import bce, infonce, ranknet
from r2r.models.backbones import load_tiny
from r2r.models.experts import add_lora
from r2r.models.scorer import RerankerScorer
from r2r.models.templates import QWEN3_RERANKER, PairEncoder
from r2r.types import CandidateList, Passage, Query, TrainingExample

INFONCE = partial(infonce, temperature=1.0)
LORA = {"dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}


def test_domain_batch_sampler_never_mixes_domains_and_is_seeded() -> None:
    domains = ["legal"] * 5 + ["medical"] * 3 + ["finance"] * 4
    sampler = DomainBatchSampler(domains, batch_size=2, seed=7)
    first = list(sampler)
    assert len(first) == len(sampler) == 3 + 2 + 2
    assert sorted(i for b in first for i in b) == list(range(12))
    for batch in first:
        assert len({domains[i] for i in batch}) == 1
    second = list(sampler)  # the next epoch reshuffles...
    assert second != first
    again = DomainBatchSampler(domains, batch_size=2, seed=7)
    assert list(again) == first  # ...and the same seed replays the same epochs
    assert list(again) == second


def test_domain_batch_sampler_shards_each_global_batch_across_ranks() -> None:
    """Two ranks of batch 2 see, step by step, the groups of one process of batch 4; a
    domain tail too short for both ranks is dropped on every rank."""
    domains = ["legal"] * 9 + ["medical"] * 4
    single = list(DomainBatchSampler(domains, batch_size=4, seed=3))
    ranks = [list(DomainBatchSampler(domains, 2, seed=3, rank=r, world_size=2)) for r in (0, 1)]
    # legal: 4 + 4 + 1 (the 1 cannot be split over 2 ranks); medical: 4.
    assert (
        len(ranks[0])
        == len(ranks[1])
        == len(DomainBatchSampler(domains, 2, rank=0, world_size=2))
        == 3
    )
    kept = [b for b in single if len(b) >= 2]
    assert [sorted(a + b) for a, b in zip(*ranks, strict=True)] == [sorted(b) for b in kept]
    assert all(len(a) == len(b) == 2 for a, b in zip(*ranks, strict=True))
    assert single == list(DomainBatchSampler(domains, 4, seed=3, rank=0, world_size=1))


@pytest.mark.parametrize("workers", [0, 2])
def test_the_training_loader_resumes_after_the_last_batch_it_handed_out(workers: int) -> None:
    """A loader's state, taken after 3 batches, starts a new loader at the 4th batch of the
    same pass, then goes on with the next pass; a finished pass's state starts the next one.
    Worker processes draw ahead from the sampler: the state counts what training got."""
    domains = ["legal"] * 5 + ["medical"] * 3 + ["finance"] * 4

    def loader() -> ResumableLoader:
        sampler = DomainBatchSampler(domains, batch_size=2, seed=7)
        return ResumableLoader(range(12), batch_sampler=sampler, num_workers=workers)

    whole = loader()
    first, second = [b.tolist() for b in whole], [b.tolist() for b in whole]
    epochs = DomainBatchSampler(domains, batch_size=2, seed=7)
    assert (first, second) == (list(epochs), list(epochs))  # a pass is one epoch
    stopped = loader()
    batches = iter(stopped)
    taken = [next(batches).tolist() for _ in range(3)]
    assert stopped.state_dict() == {"epoch": 0, "start": 3}
    resumed = loader()
    resumed.load_state_dict(stopped.state_dict())
    assert taken + [b.tolist() for b in resumed] == first
    assert [b.tolist() for b in resumed] == second

    assert whole.state_dict() == {"epoch": 1, "start": 7}  # the second pass, all 7 batches
    after = loader()
    after.load_state_dict(whole.state_dict())
    assert after.batch_sampler.state_dict() == {"epoch": 2, "start": 0}


def make_group(q: str, docs: list[str], labels: list[float] | None = None) -> TrainingExample:
    """A training example: the first document is the positive unless `labels` say otherwise."""
    labels = labels or [1.0] + [0.0] * (len(docs) - 1)
    return TrainingExample("legal", Query(q, q), tuple(Passage(d, d) for d in docs), tuple(labels))


@pytest.fixture(scope="module")
def backbone():
    return load_tiny("qwen", template=QWEN3_RERANKER, seed=0)


def test_training_steps_lower_the_loss_on_a_fixed_batch(backbone) -> None:
    model = add_lora(backbone.model, r=8, alpha=16, **LORA)
    try:
        module = RerankerModule(
            RerankerScorer.from_backbone(backbone, model, share_prefix=True, chunk_tokens=None),
            loss=INFONCE,
            optimizer=partial(torch.optim.AdamW, lr=1e-2),
            scheduler=None,
            log_prefix="",
        )
        encoder = PairEncoder(
            backbone.tokenizer,
            backbone.template,
            max_length=128,
            max_query_length=16,
            instruction=None,
        )
        batch = ExampleCollator(encoder, grouped=True)(
            [
                make_group(
                    "bail for the accused", ["bail granted", "penalty is death", "appeal dismissed"]
                ),
                make_group(
                    "sentence imposed", ["sentenced to ten years", "bail refused", "court held"]
                ),
            ]
        )
        assert batch["input_ids"].shape[0] == 6 and batch["group_size"] == 3
        assert batch["labels"].tolist() == [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
        optimizer = module.configure_optimizers()
        trainable = {n for n, p in module.named_parameters() if p.requires_grad}
        assert trainable and all("lora_" in n for n in trainable)
        losses = []
        for _ in range(15):
            optimizer.zero_grad()
            scores = module.scorer(batch["input_ids"], batch["attention_mask"]).view(-1, 3)
            loss = INFONCE(scores, batch["labels"])
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        assert losses[-1] < 0.5 * losses[0]
    finally:
        model.unload()


class _Toy(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.frozen = torch.nn.Parameter(torch.ones(1), requires_grad=False)


class _FakeTrainer:
    sanity_checking = False

    def __init__(self) -> None:
        self.callback_metrics: dict[str, torch.Tensor] = {}
        self.global_step = 0


def test_best_adapter_restores_the_best_trainable_weights() -> None:
    module, trainer = _Toy(), _FakeTrainer()
    callback = BestAdapter(monitor="val/all/ndcg@10", mode="max")
    for step, (w, score) in enumerate([(1.0, 10.0), (2.0, 30.0), (3.0, 20.0)]):
        module.w.data.fill_(w)
        trainer.global_step = step
        trainer.callback_metrics = {"val/all/ndcg@10": torch.tensor(score)}
        callback.on_validation_end(trainer, module)
    assert (callback.best, callback.best_step) == (30.0, 1)
    callback.on_fit_end(trainer, module)
    assert module.w.item() == 2.0
    assert module.frozen.item() == 1.0


def test_best_adapter_names_a_missing_monitor() -> None:
    trainer = _FakeTrainer()
    trainer.callback_metrics = {"val/all/mrr@10": torch.tensor(1.0)}
    with pytest.raises(KeyError, match="val/all/ndcg@10"):
        BestAdapter(monitor="val/all/ndcg@10", mode="max").on_validation_end(trainer, _Toy())


def test_best_adapter_reads_the_modules_prefixed_key() -> None:
    """A module logging as `legal/` is monitored under `legal/val/...`, not another's key."""
    module, trainer = _Toy(), _FakeTrainer()
    module.log_prefix = "legal/"
    trainer.callback_metrics = {
        "val/all/ndcg@10": torch.tensor(90.0),
        "legal/val/all/ndcg@10": torch.tensor(40.0),
    }
    callback = BestAdapter(monitor="val/all/ndcg@10", mode="max")
    callback.on_validation_end(trainer, module)
    assert callback.best == 40.0
    trainer.callback_metrics = {"val/all/ndcg@10": torch.tensor(90.0)}
    with pytest.raises(KeyError, match="'legal/val/all/ndcg@10'"):
        callback.on_validation_end(trainer, module)


class _ModeProbe(RerankerModule):
    """Records whether the LoRA dropout modules are in train mode at each step."""

    def dropout_modes(self) -> set[bool]:
        return {m.training for n, m in self.scorer.named_modules() if n.endswith("lora_dropout")}

    def training_step(self, batch, batch_idx):
        self.train_modes = self.dropout_modes()
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        self.val_modes = self.dropout_modes()
        return super().validation_step(batch, batch_idx)


def test_training_runs_in_train_mode_and_validation_in_eval_mode(backbone) -> None:
    """The frozen backbone loads in eval mode; LoRA dropout must still act while training."""
    model = add_lora(backbone.model, r=4, alpha=8, **(LORA | {"dropout": 0.1}))
    try:
        model.eval()
        module = _ModeProbe(
            RerankerScorer.from_backbone(backbone, model, share_prefix=True, chunk_tokens=None),
            loss=INFONCE,
            optimizer=partial(torch.optim.AdamW, lr=1e-3),
            scheduler=None,
            log_prefix="",
        )
        encoder = PairEncoder(
            backbone.tokenizer,
            backbone.template,
            max_length=160,
            max_query_length=64,
            instruction=None,
        )
        groups = [make_group(f"query {i}", ["bail granted", "appeal dismissed"]) for i in range(2)]
        candidates = CandidateList(
            "legal",
            Query("q", "bail"),
            (Passage("a", "bail"), Passage("b", "appeal")),
            (2.0, 1.0),
            {"a": 1},
        )
        trainer = L.Trainer(
            max_steps=2,
            val_check_interval=2,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(
            module,
            train_dataloaders=DataLoader(
                groups, batch_size=1, collate_fn=ExampleCollator(encoder, grouped=True)
            ),
            val_dataloaders=DataLoader(
                eval_pairs([candidates]), batch_size=2, collate_fn=PairCollator(encoder)
            ),
        )
        assert module.train_modes == {True}
        assert module.val_modes == {False}
    finally:
        model.unload()


class _LossProbe(RerankerModule):
    """Records the (scores, labels, teacher) each training step hands to the loss."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[tuple] = []
        inner = self.loss

        def loss(scores, labels, teacher=None):
            self.seen.append((tuple(scores.shape), labels.tolist(), teacher))
            return inner(scores, labels, teacher)

        self.loss = loss


@pytest.mark.parametrize(
    ("grouped", "examples", "loss", "shape", "labels"),
    [
        # Pointwise: one passage per example, graded labels as a (B,) vector.
        (
            False,
            [([["bail granted"], [1.0]]), ([["appeal dismissed"], [0.5]])],
            bce,
            (2,),
            [1.0, 0.5],
        ),
        # Pairwise: (better, worse), a (B, 2) matrix.
        (
            True,
            [([["bail granted", "appeal"], [1.0, 0.0]]), ([["court", "bail"], [0.5, 0.0]])],
            ranknet,
            (2, 2),
            [[1.0, 0.0], [0.5, 0.0]],
        ),
    ],
    ids=["pointwise", "pairwise"],
)
def test_each_training_mode_hands_the_loss_its_shape_and_labels(
    backbone, grouped, examples, loss, shape, labels
) -> None:
    model = add_lora(backbone.model, r=4, alpha=8, **LORA)
    try:
        module = _LossProbe(
            RerankerScorer.from_backbone(backbone, model, share_prefix=True, chunk_tokens=None),
            loss=loss,
            optimizer=partial(torch.optim.AdamW, lr=1e-3),
            scheduler=None,
            log_prefix="",
        )
        encoder = PairEncoder(
            backbone.tokenizer,
            backbone.template,
            max_length=128,
            max_query_length=16,
            instruction=None,
        )
        data = [make_group(f"query {i}", docs, grades) for i, (docs, grades) in enumerate(examples)]
        trainer = L.Trainer(
            max_steps=1,
            limit_val_batches=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(
            module,
            train_dataloaders=DataLoader(
                data, batch_size=2, collate_fn=ExampleCollator(encoder, grouped=grouped)
            ),
        )
        assert module.seen == [(shape, labels, None)]
    finally:
        model.unload()


def test_the_collator_carries_teacher_scores_and_refuses_a_mixed_batch(backbone) -> None:
    encoder = PairEncoder(
        backbone.tokenizer, backbone.template, max_length=160, max_query_length=8, instruction=None
    )
    with_teacher = TrainingExample("legal", Query("q", "q"), (Passage("a", "a"),), (1.0,), (2.5,))
    without = TrainingExample("legal", Query("q", "q"), (Passage("b", "b"),), (0.0,), None)
    batch = ExampleCollator(encoder, grouped=False)([with_teacher, with_teacher])
    assert batch["teacher"].tolist() == [2.5, 2.5] and batch["group_size"] is None
    with pytest.raises(ValueError, match="some examples of the batch have teacher scores"):
        ExampleCollator(encoder, grouped=False)([with_teacher, without])


@pytest.mark.parametrize("precision", ["bf16-true", "bf16-mixed"])
def test_training_and_validation_run_in_bf16_on_the_cpu(precision: str) -> None:
    """Lightning's bf16 precisions train and validate through the shared-prefix scorer (the
    batch's PairRefs stay out of the precision plugin's reach)."""
    backbone = load_tiny("qwen", template=QWEN3_RERANKER, seed=0)  # bf16-true casts it
    model = add_lora(backbone.model, r=4, alpha=8, **LORA)
    module = RerankerModule(
        RerankerScorer.from_backbone(backbone, model, share_prefix=True, chunk_tokens=64),
        loss=INFONCE,
        optimizer=partial(torch.optim.AdamW, lr=1e-2),
        scheduler=None,
        log_prefix="",
    )
    encoder = PairEncoder(backbone.tokenizer, backbone.template, 160, 64, None)
    groups = [make_group(f"query {i}", ["bail granted", "appeal dismissed"]) for i in range(4)]
    candidates = CandidateList(
        "legal",
        Query("q", "bail"),
        (Passage("a", "appeal"), Passage("b", "bail"), Passage("c", "court")),
        (3.0, 2.0, 1.0),
        {"b": 1},
    )
    trainer = L.Trainer(
        accelerator="cpu",
        precision=precision,
        max_steps=4,
        val_check_interval=4,
        check_val_every_n_epoch=None,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(
        module,
        train_dataloaders=DataLoader(
            groups, batch_size=2, collate_fn=ExampleCollator(encoder, grouped=True)
        ),
        val_dataloaders=DataLoader(
            eval_pairs([candidates]), batch_size=3, collate_fn=PairCollator(encoder)
        ),
    )
    weights = {p.dtype for n, p in model.named_parameters() if "lora_" in n}
    assert weights == {torch.bfloat16 if precision == "bf16-true" else torch.float32}
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert 0.0 < float(trainer.callback_metrics["val/legal/ndcg@10"]) <= 100.0
