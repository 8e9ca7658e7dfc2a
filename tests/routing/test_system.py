"""The routed reranker: one backbone, named experts, a router, single and batch reranking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel

from r2r.data.errors import DataError
from r2r.files import MARKER
from r2r.fusion import Fusion
from r2r.models.backbones import load_tiny
from r2r.models.scorer import RerankerScorer
from r2r.models.templates import QWEN3_RERANKER, PairEncoder
from r2r.rerank import main as rerank_main
from r2r.routing import OracleRouter, Router
from r2r.routing.system import RoutedReranker, route
from r2r.types import Passage

DOMAINS = ("legal", "medical", "finance")
INPUTS = {"max_length": 160, "max_query_length": 24, "instruction": None}
TINY = {
    "_target_": "r2r.models.backbones.load_tiny",
    "arch": "qwen",
    "seed": 0,
    "template": {"_target_": "r2r.models.templates.named_template", "name": "qwen3_reranker"},
}
ITEMS = [
    ("bail granted to the accused", ["the court granted bail", "aspirin dosage", "a dividend"]),
    ("dosage of aspirin for adults", ["take 75 mg daily", "bail refused", "net revenue rose"]),
    ("dividend paid by the company", ["quarterly dividend", "appeal allowed", "insulin"]),
    ("appeal against conviction", ["appeal dismissed", "the appeal was heard", "ibuprofen"]),
]
TRUTH = ["legal", "medical", "finance", "legal"]


def tiny():
    return load_tiny("qwen", template=QWEN3_RERANKER, seed=0)


@pytest.fixture(scope="module")
def expert_dirs(random_experts) -> dict[str, Path]:
    """Three experts whose LoRA B weights are non-zero and differ, so each changes scores."""
    return random_experts(DOMAINS, scale=0.2)


class FixedRouter(Router):
    """Probabilities given per query text (tests only)."""

    kind = "fixed"

    def __init__(self, domains, table):
        super().__init__(domains)
        self.table = table

    def predict_proba(self, texts, *, true_domains=None):
        return torch.tensor([self.table[t] for t in texts])


def reference_scores(folder: Path | None, query: str, docs: list[str]) -> list[float]:
    """Scores from a fresh backbone holding only that expert (None: the bare backbone)."""
    backbone = tiny()
    model = backbone.model if folder is None else PeftModel.from_pretrained(backbone.model, folder)
    scorer = RerankerScorer.from_backbone(
        backbone, model, share_prefix=True, chunk_tokens=None
    ).eval()
    batch = PairEncoder(backbone.tokenizer, backbone.template, **INPUTS)([query] * len(docs), docs)
    with torch.no_grad():
        return scorer(batch["input_ids"], batch["attention_mask"]).tolist()


def test_route_picks_the_top_expert_or_the_bare_backbone() -> None:
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.2, 0.5, 0.3], [0.25, 0.3, 0.45], [0.0, 0.0, 0.0]])
    # A top probability at the threshold routes, one under it does not; a zero row (router
    # `none`) never routes, whatever the threshold.
    picks = [expert for expert, _ in route(probs, DOMAINS, threshold=0.5)]
    assert picks == ["legal", "medical", None, None]
    picks = [expert for expert, _ in route(probs, DOMAINS, threshold=0.0)]
    assert picks == ["legal", "medical", "finance", None]
    assert route(probs[:1], DOMAINS, threshold=0.0)[0][1] == pytest.approx(
        {"legal": 0.9, "medical": 0.05, "finance": 0.05}
    )


def test_the_active_expert_is_the_routed_one(expert_dirs, expert_bank) -> None:
    bank = expert_bank(expert_dirs, **INPUTS)
    system = RoutedReranker(bank, OracleRouter(DOMAINS), threshold=0.0)
    assert system.experts == list(DOMAINS) and system.bank is bank
    results = system.rerank_batch(ITEMS, true_domains=TRUTH)
    for (query, docs), truth, result in zip(ITEMS, TRUTH, results, strict=True):
        assert result.expert == truth
        assert result.probabilities == {d: float(d == truth) for d in DOMAINS}
        want = reference_scores(expert_dirs[truth], query, docs)
        got = sorted(result.ranking, key=lambda r: r.index)
        assert [r.score for r in got] == pytest.approx(want, abs=1e-5)
        # Another expert (or none) would have scored differently.
        other = reference_scores(expert_dirs[DOMAINS[DOMAINS.index(truth) - 1]], query, docs)
        assert [r.score for r in got] != pytest.approx(other, abs=1e-3)
    # The bare backbone, with the adapters loaded but disabled.
    bare = [system.bank.score(None, [ITEMS[0][0]] * 3, ITEMS[0][1])]
    assert bare[0] == pytest.approx(reference_scores(None, *ITEMS[0]), abs=1e-5)


def test_batch_reranking_equals_one_query_at_a_time(expert_dirs, expert_bank) -> None:
    table = {
        ITEMS[0][0]: [0.9, 0.05, 0.05],
        ITEMS[1][0]: [0.2, 0.5, 0.3],
        ITEMS[2][0]: [0.1, 0.1, 0.8],
        ITEMS[3][0]: [0.6, 0.2, 0.2],
    }
    router = FixedRouter(DOMAINS, table)
    system = RoutedReranker(expert_bank(expert_dirs), router, threshold=0.55)
    batch = system.rerank_batch(ITEMS, top_n=2)
    single = [system.rerank(q, docs, top_n=2) for q, docs in ITEMS]
    # Query 1's top probability (0.5) is under the threshold: the bare backbone scores it.
    assert [r.expert for r in batch] == ["legal", None, "finance", "legal"]
    for one, many in zip(single, batch, strict=True):
        assert one.expert == many.expert
        assert len(many.ranking) == 2
        assert [r.index for r in one.ranking] == [r.index for r in many.ranking]
        assert [r.score for r in one.ranking] == pytest.approx(
            [r.score for r in many.ranking], abs=1e-5
        )
        assert many.ranking[0].score >= many.ranking[1].score


def test_a_given_expert_skips_the_router(expert_dirs, expert_bank) -> None:
    table = {q: [0.9, 0.05, 0.05] for q, _ in ITEMS}  # the router would pick legal for all
    system = RoutedReranker(expert_bank(expert_dirs), FixedRouter(DOMAINS, table), threshold=0.0)
    given = ["finance", None, "medical", None]
    batch = system.rerank_batch(ITEMS, experts=given)
    assert [r.expert for r in batch] == ["finance", "legal", "medical", "legal"]
    assert batch[0].probabilities == {"legal": 0.0, "medical": 0.0, "finance": 1.0}
    assert batch[1].probabilities == pytest.approx(
        dict(zip(DOMAINS, table[ITEMS[1][0]], strict=True))
    )
    # The same scores as the oracle sending the query to that expert.
    oracle = RoutedReranker(system.bank, OracleRouter(DOMAINS), threshold=0.0)
    want = oracle.rerank(*ITEMS[0], true_domain="finance")
    assert system.rerank(*ITEMS[0], expert="finance") == want
    assert [(r.index, r.score) for r in batch[0].ranking] == [
        (r.index, pytest.approx(r.score, abs=1e-6)) for r in want.ranking
    ]
    with pytest.raises(ValueError, match=r"no experts \['tax'\]"):
        system.rerank_batch(ITEMS, experts=["tax", None, None, None])
    with pytest.raises(ValueError, match="4 queries but 1 experts"):
        system.rerank_batch(ITEMS, experts=["legal"])


def test_results_carry_document_ids_and_the_full_ranking(expert_dirs, expert_bank) -> None:
    system = RoutedReranker(expert_bank(expert_dirs), OracleRouter(DOMAINS), threshold=0.0)
    docs = [Passage("d7", "the court granted bail"), Passage("d2", "aspirin", title="drug")]
    result = system.rerank("bail granted", docs, true_domain="legal")
    assert sorted(r.id for r in result.ranking) == ["d2", "d7"]
    assert {r.id: r.index for r in result.ranking} == {"d7": 0, "d2": 1}
    with pytest.raises(ValueError, match="top_n must be at least 1"):
        system.rerank("bail", docs, top_n=0, true_domain="legal")


def test_save_and_load_round_trip(expert_dirs, expert_bank, tmp_path: Path) -> None:
    bank = expert_bank(expert_dirs, **INPUTS)
    system = RoutedReranker(bank, OracleRouter(DOMAINS), threshold=0.0, backbone_config=TINY)
    before = system.rerank_batch(ITEMS, top_n=3, true_domains=TRUTH)
    folder = system.save(tmp_path / "system")
    assert sorted(p.name for p in folder.iterdir()) == [MARKER, "experts", "router", "system.json"]
    again = RoutedReranker.load(folder)  # a system saved without fusion loads without it
    assert (again.experts, again.threshold, again.fusion) == (list(DOMAINS), 0.0, None)
    assert (again.bank.inputs, again.bank.batch_size) == (bank.inputs, bank.batch_size)
    after = again.rerank_batch(ITEMS, top_n=3, true_domains=TRUTH)
    assert [r.expert for r in after] == [r.expert for r in before]
    for a, b in zip(after, before, strict=True):
        assert [(r.index, r.id) for r in a.ranking] == [(r.index, r.id) for r in b.ranking]
        assert [r.score for r in a.ranking] == pytest.approx([r.score for r in b.ranking], abs=1e-6)


FUSION = Fusion("interpolate", {"legal": 0.5, "medical": 0.0, "finance": 1.0}, 60, "ndcg@10")
FIRST = [[3.0, 1.0, 2.0], [0.0, 9.0, 4.5], [1.0, 1.0, 2.0], [5.0, 0.0, 0.0]]


def test_fusion_of_requests_with_first_stage_scores(expert_dirs, expert_bank, tmp_path) -> None:
    """With first-stage scores, each query's expert scores are fused at that expert's
    weight; without them, or on the bare backbone, they are the expert's own. Saved and
    loaded with the system (fusion.json)."""
    table = {
        q: p for (q, _), p in zip(ITEMS, [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]], strict=True)
    }
    bank = expert_bank(expert_dirs, **INPUTS)
    router = FixedRouter(DOMAINS, table)
    system = RoutedReranker(bank, router, threshold=0.0, backbone_config=TINY, fusion=FUSION)
    plain = system.rerank_batch(ITEMS)
    fused = system.rerank_batch(ITEMS, first_stage_scores=FIRST)
    assert [r.expert for r in fused] == ["legal", "medical", "finance", None]
    assert [r.fused for r in fused] == [True, True, True, False]
    for result, unfused, first in zip(fused, plain, FIRST, strict=True):
        own = [r.score for r in sorted(unfused.ranking, key=lambda r: r.index)]
        ids = [str(j) for j in range(len(own))]
        want = own if result.expert is None else list(FUSION.fuse(result.expert, own, first, ids))
        assert [r.score for r in sorted(result.ranking, key=lambda r: r.index)] == want
    # medical's weight 0 is the first stage's order; finance's 1 the expert's own.
    assert [r.index for r in fused[1].ranking] == [1, 2, 0]
    assert [r.index for r in fused[2].ranking] == [r.index for r in plain[2].ranking]
    one = system.rerank(ITEMS[0][0], ITEMS[0][1], first_stage_scores=FIRST[0])
    assert one.ranking == fused[0].ranking and one.fused
    partly = system.rerank_batch(ITEMS[:2], first_stage_scores=[FIRST[0], None])
    assert [r.fused for r in partly] == [True, False]
    assert partly[1].ranking == plain[1].ranking
    oracle = RoutedReranker(
        bank, OracleRouter(DOMAINS), threshold=0.0, backbone_config=TINY, fusion=FUSION
    )
    again = RoutedReranker.load(oracle.save(tmp_path / "system"))
    assert again.fusion == FUSION
    assert (tmp_path / "system" / "fusion.json").is_file()
    with pytest.raises(ValueError, match="query 1: 3 documents but 2 first-stage scores"):
        system.rerank_batch(ITEMS[:2], first_stage_scores=[FIRST[0], [1.0, 2.0]])
    with pytest.raises(ValueError, match="2 queries but 1 first-stage score lists"):
        system.rerank_batch(ITEMS[:2], first_stage_scores=[FIRST[0]])
    with pytest.raises(ValueError, match=r"no weight for the experts \['finance'\]"):
        partial = Fusion("rrf", {"legal": 0.5, "medical": 0.5}, 60, "ndcg@10")
        RoutedReranker(bank, router, threshold=0.0, fusion=partial)


def test_bad_systems(expert_dirs, expert_bank, tmp_path: Path) -> None:
    partial = expert_bank({"legal": expert_dirs["legal"]})
    with pytest.raises(ValueError, match=r"routes to \['finance', 'medical'\]"):
        RoutedReranker(partial, OracleRouter(DOMAINS), threshold=0.0)
    bank = expert_bank(expert_dirs)
    with pytest.raises(ValueError, match="threshold"):
        RoutedReranker(bank, OracleRouter(DOMAINS), threshold=1.5)
    with pytest.raises(FileNotFoundError, match=r"no system\.json"):
        RoutedReranker.load(tmp_path)
    with pytest.raises(ValueError, match="needs backbone_config"):
        RoutedReranker(bank, OracleRouter(DOMAINS), threshold=0.0).save(tmp_path / "s")


def write_system(folder: Path, backbone: object, experts: object = ("legal",)) -> Path:
    folder.mkdir(parents=True)
    meta = {"backbone": backbone, "experts": list(experts), "threshold": 0.0}
    (folder / "system.json").write_text(json.dumps(meta))
    return folder


@pytest.mark.parametrize(
    ("backbone", "field", "target"),
    [
        ({"_target_": "builtins.open", "file": "{victim}", "mode": "w"}, "backbone._target_", "builtins.open"),
        ({"_target_": "pathlib.Path.write_text", "_args_": ["{victim}", "x"]}, "backbone._target_", "pathlib.Path.write_text"),
        ({"_target_": "shutil.copyfile", "src": __file__, "dst": "{victim}"}, "backbone._target_", "shutil.copyfile"),
        ({"_target_": "os.system", "command": "touch {victim}"}, "backbone._target_", "os.system"),
        # Nested: a safe loader whose template names something else.
        ({"_target_": "r2r.models.backbones.load_tiny", "arch": "qwen", "seed": 0, "template": {"_target_": "os.system", "command": "touch {victim}"}}, "backbone.template._target_", "os.system"),
    ],
)  # fmt: skip
def test_loading_refuses_anything_but_r2rs_loaders_before_it_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], backbone: dict, field: str, target: str
) -> None:
    victim = tmp_path / "victim.txt"
    node = json.loads(json.dumps(backbone).replace("{victim}", str(victim)))
    folder = write_system(tmp_path / "system", node)
    with pytest.raises(DataError) as info:
        RoutedReranker.load(folder)
    assert str(info.value).startswith(
        f"{folder / 'system.json'} field '{field}': refused: {target!r} is not an r2r backbone "
        "loader (allowed: r2r.models.backbones.load_gguf_smollm2, "
    )
    source = tmp_path / "in.jsonl"
    source.write_text('{"query": "q", "documents": ["d"]}\n')
    assert rerank_main([str(folder), str(source), str(tmp_path / "out.jsonl")]) == 2
    assert capsys.readouterr().err == f"error: {info.value}\n"
    assert not victim.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "system"]


def test_loading_refuses_expert_names_that_leave_the_folder(tmp_path: Path) -> None:
    loader = {"_target_": "r2r.models.backbones.load_tiny", "arch": "qwen", "seed": 0}
    for name in ("../../elsewhere", "/abs", "a/b", "", 7):
        folder = write_system(tmp_path / f"s{abs(hash(str(name)))}", loader, [name])
        with pytest.raises(DataError, match=r"field 'experts': refused: .* not a plain folder"):
            RoutedReranker.load(folder)
    folder = write_system(tmp_path / "extra", {**loader, "_partial_": True})
    with pytest.raises(DataError, match=r"field 'backbone._partial_': refused: '_partial_'"):
        RoutedReranker.load(folder)


TRAINING_MODULES = ("lightning", "r2r.lit_reranker", "r2r.pipeline", "r2r.data.datamodule", "bm25s")


@pytest.mark.parametrize("module", ["r2r.routing.system", "r2r.serve", "r2r.export"])
def test_the_serving_path_imports_no_training_code(module: str) -> None:
    """A deployed system loads and scores without Lightning's trainer stack, the data
    module, BM25 or masking (a fresh interpreter: this one has imported everything)."""
    import subprocess
    import sys

    code = f"import sys, {module}; print([m for m in {TRAINING_MODULES!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
