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

import re
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
from r2r.types import CandidateList, LabelledQueries, ScoredList

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
    # Accuracy per true domain (and `all`) on the test queries and on the probe questions;
    # a query sent to the bare backbone counts as wrong. `base`: the share sent there.
    domain_accuracy: Mapping[str, float] = field(default_factory=dict)
    probe_accuracy: Mapping[str, float] = field(default_factory=dict)
    base_share: Mapping[str, float] = field(default_factory=dict)  # test, probes -> percent
    # The routed rankings (each list under its pick, aligned with the matrix's lists): the
    # ones `metrics` scores, for a per-query TREC run (`routed_row`).
    routed: Sequence[ScoredList] = field(default=(), repr=False)

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
    name: str,
    system: RoutedReranker,
    matrix: ScoreMatrix,
    *,
    fit_s: float = 0.0,
    probes: LabelledQueries | None = None,
) -> RouterResult:
    """Route the pooled queries with `system`'s router and score the picked experts'
    rankings (read from `matrix`, scored by the same bank); route the `probes` too (those of
    the routed domains), for their accuracy per domain."""
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
    shares = {"test": _base_share(picks)}
    probe_accuracy = {}
    if probes is not None and accuracy is not None:
        domains_routed = set(truth)
        kept = [
            (t, d) for t, d in zip(probes.texts, probes.domains, strict=True) if d in domains_routed
        ]
        if kept:
            texts, labels = zip(*kept, strict=True)
            probe_picks = [e for e, _ in system.route(list(texts), true_domains=list(labels))]
            probe_accuracy = accuracy_by_domain(probe_picks, labels)
            shares["probes"] = _base_share(probe_picks)
    return RouterResult(
        name,
        accuracy,
        macro_f1,
        router.n_params,
        routing_s,
        reranking_s,
        metrics,
        picks,
        fit_s,
        domain_accuracy=accuracy_by_domain(picks, truth) if accuracy is not None else {},
        probe_accuracy=probe_accuracy,
        base_share=shares if accuracy is not None else {},
        routed=routed,
    )


def routed_row(router: str) -> str:
    """The TREC run name of a router's routed test ranking (`runs/<row>.trec`):
    `routed.lsr@0.6`; a character a file name or a TREC tag cannot hold becomes `_`."""
    return "routed." + re.sub(r"[^\w.@=+-]", "_", router)


def accuracy_by_domain(picks: Sequence[str | None], truth: Sequence[str]) -> dict[str, float]:
    """Percent of each true domain's queries routed to it (None, the bare backbone: wrong),
    and of all of them (`all`)."""
    out = {}
    for domain in sorted(set(truth)):
        rows = [p for p, t in zip(picks, truth, strict=True) if t == domain]
        out[domain] = 100.0 * sum(p == domain for p in rows) / len(rows)
    out["all"] = 100.0 * sum(p == t for p, t in zip(picks, truth, strict=True)) / len(truth)
    return out


def _base_share(picks: Sequence[str | None]) -> float:
    return 100.0 * sum(p is None for p in picks) / len(picks) if picks else 0.0


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


def accuracy_table(results: Sequence[RouterResult]) -> str:
    """Markdown: each router's accuracy per true domain on the test queries and on the
    probe questions, and the share of each sent to the bare backbone."""
    rows = [r for r in results if r.domain_accuracy]
    test = [*sorted({d for r in rows for d in r.domain_accuracy} - {"all"}), "all"]
    probe = sorted({d for r in rows for d in r.probe_accuracy} - {"all"})
    probe += ["all"] if probe else []
    head = [
        "router",
        *(f"test {d}" for d in test),
        *(f"probe {d}" for d in probe),
        "test to base",
        *(["probe to base"] if probe else []),
    ]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in rows:
        cells = [
            r.name,
            *(_pct(r.domain_accuracy.get(d)) for d in test),
            *(_pct(r.probe_accuracy.get(d)) for d in probe),
            _pct(r.base_share.get("test")),
            *([_pct(r.base_share.get("probes"))] if probe else []),
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
    n_probes: int = 0,
    n_pseudo: int = 0,
    note: str | None = None,
) -> str:
    """routing.md: the pooled test set, Table 2, routing accuracy per domain (test queries
    and probe questions) and the forgetting table."""
    probes = (
        f"`probe`: {n_probes} short one-line questions written by hand (r2r/routing/"
        "probes.jsonl), real-world style whatever the data set, so they test whether a router "
        "learnt each domain's topic rather than its training queries' register. "
        if n_probes
        else ""
    )
    return (
        (f"Note: {note}\n\n" if note else "")
        + f"Pooled test set: {n_queries} queries from {list(domains)} "
        f"({n_unseen} of them never seen by the routers in training)."
        + (
            f" The trained routers also learnt from {n_pseudo} pseudo-queries (spans of the "
            "domains' training documents)."
            if n_pseudo
            else ""
        )
        + "\n\n"
        "Routed reranking (Table 2):\n\n" + table2(results) + "\n"
        "Routing accuracy per true domain (a query sent to the bare backbone counts as "
        f"wrong; `<router>@<t>`: the router with fallback threshold t). {probes}\n\n"
        + accuracy_table(results)
        + "\n"
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
    n_probes: int = 0,
    n_pseudo: int = 0,
) -> dict:
    """routing.json: every router's figures and the forgetting table."""
    return {
        "domains": list(domains),
        "test_queries": n_queries,
        "unseen_test_queries": n_unseen,
        "deployed": deployed,
        "probe_questions": n_probes,
        "pseudo_queries": n_pseudo,
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
                "domain_accuracy": dict(r.domain_accuracy),
                "probe_accuracy": dict(r.probe_accuracy),
                "base_share": dict(r.base_share),
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
