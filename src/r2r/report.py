"""Turn a sweep directory of runs into the paper's tables and figures.

    python -m r2r.report multirun/2026-11-22/10-00-00 [--out DIR]

Reads every `results.json` (and `routing.json`, `failed.json`) below the directory and
writes, by default into the sweep directory:
- `table1.{md,csv}`: one row per (domain, configuration), where the configurations are
  the BM25 first stage, the pretrained backbone (PT, the zero-shot row), direct
  fine-tuning (PT+S2) and EAG (PT+S1+S2) per masking strategy; per evaluation split
  (`test`; the synthetic benchmark adds the in-distribution `test_seen`).
- `table2.{md,csv}`: routed reranking on the pooled test set, one row per router.
- `table3.{md,csv}`: forgetting, every expert and the bare backbone on every domain.
- `plots/`: per-domain nDCG@10 bars and the forgetting heat map per (backbone, data).
- `report.md`: all of the above, and the jobs that failed with their errors.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from r2r import plots
from r2r.files import write_text_atomic
from r2r.routing.evaluation import BASE
from r2r.sweep import FAILED

# Table 1's columns, in the paper's order.
COLUMNS: tuple[str, ...] = tuple(
    f"{m}@{k}" for m in ("ndcg", "mrr", "recall", "precision") for k in (5, 10)
)


@dataclass(frozen=True)
class Row:
    backbone: str
    data: str
    split: str  # test, or a further evaluation split (synthetic: test_seen)
    domain: str
    config: str
    values: dict[str, float]
    run: str


def masking_name(target: str) -> str:
    """`r2r.data.masking.strategies.EntityMasking` -> `entity` (NoMasking -> `none`)."""
    name = target.rsplit(".", 1)[-1].removesuffix("Masking").lower()
    return "none" if name == "no" else name


def backbone_name(config: dict) -> str:
    """A short backbone name from its config: the hub id, tiny_<arch>, or the loader's name
    (`load_gguf_smollm2` -> `smollm2`)."""
    if config.get("name_or_path"):
        return config["name_or_path"]
    if "arch" in config:
        return f"tiny_{config['arch']}"
    loader = config["_target_"].rsplit(".", 1)[-1]
    return loader.removeprefix("load_").removeprefix("gguf_")


def rows_of(results: dict, run: str) -> list[Row]:
    cfg = results["config"]
    backbone = backbone_name(cfg["backbone"])
    data = cfg["data"]["name"]
    curriculum = cfg.get("curriculum", {}).get("name", "direct")
    tuned = (
        "PT+S2"
        if curriculum == "direct"
        else f"PT+S1+S2 ({masking_name(cfg['masking']['_target_'])})"
    )
    labels = {"bm25": "BM25", "zero_shot": "PT", "fine_tuned": tuned}
    grouped: dict[tuple[str, str, str], dict[str, float]] = {}
    for key, value in results["metrics"].items():
        stage_split, domain, metric = key.split("/")
        stage, _, split = stage_split.partition(":")  # `fine_tuned:test_seen`
        if stage in labels:
            grouped.setdefault((split or "test", domain, labels[stage]), {})[metric] = value
    return [Row(backbone, data, s, d, c, v, run) for (s, d, c), v in grouped.items()]


def collect(sweep: Path) -> list[Row]:
    """Rows of every run under `sweep`, each (backbone, data, domain, config) kept once."""
    rows: dict[tuple[str, str, str, str, str], Row] = {}
    paths = sorted(sweep.rglob("results.json"))
    if not paths:
        raise FileNotFoundError(f"no results.json under {sweep}")
    for path in paths:
        for row in rows_of(json.loads(path.read_text(encoding="utf-8")), str(path.parent)):
            key = (row.backbone, row.data, row.split, row.domain, row.config)
            # Runs that differ only in unused knobs (masking under curriculum=direct) give
            # identical rows: keep one. Different numbers for one configuration are an error.
            if key in rows and rows[key].values != row.values and row.config not in ("BM25", "PT"):
                raise ValueError(f"two runs give {key}: {rows[key].run} and {row.run}")
            rows.setdefault(key, row)
    order = {"BM25": 0, "PT": 1, "PT+S2": 2}
    return sorted(
        rows.values(),
        key=lambda r: (
            r.backbone,
            r.data,
            r.split != "test",
            r.split,
            r.domain == "all",
            r.domain,
            order.get(r.config, 3),
            r.config,
        ),
    )


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


TABLE1_HEAD = ("backbone", "data", "split", "domain", "config", *COLUMNS)


def table1_rows(rows: Sequence[Row]) -> list[list[object]]:
    return [
        [r.backbone, r.data, r.split, r.domain, r.config, *(r.values.get(c) for c in COLUMNS)]
        for r in rows
    ]


def markdown(rows: Sequence[Row]) -> str:
    return markdown_table(TABLE1_HEAD, table1_rows(rows), left=5)


def to_csv(rows: Sequence[Row]) -> str:
    return csv_table(
        [*TABLE1_HEAD, "run"], [[*t, r.run] for t, r in zip(table1_rows(rows), rows, strict=True)]
    )


@dataclass(frozen=True)
class Routing:
    """One run's routing.json with the names of its backbone and data."""

    backbone: str
    data: str
    summary: dict
    run: str


def collect_routing(sweep: Path) -> list[Routing]:
    found = []
    for path in sorted(sweep.rglob("routing.json")):
        results = path.parent / "results.json"
        if not results.exists():  # the job failed after routing
            continue
        cfg = json.loads(results.read_text(encoding="utf-8"))["config"]
        summary = json.loads(path.read_text(encoding="utf-8"))
        found.append(
            Routing(backbone_name(cfg["backbone"]), cfg["data"]["name"], summary, str(path.parent))
        )
    return found


ROUTED = tuple(f"{m}@{k}" for m in ("ndcg", "mrr", "recall") for k in (5, 10))
TABLE2_HEAD = (
    "backbone",
    "data",
    "job",
    "router",
    "accuracy",
    "macro-F1",
    *ROUTED,
    "params",
    "routing/reranking %",
)


# Table 2's row order: the two references (no experts, the true domain) first, chance last.
ROUTER_ORDER = {"none": 0, "oracle": 1, "random": 3}


def table2_rows(found: Sequence[Routing]) -> list[list[object]]:
    """Table 2: per run, one row per router on the pooled test set (`all`); routing time
    as a percentage of reranking time."""
    return [
        [
            f.backbone,
            f.data,
            Path(f.run).name,  # a sweep's jobs differ in their overrides (router settings)
            name,
            r["accuracy"],
            r["macro_f1"],
            *(r["metrics"].get(f"all/{m}") for m in ROUTED),
            r["n_params"],
            round(100 * r["time_fraction"], 3),
        ]
        for f in found
        for name, r in sorted(
            f.summary["routers"].items(), key=lambda kv: (ROUTER_ORDER.get(kv[0], 2), kv[0])
        )
    ]


def table2_markdown(found: Sequence[Routing]) -> str:
    # Routing time is a small share of reranking time: two decimals.
    rows = [[*row[:-1], f"{row[-1]:.2f}"] for row in table2_rows(found)]
    return markdown_table(TABLE2_HEAD, rows, left=4)


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


TABLE3_HEAD = ("backbone", "data", "model", "domain", "ndcg@10", "Δ vs base")


def table3_rows(found: Sequence[Routing]) -> list[list[object]]:
    """Table 3 (long form): each expert and the bare backbone on each test domain, with
    the change against the bare backbone."""
    rows = []
    for f in found:
        cells = forgetting_cells(f.summary["forgetting"])
        for model, row in cells.items():
            for domain, value in row.items():
                delta = None if model == BASE else value - cells[BASE][domain]
                rows.append([f.backbone, f.data, model, domain, value, delta])
    return rows


def signed(value: float) -> str:
    """+1.2 / -0.3 / +0.0 (never -0.0)."""
    return f"{round(value, 1) + 0.0:+.1f}"


def table3_markdown(found: Sequence[Routing]) -> str:
    """Table 3 (wide): per run, models down, test domains across, `value (Δ)`."""
    parts = []
    for f in found:
        cells = forgetting_cells(f.summary["forgetting"])
        domains = list(cells[BASE])
        rows = [
            [
                model,
                *(
                    f"{row[d]:.1f}"
                    if model == BASE
                    else f"{row[d]:.1f} ({signed(row[d] - cells[BASE][d])})"
                    for d in domains
                ),
            ]
            for model, row in cells.items()
        ]
        parts.append(
            f"{f.backbone} / {f.data} ({f.run}), ndcg@10 (Δ vs base):\n\n"
            + markdown_table(["model", *domains], rows, left=1)
        )
    return "\n".join(parts)


def failed_jobs(sweep: Path) -> list[tuple[str, str]]:
    """(job directory, error) of every job that left failed.json."""
    return [
        (str(path.parent), json.loads(path.read_text(encoding="utf-8"))["error"])
        for path in sorted(sweep.rglob(FAILED))
    ]


def slug(*parts: str) -> str:
    """A file name from names that may hold slashes (hub ids: Qwen/Qwen3-Reranker-0.6B)."""
    return "_".join(parts).replace("/", "-")


def figures(rows: Sequence[Row], found: Sequence[Routing], out: Path) -> list[Path]:
    """Per (backbone, data): test nDCG@10 bars per domain, and the forgetting heat map."""
    written = []
    groups = dict.fromkeys((r.backbone, r.data) for r in rows if r.split == "test")
    for backbone, data in groups:
        values: dict[str, dict[str, float]] = {}
        mine = [r for r in rows if (r.backbone, r.data, r.split) == (backbone, data, "test")]
        for config in plots.configs_in_order([r.config for r in mine]):
            values[config] = {
                r.domain: r.values["ndcg@10"]
                for r in mine
                if r.config == config and "ndcg@10" in r.values
            }
        written.append(
            plots.domain_bars(
                values,
                out / "plots" / f"{slug('table1', backbone, data)}.png",
                title=f"{backbone} on {data}: test nDCG@10",
            )
        )
    for i, f in enumerate(found):
        name = slug("forgetting", f.backbone, f.data) + (f"_{i}" if len(found) > 1 else "")
        written.append(
            plots.forgetting_heatmap(
                forgetting_cells(f.summary["forgetting"]),
                out / "plots" / f"{name}.png",
                title=f"{f.backbone} on {f.data}: forgetting",
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
        rows = collect(args.sweep)
    except FileNotFoundError as error:
        parser.exit(2, f"error: {error} ({len(failures)} failed jobs)\n")
    found = collect_routing(args.sweep)
    out = args.out or args.sweep
    sections = {"Table 1: reranking per domain and configuration": markdown(rows)}
    write_text_atomic(
        out / "table1.md", sections["Table 1: reranking per domain and configuration"]
    )
    write_text_atomic(out / "table1.csv", to_csv(rows))
    if found:
        table2 = table2_markdown(found)
        sections["Table 2: routed reranking on the pooled test set"] = table2
        sections["Table 3: forgetting, every expert on every domain"] = table3_markdown(found)
        write_text_atomic(out / "table2.md", table2)
        write_text_atomic(
            out / "table2.csv",
            csv_table(
                [*TABLE2_HEAD, "run"], [[*t, f.run] for f in found for t in table2_rows([f])]
            ),
        )
        write_text_atomic(
            out / "table3.md", sections["Table 3: forgetting, every expert on every domain"]
        )
        write_text_atomic(
            out / "table3.csv",
            csv_table(
                [*TABLE3_HEAD, "run"], [[*t, f.run] for f in found for t in table3_rows([f])]
            ),
        )
    if failures:
        sections[f"Failed jobs ({len(failures)})"] = (
            "\n".join(f"- {job}: {error}" for job, error in failures) + "\n"
        )
    written = [] if args.no_plots else figures(rows, found, out)
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
