"""The Latent Semantic Router: frozen-backbone query features, their cache, the heads and
the routers trained on them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import pytest
import safetensors.torch
import torch
from peft import PeftModel
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from r2r.data.datamodule import QuerySet
from r2r.models.backbones import Backbone, load_tiny
from r2r.models.experts import add_lora
from r2r.models.templates import QWEN3_RERANKER
from r2r.routing import build_router, load_router
from r2r.routing.feature_router import FeatureRouter, LatentSemanticRouter
from r2r.routing.features import FeatureCache, LatentFeaturizer, pool
from r2r.routing.heads import make_head
from r2r.routing.lit_router import RouterModule
from r2r.types import LabelledQueries

DOMAINS = ("legal", "medical", "finance")
QUERIES = [
    "bail",
    "the court held that bail was refused",
    "side effects of the drug in children under five",
]


def fresh_backbone() -> Backbone:
    """A backbone of its own: these tests attach adapters to its model in place."""
    return load_tiny("qwen", template=QWEN3_RERANKER, seed=0)


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    return fresh_backbone()


def perturb(model: PeftModel, seed: int, adapter_name: str = "default") -> None:
    """Random LoRA B weights (peft starts them at 0) so the adapter changes the outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if f"lora_B.{adapter_name}." in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)


def adapted_features(model: nn.Module, featurizer: LatentFeaturizer) -> torch.Tensor:
    """What the featurizer would return if it left the adapter ON."""
    enc = featurizer.encode(QUERIES)
    mask = enc["attention_mask"]
    with torch.no_grad():
        hidden = model.get_decoder()(
            input_ids=enc["input_ids"],
            attention_mask=mask,
            position_ids=(mask.cumsum(1) - 1).clamp(min=0),
            output_hidden_states=True,
        ).hidden_states[-1]
    return pool(hidden, mask, "last")


# ----------------------------------------------------------------------------- featurizer
def test_features_come_from_the_frozen_backbone_with_every_adapter_off(lora) -> None:
    backbone = fresh_backbone()
    bare = LatentFeaturizer.from_backbone(backbone)(QUERIES)
    assert bare.shape == (3, 64) and bare.dtype == torch.float32

    model = add_lora(backbone.model, **lora(r=4, alpha=8))  # injects LoRA into backbone.model
    perturb(model, seed=0)
    through_peft = LatentFeaturizer.from_backbone(backbone, model)
    # Built on the plain model before any expert existed (the pipeline's order).
    through_plain = LatentFeaturizer.from_backbone(backbone)
    with_adapter = adapted_features(model, through_peft)
    assert (with_adapter - bare).abs().max() > 1e-2  # the adapter does change the states...
    assert torch.equal(through_peft(QUERIES), bare)  # ...and the featurizer never sees it
    assert torch.equal(through_plain(QUERIES), bare)

    perturb(model, seed=1)
    assert torch.equal(through_peft(QUERIES), bare)
    add_lora(model, **lora(r=4, alpha=8), adapter_name="other")
    perturb(model, seed=2, adapter_name="other")
    model.set_adapter("other")
    assert (adapted_features(model, through_peft) - bare).abs().max() > 1e-2
    assert torch.equal(through_peft(QUERIES), bare)
    assert torch.equal(through_plain(QUERIES), bare)
    # Adapters (weights too) don't change the key: cached features stay valid.
    assert through_peft.key == through_plain.key == LatentFeaturizer.from_backbone(backbone).key


def test_featurizing_leaves_the_model_as_it_found_it(lora) -> None:
    backbone = fresh_backbone()
    model = add_lora(backbone.model, **lora(r=4, alpha=8))
    perturb(model, seed=0)
    featurizer = LatentFeaturizer.from_backbone(backbone, model)
    for p in model.parameters():  # an inference-loaded expert: nothing trains
        p.requires_grad_(False)
    model.train()
    model.base_model.model.lm_head.eval()  # a mixed state, to be restored as it was
    modes = [m.training for m in model.modules()]
    before = adapted_features(model, featurizer)

    featurizer(QUERIES)

    # peft's re-enable would make the active adapter trainable; the featurizer undoes that.
    assert not any(p.requires_grad for p in model.parameters())
    assert [m.training for m in model.modules()] == modes
    model.eval()
    assert torch.equal(adapted_features(model, featurizer), before)  # adapter back on


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_features_do_not_depend_on_the_batch(backbone: Backbone, pooling: str) -> None:
    featurizer = LatentFeaturizer.from_backbone(backbone, pooling=pooling)
    batch = featurizer(QUERIES)  # "bail" is padded by 7 and 14 tokens here
    assert featurizer.encode(QUERIES)["attention_mask"].sum(1).tolist() == [9, 16, 23]
    for i, query in enumerate(QUERIES):
        torch.testing.assert_close(featurizer([query])[0], batch[i], atol=1e-5, rtol=0)
    small_batches = LatentFeaturizer.from_backbone(backbone, pooling=pooling, batch_size=2)
    torch.testing.assert_close(small_batches(QUERIES), batch, atol=1e-5, rtol=0)
    assert featurizer([]).shape == (0, 64)


def test_layer_pooling_template_and_truncation(backbone: Backbone) -> None:
    last = LatentFeaturizer.from_backbone(backbone)(QUERIES)
    embeddings = LatentFeaturizer.from_backbone(backbone, layer=0)(QUERIES)
    assert (last - embeddings).abs().max() > 1e-2
    # 2 layers: hidden states 0, 1, 2; layer 2 is the last, the same as -1.
    same = LatentFeaturizer.from_backbone(backbone, layer=2)
    assert torch.equal(same(QUERIES), last)
    assert same.key == LatentFeaturizer.from_backbone(backbone, layer=-1).key
    # The embedding layer's "bail" token row is the features of layer 0 at that token.
    token = backbone.tokenizer("bail", add_special_tokens=False)["input_ids"]
    plain = LatentFeaturizer.from_backbone(backbone, layer=0, template="{query}")
    assert torch.equal(plain(["bail"])[0], backbone.model.get_input_embeddings().weight[token[-1]])

    keys = {
        LatentFeaturizer.from_backbone(backbone, **kw).key
        for kw in (
            {},
            {"layer": 1},
            {"pooling": "mean"},
            {"template": "{query}"},
            {"max_length": 64},
            {"batch_size": 7},  # batching does not change features, nor the key
        )
    }
    renamed = LatentFeaturizer(backbone.model, backbone.tokenizer, name="other")
    reseeded = LatentFeaturizer.from_backbone(
        load_tiny("qwen", template=QWEN3_RERANKER, seed=1)
    )  # same name, new weights
    assert len(keys | {renamed.key, reseeded.key}) == 7

    # Only query tokens are cut, the first `max_length` kept; the template stays whole.
    cut = LatentFeaturizer.from_backbone(backbone, max_length=3)
    long = "the court held that bail was refused"
    assert torch.equal(cut.encode([long])["input_ids"], cut.encode(["the court held"])["input_ids"])

    with pytest.raises(ValueError, match=r"layer=3 is out of range .* \[-3, 2\]"):
        LatentFeaturizer.from_backbone(backbone, layer=3)
    with pytest.raises(ValueError, match="layer=-4 is out of range"):
        LatentFeaturizer.from_backbone(backbone, layer=-4)
    with pytest.raises(ValueError, match=r"pooling='max'; expected one of \('last', 'mean'\)"):
        LatentFeaturizer.from_backbone(backbone, pooling="max")
    with pytest.raises(ValueError, match=r"exactly one plain \{query\} field .* \['document'\]"):
        LatentFeaturizer.from_backbone(backbone, template="{document}")
    with pytest.raises(ValueError, match=r"found \['query', 'query'\]"):
        LatentFeaturizer.from_backbone(backbone, template="{query} {query}")
    with pytest.raises(ValueError, match="is empty under template"):
        plain([""])
    with pytest.raises(TypeError, match="not one string"):
        plain("bail")


# ----------------------------------------------------------------------------- cache
class Counting:
    """A featurizer wrapper that counts calls."""

    def __init__(self, inner: LatentFeaturizer) -> None:
        self.inner, self.key, self.dim, self.calls = inner, inner.key, inner.dim, 0

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        self.calls += 1
        return self.inner(texts)


def test_feature_cache_computes_once_and_reads_back(tmp_path: Path, backbone: Backbone) -> None:
    featurizer = Counting(LatentFeaturizer.from_backbone(backbone))
    cache = FeatureCache(tmp_path / "features")
    first = cache.get(featurizer, QUERIES)
    again = cache.get(featurizer, QUERIES)
    assert featurizer.calls == 1 and torch.equal(again, first)
    files = list((tmp_path / "features").iterdir())
    assert [f.suffix for f in files] == [".safetensors"]  # no staging leftovers

    from_disk = FeatureCache(tmp_path / "features").get(featurizer, QUERIES)
    assert featurizer.calls == 1 and torch.equal(from_disk, first)
    assert torch.equal(from_disk, featurizer.inner(QUERIES))

    # Another order, another query set or another featurizer: another file.
    cache.get(featurizer, QUERIES[::-1])
    cache.get(featurizer, QUERIES[:2])
    cache.get(Counting(LatentFeaturizer.from_backbone(backbone, layer=1)), QUERIES)
    assert featurizer.calls == 3
    assert len(list((tmp_path / "features").iterdir())) == 4


ROWS = torch.arange(12, dtype=torch.float32).reshape(3, 4)


@pytest.mark.parametrize(
    ("corrupt", "reason"),
    [
        # A write cut short, an empty file, random bytes: safetensors cannot parse them.
        (lambda b: b[: len(b) // 2], "(SafetensorError: Error while deserializing header: "),
        (lambda b: b"", "(SafetensorError: Error while deserializing header: header too small)"),
        (lambda b: b"\x07" * 64, "(SafetensorError: Error while deserializing header: "),
        # Readable, but not what this featurizer and these texts produce.
        (
            lambda b: save_bytes({"features": ROWS[:2]}),
            "(features torch.float32 (2, 4), expected torch.float32 (3, 4))",
        ),
        (
            lambda b: save_bytes({"features": ROWS.double()}),
            "(features torch.float64 (3, 4), expected torch.float32 (3, 4))",
        ),
        (lambda b: save_bytes({"other": ROWS}), "(no 'features' tensor)"),
    ],
)
def test_corrupt_feature_cache_is_recomputed_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, corrupt, reason: str
) -> None:
    texts = ["a", "b", "c"]
    featurizer = Table(texts, ROWS)
    cache = FeatureCache(tmp_path)
    assert torch.equal(cache.get(featurizer, texts), ROWS)
    path = cache.path(featurizer, texts)
    written = path.read_bytes()
    path.write_bytes(corrupt(written))

    with caplog.at_level("WARNING", logger="r2r.routing.features"):
        assert torch.equal(cache.get(featurizer, texts), ROWS)
    (message,) = [r.getMessage() for r in caplog.records if r.name == "r2r.routing.features"]
    assert message.startswith(f"{path}: unreadable cache file {reason}")
    assert message.endswith("; recomputing")
    assert path.read_bytes() == written  # replaced by the recomputed features
    caplog.clear()
    assert torch.equal(cache.get(featurizer, texts), ROWS)
    assert [r for r in caplog.records if r.name == "r2r.routing.features"] == []


def save_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    return safetensors.torch.save(tensors)


# ----------------------------------------------------------------------------- heads
class Table:
    """A trivial featurizer: each text's row of a fixed table."""

    def __init__(self, texts: Sequence[str], rows: torch.Tensor) -> None:
        self.index = {t: i for i, t in enumerate(texts)}
        self.rows, self.dim, self.key = rows, rows.shape[1], "table"

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        return self.rows[[self.index[t] for t in texts]]


def clusters(n_per_class: int = 20, dim: int = 8, seed: int = 0):
    """3 well-separated gaussian clusters: (texts, labels, featurizer)."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, dim, generator=gen) * 4
    rows = torch.cat([c + torch.randn(n_per_class, dim, generator=gen) for c in centres])
    texts = [f"p{i}" for i in range(len(rows))]
    labels = [d for d in DOMAINS for _ in range(n_per_class)]
    return texts, labels, Table(texts, rows)


def test_make_head_shapes_and_parameter_counts() -> None:
    linear, mlp = make_head("linear", 8, 3), make_head("mlp", 8, 3, hidden=16, dropout=0.1)
    assert isinstance(linear, nn.Linear)
    assert [type(m) for m in mlp] == [nn.Linear, nn.GELU, nn.Dropout, nn.Linear]
    assert sum(p.numel() for p in linear.parameters()) == 8 * 3 + 3
    assert sum(p.numel() for p in mlp.parameters()) == 8 * 16 + 16 + 16 * 3 + 3
    assert linear(torch.zeros(5, 8)).shape == mlp(torch.zeros(5, 8)).shape == (5, 3)
    with pytest.raises(ValueError, match=r"unknown router head 'svm'; expected one of"):
        make_head("svm", 8, 3)


def test_router_module_logs_exact_validation_metrics() -> None:
    head = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.eye(3))  # predicts the argmax of the features
    features = torch.eye(3)[[0, 0, 1, 2]]  # predictions 0, 0, 1, 2
    labels = torch.tensor([0, 1, 1, 2])  # one class-1 query routed to class 0
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    module = RouterModule(head, 3, lr=1e-3, weight_decay=0.0, log_prefix="lsr/")
    (metrics,) = trainer.validate(module, DataLoader(TensorDataset(features, labels), batch_size=3))
    assert sorted(metrics) == ["lsr/val/accuracy", "lsr/val/macro_f1"]
    assert metrics["lsr/val/accuracy"] == pytest.approx(3 / 4)
    # F1 per class: 2/3 (p 1/2, r 1), 2/3 (p 1, r 1/2), 1.
    assert metrics["lsr/val/macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)


@pytest.mark.parametrize(("kind", "n_params"), [("linear", 8 * 3 + 3), ("mlp", 195)])
def test_feature_router_learns_separable_clusters(head_settings, kind: str, n_params: int) -> None:
    texts, labels, featurizer = clusters(n_per_class=25)
    dev = LabelledQueries(tuple(texts[::5]), tuple(labels[::5]))  # 5 held out per cluster
    train = [(t, d) for i, (t, d) in enumerate(zip(texts, labels, strict=True)) if i % 5]
    texts, labels = [t for t, _ in train], [d for _, d in train]
    settings = head_settings(head=kind, hidden=16, epochs=30, lr=1e-2, batch_size=16, seed=0)
    router = FeatureRouter(DOMAINS, featurizer, **settings)
    router.fit(QuerySet(LabelledQueries(tuple(texts), tuple(labels)), dev))
    probs = router.predict_proba(texts)
    assert probs.shape == (60, 3)
    assert probs.argmax(1).tolist() == router.label_ids(labels).tolist()
    torch.testing.assert_close(probs.sum(1), torch.ones(60))
    assert router.metrics["router/val/accuracy"] == 1.0
    assert router.metrics["router/val/macro_f1"] == 1.0
    assert router.metrics["router/train/loss"] < 0.1
    assert router.n_params == n_params
    assert router.steps == 30 * 4  # 60 training queries in batches of 16
    assert router.settings() == {
        "head": kind,
        "hidden": 16,
        "dropout": 0.0,
        "standardize": True,
        "balanced": True,
        "epochs": 30,
        "lr": 1e-2,
        "weight_decay": 0.0,
        "batch_size": 16,
        "seed": 0,
    }


def test_same_seed_same_head_and_the_callers_rng_is_untouched(head_settings) -> None:
    texts, labels, featurizer = clusters()

    def fit(seed: int) -> dict[str, torch.Tensor]:
        settings = head_settings(head="mlp", hidden=16, dropout=0.2, epochs=3, lr=1e-2, seed=seed)
        router = FeatureRouter(DOMAINS, featurizer, **settings)
        return router.fit(QuerySet.of(texts, labels)).head.state_dict()

    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = fit(seed=0)
    assert torch.equal(torch.rand(1), expected_next)  # fitting drew nothing from it
    second = fit(seed=0)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = fit(seed=1)
    assert not torch.equal(other["1.0.weight"], first["1.0.weight"])


def test_feature_router_refuses_bad_input(head_settings) -> None:
    texts, labels, featurizer = clusters(n_per_class=2)
    router = FeatureRouter(DOMAINS, featurizer, **head_settings(epochs=1))
    with pytest.raises(RuntimeError, match="not fitted"):
        router.predict_proba(texts)
    with pytest.raises(ValueError, match=r"\['tax'\] are not among"):
        router.fit(QuerySet.of(texts, ["tax"] * len(texts)))
    dev = LabelledQueries(tuple(texts[:1]), ("tax",))
    with pytest.raises(ValueError, match=r"queries of domains \['tax'\], which are not among"):
        router.fit(QuerySet(LabelledQueries(tuple(texts), tuple(labels)), dev))
    with pytest.raises(ValueError, match="cannot fit a router on zero queries"):
        router.fit(QuerySet.of([], []))
    with pytest.warns(UserWarning, match=r"no training query for domains \['finance'\]"):
        router.fit(QuerySet.of(texts[:4], labels[:4]))
    with pytest.raises(ValueError, match="unknown router head"):
        FeatureRouter(DOMAINS, featurizer, **head_settings(head="svm"))


# ----------------------------------------------------------------------------- LSR
VOCAB = {
    "legal": ["court", "bail", "appeal", "judge", "statute", "accused"],
    "medical": ["drug", "dosage", "patient", "nausea", "symptoms", "clinic"],
    "finance": ["revenue", "dividend", "quarter", "profit", "shares", "billion"],
}


def domain_texts() -> tuple[list[str], list[str]]:
    """12 queries per domain, each two or three words of that domain's own vocabulary."""
    texts, labels = [], []
    for domain, words in VOCAB.items():
        for i in range(12):
            picked = [words[i % 6], words[(i + 1 + i // 6) % 6]] + ([words[i // 2 % 6]] * (i % 2))
            texts.append(" ".join(picked))
            labels.append(domain)
    return texts, labels


def test_latent_semantic_router_end_to_end(
    tmp_path: Path, backbone: Backbone, router_factory
) -> None:
    texts, labels = domain_texts()
    assert len(set(texts)) == 36
    factory = router_factory("lsr", epochs=30, lr=1e-2, batch_size=8)
    router = build_router(factory, DOMAINS, backbone=backbone, cache_dir=tmp_path / "cache")
    assert isinstance(router, LatentSemanticRouter)
    router.fit(QuerySet.of(texts, labels))
    probs = router.predict_proba(texts)
    assert probs.shape == (36, 3) and probs.dtype == torch.float32
    assert probs.argmax(1).tolist() == router.label_ids(labels).tolist()
    torch.testing.assert_close(probs.sum(1), torch.ones(36))
    assert router.n_params == 64 * 3 + 3
    assert len(list((tmp_path / "cache").iterdir())) == 1  # fit and predict share the features

    folder = router.save(tmp_path / "router")
    assert sorted(p.name for p in folder.iterdir()) == ["head.safetensors", "router.json"]
    meta = json.loads((folder / "router.json").read_text())
    assert meta["kind"] == "lsr" and meta["domains"] == list(DOMAINS)
    assert meta["settings"] == {
        "backbone": "tiny_qwen",
        "layer": -1,
        "pooling": "last",
        "template": "Query: {query}\nTopic:",
        "max_length": 128,
        "feature_batch_size": 32,
        "head": "linear",
        "hidden": 256,
        "dropout": 0.0,
        "standardize": True,
        "balanced": True,
        "epochs": 30,
        "lr": 1e-2,
        "weight_decay": 0.0,
        "batch_size": 8,
        "seed": 0,
    }
    back = load_router(folder, backbone=backbone)
    assert isinstance(back, LatentSemanticRouter) and back.domains == DOMAINS
    assert torch.equal(back.predict_proba(texts), probs)
    # Another batch pads differently: equal up to float rounding.
    torch.testing.assert_close(back.predict_proba(texts[5:9]), probs[5:9], atol=1e-6, rtol=0)

    with pytest.raises(ValueError, match="pass backbone="):
        load_router(folder)
    with pytest.raises(ValueError, match="fitted on the features of backbone 'tiny_qwen'"):
        load_router(folder, backbone=load_tiny("mistral", template=QWEN3_RERANKER, seed=0))


def test_the_runs_trainer_settings_reach_router_training(
    tmp_path: Path, backbone: Backbone, router_factory
) -> None:
    texts, labels = domain_texts()  # 36 queries: 5 batches of 8
    factory = router_factory("lsr", epochs=3, batch_size=8)
    data = QuerySet.of(texts, labels)

    def fit(**trainer) -> LatentSemanticRouter:
        router = build_router(factory, DOMAINS, backbone=backbone, cache_dir=tmp_path / "cache")
        return router.fit(data, **trainer)

    assert fit().steps == 3 * 5  # the quiet default trainer: every batch of every epoch
    limited = fit(
        trainer=lambda epochs: L.Trainer(
            max_epochs=epochs,
            limit_train_batches=1,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
    )
    assert limited.steps == 3  # one batch per epoch
