"""Convert raw public datasets into BEIR folders with seeded train/dev/test query splits.

r2r-convert aila2019 --raw ../shared/data/legal/aila2019 --out data/converted/aila2019
r2r-convert all --shared ../shared/data --out data/converted
r2r-convert tatqa --raw TAT-QA/dataset_raw/tatqa_dataset_test_gold.json --split test --out tq
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from r2r.data.errors import DataError
from r2r.data.io import write_beir
from r2r.data.sources import DEFAULT_FRACTIONS, RawSource, aila, pubmedqa, tatqa
from r2r.data.splits import assign_splits
from r2r.files import OutputError, check_target
from r2r.types import SPLITS, RetrievalDataset

SOURCES = {module.NAME: module for module in (aila, pubmedqa, tatqa)}


def build_parser() -> argparse.ArgumentParser:
    raw_dirs = ", ".join(f"{name} -> SHARED/{m.RAW_DIR}" for name, m in SOURCES.items())
    raw_files = "; ".join(
        f"{name}: {', '.join(m.RAW_FILES)}"
        for name, m in SOURCES.items()
        if hasattr(m, "RAW_FILES")
    )
    parser = argparse.ArgumentParser(
        prog="r2r-convert",
        description=(
            "Convert raw datasets into BEIR folders (corpus.jsonl, queries.jsonl, "
            "qrels/{train,dev,test}.tsv). Queries without a positive are dropped; the rest "
            "are split by a seeded shuffle, or all put in one split with --split. Every source "
            "is converted before any is written."
        ),
        epilog="Exit status: 0 on success, 2 on bad arguments or bad raw data (the message "
        "names the file, line and field).",
    )
    parser.add_argument("source", choices=[*SOURCES, "all"], help="the dataset, or all of them")
    parser.add_argument(
        "--raw",
        type=Path,
        help=(
            f"raw data of a single SOURCE: its folder (default: SHARED/<dir>: {raw_dirs}) or, "
            "for a one-file source, the file itself under any name. In a folder the first "
            f"file found is read, in this order: {raw_files}"
        ),
    )
    parser.add_argument(
        "--shared",
        type=Path,
        default=Path("../shared/data"),
        help="root of the shared raw data (default: ../shared/data)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="BEIR folder to write for a single SOURCE; for 'all', the parent of OUT/<name>/",
    )
    parser.add_argument("--seed", type=int, default=0, help="split seed (default: 0)")
    parser.add_argument(
        "--fractions",
        type=float,
        nargs=3,
        metavar=("TRAIN", "DEV", "TEST"),
        help="query split fractions, summing to 1 (default: 0.6 0.2 0.2)",
    )
    parser.add_argument(
        "--split",
        choices=SPLITS,
        help="put every query into this one split instead of shuffling (e.g. --split test "
        "for TAT-QA's tatqa_dataset_test_gold.json); excludes --fractions",
    )
    return parser


def summary(converted: list[tuple[RawSource, RetrievalDataset]]) -> Table:
    table = Table(title="converted datasets")
    for column in ("dataset", "domain", "docs", *SPLITS, "pos/query", "dropped queries"):
        table.add_column(column, justify="left" if column in ("dataset", "domain") else "right")
    for raw, dataset in converted:
        n_queries = sum(len(dataset.qrels[split]) for split in SPLITS)
        n_positives = sum(
            len(dataset.positives(split, qid)) for split in SPLITS for qid in dataset.qrels[split]
        )
        table.add_row(
            dataset.name,
            dataset.domain,
            str(len(dataset.corpus)),
            *(str(len(dataset.qrels[split])) for split in SPLITS),
            f"{n_positives / n_queries:.2f}",
            str(len(raw.without_positive)),
        )
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.split is not None and args.fractions is not None:
        parser.error("--split puts every query in one split; --fractions has nothing to cut")
    fractions = DEFAULT_FRACTIONS if args.fractions is None else tuple(args.fractions)
    try:  # assign_splits owns the rule on fractions; check it before reading anything
        assign_splits([], fractions=fractions, seed=args.seed)
    except ValueError as exc:
        parser.error(str(exc))
    if args.source == "all":
        if args.raw is not None:
            parser.error("--raw names one dataset; use --shared with 'all'")
        jobs = [(m, args.shared / m.RAW_DIR, args.out / name) for name, m in SOURCES.items()]
    else:
        module = SOURCES[args.source]
        jobs = [(module, args.raw or args.shared / module.RAW_DIR, args.out)]

    # Errors and warnings go out as plain lines: rich would wrap a long file path.
    try:
        # Convert every source before writing any: one bad source leaves no output at all.
        for _, _, out in jobs:  # a folder r2r may not replace fails before any reading
            check_target(out, kind="beir")
        raws = [module.read(raw_path) for module, raw_path, _ in jobs]
        datasets = [
            raw.to_dataset(seed=args.seed, fractions=fractions, split=args.split) for raw in raws
        ]
        for dataset, (_, _, out) in zip(datasets, jobs, strict=True):
            write_beir(dataset, out)
    except (DataError, OutputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for raw in raws:
        for qid, doc_id in raw.dropped_judgments:
            print(
                f"warning: {raw.name}: {qid} judges {doc_id}, absent from the corpus",
                file=sys.stderr,
            )
    console = Console()
    console.print(summary(list(zip(raws, datasets, strict=True))))
    for raw, (_, _, out) in zip(raws, jobs, strict=True):
        print(f"{raw.name}: {raw.path} -> {out}")  # plain: rich would wrap the paths
    return 0


if __name__ == "__main__":
    sys.exit(main())
