"""Scored candidate lists -> metric dicts -> result tables."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from r2r.metrics import METRICS, RankingEvaluator
from r2r.types import CandidateList, ScoredList

KS: tuple[int, ...] = (5, 10)


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


def results_table(metrics: Mapping[str, float], stages: Sequence[str]) -> str:
    """Markdown table: one row per (stage, domain), one column per metric@k."""
    columns = [f"{m}@{k}" for m in METRICS for k in KS]
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
