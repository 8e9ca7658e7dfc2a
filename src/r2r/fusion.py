"""First-stage fusion: a reranker's scores combined, query by query, with the first stage's
(the `fused` row, and a routed system given the first stage's scores).

- `interpolate`: w * minmax(reranker) + (1 - w) * minmax(first stage), each min-max
  normalised over the query's own list (a list of equal scores becomes zeros), so BM25's
  unbounded scores and a reranker's logit margins meet on [0, 1].
- `rrf`: weighted reciprocal-rank fusion, w / (k + rank) + (1 - w) / (k + first-stage
  rank), ranks from 1 in r2r's ranking order (ties by doc id); w = 0.5 is plain RRF, halved.

In both, w = 0 is the first stage's own order and w = 1 the reranker's. Each domain's w is
chosen on its dev lists (`choose`): the grid point with the best mean metric (nDCG@10),
among equal ones the smallest w, the nearest to the first stage, so the reranker gets
weight only where it earns it on dev; with 0 in the grid the fused row is never below the
first stage on dev. Dev sets are small (tens of queries), so the best mean is partly the
sample's noise: `select="one_se"` (`fusion.select`; default `best`) takes the smallest w
whose mean is within one standard error of the best's (paired over the queries), the
one-standard-error rule of model selection. On the embedded default over three seeds it
gave less gain than `best` (README), so it is an option, not the default.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from r2r.errors import DataError
from r2r.files import write_json_atomic
from r2r.metrics import RankingEvaluator, metric_names, rank
from r2r.types import ScoredList

METHODS = ("interpolate", "rrf")
SELECTIONS = ("best", "one_se")  # how `choose` picks a weight from the dev means
FILE = "fusion.json"  # beside the experts (experts/fusion.json) and in a saved system/


def normalised(scores: Sequence[float]) -> list[float]:
    """Min-max over the list: the lowest 0, the highest 1; equal scores all 0."""
    low, high = min(scores), max(scores)
    return [0.0] * len(scores) if high == low else [(s - low) / (high - low) for s in scores]


def ranks(doc_ids: Sequence[str], scores: Sequence[float]) -> list[int]:
    """Each document's rank from 1, in r2r's ranking order (score descending, ties by id)."""
    position = {doc: i for i, doc in enumerate(rank(doc_ids, scores), start=1)}
    return [position[doc] for doc in doc_ids]


def fuse(
    scores: Sequence[float],
    first_stage: Sequence[float],
    doc_ids: Sequence[str],
    *,
    weight: float,
    method: str,
    rrf_k: int,
) -> tuple[float, ...]:
    """One list's fused scores: the reranker's `scores` at `weight`, the first stage's at
    1 - weight (see the module docstring); `doc_ids` break ties in the ranks of `rrf`."""
    if not len(scores) == len(first_stage) == len(doc_ids):
        raise ValueError(
            f"fuse: {len(scores)} scores, {len(first_stage)} first-stage scores and "
            f"{len(doc_ids)} doc ids"
        )
    if method == "interpolate":
        ours, theirs = normalised(scores), normalised(first_stage)
        return tuple(weight * a + (1 - weight) * b for a, b in zip(ours, theirs, strict=True))
    if method == "rrf":
        ours, theirs = ranks(doc_ids, scores), ranks(doc_ids, first_stage)
        return tuple(
            weight / (rrf_k + a) + (1 - weight) / (rrf_k + b)
            for a, b in zip(ours, theirs, strict=True)
        )
    raise ValueError(f"fusion method {method!r}; expected one of {METHODS}")


@dataclass(frozen=True)
class Fusion:
    """The chosen fusion: the method and, per domain, the reranker's weight; `dev` keeps
    what chose it (domain -> weight -> dev metric in percent)."""

    method: str
    weights: Mapping[str, float]
    rrf_k: int
    metric: str
    dev: Mapping[str, Mapping[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check(self.method, list(self.weights.values()), self.rrf_k, self.metric)

    def fuse(
        self,
        domain: str,
        scores: Sequence[float],
        first_stage: Sequence[float],
        doc_ids: Sequence[str],
    ) -> tuple[float, ...]:
        if domain not in self.weights:
            raise KeyError(f"no fusion weight for domain {domain!r} (has {list(self.weights)})")
        return fuse(
            scores,
            first_stage,
            doc_ids,
            weight=self.weights[domain],
            method=self.method,
            rrf_k=self.rrf_k,
        )

    def fuse_list(self, item: ScoredList) -> ScoredList:
        """A reranker's scored list, fused with the first stage's scores it carries."""
        c = item.candidates
        return ScoredList(
            c, self.fuse(c.domain, item.scores, c.first_stage_scores, [p.id for p in c.passages])
        )

    def summary(self) -> dict:
        """As JSON (results.json's `fusion`, fusion.json): dev metric keyed by the weight."""
        return {
            "method": self.method,
            "rrf_k": self.rrf_k,
            "metric": self.metric,
            "weights": dict(self.weights),
            "dev": {d: {str(w): v for w, v in grid.items()} for d, grid in self.dev.items()},
        }

    def save(self, path: str | Path) -> Path:
        write_json_atomic(path, self.summary())
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> Fusion:
        """A saved fusion.json; a bad one fails naming the file and field."""
        path = Path(path)
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(f"not a JSON file ({err})", file=path) from None
        if not isinstance(saved, dict):
            raise DataError("expected a JSON object", file=path)
        for key, kind in (("method", str), ("rrf_k", int), ("metric", str), ("weights", dict)):
            if not isinstance(saved.get(key), kind):
                raise DataError(f"expected a {kind.__name__}", file=path, field=key)
        weights = saved["weights"]
        for domain, weight in weights.items():
            if isinstance(weight, bool) or not isinstance(weight, int | float):
                raise DataError("expected a number", file=path, field=f"weights.{domain}")
        dev = saved.get("dev") or {}
        try:
            return cls(
                saved["method"],
                {d: float(w) for d, w in weights.items()},
                saved["rrf_k"],
                saved["metric"],
                {d: {float(w): v for w, v in grid.items()} for d, grid in dev.items()},
            )
        except (ValueError, AttributeError) as err:
            raise DataError(str(err), file=path) from None


def check(method: str, weights: Sequence[float], rrf_k: int, metric: str) -> None:
    if method not in METHODS:
        raise ValueError(f"fusion method {method!r}; expected one of {METHODS}")
    if bad := [w for w in weights if not (math.isfinite(w) and 0.0 <= w <= 1.0)]:
        raise ValueError(f"fusion weights must lie within [0, 1], got {bad}")
    if isinstance(rrf_k, bool) or not isinstance(rrf_k, int) or rrf_k < 1:
        raise ValueError(f"fusion rrf_k must be a positive integer, got {rrf_k!r}")
    if metric not in metric_names():
        raise ValueError(f"fusion metric {metric!r}; expected one of {metric_names()}")


def choose(
    dev: Sequence[ScoredList],
    *,
    method: str,
    weights: Sequence[float],
    rrf_k: int,
    metric: str,
    select: str,
) -> Fusion:
    """Per domain of the scored `dev` lists, a grid weight by its mean `metric` after
    fusion. `select="best"`: the best mean, ties to the smallest weight. `"one_se"`: the
    smallest weight whose mean is within one standard error of the best's, the error of the
    per-query difference between the two (a paired one-standard-error rule): the reranker
    gets more weight only where dev shows it earns more than the dev sample's noise."""
    grid = sorted({float(w) for w in weights})
    if not grid:
        raise ValueError("fusion weights: the grid is empty")
    check(method, grid, rrf_k, metric)
    if select not in SELECTIONS:
        raise ValueError(f"fusion select {select!r}; expected one of {SELECTIONS}")
    if not dev:
        raise ValueError("fusion: no scored dev list to choose the weights on")
    found: dict[str, dict[float, float]] = {}
    per_query: dict[str, dict[float, list[float]]] = {}
    for weight in grid:
        single = Fusion(method, {c.candidates.domain: weight for c in dev}, rrf_k, metric)
        evaluator = RankingEvaluator()  # as `evaluate`, keeping each query's metrics too
        for item in map(single.fuse_list, dev):
            c = item.candidates
            evaluator.add(
                c.domain, c.query.id, [p.id for p in c.passages], item.scores, c.relevance
            )
        metrics = evaluator.compute("dev")
        for domain in single.weights:
            found.setdefault(domain, {})[weight] = metrics[f"dev/{domain}/{metric}"]
        for result in evaluator.per_query():
            values = per_query.setdefault(result.domain, {}).setdefault(weight, [])
            values.append(100 * result.metrics[metric])
    # max() keeps the first of equal values: the grid ascends, so the smallest weight wins.
    chosen = {d: max(grid, key=lambda w, d=d: found[d][w]) for d in found}
    if select == "one_se":
        chosen = {d: within_one_se(per_query.get(d, {}), best) for d, best in chosen.items()}
    return Fusion(method, chosen, rrf_k, metric, found)


def within_one_se(values: Mapping[float, Sequence[float]], best: float) -> float:
    """The smallest weight whose per-query values trail `best`'s by at most one standard
    error of their paired difference (`best` itself where no smaller weight does)."""
    for weight in sorted(values):
        if weight >= best:
            break
        gaps = [b - v for b, v in zip(values[best], values[weight], strict=True)]
        mean = sum(gaps) / len(gaps)
        spread = math.sqrt(sum((g - mean) ** 2 for g in gaps) / max(len(gaps) - 1, 1))
        if mean <= spread / math.sqrt(len(gaps)):
            return weight
    return best
