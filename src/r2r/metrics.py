"""Ranking metrics with trec_eval's conventions and a deterministic tie-break.

Conventions (those of trec_eval 9 / ``ir_measures``):
- a document is relevant when its grade is > 0;
- nDCG@k: gain = grade (linear), discount 1 / log2(rank + 1); the ideal DCG is built
  from *all* judged documents of the query, including those the ranking missed;
- Recall@k: divided by the number of relevant judged documents of the query;
- Precision@k: divided by k, even when fewer than k documents are ranked;
- MRR@k: 1 / rank of the first relevant document in the top k, else 0.
Ties in score are broken by doc id ascending (trec_eval breaks them by doc id
*descending*, so exported runs only agree with it where scores are distinct).

Hand-written: torchmetrics' retrieval metrics sort by score alone (no doc ids to
break ties) and take the ideal DCG and recall denominator from the retrieved list only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "KS",
    "METRICS",
    "QueryResult",
    "RankingEvaluator",
    "query_metrics",
    "rank",
]

METRICS: tuple[str, ...] = ("ndcg", "mrr", "precision", "recall")
# The cutoffs every table reports (the paper's @5 and @10); defined here only.
KS: tuple[int, ...] = (5, 10)
POOLED = "all"


def metric_names(metrics: Sequence[str] = METRICS, ks: Sequence[int] = KS) -> tuple[str, ...]:
    """`metric@k` for each metric, then each cutoff: ndcg@5, ndcg@10, mrr@5, ..."""
    return tuple(f"{m}@{k}" for m in metrics for k in ks)


def rank(doc_ids: Sequence[str], scores: Sequence[float]) -> list[str]:
    """Doc ids ordered by score descending; equal scores ordered by doc id ascending."""
    values = _as_floats(scores)
    if len(doc_ids) != len(values):
        raise ValueError(f"rank: got {len(doc_ids)} doc ids but {len(values)} scores")
    _check_unique(doc_ids, "rank")
    if any(math.isnan(v) for v in values):
        raise ValueError("rank: scores contain NaN")
    order = sorted(zip(doc_ids, values, strict=True), key=lambda pair: (-pair[1], pair[0]))
    return [doc_id for doc_id, _ in order]


def query_metrics(
    ranked: Sequence[str], relevance: Mapping[str, int], ks: Iterable[int] = KS
) -> dict[str, float]:
    """nDCG, MRR, Precision and Recall at each k for one query, as fractions in [0, 1].

    Inputs: ``ranked`` doc ids best first (see ``rank``); ``relevance`` every judged
    doc of the query -> grade (> 0 is relevant), ranked or not. Keys: ``"ndcg@5"``, ...
    Raises ValueError when the query has no relevant document (callers filter those).
    """
    ks = _check_ks(ks)
    _check_unique(ranked, "query_metrics")
    n_relevant = sum(1 for grade in relevance.values() if grade > 0)
    if n_relevant == 0:
        raise ValueError("query_metrics: the query has no relevant document (grade > 0)")
    # Negative grades (some qrels use -1 for "junk") earn no gain, as in trec_eval.
    gains = [max(relevance.get(doc_id, 0), 0) for doc_id in ranked]
    ideal = sorted((g for g in relevance.values() if g > 0), reverse=True)

    out: dict[str, float] = {}
    for k in ks:
        top = gains[:k]
        dcg = _dcg(top)
        idcg = _dcg(ideal[:k])
        hits = sum(1 for g in top if g > 0)
        first = next((i for i, g in enumerate(top) if g > 0), None)
        out[f"ndcg@{k}"] = dcg / idcg
        out[f"mrr@{k}"] = 0.0 if first is None else 1.0 / (first + 1)
        out[f"precision@{k}"] = hits / k
        out[f"recall@{k}"] = hits / n_relevant
    return out


@dataclass(frozen=True)
class QueryResult:
    """One evaluated query: its ranking, judgements and metrics (fractions in [0, 1])."""

    domain: str
    query_id: str
    scores: Mapping[str, float]  # doc id -> score, as given
    ranked: tuple[str, ...]
    relevance: Mapping[str, int]
    metrics: Mapping[str, float]


class RankingEvaluator:
    """Accumulates reranked queries per domain and reports mean metrics in percent.

    ``add`` one query at a time; ``compute(stage)`` returns
    ``{stage}/{domain}/{metric}@{k}`` for each domain and ``{stage}/all/{metric}@{k}``,
    where "all" is the mean over the queries of all domains pooled (not the mean of
    the domain means). Metric names: ndcg, mrr, precision, recall.
    """

    def __init__(self, ks: Iterable[int] = KS) -> None:
        self.ks = _check_ks(ks)
        self._results: dict[tuple[str, str], QueryResult] = {}

    def __len__(self) -> int:
        return len(self._results)

    def reset(self) -> None:
        self._results.clear()

    def add(
        self,
        domain: str,
        query_id: str,
        doc_ids: Sequence[str],
        scores: Sequence[float],
        relevance: Mapping[str, int],
    ) -> QueryResult:
        """Rank ``doc_ids`` by ``scores`` and record the query's metrics.

        ``relevance`` holds every judged doc of the query (doc id -> grade), ranked
        or not. Raises ValueError on a repeated (domain, query_id), a domain named
        "all" or containing "/", or a query without a relevant document.
        """
        if not domain or "/" in domain or domain == POOLED:
            raise ValueError(
                f"RankingEvaluator.add: domain must be non-empty, without '/', and not "
                f"{POOLED!r} (reserved for the pooled mean), got {domain!r}"
            )
        key = (domain, query_id)
        if key in self._results:
            raise ValueError(f"RankingEvaluator.add: query {query_id!r} of {domain!r} added twice")
        where = f"query {query_id!r} of domain {domain!r}"
        try:
            values = _as_floats(scores)
            ranked = rank(doc_ids, values)
            metrics = query_metrics(ranked, relevance, self.ks)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from err
        result = QueryResult(
            domain=domain,
            query_id=query_id,
            scores=dict(zip(doc_ids, values, strict=True)),
            ranked=tuple(ranked),
            relevance=dict(relevance),
            metrics=metrics,
        )
        self._results[key] = result
        return result

    def compute(self, stage: str) -> dict[str, float]:
        """Mean metrics in percent, keyed ``{stage}/{domain|all}/{metric}@{k}``."""
        if not self._results:
            raise ValueError("RankingEvaluator.compute: no query was added")
        by_domain: dict[str, list[QueryResult]] = {}
        for result in self._results.values():
            by_domain.setdefault(result.domain, []).append(result)
        groups = {d: by_domain[d] for d in sorted(by_domain)}
        groups[POOLED] = list(self._results.values())

        out: dict[str, float] = {}
        for domain, results in groups.items():
            for k in self.ks:
                for metric in METRICS:
                    name = f"{metric}@{k}"
                    mean = math.fsum(r.metrics[name] for r in results) / len(results)
                    out[f"{stage}/{domain}/{name}"] = 100.0 * mean
        return out

    def per_query(self) -> list[QueryResult]:
        """Every added query, in the order added (metrics as fractions in [0, 1])."""
        return list(self._results.values())

    def run(self, domain: str | None = None) -> dict[str, dict[str, float]]:
        """TREC-style run {qid: {doc id: score}} of one domain, or of all domains
        keyed ``"{domain}/{qid}"`` when ``domain`` is None (query ids may repeat
        across domains)."""
        return {
            self._qid(r, domain): dict(r.scores)
            for r in self._results.values()
            if domain is None or r.domain == domain
        }

    def qrels(self, domain: str | None = None) -> dict[str, dict[str, int]]:
        """TREC-style qrels {qid: {doc id: grade}}, keyed as in ``run``."""
        return {
            self._qid(r, domain): dict(r.relevance)
            for r in self._results.values()
            if domain is None or r.domain == domain
        }

    @staticmethod
    def _qid(result: QueryResult, domain: str | None) -> str:
        return result.query_id if domain is not None else f"{result.domain}/{result.query_id}"


def _dcg(gains: Sequence[int]) -> float:
    # Rank i (0-based) is discounted by log2(i + 2): trec_eval 9's ndcg_cut.
    return math.fsum(g / math.log2(i + 2) for i, g in enumerate(gains) if g)


def _as_floats(scores: Sequence[float]) -> list[float]:
    # Accepts lists, numpy arrays and 1-D tensors alike.
    values = scores.tolist() if hasattr(scores, "tolist") else scores
    return [float(v) for v in values]


def _check_unique(doc_ids: Sequence[str], where: str) -> None:
    seen: set[str] = set()
    for doc_id in doc_ids:
        if doc_id in seen:
            raise ValueError(f"{where}: doc id {doc_id!r} appears more than once")
        seen.add(doc_id)


def _check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    ks = tuple(ks)
    if not ks or any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in ks):
        raise ValueError(f"cutoffs must be a non-empty list of positive integers, got {ks}")
    return ks
