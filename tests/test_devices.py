"""Where evaluation and serving run (`r2r.devices`), each DDP rank's share of an evaluation,
and the same scores on CUDA as on the CPU. The `gpu` tests need CUDA and are skipped
without it; with it they run as they are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from peft import PeftModel
from scipy.stats import spearmanr

from r2r.devices import gather, merge, resolve_device, shard
from r2r.models import experts
from r2r.models.backbones import Backbone, load_tiny
from r2r.models.experts import ExpertBank, add_lora, save_adapter
from r2r.models.templates import QWEN3_RERANKER
from r2r.rerank import main
from r2r.routing import OracleRouter
from r2r.routing.features import LatentFeaturizer
from r2r.routing.system import RoutedReranker
from r2r.types import CandidateList, Passage, Query
from tests.routing.test_rerank_cli import TINY  # the tiny backbone's saved config

CONF = Path(__file__).resolve().parents[1] / "conf"
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs CUDA")
ON_CUDA = [pytest.mark.gpu, needs_cuda]
DOMAINS = ("legal", "medical")
QUERIES = ["bail granted to the accused", "dosage of aspirin for adults", "appeal heard"]
DOCUMENTS = [
    "the court granted bail",
    "take 75 mg of aspirin daily with food",
    "the appeal was heard and dismissed with costs",
]
LISTS = [
    CandidateList(
        domain,
        Query(f"q{i}", query),
        tuple(Passage(f"d{j}", doc) for j, doc in enumerate(DOCUMENTS)),
        (3.0, 2.0, 1.0),
        {"d0": 1},
    )
    for i, (domain, query) in enumerate(zip(["legal", "medical", "legal"], QUERIES, strict=True))
]


def tiny() -> Backbone:
    return load_tiny("qwen", template=QWEN3_RERANKER, seed=0)


def bank(adapters: dict[str, Path], *, device: str = "cpu", backbone: Backbone | None = None):
    """The pipeline's bank: conf/config.yaml's eval batch size and the tiny_qwen inputs."""
    cfg = OmegaConf.merge(
        OmegaConf.load(CONF / "config.yaml"), OmegaConf.load(CONF / "backbone" / "tiny_qwen.yaml")
    )
    return ExpertBank(
        backbone or tiny(),
        adapters,
        inputs=OmegaConf.to_container(cfg.inputs),
        batch_size=cfg.datamodule.eval_batch_size,
        scorer=OmegaConf.to_container(cfg.scorer),
        device=device,
    )


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two saved experts with seeded random LoRA weights, so each changes the scores."""
    root, out = tmp_path_factory.mktemp("experts"), {}
    lora = OmegaConf.to_container(OmegaConf.load(CONF / "config.yaml").lora)
    for k, domain in enumerate(DOMAINS):
        model = add_lora(tiny().model, **{**lora, "r": 4, "alpha": 8})
        gen = torch.Generator().manual_seed(k)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
        out[domain] = save_adapter(model, root / domain)
    return out


# ---------------------------------------------------------------------------- devices
def test_device_names(monkeypatch) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cuda", 3)) == torch.device("cuda", 3)  # given as is
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    for name in ("cuda", "gpu", "cuda:1"):
        with pytest.raises(ValueError, match=f"device '{name}': CUDA is not available"):
            resolve_device(name)
    for name in ("tpu", "cuda:x", "meta"):
        with pytest.raises(ValueError, match=f"device '{name}': expected cpu, cuda"):
            resolve_device(name)


def test_under_ddp_a_cuda_rank_evaluates_on_its_own_device(monkeypatch) -> None:
    """Lightning's DDP makes cuda:<local_rank> the current device of each rank's process;
    the trainer's accelerator name then means that device (here: rank 1 of 2)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    for accelerator in ("auto", "gpu", "cuda"):
        assert resolve_device(accelerator) == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)


@pytest.mark.parametrize(
    ("trainer", "device"), [("cpu", "cpu"), ("auto", "cpu"), ("ddp", "cpu"), ("gpu", "cuda:0")]
)
def test_the_shipped_trainers_evaluation_device(make_cfg, monkeypatch, trainer, device) -> None:
    """What Job.bank passes to the bank, on a machine without CUDA (and, for trainer=gpu,
    one with it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: trainer == "gpu")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    accelerator = make_cfg(f"trainer={trainer}").trainer.accelerator
    assert resolve_device(accelerator) == torch.device(device)


# ---------------------------------------------------------------------------- shards
def test_shards_are_round_robin_and_merge_back_in_order() -> None:
    items = list("abcdefg")
    parts = [shard(items, rank, 3) for rank in range(3)]
    assert parts == [["a", "d", "g"], ["b", "e"], ["c", "f"]]
    assert merge(parts) == items
    assert merge([shard(items[:1], rank, 2) for rank in range(2)]) == ["a"]  # a rank with none
    assert merge([shard([], rank, 2) for rank in range(2)]) == []
    # Outside a process group this process is the only rank: its share is everything.
    assert shard(items) == gather(items) == items


def test_sharded_scoring_outside_a_process_group_is_unsharded(adapters) -> None:
    both = bank(adapters)
    for name in (None, *DOMAINS):
        whole = both.score_lists(name, LISTS)
        assert both.score_lists(name, LISTS, sharded=True) == whole
        assert [s.candidates for s in whole] == LISTS


def test_a_closed_bank_hands_the_model_back_bare_and_where_it_was(adapters) -> None:
    backbone = tiny()
    both = bank(adapters, backbone=backbone)
    assert isinstance(both.model, PeftModel)
    both.close()
    assert not any("lora_" in name for name, _ in backbone.model.named_parameters())
    assert next(backbone.model.parameters()).device == torch.device("cpu")


def test_the_cli_rejects_a_device_it_cannot_use(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        main([str(tmp_path), str(tmp_path / "in.jsonl"), str(tmp_path / "out"), "--device", "tpu"])
    assert "--device: device 'tpu': expected cpu, cuda" in capsys.readouterr().err


# ---------------------------------------------------------------------------- precision
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=ON_CUDA)])
def test_bf16_scores_rank_as_fp32_scores_do(device: str) -> None:
    """A bf16 backbone (hub backbones load so) scores in bf16, within tolerance of fp32.
    bf16 keeps 8 significant bits (relative rounding 2^-9 per operation); through the
    tiny model's two layers the margins (about -2.5 to -1.5, adjacent ones 0.04 apart)
    moved by at most 0.028 on the CPU. Hence: every margin within 0.1 of fp32, and the
    ranking of all 9 pairs kept up to a swap of near-ties (Spearman >= 0.95)."""
    queries = [q for q in QUERIES for _ in DOCUMENTS]
    documents = [d for _ in QUERIES for d in DOCUMENTS]
    fp32 = bank({}).score(None, queries, documents)
    backbone = tiny()
    backbone.model.to(torch.bfloat16)
    half = bank({}, device=device, backbone=backbone)
    assert next(half.model.parameters()).dtype == torch.bfloat16  # the model's own dtype
    bf16 = half.score(None, queries, documents)
    assert bf16 == pytest.approx(fp32, abs=0.1)
    assert bf16 != pytest.approx(fp32, abs=1e-4)  # it did run in bf16
    assert spearmanr(fp32, bf16).statistic >= 0.95


# ---------------------------------------------------------------------------- CUDA
@pytest.mark.gpu
@needs_cuda
def test_cuda_names_mean_this_processes_device() -> None:
    current = torch.device("cuda", torch.cuda.current_device())
    assert resolve_device("auto") == resolve_device("gpu") == resolve_device("cuda") == current
    assert resolve_device("cuda:0") == torch.device("cuda", 0)


@pytest.mark.gpu
@needs_cuda
def test_a_bank_on_cuda_scores_as_on_the_cpu(adapters) -> None:
    """fp32 on both: only the kernels' summation order differs (TF32 is off for matmuls by
    default), so margins of order 1 agree to 1e-4."""
    on_cpu, on_cuda = bank(adapters), bank(adapters, device="cuda")
    assert next(on_cuda.model.parameters()).device.type == "cuda"
    for name in (None, *DOMAINS):
        ours = on_cuda.score_lists(name, LISTS)
        theirs = on_cpu.score_lists(name, LISTS)
        for a, b in zip(ours, theirs, strict=True):
            assert a.scores == pytest.approx(b.scores, abs=1e-4)
    on_cuda.close()
    assert next(on_cuda.backbone.model.parameters()).device.type == "cpu"


@pytest.mark.gpu
@needs_cuda
def test_router_features_are_computed_on_the_models_device() -> None:
    on_cpu, on_cuda = tiny(), tiny()
    on_cuda.model.to("cuda")
    ours = LatentFeaturizer.from_backbone(on_cuda)(QUERIES)
    assert ours.device.type == "cpu"  # handed back on the CPU, as the router heads take them
    assert ours == pytest.approx(LatentFeaturizer.from_backbone(on_cpu)(QUERIES), abs=1e-4)


@pytest.mark.gpu
@needs_cuda
def test_a_saved_system_serves_on_cuda_as_on_the_cpu(adapters, tmp_path: Path) -> None:
    system = RoutedReranker(
        bank(adapters), OracleRouter(DOMAINS), threshold=0.0, backbone_config=TINY
    )
    folder = system.save(tmp_path / "system")
    served = RoutedReranker.load(folder, device="cuda")
    assert next(served.bank.model.parameters()).device.type == "cuda"
    rows = [
        {"id": c.query.id, "query": c.query.text, "documents": DOCUMENTS, "domain": c.domain}
        for c in LISTS
    ]
    requests = tmp_path / "in.jsonl"
    requests.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for device in ("cpu", "cuda"):
        assert main([str(folder), str(requests), str(tmp_path / device), "--device", device]) == 0
    on_cpu, on_cuda = (
        [json.loads(line) for line in (tmp_path / d).read_text().splitlines()]
        for d in ("cpu", "cuda")
    )
    for a, b in zip(on_cuda, on_cpu, strict=True):
        assert a["expert"] == b["expert"]
        assert [r["score"] for r in a["ranking"]] == pytest.approx(
            [r["score"] for r in b["ranking"]], abs=1e-4
        )


@pytest.mark.gpu
@needs_cuda
def test_a_short_fit_on_the_gpu_evaluates_its_experts_there(make_cfg, monkeypatch) -> None:
    """trainer=gpu: Lightning hands the model back on the CPU after each fit; every
    evaluation (zero-shot, the experts, the routing matrix) still scores on CUDA."""
    from r2r.pipeline import run

    devices = []
    score_pairs = experts.score_pairs

    def spy(scorer, *args, **kwargs):
        devices.append(next(scorer.parameters()).device)
        return score_pairs(scorer, *args, **kwargs)

    monkeypatch.setattr(experts, "score_pairs", spy)
    cfg = make_cfg(
        "debug=fast",
        "trainer=gpu",
        "domain.names=[legal,medical]",
        *(f"~routers.{name}" for name in ("embedding_mlp", "tfidf", "random")),
        "routers.lsr.epochs=3",
    )
    metrics = run(cfg)
    assert set(devices) == {torch.device("cuda", torch.cuda.current_device())}
    # zero_shot on 2 splits, each domain's expert on its lists of 2 splits, and the matrix
    # (the bare backbone and 2 experts): the scoring calls of the run, all on CUDA
    assert len(devices) == 2 + 2 * 2 + 3
    assert metrics["fine_tuned/all/ndcg@10"] > 0
    routing = json.loads((Path(cfg.paths.output) / "routing.json").read_text())
    assert routing["routers"]["oracle"]["accuracy"] == 100.0


def shared_and_full(backbone: Backbone, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The tiny backbone's scores of every query x document on `device`, through the shared
    prompt prefixes (the queries as groups) and as full rows."""
    from r2r.models.scorer import RerankerScorer
    from r2r.models.templates import encode_pairs

    queries = [q for q in QUERIES for _ in DOCUMENTS]
    enc = encode_pairs(
        backbone.tokenizer, backbone.template, queries, DOCUMENTS * len(QUERIES),
        max_length=160, max_query_length=48,
    )  # fmt: skip
    ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    groups = torch.arange(len(queries), device=device) // len(DOCUMENTS)
    scorer = RerankerScorer.from_backbone(backbone, share_prefix=True, chunk_tokens=64).eval()
    with torch.no_grad():
        return scorer(ids, mask, groups).cpu(), scorer(ids, mask).cpu()


@pytest.mark.gpu
@needs_cuda
def test_shared_prefixes_on_cuda_score_as_the_full_rows() -> None:
    backbone = tiny()
    backbone.model.to("cuda")
    shared, full = shared_and_full(backbone, "cuda")
    assert (shared - full).abs().max().item() < 1e-4
    on_cpu, _ = shared_and_full(tiny(), "cpu")
    assert (shared - on_cpu).abs().max().item() < 1e-4


@pytest.mark.gpu
@needs_cuda
def test_bf16_on_cuda_shares_prefixes_and_ranks_as_fp32() -> None:
    half = load_tiny("qwen", template=QWEN3_RERANKER, seed=0, dtype="bfloat16")
    half.model.to("cuda")
    shared, full = shared_and_full(half, "cuda")
    fp32, _ = shared_and_full(tiny(), "cpu")
    assert shared == pytest.approx(full.tolist(), abs=0.1)
    assert spearmanr(fp32, shared).statistic >= 0.95


@pytest.mark.gpu
@needs_cuda
def test_a_bf16_training_step_on_cuda_through_shared_prefixes() -> None:
    """bf16-true weights on CUDA: the shared-prefix step's LoRA gradients match the full
    rows' within bf16 rounding."""
    from r2r.models.scorer import RerankerScorer
    from r2r.models.templates import encode_pairs

    backbone = load_tiny("qwen", template=QWEN3_RERANKER, seed=0, dtype="bfloat16")
    model = add_lora(backbone.model, r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"]).to("cuda")  # fmt: skip
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    scorer = RerankerScorer.from_backbone(backbone, model, share_prefix=True, chunk_tokens=64)
    queries = [q for q in QUERIES for _ in DOCUMENTS]
    enc = encode_pairs(
        backbone.tokenizer, backbone.template, queries, DOCUMENTS * len(QUERIES),
        max_length=160, max_query_length=48,
    )  # fmt: skip
    ids, mask = enc["input_ids"].cuda(), enc["attention_mask"].cuda()
    groups = torch.arange(len(queries), device="cuda") // len(DOCUMENTS)
    grads = []
    for args in ((), (groups,)):
        model.zero_grad()
        scores = scorer(ids, mask, *args).view(len(QUERIES), len(DOCUMENTS))
        torch.nn.functional.cross_entropy(scores, torch.zeros(len(QUERIES), dtype=torch.long, device="cuda")).backward()  # fmt: skip
        grads.append(torch.cat([p.grad.float().flatten() for p in model.parameters() if p.requires_grad]))  # fmt: skip
    assert grads[0].abs().max() > 0
    assert torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0) > 0.99
