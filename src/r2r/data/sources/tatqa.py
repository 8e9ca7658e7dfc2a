"""TAT-QA (``tatqa_dataset_{dev,test_gold,train}.json``) -> finance `RetrievalDataset`.

Each report contributes its paragraphs (``<table uid>-p<order>``) and its table, linearised
into one passage (``<table uid>-table``). Query = a question (id = its uid); positives =
its ``rel_paragraphs`` (paragraph ``order`` values, as strings) plus the table when
``answer_from`` mentions "table" ("table" or "table-text"). The public
``tatqa_dataset_test.json`` has neither field (its questions come without answers), so it
cannot be converted; ``tatqa_dataset_test_gold.json``, released later, has both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from r2r.data.errors import DataError
from r2r.data.sources import (
    DEFAULT_FRACTIONS,
    RawSource,
    find_raw_file,
    read_json,
    require,
    require_text,
)
from r2r.types import Passage, Query, RetrievalDataset, Split

NAME = "tatqa"
DOMAIN = "finance"
RAW_DIR = "finance/tatqa"

# Looked for in this order in a folder: dev first, the split this project's results were
# measured on, then the test split with its gold evidence, then train.
RAW_FILES = ("tatqa_dataset_dev.json", "tatqa_dataset_test_gold.json", "tatqa_dataset_train.json")
GOLD_FIELDS = ("rel_paragraphs", "answer_from")


def linearise_table(rows: list[list[Any]]) -> str:
    """Cells joined with " | ", rows with newlines; empty cells and rows are skipped.

    Whitespace inside a cell is collapsed so a stray newline cannot fake a row break.
    Skipping empty cells loses column alignment, but header cells in these tables are
    mostly blank spacers and a reranker reads the numbers next to their labels anyway.
    """
    lines = []
    for row in rows:
        cells = [" ".join(str(cell).split()) for cell in row if cell is not None]
        cells = [cell for cell in cells if cell]
        if cells:
            lines.append(" | ".join(cells))
    return "\n".join(lines)


def _read_passages(
    report: Any, index: int, path: Path, corpus: dict[str, Passage]
) -> tuple[str, dict[str, str]]:
    """Add a report's table and paragraphs to `corpus`; return its uid and order -> doc id."""
    table = require(report, "table", dict, path=path, where=f"report {index}")
    uid = require_text(table, "uid", path=path, where=f"report {index}")
    where = f"table {uid}"
    rows = require(table, "table", list, path=path, where=where)
    if not all(isinstance(row, list) for row in rows):
        raise DataError(f"{where}: expected a list of rows", file=path, field="table")
    if f"{uid}-table" in corpus:
        raise DataError(f"duplicate table uid {uid!r}", file=path, field="uid")
    text = linearise_table(rows)
    if not text:
        raise DataError(f"{where}: empty table", file=path, field="table")
    corpus[f"{uid}-table"] = Passage(id=f"{uid}-table", text=text)

    paragraph_ids: dict[str, str] = {}
    for paragraph in require(report, "paragraphs", list, path=path, where=where):
        order = str(require(paragraph, "order", (int, str), path=path, where=where))
        if order in paragraph_ids:
            raise DataError(f"{where}: duplicate paragraph order {order}", file=path, field="order")
        text = require_text(paragraph, "text", path=path, where=f"{where} paragraph {order}")
        paragraph_ids[order] = f"{uid}-p{order}"
        corpus[paragraph_ids[order]] = Passage(id=paragraph_ids[order], text=text)
    return uid, paragraph_ids


def _read_question(
    question: Any, where: str, uid: str, paragraph_ids: dict[str, str], path: Path
) -> tuple[Query, dict[str, int]]:
    """The question and its positives; `where` locates it until its own uid is known."""
    qid = require_text(question, "uid", path=path, where=where)
    where = f"question {qid}"
    query = Query(id=qid, text=require_text(question, "question", path=path, where=where))
    if not any(field in question for field in GOLD_FIELDS):
        raise DataError(
            f"{where}: no gold evidence (neither rel_paragraphs nor answer_from), as in the "
            "answer-less public tatqa_dataset_test.json; convert tatqa_dataset_test_gold.json, "
            "which has them",
            file=path,
            field="rel_paragraphs",
        )
    positives = {}
    for order in require(question, "rel_paragraphs", list, path=path, where=where):
        if str(order) not in paragraph_ids:
            raise DataError(
                f"{where}: rel_paragraph {order!r} matches no paragraph of table {uid}",
                file=path,
                field="rel_paragraphs",
            )
        positives[paragraph_ids[str(order)]] = 1
    if "table" in require(question, "answer_from", str, path=path, where=where):
        positives[f"{uid}-table"] = 1
    return query, positives


def read(raw: Path) -> RawSource:
    """`raw`: a TAT-QA file under any name, or a folder holding one of `RAW_FILES`."""
    path = find_raw_file(raw, RAW_FILES)
    reports = read_json(path)
    if not isinstance(reports, list):
        raise DataError(f"expected a JSON list of reports, got {type(reports).__name__}", file=path)
    corpus: dict[str, Passage] = {}
    queries: dict[str, Query] = {}
    judgments: dict[str, dict[str, int]] = {}
    for index, report in enumerate(reports):
        uid, paragraph_ids = _read_passages(report, index, path, corpus)
        questions = require(report, "questions", list, path=path, where=f"table {uid}")
        for number, question in enumerate(questions):
            where = f"table {uid} question {number}"
            query, positives = _read_question(question, where, uid, paragraph_ids, path)
            if query.id in queries:
                raise DataError(f"duplicate question uid {query.id!r}", file=path, field="uid")
            queries[query.id] = query
            judgments[query.id] = positives
    return RawSource(
        name=NAME, domain=DOMAIN, path=path, corpus=corpus, queries=queries, judgments=judgments
    )


def convert(
    raw: Path,
    *,
    seed: int,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    split: Split | None = None,
) -> RetrievalDataset:
    return read(raw).to_dataset(seed=seed, fractions=fractions, split=split)
