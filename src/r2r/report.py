"""Turn a sweep directory of runs into the paper's Table 1 layout.

    python -m r2r.report multirun/2026-11-22/10-00-00 [--out DIR]

Reads every `results.json` below the directory and writes `table1.md` and `table1.csv`
(default: into the sweep directory): one row per (domain, configuration), where the
configurations are the pretrained backbone (PT, the zero-shot row), direct fine-tuning
(PT+S2) and EAG (PT+S1+S2) per masking strategy, plus the BM25 first stage; per evaluation
split (`test`; the synthetic benchmark adds the in-distribution `test_seen`).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from r2r.data.io import write_text_atomic

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


def markdown(rows: Sequence[Row]) -> str:
    header = "| backbone | data | split | domain | config | " + " | ".join(COLUMNS) + " |"
    lines = [header, "|---|---|---|---|---|" + "---:|" * len(COLUMNS)]
    for r in rows:
        cells = [f"{r.values[c]:.1f}" if c in r.values else "–" for c in COLUMNS]
        lines.append(
            f"| {r.backbone} | {r.data} | {r.split} | {r.domain} | {r.config} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[Row]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["backbone", "data", "split", "domain", "config", *COLUMNS, "run"])
    for r in rows:
        values = [r.values.get(c) for c in COLUMNS]
        writer.writerow([r.backbone, r.data, r.split, r.domain, r.config, *values, r.run])
    return buffer.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Table 1 (PT / PT+S2 / PT+S1+S2) from a sweep directory."
    )
    parser.add_argument("sweep", type=Path, help="a directory holding runs' results.json files")
    parser.add_argument("--out", type=Path, default=None, help="where to write table1.{md,csv}")
    args = parser.parse_args(argv)
    rows = collect(args.sweep)
    out = args.out or args.sweep
    table = markdown(rows)
    write_text_atomic(out / "table1.md", table)
    write_text_atomic(out / "table1.csv", to_csv(rows))
    print(table)
    print(f"written: {out / 'table1.md'}, {out / 'table1.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
