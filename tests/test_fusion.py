"""First-stage fusion on hand-made lists: the two methods, the weight chosen on dev."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from r2r.errors import DataError
from r2r.fusion import Fusion, choose, fuse, normalised
from r2r.metrics import rank
from r2r.types import CandidateList, Passage, Query, ScoredList

IDS = ("p0", "p1", "p2")


def scored(domain: str, qid: str, first: list[float], rerank: list[float], relevant: str):
    passages = tuple(Passage(p, f"text {p}") for p in IDS)
    c = CandidateList(domain, Query(qid, "q"), passages, tuple(first), {relevant: 1})
    return ScoredList(c, tuple(rerank))


def test_normalised_is_min_max_and_zeros_for_equal_scores() -> None:
    assert normalised([2.0, 0.0, 1.0]) == [1.0, 0.0, 0.5]
    assert normalised([-4.0, 6.0]) == [0.0, 1.0]
    assert normalised([5.0, 5.0, 5.0]) == [0.0, 0.0, 0.0]


def test_interpolation_weighs_the_normalised_scores() -> None:
    # reranker -> [1, 0, 0.5], first stage -> [0, 1, 0.5]
    got = fuse([2.0, 0.0, 1.0], [10.0, 30.0, 20.0], IDS, weight=0.3, method="interpolate", rrf_k=60)
    assert got == pytest.approx((0.3, 0.7, 0.5))
    got = fuse([5.0, 5.0, 5.0], [10.0, 30.0, 20.0], IDS, weight=0.3, method="interpolate", rrf_k=60)
    assert got == pytest.approx((0.0, 0.7, 0.35))


def test_rrf_weighs_the_reciprocal_ranks_ties_by_doc_id() -> None:
    # reranker ranks p0 1, p2 2, p1 3; first stage ranks p1 1, p2 2, p0 3.
    got = fuse([2.0, 0.0, 1.0], [10.0, 30.0, 20.0], IDS, weight=0.5, method="rrf", rrf_k=60)
    assert got == pytest.approx((0.5 / 61 + 0.5 / 63, 0.5 / 63 + 0.5 / 61, 0.5 / 62 + 0.5 / 62))
    # p0 and p1 tie: r2r ranks them by doc id, and the middle one comes last.
    assert rank(IDS, got) == ["p0", "p1", "p2"]
    # Equal reranker scores rank by doc id (p0 before p1), so p0 takes the reranker's rank 1.
    got = fuse([1.0, 1.0, 0.0], [0.0, 0.0, 0.0], IDS, weight=1.0, method="rrf", rrf_k=10)
    assert got == pytest.approx((1 / 11, 1 / 12, 1 / 13))


@pytest.mark.parametrize("method", ["interpolate", "rrf"])
def test_weight_zero_is_the_first_stage_order_and_one_the_rerankers(method: str) -> None:
    rng = random.Random(0)
    ids = [f"d{i}" for i in range(12)]
    for _ in range(20):
        # BM25-like: a tail of equal zero scores, broken by doc id in both rankings.
        first = [rng.choice([0.0, 0.0, rng.uniform(0, 20)]) for _ in ids]
        rerank = [rng.gauss(0, 3) for _ in ids]
        zero = fuse(rerank, first, ids, weight=0.0, method=method, rrf_k=60)
        one = fuse(rerank, first, ids, weight=1.0, method=method, rrf_k=60)
        assert rank(ids, zero) == rank(ids, first)
        assert rank(ids, one) == rank(ids, rerank)


def test_bad_fusions() -> None:
    with pytest.raises(ValueError, match="method 'sum'"):
        fuse([1.0], [1.0], ["a"], weight=0.5, method="sum", rrf_k=60)
    with pytest.raises(ValueError, match="2 scores, 1 first-stage scores and 2 doc ids"):
        fuse([1.0, 2.0], [1.0], ["a", "b"], weight=0.5, method="rrf", rrf_k=60)
    with pytest.raises(ValueError, match=r"within \[0, 1\], got \[1.5\]"):
        Fusion("interpolate", {"legal": 1.5}, 60, "ndcg@10")
    with pytest.raises(ValueError, match="rrf_k must be a positive integer"):
        Fusion("rrf", {"legal": 0.5}, 0, "ndcg@10")
    with pytest.raises(ValueError, match="metric 'ndcg@3'"):
        Fusion("rrf", {"legal": 0.5}, 60, "ndcg@3")
    with pytest.raises(KeyError, match="no fusion weight for domain 'finance'"):
        Fusion("rrf", {"legal": 0.5}, 60, "ndcg@10").fuse("finance", [1.0], [1.0], ["a"])


# Both domains: first stage [3, 2, 1], reranker [0, 1, 5]. Fused (interpolate):
# p0 = 1 - w, p1 = 0.5 - 0.3 w, p2 = w (p0 before p2 at the tie w = 0.5).
GRID = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
R2, R3 = 100 / 1.5849625007211562, 50.0  # nDCG@10 of the one positive at rank 2, rank 3
DEV = [
    # legal: the reranker finds the positive (p2): rank 3 up to w = 0.3, 2 at 0.4 and 0.5,
    # 1 from 0.6.
    scored("legal", "q1", [3.0, 2.0, 1.0], [0.0, 1.0, 5.0], "p2"),
    # medical: the first stage has it (p0): rank 1 up to w = 0.5, 2 at 0.6 and 0.7, 3 after.
    scored("medical", "q1", [3.0, 2.0, 1.0], [0.0, 1.0, 5.0], "p0"),
]


def test_the_weight_is_the_best_on_dev_the_smallest_of_equal_ones() -> None:
    got = choose(
        DEV, method="interpolate", weights=GRID[::-1], rrf_k=60, metric="ndcg@10", select="best"
    )
    assert dict(got.weights) == {"legal": 0.6, "medical": 0.0}
    assert dict(got.dev["legal"]) == pytest.approx(
        dict(zip(GRID, [R3] * 4 + [R2] * 2 + [100.0] * 5, strict=True))
    )
    assert dict(got.dev["medical"]) == pytest.approx(
        dict(zip(GRID, [100.0] * 6 + [R2] * 2 + [R3] * 3, strict=True))
    )
    # The chosen fusion on those lists: each positive first.
    fused = [got.fuse_list(item) for item in DEV]
    assert [rank(IDS, item.scores)[0] for item in fused] == ["p2", "p0"]
    with pytest.raises(ValueError, match="the grid is empty"):
        choose(DEV, method="interpolate", weights=[], rrf_k=60, metric="ndcg@10", select="best")
    with pytest.raises(ValueError, match="no scored dev list"):
        choose([], method="interpolate", weights=GRID, rrf_k=60, metric="ndcg@10", select="best")


def test_one_se_keeps_the_first_stage_where_the_dev_gain_is_within_its_noise() -> None:
    """legal: the reranker lifts two queries (50 -> 100) and drops one (100 -> 63.1) at the
    best weight 0.6: a mean gain of 21.0 against a standard error of 29.0, so `one_se`
    keeps w = 0. medical: four queries all lifted alike (no spread), so it keeps 0.6."""
    finds, misses = (
        ([3.0, 2.0, 1.0], [0.0, 1.0, 5.0], "p2"),
        ([3.0, 2.0, 1.0], [0.0, 1.0, 5.0], "p0"),
    )
    dev = [
        *(scored("legal", f"q{i}", *finds) for i in range(2)),
        scored("legal", "q2", *misses),
        *(scored("medical", f"q{i}", *finds) for i in range(4)),
    ]
    kwargs = {"method": "interpolate", "weights": GRID, "rrf_k": 60, "metric": "ndcg@10"}
    assert dict(choose(dev, **kwargs, select="best").weights) == {"legal": 0.6, "medical": 0.6}
    chosen = choose(dev, **kwargs, select="one_se")
    assert dict(chosen.weights) == {"legal": 0.0, "medical": 0.6}
    assert chosen.dev["legal"][0.6] == pytest.approx((100 + 100 + R2) / 3)  # the means kept
    with pytest.raises(ValueError, match="fusion select 'median'"):
        choose(dev, **kwargs, select="median")


def test_save_and_load_round_trip_and_bad_files(tmp_path: Path) -> None:
    chosen = choose(
        DEV, method="rrf", weights=[0.0, 0.5, 1.0], rrf_k=60, metric="ndcg@10", select="best"
    )
    # legal's positive is 3rd at w = 0, 2nd at 0.5 (tied with p0, which has the lower id).
    assert dict(chosen.weights) == {"legal": 1.0, "medical": 0.0}
    path = chosen.save(tmp_path / "fusion.json")
    saved = json.loads(path.read_text())
    assert saved["dev"]["legal"] == pytest.approx({"0.0": R3, "0.5": R2, "1.0": 100.0})
    assert saved["dev"]["medical"] == pytest.approx({"0.0": 100.0, "0.5": 100.0, "1.0": R3})
    assert Fusion.load(path) == chosen
    for saved, field in [
        ({"method": "rrf", "rrf_k": 60, "metric": "ndcg@10"}, "weights"),
        ({"method": "rrf", "rrf_k": "60", "metric": "ndcg@10", "weights": {}}, "rrf_k"),
        ({"method": "rrf", "rrf_k": 60, "metric": "ndcg@10", "weights": {"a": "x"}}, "weights.a"),
    ]:
        path.write_text(json.dumps(saved))
        with pytest.raises(DataError, match=f"{path} field '{field}'"):
            Fusion.load(path)
    path.write_text(json.dumps({"method": "add", "rrf_k": 60, "metric": "ndcg@10", "weights": {}}))
    with pytest.raises(DataError, match=f"{path}: fusion method 'add'"):
        Fusion.load(path)
