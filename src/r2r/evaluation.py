"""Scored candidate lists -> metric dicts -> result tables."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from statistics import fmean

import torch

from r2r.metrics import POOLED, RankingEvaluator, metric_names, rank
from r2r.types import CandidateList, ScoredList

# The recall of the first stage at the reranking depth: what every row of a list can reach.
CEILING = "recall@depth"


def evaluate(scored: Iterable[ScoredList], stage: str) -> dict[str, float]:
    """Percent metrics keyed `stage/domain/metric@k`, plus `stage/all/...` over all queries."""
    evaluator = RankingEvaluator()
    for item in scored:
        c = item.candidates
        evaluator.add(c.domain, c.query.id, [p.id for p in c.passages], item.scores, c.relevance)
    return evaluator.compute(stage)


def first_stage(lists: Iterable[CandidateList]) -> list[ScoredList]:
    """The retriever's own scores, as the baseline row."""
    return [ScoredList(c, c.first_stage_scores) for c in lists]


def dense(
    lists: Sequence[CandidateList], embed: Callable[[Sequence[str]], torch.Tensor]
) -> list[ScoredList]:
    """A dense first stage on the same candidates: the cosine of the query's and each
    passage's embedding (`embed`: texts (N,) -> (N, dim)). Each distinct text is embedded
    once: a small corpus recurs in many lists."""
    queries = sorted({c.query.text for c in lists})
    passages = sorted({p.content for c in lists for p in c.passages})
    q = torch.nn.functional.normalize(embed(queries).float(), dim=-1)  # (Q, dim)
    p = torch.nn.functional.normalize(embed(passages).float(), dim=-1)  # (P, dim)
    q_row = {t: i for i, t in enumerate(queries)}
    p_row = {t: i for i, t in enumerate(passages)}
    scored = []
    for c in lists:
        rows = p[[p_row[x.content] for x in c.passages]]  # (n, dim)
        scored.append(ScoredList(c, tuple((rows @ q[q_row[c.query.text]]).tolist())))
    return scored


def ceiling(lists: Iterable[CandidateList], stage: str) -> dict[str, float]:
    """The first stage's recall at the reranking depth, `stage/domain/recall@depth` (and
    `stage/all/...`): per query, the share of its judged positives that are in its list,
    in percent, averaged like recall@k (over queries with a positive). No reranking of the
    lists recalls more."""
    recalls: dict[str, list[float]] = {}
    for c in lists:
        if not (positives := {d for d, grade in c.relevance.items() if grade > 0}):
            continue
        found = positives & {p.id for p in c.passages}
        recalls.setdefault(c.domain, []).append(len(found) / len(positives))
    recalls = {d: recalls[d] for d in sorted(recalls)}
    recalls[POOLED] = [r for values in recalls.values() for r in values]
    return {f"{stage}/{d}/{CEILING}": 100.0 * fmean(r) for d, r in recalls.items() if r}


def results_table(metrics: Mapping[str, float], stages: Sequence[str]) -> str:
    """Markdown table: one row per (stage, domain), one column per metric@k."""
    columns = metric_names()
    domains = sorted({key.split("/")[1] for key in metrics if key.split("/")[0] in stages})
    # 'all' last: it is the pooled row.
    domains = [d for d in domains if d != "all"] + (["all"] if "all" in domains else [])
    lines = [
        "| stage | domain | " + " | ".join(columns) + " |",
        "|---|---|" + "---:|" * len(columns),
    ]
    for domain in domains:
        for stage in stages:
            values = [metrics.get(f"{stage}/{domain}/{c}") for c in columns]
            if all(v is None for v in values):
                continue
            cells = ["–" if v is None else f"{v:.1f}" for v in values]
            lines.append(f"| {stage} | {domain} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def trec_run(scored: Iterable[ScoredList], tag: str) -> str:
    """TREC run lines `qid Q0 doc rank score tag`, in r2r's ranking order (ties by doc id).

    Query ids are `domain/qid`: the same id may occur in two domains.
    """
    lines = []
    for item in scored:
        c = item.candidates
        ranked = rank([p.id for p in c.passages], item.scores)
        score_of = {p.id: s for p, s in zip(c.passages, item.scores, strict=True)}
        lines += [
            f"{c.domain}/{c.query.id} Q0 {doc} {i} {score_of[doc]!r} {tag}"
            for i, doc in enumerate(ranked, start=1)
        ]
    return "\n".join(lines) + "\n"


def trec_qrels(lists: Iterable[CandidateList]) -> str:
    """TREC qrels lines `qid 0 doc grade` for the lists' judgments (`domain/qid` ids)."""
    return "".join(
        f"{c.domain}/{c.query.id} 0 {doc} {grade}\n"
        for c in lists
        for doc, grade in sorted(c.relevance.items())
    )


def collapsed(scored: Iterable[ScoredList], tolerance: float = 1e-6) -> list[str]:
    """Domains on which a scorer gave every list of two or more passages one score for all
    of them: the ranking is then only its tie-break order, not a reranker's judgment (a
    collapsed fine-tuning, e.g. after too high a learning rate)."""
    spread: dict[str, float] = {}
    for item in scored:
        if len(item.scores) > 1:
            domain = item.candidates.domain
            width = max(item.scores) - min(item.scores)
            spread[domain] = max(spread.get(domain, 0.0), width)
    return sorted(d for d, width in spread.items() if width <= tolerance)
