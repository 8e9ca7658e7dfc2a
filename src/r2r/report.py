"""Turn a sweep directory of runs into the paper's tables and figures.

    python -m r2r.report multirun/2026-11-22/10-00-00 [--out DIR] [--no-plots]

Reads every `results.json` (and `routing.json`, `failed.json`) below the directory and
writes, by default into the sweep directory:
- `table1.{md,csv}`: reranking per run setting, split, domain and stage.
- `table2.{md,csv}`: routed reranking on the pooled test set, one row per run (or cell of
  seeds) and router.
- `table3.{md,csv}`: forgetting, every expert and the bare backbone on every domain.
- `paired.{md,csv}`: paired tests over test queries (fine-tuned vs PT, fused vs BM25, EAG
  vs direct, each router vs the oracle).
- `plots/`: test nDCG@10 bars per domain (`table1.png`) and each routed run's forgetting
  heat map (`forgetting.png`, or `forgetting_<i>.png` for several runs).
- `report.md`: all of the above, and the jobs that failed with their errors.

Runs are named by what was swept, read back from the runs, never guessed:
- A run's settings are its Hydra choices (`backbone: tiny_qwen`) and overrides
  (`lora.r=8`), as `r2r.sweep.job_record` wrote them into results.json (`job`); values
  as Hydra parses them, written as on its command line (`false`, `0.001`, `[a,b]`). An
  override of a group is that group's choice. Where another run lacks an override key,
  its value comes from that run's resolved config (`lora.r` of a run that kept the
  default); a group a run left unset is `null`. `paths.*`, `skip_finished`, `hydra` keys,
  the `sweep` grid and `experts_from` are not settings (where a run lives, how it resumes,
  which grid launched it, where its adapters were read from), nor are `zero_shot` and
  `curriculum.<stage>.test` (which rows a run also scored).
- Runs without a `job` record (written before it existed, or outside a Hydra run) are
  compared on the leaves of their resolved configs instead (`lora.r`, `curriculum.name`;
  leaves that hold the run's own `paths.output` are where it lives, not settings); if any
  run lacks the record, every run is compared that way.
- A table has one column per setting whose value is not the same in all the runs it
  shows, named by the group or override key, alphabetically; a setting named like one of
  the fixed columns gets ` (job)` (`domain (job)` of a backbone x domain grid, beside
  the metric's `domain`). A setting constant across the runs gives no column.

Table 1's fixed columns: `split` (`test`; the synthetic benchmark adds the
in-distribution `test_seen`, `mask_test` adds `test_masked`), `domain` (the metric's
domain: legal, medical, finance, or `all`, the pooled queries) and `stage`:
- `BM25`: the first stage; `dense (MiniLM)`: the MiniLM cosine of query and passage on
  the same lists; `PT`: the pretrained backbone, zero-shot;
- `S1`: the EAG stage-1 adapter (curriculum=eag);
- `fine-tuned`: the domain experts, each on its own domain's queries (direct
  fine-tuning, PT+S2, or EAG, PT+S1+S2, as the `curriculum` column says when it varies);
- `fused`: the experts' scores fused with BM25's at each domain's dev-chosen weight.
Runs that record it (`bm25/<domain>/recall@depth`) add a `ceiling` column: the share of
the positives in the first stage's lists at the reranking depth, in percent, the most any
row reranking them can recall. It is a column on every row, not a row, because it caps
each row's numbers beside them, and differs per run where the depth does.
BM25, dense and PT train nothing: runs whose BM25 (or dense, PT) row holds the same numbers share one
row, whose settings read `*` where those runs differ (a loss sweep has one BM25 row per
split and domain, a backbone sweep one BM25 row but a PT row per backbone). Trained
stages keep one row per run. Rows are ordered by split (`test` first), domain (`all`
last), stage, then the settings' values (numbers by value).

Seeds: runs that differ only in `seed` (`-m seed=0,1,2`; without job records, also a
config leaf `*.seed`) are one cell: each metric's mean over the seeds and the half-width
of its 95% Student-t interval, `mean ± half-width` in table1.md with an `n_seeds` column;
table1.csv keeps the mean in each metric's column and adds its `ci_low`, `ci_high`. Tables
2 and 3 pool such runs the same way: each number of routing.json (a router's accuracy,
metrics and routing time; an expert's nDCG@10 on a domain) as its mean and interval over
the seeds, Table 3's change against the backbone the change of the means. A single seed
prints as without them.

Paired tests (`paired.{md,csv}`), on per-query test nDCG@10 rescored from each run's
`runs/<row>.trec` and `runs/qrels.test.trec`: a query's score is its mean over the seeds,
then a paired randomisation test over the queries of each domain and of all (two-sided,
exact up to 13 queries, else 10,000 seeded sign flips), for fine-tuned vs PT and fused vs
BM25 in every setting, EAG vs direct where runs differ only in `curriculum`, and each
router (but `none`, the PT row) vs `oracle` in every setting that routed, on the routed
rankings (`runs/routed.<router>.trec`). Runs without TREC files are left out of the tests.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException

from r2r import plots
from r2r.errors import DataError
from r2r.evaluation import CEILING as CEILING_METRIC
from r2r.files import write_text_atomic
from r2r.metrics import metric_names, query_metrics
from r2r.routing.evaluation import BASE, TABLE2_METRICS, routed_row
from r2r.sweep import FAILED, IGNORED, RESULTS

# Table 1's metric columns, in the paper's order.
COLUMNS = metric_names(("ndcg", "mrr", "recall", "precision"))
# Metric key prefix -> Table 1's stage label, in the table's order.
STAGES = {
    "bm25": "BM25",
    "dense": "dense (MiniLM)",
    "zero_shot": "PT",
    "stage1": "S1",
    "fine_tuned": "fine-tuned",
    "fused": "fused",
}
UNTRAINED = ("BM25", "dense (MiniLM)", "PT")
# The first stage's recall at the reranking depth (the run's `bm25/<domain>/recall@depth`):
# a column on every row of a run's split and domain, since every row reranks those lists.
CEILING = "ceiling"
# A shared BM25/PT row's setting where its runs differ: the row holds for each of them.
ANY = "*"
FIXED = ("split", "domain", "stage", "router", "model", "run")


@dataclass(frozen=True)
class Run:
    """One run directory: its settings (name -> value as Hydra's command line writes it),
    its metrics (`stage[:split]/domain/metric@k`) and routing.json if it routed."""

    path: str
    settings: dict[str, str]
    metrics: dict[str, float]
    routing: dict | None


def text(value: Any) -> str:
    """A config value as an override writes it: null, true, 8, [legal,medical]."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{text(v)}" for k, v in value.items()) + "}"
    return str(value)


def leaves(config: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value of every leaf of a nested dict (lists are leaves)."""
    if isinstance(config, Mapping) and config:
        return {
            k: v
            for key, value in config.items()
            for k, v in leaves(value, f"{prefix}{key}.").items()
        }
    return {prefix.rstrip("."): config}


def lookup(config: Any, key: str) -> Any:
    """The value at a dotted key of a nested dict, None where there is none."""
    for part in key.split("."):
        if not isinstance(config, Mapping) or part not in config:
            return None
        config = config[part]
    return config


# Not settings: where a run lives and how it resumes (IGNORED), Hydra's own keys, the
# `sweep` grid that launched it (it sets only Hydra's sweeper: a job of sweep=table1 and
# the same job of sweep=masking are one configuration), `zero_shot` and a stage's `test`
# (`curriculum.stage1.test`), which say only whether a run also scores a row (the PT row is
# shared by a sweep's runs), and `experts_from`, the folder a run took its trained adapters
# from (a path, like `paths.*`: the settings they were trained with name the run).
NOT_SETTINGS = (*IGNORED, "hydra", "sweep", "zero_shot", "experts_from")


def is_setting(key: str) -> bool:
    parts = key.split("/")[0].split(".")
    if parts[0] == "curriculum" and len(parts) == 3 and parts[2] == "test":
        return False
    return parts[0] not in NOT_SETTINGS


def parse_overrides(overrides: Sequence[str]) -> dict[str, str]:
    """Key -> value of each override, parsed as Hydra parses it: `lora.r=8` -> 8,
    `zero_shot=False` -> false, `+x=1` -> x: 1, `router@routers.lsr=tfidf` ->
    router@routers.lsr: tfidf, `~routers.tfidf` -> routers.tfidf: ~ (deleted)."""
    settings = {}
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group + (f"@{override.package}" if override.package else "")
        settings[key] = "~" if override.is_delete() else text(override.value())
    return settings


def recorded(results: Mapping) -> bool:
    """Whether results.json says what its job chose (an empty record: not a Hydra run)."""
    job = results.get("job") or {}
    return bool(job.get("choices") or job.get("overrides"))


def job_settings(job: Mapping, source: Path) -> dict[str, str]:
    """A job record's choices, and its overrides of anything but a chosen group."""
    choices = {group: text(option) for group, option in job.get("choices", {}).items()}
    try:
        overrides = parse_overrides(job.get("overrides", []))
    except OverrideParseException as error:
        raise ValueError(f"{source}: job.overrides: {error}") from error
    settings = choices | {k: v for k, v in overrides.items() if k not in choices}
    return {k: v for k, v in settings.items() if is_setting(k)}


def config_settings(config: Mapping) -> dict[str, str]:
    """The leaves of a resolved config that are settings: not where the run lives
    (`paths.*`, and the keys that hold its output directory: logger and trainer folders)."""
    output = text(lookup(config, "paths.output"))
    return {
        k: text(v)
        for k, v in leaves(config).items()
        if is_setting(k) and not (isinstance(v, str) and output != "null" and output in v)
    }


def settings_of(results: Sequence[Mapping], sources: Sequence[Path]) -> list[dict[str, str]]:
    """Each run's settings, every run with the same names (see the module docstring);
    `sources` (the files) name a bad record."""
    if not all(recorded(r) for r in results):
        found = [config_settings(r["config"]) for r in results]
        names = {k for s in found for k in s}
        return [{k: s.get(k, "null") for k in sorted(names)} for s in found]
    found = [job_settings(r["job"], p) for r, p in zip(results, sources, strict=True)]
    groups = {g for r in results for g in r["job"].get("choices", {})}
    names = {k for s in found for k in s}
    return [
        {
            k: s[k] if k in s else "null" if k in groups else text(lookup(r["config"], k))
            for k in sorted(names)
        }
        for r, s in zip(results, found, strict=True)
    ]


def load(path: Path) -> dict:
    """A results.json, with the fields the report reads."""
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"not a complete results file ({err})", file=path) from None
    for key in ("metrics", "config"):
        if not isinstance(results.get(key), dict):
            raise DataError(f"no `{key}` object", file=path, field=key)
    return results


def read_runs(sweep: Path) -> list[Run]:
    """Every run below `sweep` (a directory holding results.json), by path."""
    paths = sorted(sweep.rglob(RESULTS))
    if not paths:
        raise FileNotFoundError(f"no {RESULTS} under {sweep}")
    results = [load(p) for p in paths]
    runs = []
    for path, r, settings in zip(paths, results, settings_of(results, paths), strict=True):
        routing = path.parent / "routing.json"
        summary = json.loads(routing.read_text(encoding="utf-8")) if routing.exists() else None
        runs.append(Run(str(path.parent), settings, r["metrics"], summary))
    return runs


def varying(runs: Sequence[Run]) -> list[str]:
    """The settings whose value is not the same in every run, alphabetically."""
    names = sorted({k for r in runs for k in r.settings})
    return [k for k in names if len({r.settings[k] for r in runs}) > 1]


def headers(names: Sequence[str]) -> list[str]:
    """Column names of settings; one named like a fixed column gets ` (job)`."""
    return [f"{n} (job)" if n in FIXED or n in COLUMNS else n for n in names]


def order(value: str) -> tuple[int, float, str]:
    """Sort key of a setting's value: `*` first, then numbers by value, then text."""
    if value == ANY:
        return (0, 0.0, "")
    try:
        return (1, float(value), value)
    except ValueError:
        return (2, 0.0, value)


@dataclass(frozen=True)
class Row:
    """A row of Table 1: the values of the table's setting columns, then the fixed ones."""

    settings: tuple[str, ...]
    split: str  # test, or a further evaluation split (synthetic: test_seen)
    domain: str
    stage: str
    values: dict[str, float]  # over several seeds: the mean
    run: str  # the run it comes from (a shared BM25/PT row: the first by path)
    ci: dict[str, float] = field(default_factory=dict)  # metric -> 95% half-width over seeds
    n_seeds: int = 1


def rows_of(run: Run, names: Sequence[str]) -> list[Row]:
    grouped: dict[tuple[str, str, str], dict[str, float]] = {}
    ceilings: dict[tuple[str, str], float] = {}
    for key, value in run.metrics.items():
        stage_split, domain, metric = key.split("/")
        stage, _, split = stage_split.partition(":")  # `fine_tuned:test_seen`
        if metric == CEILING_METRIC:
            ceilings[split or "test", domain] = value
        elif stage in STAGES:
            grouped.setdefault((split or "test", domain, STAGES[stage]), {})[metric] = value
    for (split, domain, _), values in grouped.items():
        if (split, domain) in ceilings:
            values[CEILING] = ceilings[split, domain]
    settings = tuple(run.settings[n] for n in names)
    return [Row(settings, s, d, st, v, run.path) for (s, d, st), v in grouped.items()]


def is_seed(name: str) -> bool:
    """`seed`, and a config leaf that holds it (`mining.seed`) where runs lack a job record."""
    return name == "seed" or name.endswith(".seed")


def interval(values: Sequence[float]) -> tuple[float, float]:
    """The mean and the half-width of its 95% Student-t interval (0.0 for one value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, 0.0
    spread = statistics.stdev(values) / math.sqrt(len(values))
    return mean, float(scipy.stats.t.ppf(0.975, len(values) - 1)) * spread


def over_seeds(rows: Sequence[Row]) -> list[Row]:
    """Rows that differ only in their seed as one row: per metric the mean over the seeds
    and its 95% interval (`rows` carry no seed column: equal settings, other seeds)."""
    groups: dict[tuple, list[Row]] = {}
    for row in rows:
        groups.setdefault((row.settings, row.split, row.domain, row.stage), []).append(row)
    merged = []
    for same in groups.values():
        metrics = [m for m in same[0].values if all(m in r.values for r in same)]
        stats = {m: interval([r.values[m] for r in same]) for m in metrics}
        merged.append(
            replace(
                same[0],
                values={m: mean for m, (mean, _) in stats.items()},
                ci={m: half for m, (_, half) in stats.items()},
                n_seeds=len(same),
            )
        )
    return merged


def poolable(runs: Sequence[Run]) -> None:
    """Where seeds vary (cells pool them), no two runs may share every setting, seed
    included (e.g. runs on two `experts_from` folders): they would pool as two seeds."""
    if not any(is_seed(n) for n in varying(runs)):
        return
    seen: dict[tuple, str] = {}
    for run in runs:
        first = seen.setdefault(tuple(sorted(run.settings.items())), run.path)
        if first != run.path:
            raise DataError(
                f"the same settings as {first}, seed included: its cells would pool them as "
                "two seeds; tell them apart with an override, or report them separately",
                file=Path(run.path) / RESULTS,
            )


def without_seeds(runs: Sequence[Run]) -> list[str]:
    """The varying settings but the seeds: the columns of tables whose cells pool seeds."""
    return [n for n in varying(runs) if not is_seed(n)]


def table1(runs: Sequence[Run]) -> tuple[list[str], list[Row]]:
    """Table 1's setting columns and its rows (see the module docstring)."""
    names = without_seeds(runs)
    found = [row for run in runs for row in rows_of(run, names)]
    if len(names) < len(varying(runs)):
        found = over_seeds(found)
    shared: dict[tuple, Row] = {}
    rows = []
    for row in found:
        if row.stage not in UNTRAINED:
            rows.append(row)
            continue
        key = (
            row.split,
            row.domain,
            row.stage,
            tuple(sorted(row.values.items())),
            tuple(sorted(row.ci.items())),
            row.n_seeds,
        )
        if (same := shared.get(key)) is not None:
            pairs = zip(same.settings, row.settings, strict=True)
            row = replace(same, settings=tuple(a if a == b else ANY for a, b in pairs))
        shared[key] = row
    rows += shared.values()
    stages = list(STAGES.values())
    rows.sort(
        key=lambda r: (
            r.split != "test",
            r.split,
            r.domain == "all",
            r.domain,
            stages.index(r.stage),
            [order(v) for v in r.settings],
            r.run,
        )
    )
    return names, rows


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]], left: int) -> str:
    """Markdown with the first `left` columns as text, the rest right-aligned; floats to
    one decimal, integers with thousands separators, missing values as –."""

    def cell(value: object) -> str:
        if value is None:
            return "–"
        if isinstance(value, float):
            return f"{value:.1f}"
        return f"{value:,}" if isinstance(value, int) else str(value)

    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * left + "---:|" * (len(header) - left),
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def csv_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def columns(rows: Sequence[Row]) -> tuple[str, ...]:
    """Table 1's value columns: the metrics, and the ceiling where the runs recorded it
    (runs older than it have none)."""
    return (*COLUMNS, CEILING) if any(CEILING in r.values for r in rows) else COLUMNS


def table1_head(names: Sequence[str], rows: Sequence[Row]) -> list[str]:
    return [*headers(names), "split", "domain", "stage", *columns(rows)]


def seeded(rows: Sequence[Row]) -> bool:
    """Whether any row pools several seeds (the tables then show intervals and `n_seeds`)."""
    return any(r.n_seeds > 1 for r in rows)


def table1_cells(rows: Sequence[Row]) -> list[list[object]]:
    return [
        [*r.settings, r.split, r.domain, r.stage, *(r.values.get(c) for c in columns(rows))]
        for r in rows
    ]


def with_interval(row: Row, metric: str) -> object:
    """`mean ± half-width` of a row over several seeds; the value itself for one seed."""
    half = row.ci.get(metric) if row.n_seeds > 1 else None
    return plus_minus(row.values.get(metric), half, 1)


def markdown(names: Sequence[str], rows: Sequence[Row]) -> str:
    if not seeded(rows):
        return markdown_table(table1_head(names, rows), table1_cells(rows), left=len(names) + 3)
    cells = [
        [
            *r.settings,
            r.split,
            r.domain,
            r.stage,
            *(with_interval(r, c) for c in columns(rows)),
            r.n_seeds,
        ]
        for r in rows
    ]
    return markdown_table([*table1_head(names, rows), "n_seeds"], cells, left=len(names) + 3)


def bounds(row: Row, metric: str) -> list[float | None]:
    """A metric's 95% interval over seeds, [low, high]; none for one seed."""
    if row.n_seeds < 2 or metric not in row.ci:
        return [None, None]
    return [row.values[metric] - row.ci[metric], row.values[metric] + row.ci[metric]]


def to_csv(names: Sequence[str], rows: Sequence[Row]) -> str:
    """Table 1 as CSV: a metric's column holds its mean over seeds; a sweep over seeds adds
    each metric's `ci_low`, `ci_high` after it and `n_seeds`."""
    if not seeded(rows):
        cells = table1_cells(rows)
        return csv_table(
            [*table1_head(names, rows), "run"],
            [[*c, r.run] for c, r in zip(cells, rows, strict=True)],
        )
    head = [*headers(names), "split", "domain", "stage"]
    head += [h for c in columns(rows) for h in (c, f"{c} ci_low", f"{c} ci_high")]
    cells = [
        [
            *r.settings,
            r.split,
            r.domain,
            r.stage,
            *(v for c in columns(rows) for v in (r.values.get(c), *bounds(r, c))),
            r.n_seeds,
            r.run,
        ]
        for r in rows
    ]
    return csv_table([*head, "n_seeds", "run"], cells)


@dataclass(frozen=True)
class Routed:
    """A cell of Tables 2 and 3: a routed run, or the runs that differ only in seed, with
    routing.json's numbers as the mean over the seeds and `ci` their 95% half-widths at the
    same places (empty for one seed)."""

    settings: dict[str, str]
    path: str  # the run (over seeds: the first by path)
    routing: dict
    ci: dict = field(default_factory=dict)
    n_seeds: int = 1


def pool(trees: Sequence[Any]) -> tuple[Any, Any]:
    """The mean over `trees` (each seed's routing.json) of each number found at the same
    place in all of them, and its 95% half-width (a number all seeds agree on is kept as it
    is, ± 0.0); anything else as in the first tree, without a half-width (None)."""
    first = trees[0]
    if isinstance(first, Mapping):
        common = [k for k in first if all(isinstance(t, Mapping) and k in t for t in trees)]
        both = {k: pool([t[k] for t in trees]) for k in common}
        return {k: m for k, (m, _) in both.items()}, {k: h for k, (_, h) in both.items()}
    numbers = all(isinstance(t, int | float) and not isinstance(t, bool) for t in trees)
    if not numbers:
        return first, None
    return (first, 0.0) if len(set(trees)) == 1 else interval(trees)


def routed(runs: Sequence[Run]) -> tuple[list[str], list[Routed]]:
    """The runs that routed (routing.json), those that differ only in seed as one cell, by
    their settings, and the settings but the seeds that vary among them: Tables 2 and 3
    name their cells by those."""
    found = sorted((r for r in runs if r.routing is not None), key=lambda r: r.path)
    names = without_seeds(found)
    pooling = len(names) < len(varying(found))
    groups: dict[tuple[str, ...], list[Run]] = {}
    for i, run in enumerate(found):
        key = tuple(run.settings[n] for n in names) if pooling else (str(i),)
        groups.setdefault(key, []).append(run)
    cells = []
    for same in groups.values():
        if len(same) == 1:
            cells.append(Routed(same[0].settings, same[0].path, same[0].routing))
            continue
        routing, ci = pool([r.routing for r in same])
        cells.append(Routed(same[0].settings, same[0].path, routing, ci, len(same)))
    cells.sort(key=lambda r: ([order(r.settings[n]) for n in names], r.path))
    return names, cells


def label(run: Run | Routed, names: Sequence[str]) -> str:
    """`routers.lsr.layer=-1, routers.lsr.pooling=mean`; empty without varying settings."""
    return ", ".join(f"{h}={run.settings[n]}" for n, h in zip(names, headers(names), strict=True))


ROUTED = TABLE2_METRICS
TABLE2_TAIL = ("router", "accuracy", "macro-F1", *ROUTED, "params", "routing/reranking %")
# Table 2's value columns with an interval over seeds (all but `params`).
TABLE2_INTERVALS = ("accuracy", "macro-F1", *ROUTED, "routing/reranking %")


# Table 2's row order: the two references (no experts, the true domain) first, chance last.
ROUTER_ORDER = {"none": 0, "oracle": 1, "random": 3}


def by_router(names: Sequence[str]) -> list[str]:
    """Router names in Table 2's order: `none`, `oracle`, the others by name, `random`."""
    return sorted(names, key=lambda name: (ROUTER_ORDER.get(name, 2), name))


def table2_values(router: Mapping) -> list[object]:
    """A router's Table 2 values from routing.json (or from its half-widths over seeds):
    routing time as a percentage of reranking time."""
    fraction = router["time_fraction"]
    return [
        router["accuracy"],
        router["macro_f1"],
        *(router["metrics"].get(f"all/{m}") for m in ROUTED),
        router["n_params"],
        None if fraction is None else round(100 * fraction, 3),
    ]


def table2_rows(
    names: Sequence[str], found: Sequence[Routed]
) -> list[tuple[list[object], dict[str, object], Routed]]:
    """Table 2: per cell, one row per router on the pooled test set (`all`): the row, each
    interval column's half-width over seeds (empty for one seed) and its cell."""
    rows = []
    for f in found:
        for name in by_router(f.routing["routers"]):
            values = table2_values(f.routing["routers"][name])
            ci = {}
            if f.n_seeds > 1:
                halves = zip(TABLE2_TAIL[1:], table2_values(f.ci["routers"][name]), strict=True)
                ci = {c: h for c, h in halves if c in TABLE2_INTERVALS}
            rows.append(([*(f.settings[n] for n in names), name, *values], ci, f))
    return rows


def plus_minus(value: object, half: object, digits: int) -> object:
    """`mean ± half-width` to `digits` decimals; the value alone without a half-width."""
    if value is None or half is None:
        return value
    return f"{value:.{digits}f} ± {half:.{digits}f}"


def table2_markdown(names: Sequence[str], found: Sequence[Routed]) -> str:
    # Routing time is a small share of reranking time: two decimals.
    seeds = any(f.n_seeds > 1 for f in found)
    head = [*headers(names), *TABLE2_TAIL, *(["n_seeds"] if seeds else [])]
    tail = TABLE2_TAIL[1:]
    rows = []
    for row, ci, f in table2_rows(names, found):
        cells = [
            plus_minus(v, ci.get(c), 2 if c == tail[-1] else 1) if c in ci else v
            for c, v in zip(tail, row[-len(tail) :], strict=True)
        ]
        cells[-1] = f"{row[-1]:.2f}" if not ci else cells[-1]
        rows.append([*row[: -len(tail)], *cells, *([f.n_seeds] if seeds else [])])
    return markdown_table(head, rows, left=len(names) + 1)


def table2_csv(names: Sequence[str], found: Sequence[Routed]) -> str:
    """Table 2 as CSV; over seeds, each interval column's `ci_low`, `ci_high` after it and
    `n_seeds`."""
    if not any(f.n_seeds > 1 for f in found):
        return csv_table(
            [*headers(names), *TABLE2_TAIL, "run"],
            [[*row, f.path] for row, _, f in table2_rows(names, found)],
        )
    tail = TABLE2_TAIL[1:]
    head = [*headers(names), TABLE2_TAIL[0]]
    head += [
        h
        for c in tail
        for h in ((c, f"{c} ci_low", f"{c} ci_high") if c in TABLE2_INTERVALS else (c,))
    ]
    rows = []
    for row, ci, f in table2_rows(names, found):
        cells = row[: -len(tail)]
        for c, v in zip(tail, row[-len(tail) :], strict=True):
            cells.append(v)
            if c in TABLE2_INTERVALS:
                half = ci.get(c)
                cells += [None, None] if v is None or half is None else [v - half, v + half]
        rows.append([*cells, f.n_seeds, f.path])
    return csv_table([*head, "n_seeds", "run"], rows)


def forgetting_cells(forgetting: dict, metric: str = "ndcg@10") -> dict[str, dict[str, float]]:
    """model -> domain -> `metric`, from routing.json's forgetting table (`all` left out)."""
    return {
        model: {
            k.split("/")[0]: v
            for k, v in row.items()
            if k.endswith(f"/{metric}") and not k.startswith("all/")
        }
        for model, row in forgetting.items()
    }


TABLE3_TAIL = ("model", "domain", "ndcg@10", "Δ vs base")


def table3_rows(names: Sequence[str], found: Sequence[Routed]) -> list[list[object]]:
    """Table 3 (long form): each expert and the bare backbone on each test domain, with
    the change against the bare backbone; over seeds, the value's 95% interval after it
    (`ci_low`, `ci_high`) and, after the change, `n_seeds`."""
    seeds = any(f.n_seeds > 1 for f in found)
    rows = []
    for f in found:
        cells = forgetting_cells(f.routing["forgetting"])
        halves = forgetting_cells(f.ci["forgetting"]) if f.n_seeds > 1 else {}
        for model, row in cells.items():
            for domain, value in row.items():
                delta = None if model == BASE else value - cells[BASE][domain]
                half = halves.get(model, {}).get(domain)
                low_high = [None, None] if half is None else [value - half, value + half]
                rows.append(
                    [
                        *(f.settings[n] for n in names),
                        model,
                        domain,
                        value,
                        *(low_high if seeds else []),
                        delta,
                        *([f.n_seeds] if seeds else []),
                    ]
                )
    return rows


def table3_csv(names: Sequence[str], found: Sequence[Routed]) -> str:
    head = [*headers(names), *TABLE3_TAIL, "run"]
    if any(f.n_seeds > 1 for f in found):
        at = head.index("ndcg@10") + 1
        head = [*head[:at], "ndcg@10 ci_low", "ndcg@10 ci_high", "Δ vs base", "n_seeds", "run"]
    return csv_table(head, [[*t, f.path] for f in found for t in table3_rows(names, [f])])


def signed(value: float) -> str:
    """+1.2 / -0.3 / +0.0 (never -0.0)."""
    return f"{round(value, 1) + 0.0:+.1f}"


def forgetting_cell(value: float, half: float | None, base: float | None) -> str:
    """`26.0 (+6.0)`: the value and its change against the bare backbone's `base` (none
    on the backbone's own row); over seeds `26.0 ± 1.2 (+6.0)`."""
    text = f"{value:.1f}" if half is None else plus_minus(value, half, 1)
    return text if base is None else f"{text} ({signed(value - base)})"


def table3_markdown(names: Sequence[str], found: Sequence[Routed]) -> str:
    """Table 3 (wide): per cell, models down, test domains across, `value (Δ)`; over
    seeds `mean ± half-width (Δ of the means)`."""
    parts = []
    for f in found:
        cells = forgetting_cells(f.routing["forgetting"])
        halves = forgetting_cells(f.ci["forgetting"]) if f.n_seeds > 1 else {}
        domains = list(cells[BASE])

        rows = [
            [
                model,
                *(
                    forgetting_cell(
                        row[d],
                        halves.get(model, {}).get(d),
                        None if model == BASE else cells[BASE][d],
                    )
                    for d in domains
                ),
            ]
            for model, row in cells.items()
        ]
        where = f.path if f.n_seeds < 2 else f"{f.path}, {f.n_seeds} seeds"
        name = f"{label(f, names)} ({where})" if names else where
        metric = "ndcg@10" if f.n_seeds < 2 else "ndcg@10 ± 95% CI"
        parts.append(
            f"{name}, {metric} (Δ vs base):\n\n" + markdown_table(["model", *domains], rows, left=1)
        )
    return "\n".join(parts)


# The paired tests' metric, on the test split's TREC runs (`runs/<row>.trec`).
PAIRED_METRIC = "ndcg@10"
CURRICULUM = ("curriculum", "curriculum.name")  # the choice, or its config leaf
FUSED = "fused vs BM25"
PAIRED_TAIL = ("comparison", "domain", "n queries", f"Δ {PAIRED_METRIC}", "p-value")


# The paired test: a randomisation (sign-flip) test of the mean difference over queries,
# exact up to 13 queries (2^13 sign patterns), else this many seeded random flips. Unlike
# a t-test it assumes no normal differences and stays defined where every query differs
# by the same amount (a t-test's zero variance).
RESAMPLES = 10_000
PERMUTATION_SEED = 0


@dataclass(frozen=True)
class Paired:
    """A paired test over queries of two rows (`a` vs `b`): the mean of a − b in points and
    the two-sided p-value of the paired randomisation test (None for one query)."""

    settings: tuple[str, ...]
    comparison: str
    domain: str
    n_queries: int
    difference: float
    p_value: float | None


def mean_difference(a: np.ndarray, b: np.ndarray, axis: int) -> np.ndarray:
    return np.mean(a - b, axis=axis)


def permutation_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value that `a` and `b` (paired) have the same mean: each pair's
    difference flips sign at random (scipy's `samples` permutation test)."""
    if len(a) < 2:
        return None
    result = scipy.stats.permutation_test(
        (np.asarray(a), np.asarray(b)),
        mean_difference,
        permutation_type="samples",
        vectorized=True,
        n_resamples=RESAMPLES,
        rng=PERMUTATION_SEED,
    )
    return float(result.pvalue)


def trec_file(path: Path) -> dict[str, list[tuple[str, int]]]:
    """qid -> (doc, the integer 4th field) of its lines, in file order: a run's ranks or
    the qrels' grades."""
    found: dict[str, list[tuple[str, int]]] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = raw.split()
        if not fields:
            continue
        try:
            found.setdefault(fields[0], []).append((fields[2], int(fields[3])))
        except (IndexError, ValueError):
            raise DataError(
                f"not a TREC line (qid _ doc integer ...): {raw!r}", file=path, line=number
            ) from None
    return found


def per_query(run: str, row: str, metric: str = PAIRED_METRIC) -> dict[str, float]:
    """`domain/qid` -> `metric` in percent of a run's test ranking of `row` (`fine_tuned`),
    rescored from `runs/<row>.trec` and `runs/qrels.test.trec` with r2r's own metrics
    (the numbers of results.json, query by query); empty where either file is missing."""
    runs = Path(run) / "runs"
    if not (runs / f"{row}.trec").exists() or not (runs / "qrels.test.trec").exists():
        return {}
    qrels = {q: dict(judged) for q, judged in trec_file(runs / "qrels.test.trec").items()}
    scores = {}
    for qid, ranked in trec_file(runs / f"{row}.trec").items():
        relevance = qrels.get(qid, {})
        if any(grade > 0 for grade in relevance.values()):  # as the evaluation: judged queries
            docs = [doc for doc, _ in sorted(ranked, key=lambda pair: pair[1])]
            scores[qid] = 100.0 * query_metrics(docs, relevance)[metric]
    return scores


def pooled(runs: Sequence[Run], row: str) -> dict[str, float]:
    """`domain/qid` -> the mean over `runs` (seeds) of the query's score in `row`."""
    found: dict[str, list[float]] = {}
    for run in runs:
        for qid, value in per_query(run.path, row).items():
            found.setdefault(qid, []).append(value)
    return {qid: statistics.fmean(values) for qid, values in found.items()}


def paired_test(
    a: Mapping[str, float], b: Mapping[str, float], settings: tuple[str, ...], comparison: str
) -> list[Paired]:
    """`a` vs `b` on the queries both scored, per domain (the qid's prefix) and on all."""
    common = sorted(set(a) & set(b))
    domains = sorted({q.split("/")[0] for q in common})
    tests = []
    for domain in [*domains, "all"] if common else []:
        qids = [q for q in common if domain == "all" or q.split("/")[0] == domain]
        x, y = [a[q] for q in qids], [b[q] for q in qids]
        difference = statistics.fmean(u - v for u, v in zip(x, y, strict=True))
        tests.append(
            Paired(settings, comparison, domain, len(qids), difference, permutation_p(x, y))
        )
    return tests


# Table 2's references: the oracle is what the routers are tested against; `none` (no
# expert) is the PT row, already tested against the fine-tuned one.
ORACLE = "oracle"
NO_TEST = {ORACLE, "none"}


def vs_oracle(router: str) -> str:
    return f"{router} vs {ORACLE}"


def bare(
    groups: Mapping[tuple[str, ...], Sequence[Run]], settings: tuple[str, ...], at: int | None
) -> dict[str, float]:
    """The PT row's per-query scores for the runs of `settings`: their own, else (a sweep
    scores PT in one run, `zero_shot=false` elsewhere) those of the runs that differ only in
    the curriculum (column `at`), which trains adapters and leaves the bare backbone as is."""
    own = pooled(groups[settings], "zero_shot")
    if own or at is None:
        return own
    rest = settings[:at] + settings[at + 1 :]
    return pooled(
        [r for s, g in groups.items() if s[:at] + s[at + 1 :] == rest for r in g], "zero_shot"
    )


def paired(runs: Sequence[Run]) -> tuple[list[str], list[Paired]]:
    """The paired tests of a sweep, over per-query test nDCG@10 pooled over seeds (a
    query's mean over the seeds), and the settings that name them:
    - fine-tuned vs PT: each run setting's experts against the bare backbone (scored in
      those runs, else in runs that differ only in `curriculum`);
    - fused vs BM25: each run setting's fused row against the first stage it reranks;
    - EAG vs direct: runs that differ only in `curriculum` (and seed), fine-tuned rows;
    - `<router> vs oracle`: each router's routed ranking (`runs/routed.<router>.trec`)
      against the oracle's, in each run setting that routed."""
    names = without_seeds(runs)
    groups: dict[tuple[str, ...], list[Run]] = {}
    for run in runs:
        groups.setdefault(tuple(run.settings[n] for n in names), []).append(run)
    curriculum = next((n for n in names if n in CURRICULUM), None)
    tests = []
    for settings, group in groups.items():
        tests += paired_test(
            pooled(group, "fine_tuned"),
            bare(groups, settings, names.index(curriculum) if curriculum else None),
            settings,
            "fine-tuned vs PT",
        )
        tests += paired_test(pooled(group, "fused"), pooled(group, "bm25"), settings, FUSED)
    if curriculum is not None:
        at = names.index(curriculum)
        arms: dict[tuple[str, ...], dict[str, list[Run]]] = {}
        for settings, group in groups.items():
            rest = (*settings[:at], ANY, *settings[at + 1 :])
            arms.setdefault(rest, {})[settings[at]] = group
        for settings, by in arms.items():
            if "eag" in by and "direct" in by:
                eag, direct = pooled(by["eag"], "fine_tuned"), pooled(by["direct"], "fine_tuned")
                tests += paired_test(eag, direct, settings, "EAG vs direct")
    # Routed vs oracle: each router's routed ranking against each query to its own expert.
    routers = by_router({n for r in runs if r.routing for n in r.routing["routers"]} - NO_TEST)
    for settings, group in groups.items():
        oracle = pooled(group, routed_row(ORACLE))
        for router in routers:
            routed_scores = pooled(group, routed_row(router))
            tests += paired_test(routed_scores, oracle, settings, vs_oracle(router))
    comparisons = ["fine-tuned vs PT", FUSED, "EAG vs direct", *map(vs_oracle, routers)]
    tests.sort(
        key=lambda t: (
            comparisons.index(t.comparison),
            [order(v) for v in t.settings],
            t.domain == "all",
            t.domain,
        )
    )
    return names, tests


def paired_rows(tests: Sequence[Paired]) -> list[list[object]]:
    return [
        [*t.settings, t.comparison, t.domain, t.n_queries, t.difference, t.p_value] for t in tests
    ]


def paired_markdown(names: Sequence[str], tests: Sequence[Paired]) -> str:
    # Differences as every table's points (one decimal, signed); p-values to 3 figures.
    rows = [
        [*row[:-2], signed(row[-2]), None if row[-1] is None else f"{row[-1]:.3g}"]
        for row in paired_rows(tests)
    ]
    return markdown_table([*headers(names), *PAIRED_TAIL], rows, left=len(names) + 2)


def paired_csv(names: Sequence[str], tests: Sequence[Paired]) -> str:
    return csv_table([*headers(names), *PAIRED_TAIL], paired_rows(tests))


def failed_jobs(sweep: Path) -> list[tuple[str, str]]:
    """(job directory, error) of every job that left failed.json."""
    return [
        (str(path.parent), json.loads(path.read_text(encoding="utf-8"))["error"])
        for path in sorted(sweep.rglob(FAILED))
    ]


def figures(
    names: Sequence[str],
    rows: Sequence[Row],
    routed_names: Sequence[str],
    found: Sequence[Run],
    out: Path,
) -> list[Path]:
    """Test nDCG@10 bars per domain, one bar per stage and setting (error bars: the 95%
    interval over seeds); each routed run's forgetting heat map."""
    head = headers(names)
    stages = list(STAGES.values())
    values: dict[str, dict[str, float]] = {}
    errors: dict[str, dict[str, float]] = {}  # 95% half-widths of cells over seeds
    test = [r for r in rows if r.split == "test" and "ndcg@10" in r.values]
    # Bars in the table's order within a domain: BM25 and PT at the left of every group.
    for r in sorted(test, key=lambda r: (stages.index(r.stage), [order(v) for v in r.settings])):
        shown = ", ".join(f"{h}={v}" for h, v in zip(head, r.settings, strict=True) if v != ANY)
        name = f"{r.stage} ({shown})" if shown else r.stage
        values.setdefault(name, {})[r.domain] = r.values["ndcg@10"]
        if r.n_seeds > 1:
            errors.setdefault(name, {})[r.domain] = r.ci["ndcg@10"]
    written = []
    if values:
        title = "test nDCG@10" + (", 95% CI over seeds" if errors else "")
        written.append(
            plots.domain_bars(values, out / "plots" / "table1.png", title=title, errors=errors)
        )
    for i, f in enumerate(found):
        name = "forgetting" + (f"_{i}" if len(found) > 1 else "")
        written.append(
            plots.forgetting_heatmap(
                forgetting_cells(f.routing["forgetting"]),
                out / "plots" / f"{name}.png",
                title=f"forgetting: {label(f, routed_names) or Path(f.path).name}",
            )
        )
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Tables 1-3 (markdown and CSV) and figures from a sweep directory."
    )
    parser.add_argument("sweep", type=Path, help="a directory holding runs' results.json files")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: SWEEP)")
    parser.add_argument("--no-plots", action="store_true", help="tables only")
    args = parser.parse_args(argv)
    if not args.sweep.is_dir():
        parser.error(f"{args.sweep}: no such directory")
    failures = failed_jobs(args.sweep)
    try:
        runs = read_runs(args.sweep)
        poolable(runs)
    except FileNotFoundError as error:
        parser.exit(2, f"error: {error} ({len(failures)} failed jobs)\n")
    except DataError as error:
        parser.exit(2, f"error: {error}\n")
    names, rows = table1(runs)
    routed_names, found = routed(runs)
    try:
        paired_names, tests = paired(runs)
    except DataError as error:
        parser.exit(2, f"error: {error}\n")
    out = args.out or args.sweep
    sections = {"Table 1: reranking per setting, domain and stage": markdown(names, rows)}
    write_text_atomic(out / "table1.md", markdown(names, rows))
    write_text_atomic(out / "table1.csv", to_csv(names, rows))
    if tests:
        table = paired_markdown(paired_names, tests)
        sections[
            f"Paired tests: per-query test {PAIRED_METRIC}, mean over seeds, randomisation test"
        ] = table
        write_text_atomic(out / "paired.md", table)
        write_text_atomic(out / "paired.csv", paired_csv(paired_names, tests))
    if found:
        table2 = table2_markdown(routed_names, found)
        table3 = table3_markdown(routed_names, found)
        sections["Table 2: routed reranking on the pooled test set"] = table2
        sections["Table 3: forgetting, every expert on every domain"] = table3
        write_text_atomic(out / "table2.md", table2)
        write_text_atomic(out / "table2.csv", table2_csv(routed_names, found))
        write_text_atomic(out / "table3.md", table3)
        write_text_atomic(out / "table3.csv", table3_csv(routed_names, found))
    if failures:
        sections[f"Failed jobs ({len(failures)})"] = (
            "\n".join(f"- {job}: {error}" for job, error in failures) + "\n"
        )
    written = [] if args.no_plots else figures(names, rows, routed_names, found, out)
    report = "\n".join(f"## {title}\n\n{body}" for title, body in sections.items())
    if written:
        report += "\n## Figures\n\n" + "".join(f"![{p.stem}](plots/{p.name})\n" for p in written)
    write_text_atomic(out / "report.md", report)
    print(report)
    print(
        f"written: {out / 'report.md'} and its tables"
        + (f", {len(written)} figures" if written else "")
    )
    for job, error in failures:
        print(f"failed job: {job}: {error}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
