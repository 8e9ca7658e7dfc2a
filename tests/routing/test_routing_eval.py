"""Tables 2 and 3: the score matrix, the forgetting table and routed evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from r2r.data.datamodule import QuerySet
from r2r.evaluation import evaluate
from r2r.models.experts import ExpertBank
from r2r.routing import NoRouter, OracleRouter, RandomRouter, Router
from r2r.routing.evaluation import (
    accuracy_table,
    evaluate_router,
    forgetting,
    forgetting_table,
    routing_report,
    routing_summary,
    score_matrix,
    table2,
)
from r2r.routing.feature_router import FeatureRouter
from r2r.routing.features import FeatureCache
from r2r.routing.system import RoutedReranker
from r2r.types import CandidateList, LabelledQueries, Passage, Query, ScoredList

DOMAINS = ("legal", "medical")


def candidates(domain: str, qid: str, query: str, docs: list[str]) -> CandidateList:
    passages = tuple(Passage(f"{qid}-d{i}", d) for i, d in enumerate(docs))
    return CandidateList(domain, Query(qid, query), passages, (3.0, 2.0, 1.0), {f"{qid}-d1": 1})


LISTS = [
    candidates("legal", "l1", "bail granted", ["bail refused", "the court granted bail", "tax"]),
    candidates("legal", "l2", "appeal heard", ["aspirin", "the appeal was heard", "appeal"]),
    candidates("medical", "m1", "aspirin dose", ["bail", "take 75 mg of aspirin", "dose"]),
    candidates("medical", "m2", "insulin use", ["insulin pumps", "insulin for diabetes", "law"]),
]


@pytest.fixture(scope="module")
def bank(random_experts, expert_bank) -> ExpertBank:
    return expert_bank(random_experts(DOMAINS, scale=0.3))


@pytest.fixture(scope="module")
def matrix(bank: ExpertBank):
    return score_matrix(bank, DOMAINS, LISTS, progress=False)


def evaluated(name: str, router: Router, bank: ExpertBank, matrix, **kw):
    """`router`'s row: one system per router, all over the same bank."""
    return evaluate_router(name, RoutedReranker(bank, router, threshold=0.0), matrix, **kw)


def test_every_list_is_scored_under_every_expert_and_the_base(bank, matrix) -> None:
    assert list(matrix.scored) == [None, "legal", "medical"]
    for expert, items in matrix.scored.items():
        assert [s.candidates for s in items] == LISTS
        assert len(matrix.seconds[expert]) == 4 and all(t > 0 for t in matrix.seconds[expert])
        c = LISTS[2]
        alone = bank.score(expert, [c.query.text] * 3, [p.content for p in c.passages])
        assert list(items[2].scores) == pytest.approx(alone, abs=1e-5)
    # The experts change the scores.
    assert matrix.scored["legal"][0].scores != pytest.approx(matrix.scored[None][0].scores)


def test_forgetting_table_holds_each_expert_on_each_domain(matrix) -> None:
    table = forgetting(matrix)
    assert list(table) == ["base", "legal", "medical"]
    for name, expert in (("base", None), ("legal", "legal"), ("medical", "medical")):
        want = evaluate(matrix.scored[expert], "x")
        assert table[name] == {k.split("/", 1)[1]: v for k, v in want.items()}
    md = forgetting_table(table).splitlines()
    assert md[0] == "| ndcg@10 | legal | medical |"
    assert (
        md[2]
        == f"| base | {table['base']['legal/ndcg@10']:.1f} | {table['base']['medical/ndcg@10']:.1f} |"
    )


def test_routed_rows_select_from_the_matrix(bank, matrix) -> None:
    oracle = evaluated("oracle", OracleRouter(DOMAINS), bank, matrix, fit_s=1.5)
    assert (oracle.name, oracle.fit_s) == ("oracle", 1.5)
    assert oracle.experts == ["legal", "legal", "medical", "medical"]
    assert (oracle.accuracy, oracle.macro_f1, oracle.n_params) == (100.0, 100.0, 0)
    diagonal = [matrix.scored[c.domain][i] for i, c in enumerate(LISTS)]
    assert oracle.metrics == {k.split("/", 1)[1]: v for k, v in evaluate(diagonal, "x").items()}
    assert oracle.reranking_s == pytest.approx(
        sum(matrix.seconds[c.domain][i] for i, c in enumerate(LISTS))
    )
    assert oracle.routing_s > 0 and oracle.time_fraction == oracle.routing_s / oracle.reranking_s

    bare = evaluated("none", NoRouter(DOMAINS), bank, matrix)
    assert bare.fit_s == 0.0
    assert bare.experts == [None] * 4 and bare.accuracy is None and bare.macro_f1 is None
    assert bare.metrics == forgetting(matrix)["base"]

    rand = evaluated("random", RandomRouter(DOMAINS, seed=0), bank, matrix)
    picks = [
        DOMAINS[int(row.argmax())]
        for row in RandomRouter(DOMAINS, seed=0).predict_proba([c.query.text for c in LISTS])
    ]
    assert rand.experts == picks
    assert (
        rand.accuracy == 100.0 * sum(p == c.domain for p, c in zip(picks, LISTS, strict=True)) / 4
    )
    md = table2([oracle, bare]).splitlines()
    assert md[0] == (
        "| router | accuracy | macro-F1 | ndcg@5 | ndcg@10 | mrr@5 | mrr@10 | recall@5 | "
        "recall@10 | params | routing/reranking |"
    )
    assert md[2].startswith("| oracle | 100.0 | 100.0 | ")
    assert md[3].startswith("| none | – | – | ")


def test_scored_lists_keep_positions(matrix) -> None:
    # ScoredList i of every expert belongs to list i, with one score per passage.
    for items in matrix.scored.values():
        assert all(isinstance(s, ScoredList) and len(s.scores) == 3 for s in items)


class Counting:
    """A featurizer that records every batch of texts it is asked for: one-hot by domain."""

    dim, key = 2, "counting"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        self.calls.append(list(texts))
        domain = {c.query.text: DOMAINS.index(c.domain) for c in LISTS}
        return torch.eye(2)[[domain[t] for t in texts]]


def test_routing_is_timed_without_the_feature_cache(
    bank, matrix, head_settings, tmp_path: Path
) -> None:
    """The pooled queries' features are in the cache (fitted on the same texts); timing
    must still compute them, as a deployed router does, after a one-query warm-up."""
    featurizer, cache = Counting(), FeatureCache(tmp_path)
    settings = head_settings(epochs=50, lr=0.1, seed=0)
    router = FeatureRouter(DOMAINS, featurizer, cache=cache, **settings)
    texts = [c.query.text for c in LISTS]
    router.fit(QuerySet.of(texts, [c.domain for c in LISTS]))
    assert featurizer.calls == [texts]  # computed once, now cached
    result = evaluated("lsr", router, bank, matrix)
    assert featurizer.calls == [texts, texts[:1], texts]
    assert router.cache is cache
    assert result.experts == ["legal", "legal", "medical", "medical"]
    assert result.routing_s > 0


class Keyword(Router):
    """legal with 0.7 for texts that mention bail, else medical with 0.55."""

    kind = "keyword"

    def predict_proba(self, texts, *, true_domains=None):
        return torch.tensor([[0.7, 0.3] if "bail" in t else [0.45, 0.55] for t in texts])


# The finance probe is left out: finance is not routed here.
PROBES = LabelledQueries(
    ("is bail possible", "aspirin for pain", "bail terms", "tax rate"),
    ("legal", "medical", "legal", "finance"),
)


def test_accuracy_per_domain_on_test_queries_and_probes_with_a_fallback(bank, matrix) -> None:
    router = Keyword(DOMAINS)
    always = evaluated("keyword", router, bank, matrix, probes=PROBES)
    # Test: "appeal heard" (legal) goes to medical.
    assert always.domain_accuracy == {"legal": 50.0, "medical": 100.0, "all": 75.0}
    assert always.probe_accuracy == {"legal": 100.0, "medical": 100.0, "all": 100.0}
    assert always.base_share == {"test": 0.0, "probes": 0.0}
    # At 0.6 only the bail queries reach an expert; the rest go to the bare backbone.
    system = RoutedReranker(bank, router, threshold=0.6)
    fallback = evaluate_router("keyword@0.6", system, matrix, probes=PROBES)
    assert fallback.experts == ["legal", None, None, None]
    assert fallback.domain_accuracy == {"legal": 50.0, "medical": 0.0, "all": 25.0}
    assert fallback.probe_accuracy == pytest.approx(
        {"legal": 100.0, "medical": 0.0, "all": 200 / 3}
    )
    assert fallback.base_share == pytest.approx({"test": 75.0, "probes": 100 / 3})
    bare = evaluated("none", NoRouter(DOMAINS), bank, matrix, probes=PROBES)
    assert (bare.domain_accuracy, bare.probe_accuracy, bare.base_share) == ({}, {}, {})

    counts = {"domains": DOMAINS, "n_queries": 4, "n_unseen": 4, "n_probes": 3, "n_pseudo": 7}
    report = routing_report([always, fallback, bare], forgetting(matrix), note="Tiny.", **counts)
    assert report.startswith("Note: Tiny.\n\nPooled test set: 4 queries")
    assert "also learnt from 7 pseudo-queries" in report
    assert "`probe`: 3 short one-line questions written by hand" in report
    table = accuracy_table([always, fallback, bare]).splitlines()
    assert table == [
        "| router | test legal | test medical | test all | probe legal | probe medical | "
        "probe all | test to base | probe to base |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        "| keyword | 50.0 | 100.0 | 75.0 | 100.0 | 100.0 | 100.0 | 0.0 | 0.0 |",
        "| keyword@0.6 | 50.0 | 0.0 | 25.0 | 100.0 | 0.0 | 66.7 | 75.0 | 33.3 |",
    ]
    assert "\n".join(table) in report
    summary = routing_summary([always], forgetting(matrix), deployed=None, **counts)
    assert (summary["probe_questions"], summary["pseudo_queries"]) == (3, 7)
    assert summary["routers"]["keyword"]["probe_accuracy"] == always.probe_accuracy
    assert summary["routers"]["keyword"]["domain_accuracy"] == always.domain_accuracy
