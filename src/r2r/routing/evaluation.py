"""Routed reranking measured as the paper's Tables 2 and 3 (METHOD.md section 5).

A routed ranking of a query is its candidate list scored by the expert its router picks,
so every list is scored once under every expert and under the bare backbone
(`score_matrix`); that matrix is the forgetting table (each expert on each domain), and
each router's row is a selection from it (`evaluate_router`). Routing time is measured on
the router itself, as a deployed system pays it: features computed, not read from a
feature cache, after one warm-up query (lazy loading is not routing); reranking time is
the scoring time of the experts it picked.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich.progress import Progress
from sklearn.metrics import f1_score

from r2r.devices import world
from r2r.evaluation import evaluate
from r2r.metrics import metric_names
from r2r.models.experts import ExpertBank
from r2r.routing.base import Router
from r2r.routing.system import RoutedReranker
from r2r.types import CandidateList, ScoredList

BASE = "base"  # the bare backbone's row in the forgetting table
TABLE2_METRICS = metric_names(("ndcg", "mrr", "recall"))


@dataclass(frozen=True)
class ScoreMatrix:
    """The pooled lists scored under each expert (None: bare backbone), with timings."""

    lists: Sequence[CandidateList]
    scored: Mapping[str | None, Sequence[ScoredList]]  # aligned with `lists`
    seconds: Mapping[str | None, Sequence[float]]  # scoring time per list


@dataclass(frozen=True)
class RouterResult:
    name: str
    accuracy: float | None  # None when the router never picks an expert (`none`)
    macro_f1: float | None
    n_params: int
    routing_s: float
    reranking_s: float
    metrics: Mapping[str, float]  # `<domain>/<metric>@k` of the routed rankings
    experts: Sequence[str | None] = field(repr=False)  # the pick per query
    fit_s: float = 0.0  # time to fit the router, when the caller measured it

    @property
    def time_fraction(self) -> float:
        """Routing time as a fraction of reranking time."""
        return self.routing_s / self.reranking_s if self.reranking_s else float("nan")


def score_matrix(
    bank: ExpertBank,
    experts: Sequence[str],
    lists: Sequence[CandidateList],
    *,
    progress: bool = True,
    sharded: bool = False,
) -> ScoreMatrix:
    """Every list scored by every one of `experts` and by the bare backbone.

    sharded: each DDP rank scores its share and gets the whole matrix (`ExpertBank.score_lists`);
    the time per list is then device time, the same as one process would measure.
    """
    scored: dict[str | None, list[ScoredList]] = {}
    seconds: dict[str | None, list[float]] = {}
    n_pairs = sum(len(c.passages) for c in lists)
    # N ranks scoring side by side spend N times the wall time in device time.
    devices = world()[1] if sharded else 1
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("scoring under each expert", total=len(experts) + 1)
        for expert in [None, *experts]:
            start = time.perf_counter()
            scored[expert] = bank.score_lists(expert, lists, sharded=sharded)
            per_pair = devices * (time.perf_counter() - start) / max(n_pairs, 1)
            seconds[expert] = [len(c.passages) * per_pair for c in lists]
            bar.advance(task)
    return ScoreMatrix(lists, scored, seconds)


def forgetting(matrix: ScoreMatrix) -> dict[str, dict[str, float]]:
    """`expert or base` -> `domain/metric@k` -> value: every expert on every test set."""
    return {
        BASE if expert is None else expert: {
            key.split("/", 1)[1]: value for key, value in evaluate(items, "x").items()
        }
        for expert, items in matrix.scored.items()
    }


def evaluate_router(
    name: str, system: RoutedReranker, matrix: ScoreMatrix, *, fit_s: float = 0.0
) -> RouterResult:
    """Route the pooled queries with `system`'s router and score the picked experts'
    rankings (read from `matrix`, scored by the same bank)."""
    router = system.router
    texts = [c.query.text for c in matrix.lists]
    truth = [c.domain for c in matrix.lists]
    with _uncached(router):
        system.route(texts[:1], true_domains=truth[:1])  # warm-up
        start = time.perf_counter()
        routes = system.route(texts, true_domains=truth)
        routing_s = time.perf_counter() - start
    picks = [expert for expert, _ in routes]
    routed = [matrix.scored[e][i] for i, e in enumerate(picks)]
    reranking_s = sum(matrix.seconds[e][i] for i, e in enumerate(picks))
    metrics = {key.split("/", 1)[1]: value for key, value in evaluate(routed, "routed").items()}
    accuracy = macro_f1 = None
    if any(p is not None for p in picks):
        predicted = [p if p is not None else BASE for p in picks]
        accuracy = 100.0 * sum(p == t for p, t in zip(predicted, truth, strict=True)) / len(truth)
        domains = sorted(set(truth))
        macro_f1 = 100.0 * f1_score(truth, predicted, labels=domains, average="macro")
    return RouterResult(
        name, accuracy, macro_f1, router.n_params, routing_s, reranking_s, metrics, picks, fit_s
    )


@contextmanager
def _uncached(router: Router) -> Iterator[None]:
    """The router without its feature cache (if it has one), for timing."""
    cache = getattr(router, "cache", None)
    if cache is None:
        yield
        return
    router.cache = None
    try:
        yield
    finally:
        router.cache = cache


def table2(results: Sequence[RouterResult], domain: str = "all") -> str:
    """Markdown: one row per router (accuracy, macro-F1, ranking metrics, cost)."""
    head = ["router", "accuracy", "macro-F1", *TABLE2_METRICS, "params", "routing/reranking"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in results:
        cells = [
            r.name,
            _pct(r.accuracy),
            _pct(r.macro_f1),
            *(_pct(r.metrics.get(f"{domain}/{m}")) for m in TABLE2_METRICS),
            f"{r.n_params:,}",
            f"{100 * r.time_fraction:.2f}%",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def forgetting_table(table: Mapping[str, Mapping[str, float]], metric: str = "ndcg@10") -> str:
    """Markdown: rows = the bare backbone and each expert, columns = test domains."""
    domains = sorted({key.split("/")[0] for row in table.values() for key in row} - {"all"})
    lines = [
        f"| {metric} | " + " | ".join(domains) + " |",
        "|---|" + "---:|" * len(domains),
    ]
    for name, row in table.items():
        lines.append(
            f"| {name} | " + " | ".join(_pct(row.get(f"{d}/{metric}")) for d in domains) + " |"
        )
    return "\n".join(lines) + "\n"


def routing_report(
    results: Sequence[RouterResult],
    table: Mapping[str, Mapping[str, float]],
    *,
    domains: Sequence[str],
    n_queries: int,
    n_unseen: int,
) -> str:
    """routing.md: the pooled test set, Table 2 and the forgetting table."""
    return (
        f"Pooled test set: {n_queries} queries from {list(domains)} "
        f"({n_unseen} of them never seen by the routers in training).\n\n"
        "Routed reranking (Table 2):\n\n" + table2(results) + "\n"
        "Each expert and the bare backbone on each test set (forgetting, Table 3):\n\n"
        + forgetting_table(table)
    )


def routing_summary(
    results: Sequence[RouterResult],
    table: Mapping[str, Mapping[str, float]],
    *,
    domains: Sequence[str],
    n_queries: int,
    n_unseen: int,
    deployed: str | None,
) -> dict:
    """routing.json: every router's figures and the forgetting table."""
    return {
        "domains": list(domains),
        "test_queries": n_queries,
        "unseen_test_queries": n_unseen,
        "deployed": deployed,
        "routers": {
            r.name: {
                "accuracy": r.accuracy,
                "macro_f1": r.macro_f1,
                "n_params": r.n_params,
                "fit_s": round(r.fit_s, 3),
                "routing_s": r.routing_s,
                "reranking_s": r.reranking_s,
                "time_fraction": r.time_fraction,
                "metrics": dict(r.metrics),
            }
            for r in results
        },
        "forgetting": {name: dict(row) for name, row in table.items()},
    }


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def routing_rows(summary: Mapping) -> tuple[list[str], list[list]]:
    """routing.json's routers as a table (columns, rows), for experiment trackers."""
    metrics = [f"all/{m}" for m in TABLE2_METRICS]
    columns = ["router", "accuracy", "macro_f1", *metrics, "n_params", "time_fraction"]
    rows = [
        [
            name,
            r["accuracy"],
            r["macro_f1"],
            *(r["metrics"].get(m) for m in metrics),
            r["n_params"],
            r["time_fraction"],
        ]
        for name, r in summary["routers"].items()
    ]
    return columns, rows
