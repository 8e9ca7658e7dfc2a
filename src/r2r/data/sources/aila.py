"""FIRE 2019 AILA task 2 (statute retrieval) -> legal `RetrievalDataset`.

Raw files: ``Query_doc.txt`` (``AILA_Q<n>||<text>`` per line), ``Object_statutes/S<n>.txt``
(``Title: ...`` and ``Desc: ...`` lines) and ``relevance_judgments_statutes.txt`` (TREC
qrels ``<qid> Q0 <docid> <0|1>``). Every query is judged against every statute, so the
grade-0 rows are kept as explicit negatives.
"""

from __future__ import annotations

import re
from pathlib import Path

from r2r.data.errors import DataError
from r2r.data.sources import DEFAULT_FRACTIONS, RawSource, read_text
from r2r.types import Passage, Query, RetrievalDataset, Split

NAME = "aila2019"
DOMAIN = "legal"
RAW_DIR = "legal/aila2019"

QUERIES_FILE = "Query_doc.txt"
QRELS_FILE = "relevance_judgments_statutes.txt"
STATUTES_DIR = "Object_statutes"
STATUTE_ID = re.compile(r"S\d+")


def read_queries(path: Path) -> dict[str, Query]:
    queries: dict[str, Query] = {}
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        qid, sep, text = line.partition("||")
        qid, text = qid.strip(), text.strip()
        if not sep or not qid:
            raise DataError("expected 'AILA_Q<n>||<text>'", file=path, line=lineno, field="id")
        if not text:
            raise DataError(f"empty text for query {qid!r}", file=path, line=lineno, field="text")
        if qid in queries:
            raise DataError(f"duplicate query {qid!r}", file=path, line=lineno, field="id")
        queries[qid] = Query(id=qid, text=text)
    return queries


def read_statute(path: Path) -> Passage:
    fields: dict[str, str] = {}
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep or key not in ("Title", "Desc"):
            raise DataError("expected a 'Title: ...' or 'Desc: ...' line", file=path, line=lineno)
        if key in fields:
            raise DataError(f"repeated {key!r} line", file=path, line=lineno, field=key)
        fields[key] = value.strip()
    for key in ("Title", "Desc"):
        if key not in fields:
            raise DataError(f"no '{key}: ...' line", file=path, field=key)
    if not fields["Desc"]:
        raise DataError("empty statute text", file=path, field="Desc")
    return Passage(id=path.stem, title=fields["Title"], text=fields["Desc"])


def read_statutes(folder: Path) -> dict[str, Passage]:
    if not folder.is_dir():
        raise DataError("missing statutes folder", file=folder)
    paths = [p for p in folder.glob("S*.txt") if STATUTE_ID.fullmatch(p.stem)]
    if not paths:
        raise DataError("no S<n>.txt statute files", file=folder)
    paths.sort(key=lambda p: int(p.stem[1:]))  # S2 before S10
    return {p.stem: read_statute(p) for p in paths}


def read_qrels(
    path: Path, queries: dict[str, Query], corpus: dict[str, Passage]
) -> tuple[dict[str, dict[str, int]], list[tuple[str, str]]]:
    """Judgments, and the (qid, doc id) pairs on statutes the release does not ship.

    The public release judges S58 but has no Object_statutes/S58.txt: such a judgment
    cannot be ranked, so it is set aside and reported rather than failing the whole
    source. Any other unknown document id is an error.
    """
    judgments: dict[str, dict[str, int]] = {}
    missing: list[tuple[str, str]] = []
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 4:
            raise DataError(
                f"expected '<qid> Q0 <docid> <grade>', got {len(parts)} columns",
                file=path,
                line=lineno,
            )
        qid, _, doc_id, grade_text = parts
        if qid not in queries:
            raise DataError(f"unknown query {qid!r}", file=path, line=lineno, field="query-id")
        try:
            grade = int(grade_text)
        except ValueError:
            raise DataError(
                f"grade must be an integer, got {grade_text!r}",
                file=path,
                line=lineno,
                field="score",
            ) from None
        if doc_id in judgments.get(qid, {}):
            raise DataError(
                f"duplicate judgment for {qid!r} and {doc_id!r}",
                file=path,
                line=lineno,
                field="corpus-id",
            )
        if doc_id not in corpus:
            if not STATUTE_ID.fullmatch(doc_id):
                raise DataError(
                    f"unknown document {doc_id!r}", file=path, line=lineno, field="corpus-id"
                )
            missing.append((qid, doc_id))
            continue
        judgments.setdefault(qid, {})[doc_id] = grade
    return judgments, missing


def read(raw: Path) -> RawSource:
    raw = Path(raw)
    if raw.is_file():
        raise DataError(
            f"AILA 2019 is a folder ({QUERIES_FILE}, {QRELS_FILE}, {STATUTES_DIR}/), not one "
            "file: name the folder",
            file=raw,
        )
    queries = read_queries(raw / QUERIES_FILE)
    corpus = read_statutes(raw / STATUTES_DIR)
    judgments, missing = read_qrels(raw / QRELS_FILE, queries, corpus)
    return RawSource(
        name=NAME,
        domain=DOMAIN,
        path=raw,
        corpus=corpus,
        queries=queries,
        judgments=judgments,
        dropped_judgments=tuple(missing),
    )


def convert(
    raw: Path,
    *,
    seed: int,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    split: Split | None = None,
) -> RetrievalDataset:
    return read(raw).to_dataset(seed=seed, fractions=fractions, split=split)
