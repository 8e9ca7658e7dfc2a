from __future__ import annotations

import math
import random

import pytest
import torch

from r2r.metrics import RankingEvaluator, query_metrics, rank

LOG2_3 = math.log2(3)  # discount at rank 2
LOG2_5 = math.log2(5)  # discount at rank 4


# --- rank -------------------------------------------------------------------


def test_rank_orders_by_score_then_doc_id() -> None:
    # d1 and d4 tie at 0.5: the smaller id goes first whatever the input order.
    assert rank(["d3", "d4", "d1", "d2"], [0.9, 0.5, 0.5, 0.1]) == ["d3", "d1", "d4", "d2"]
    assert rank(["d3", "d1", "d4", "d2"], [0.9, 0.5, 0.5, 0.1]) == ["d3", "d1", "d4", "d2"]
    # Ids compare as strings: "d10" < "d9".
    assert rank(["d9", "d10", "b"], [1.0, 1.0, 2.0]) == ["b", "d10", "d9"]
    assert rank([], []) == []


def test_rank_accepts_tensors() -> None:
    assert rank(["a", "b", "c"], torch.tensor([0.1, 0.3, 0.2])) == ["b", "c", "a"]


@pytest.mark.parametrize(
    ("doc_ids", "scores", "message"),
    [
        (["a", "b"], [1.0], "2 doc ids but 1 scores"),
        (["a", "a"], [1.0, 2.0], "'a' appears more than once"),
        (["a", "b"], [1.0, float("nan")], "NaN"),
    ],
)
def test_rank_rejects_bad_input(doc_ids, scores, message) -> None:
    with pytest.raises(ValueError, match=message):
        rank(doc_ids, scores)


# --- query_metrics ----------------------------------------------------------


def test_four_doc_toy_with_a_tie() -> None:
    ranked = rank(["d3", "d4", "d1", "d2"], [0.9, 0.5, 0.5, 0.1])  # d3 d1 d4 d2
    relevance = {"d1": 1, "d2": 1, "d3": 0}  # d4 unjudged
    got = query_metrics(ranked, relevance, ks=(2, 5))
    # Relevant at ranks 2 and 4; ideal puts the two relevant docs at ranks 1 and 2.
    idcg = 1 + 1 / LOG2_3
    expected = {
        "ndcg@2": (1 / LOG2_3) / idcg,
        "mrr@2": 1 / 2,
        "precision@2": 1 / 2,
        "recall@2": 1 / 2,
        "ndcg@5": (1 / LOG2_3 + 1 / LOG2_5) / idcg,
        "mrr@5": 1 / 2,
        "precision@5": 2 / 5,  # divided by k, though only 4 docs are ranked
        "recall@5": 2 / 2,
    }
    assert got == pytest.approx(expected, abs=1e-12)
    assert got["ndcg@5"] == pytest.approx(0.6509209298, abs=1e-9)


def test_relevant_docs_missing_from_the_ranking_count() -> None:
    # x and y are relevant but were never retrieved.
    relevance = {"a": 1, "x": 1, "y": 1}
    got = query_metrics(["a", "b", "c"], relevance, ks=(5,))
    idcg = 1 + 1 / LOG2_3 + 1 / math.log2(4)
    assert got == pytest.approx(
        {"ndcg@5": 1 / idcg, "mrr@5": 1.0, "precision@5": 1 / 5, "recall@5": 1 / 3}, abs=1e-12
    )


def test_graded_relevance_and_k_beyond_the_list() -> None:
    relevance = {"a": 1, "b": 3, "c": 0, "d": 2, "e": 2}  # e not ranked
    got = query_metrics(["a", "b", "c", "d"], relevance, ks=(5, 10))
    dcg = 1 + 3 / LOG2_3 + 0 + 2 / LOG2_5  # linear gain = grade
    idcg = 3 + 2 / LOG2_3 + 2 / math.log2(4) + 1 / LOG2_5  # grades 3, 2, 2, 1
    expected = {
        "ndcg@5": dcg / idcg,
        "mrr@5": 1.0,
        "precision@5": 3 / 5,
        "recall@5": 3 / 4,
        "ndcg@10": dcg / idcg,
        "mrr@10": 1.0,
        "precision@10": 3 / 10,
        "recall@10": 3 / 4,
    }
    assert got == pytest.approx(expected, abs=1e-12)


def test_nothing_relevant_in_the_top_k() -> None:
    got = query_metrics(["a", "b", "c"], {"c": 2}, ks=(2, 3))
    assert got["ndcg@2"] == 0.0
    assert got["mrr@2"] == 0.0
    assert got["precision@2"] == 0.0
    assert got["recall@2"] == 0.0
    assert got["ndcg@3"] == pytest.approx((2 / 2) / 2)  # gain 2 at rank 3 / ideal gain 2
    assert got["mrr@3"] == pytest.approx(1 / 3)


def test_negative_grades_are_not_relevant() -> None:
    got = query_metrics(["a", "b"], {"a": -1, "b": 1}, ks=(5,))
    assert got["ndcg@5"] == pytest.approx(1 / LOG2_3)
    assert got["mrr@5"] == pytest.approx(1 / 2)
    assert got["recall@5"] == 1.0


@pytest.mark.parametrize("relevance", [{}, {"a": 0, "b": 0}])
def test_query_without_relevant_doc_raises(relevance) -> None:
    with pytest.raises(ValueError, match="no relevant document"):
        query_metrics(["a", "b"], relevance)


@pytest.mark.parametrize("ks", [(), (0,), (5, -1), (2.5,)])
def test_bad_cutoffs_raise(ks) -> None:
    with pytest.raises(ValueError, match="cutoffs"):
        query_metrics(["a"], {"a": 1}, ks=ks)


# --- RankingEvaluator -------------------------------------------------------


def _two_domain_evaluator() -> RankingEvaluator:
    ev = RankingEvaluator()
    ev.add("legal", "q1", ["a", "b"], [2.0, 1.0], {"a": 1})  # hit at rank 1
    ev.add("legal", "q2", ["a", "b"], [2.0, 1.0], {"b": 1})  # hit at rank 2
    # Same query id in another domain is a different query; ties -> a, b, c.
    ev.add("medical", "q1", ["c", "b", "a"], torch.tensor([0.0, 0.0, 0.0]), {"c": 1})
    return ev


def test_evaluator_keys_and_pooled_mean() -> None:
    got = _two_domain_evaluator().compute("val")
    assert set(got) == {
        f"val/{domain}/{metric}@{k}"
        for domain in ("legal", "medical", "all")
        for metric in ("ndcg", "mrr", "precision", "recall")
        for k in (5, 10)
    }
    # Per query nDCG@5: 1, 1/log2(3), 1/log2(4); MRR@5: 1, 1/2, 1/3.
    assert got["val/legal/ndcg@5"] == pytest.approx(100 * (1 + 1 / LOG2_3) / 2)
    assert got["val/medical/ndcg@5"] == pytest.approx(100 * 0.5)
    # Pooled over the 3 queries, not the mean of the two domain means.
    assert got["val/all/ndcg@5"] == pytest.approx(100 * (1 + 1 / LOG2_3 + 0.5) / 3)
    assert got["val/legal/mrr@10"] == pytest.approx(75.0)
    assert got["val/medical/mrr@10"] == pytest.approx(100 / 3)
    assert got["val/all/mrr@10"] == pytest.approx(100 * (1 + 1 / 2 + 1 / 3) / 3)
    assert got["val/all/precision@5"] == pytest.approx(20.0)
    assert got["val/all/precision@10"] == pytest.approx(10.0)
    assert got["val/all/recall@5"] == pytest.approx(100.0)


def test_evaluator_exports_runs_qrels_and_per_query() -> None:
    ev = _two_domain_evaluator()
    assert len(ev) == 3
    assert ev.run("legal") == {"q1": {"a": 2.0, "b": 1.0}, "q2": {"a": 2.0, "b": 1.0}}
    assert ev.qrels("medical") == {"q1": {"c": 1}}
    assert set(ev.run()) == {"legal/q1", "legal/q2", "medical/q1"}
    assert ev.qrels()["legal/q2"] == {"b": 1}
    results = ev.per_query()
    assert [(r.domain, r.query_id) for r in results] == [
        ("legal", "q1"),
        ("legal", "q2"),
        ("medical", "q1"),
    ]
    assert results[2].ranked == ("a", "b", "c")
    assert results[2].metrics["mrr@5"] == pytest.approx(1 / 3)
    ev.reset()
    assert len(ev) == 0


def test_evaluator_rejects_bad_adds() -> None:
    ev = _two_domain_evaluator()
    with pytest.raises(ValueError, match="'q1' of 'legal' added twice"):
        ev.add("legal", "q1", ["a"], [1.0], {"a": 1})
    with pytest.raises(ValueError, match="reserved"):
        ev.add("all", "q9", ["a"], [1.0], {"a": 1})
    with pytest.raises(ValueError, match="without '/'"):
        ev.add("le/gal", "q9", ["a"], [1.0], {"a": 1})
    with pytest.raises(ValueError, match=r"query 'q9' of domain 'legal': .*no relevant"):
        ev.add("legal", "q9", ["a"], [1.0], {"a": 0})
    with pytest.raises(ValueError, match=r"query 'q9' of domain 'legal': .*1 doc ids but 2"):
        ev.add("legal", "q9", ["a"], [1.0, 2.0], {"a": 1})
    assert len(ev) == 3  # failed adds leave no trace
    with pytest.raises(ValueError, match="no query was added"):
        RankingEvaluator().compute("test")


def test_evaluator_custom_cutoffs() -> None:
    ev = RankingEvaluator(ks=(1, 3))
    ev.add("finance", "q", ["a", "b", "c"], [3.0, 2.0, 1.0], {"b": 1})
    got = ev.compute("test")
    assert got["test/finance/precision@1"] == 0.0
    assert got["test/finance/mrr@3"] == pytest.approx(50.0)
    assert "test/all/ndcg@5" not in got


# --- cross-check with trec_eval ---------------------------------------------


def _random_evaluator(seed: int = 0) -> RankingEvaluator:
    """20 queries x 15 docs, distinct scores, graded qrels with unretrieved positives."""
    rng = random.Random(seed)
    ev = RankingEvaluator(ks=(5, 10))
    for q in range(20):
        domain = "legal" if q < 10 else "medical"
        doc_ids = [f"d{i}" for i in rng.sample(range(1000), 15)]
        scores = [s / 1000 for s in rng.sample(range(-(10**6), 10**6), 15)]  # no ties
        relevance: dict[str, int] = {}
        for doc_id in doc_ids:
            if rng.random() < 0.7:  # some candidates stay unjudged
                relevance[doc_id] = rng.choice([0, 0, 0, 0, 0, 0, 1, 2, 3])
        for i in range(rng.randint(0, 2)):  # relevant docs the run never retrieved
            relevance[f"missing{i}"] = rng.randint(1, 3)
        if not any(g > 0 for g in relevance.values()):
            relevance["missing9"] = 1
        ev.add(domain, f"q{q}", doc_ids, scores, relevance)
    return ev


def test_matches_ir_measures() -> None:
    ir_measures = pytest.importorskip("ir_measures")
    from ir_measures import RR, P, R, nDCG

    # The default pipeline takes nDCG/P/R from pytrec_eval (trec_eval 9) and RR@k from
    # ir-measures' own msmarco provider: pytrec_eval has no RR cutoff.
    names = {"ndcg": nDCG, "mrr": RR, "precision": P, "recall": R}
    measures = [m @ k for m in names.values() for k in (5, 10)]
    ev = _random_evaluator()
    ours = ev.compute("test")
    for domain in ("legal", "medical", None):
        ref = ir_measures.calc_aggregate(measures, ev.qrels(domain), ev.run(domain))
        for metric, measure in names.items():
            for k in (5, 10):
                key = f"test/{domain or 'all'}/{metric}@{k}"
                assert ours[key] / 100 == pytest.approx(ref[measure @ k], abs=1e-6), key

    ours_per_query = {f"{r.domain}/{r.query_id}": r.metrics for r in ev.per_query()}
    key_of = {measure @ k: f"{metric}@{k}" for metric, measure in names.items() for k in (5, 10)}
    rows = list(ir_measures.iter_calc(measures, ev.qrels(), ev.run()))
    assert len(rows) == 20 * len(measures)
    for row in rows:
        got = ours_per_query[row.query_id][key_of[row.measure]]
        assert got == pytest.approx(row.value, abs=1e-6), (row.query_id, row.measure)


def test_random_fixture_exercises_the_conventions() -> None:
    # Guards the cross-check above: it must cover graded, unretrieved and missed positives.
    results = _random_evaluator().per_query()
    assert any(max(r.relevance.values()) > 1 for r in results)
    assert any(r.metrics["recall@10"] < 1 for r in results)
    assert any(r.metrics["mrr@5"] == 0 for r in results)
    assert any(set(r.relevance) - set(r.ranked) for r in results)
