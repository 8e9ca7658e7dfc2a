"""The BEIR folder format.

A BEIR folder holds ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl``
(``_id``, ``text``) and ``qrels/{train,dev,test}.tsv`` (header ``query-id corpus-id score``).
It is the interchange format users bring their own data in; every reader error names the
file, the line and the field.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from r2r.data.errors import DataError
from r2r.files import atomic_path
from r2r.types import SPLITS, Passage, Qrels, Query, RetrievalDataset

QRELS_HEADER = "query-id\tcorpus-id\tscore"


# ----------------------------------------------------------------------------- readers
def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) of a UTF-8 text file; a missing file, a folder, an
    empty file or bytes that are not UTF-8 raise DataError naming the file (and line)."""
    if not path.exists():
        raise DataError("no such file", file=path)
    if not path.is_file():
        raise DataError("is not a file", file=path)
    if path.stat().st_size == 0:
        raise DataError("empty file", file=path)
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})",
                    file=path,
                    line=lineno,
                ) from None


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line number, object) per non-blank line; bad JSON names the file and line."""
    for lineno, raw in read_lines(path):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DataError(f"malformed JSON ({exc.msg})", file=path, line=lineno) from None
        except ValueError as exc:  # an integer of more than 4300 digits (CPython's limit)
            raise DataError(f"malformed JSON ({exc})", file=path, line=lineno) from None
        except RecursionError:
            raise DataError("malformed JSON (nested too deeply)", file=path, line=lineno) from None
        if not isinstance(obj, dict):
            raise DataError("each line must be a JSON object", file=path, line=lineno)
        for field, value in obj.items():
            if not encodable(field):
                raise DataError("a field name holds a lone surrogate", file=path, line=lineno)
            if not encodable(value):
                raise DataError(
                    "holds a lone surrogate (not text)", file=path, line=lineno, field=field
                )
        yield lineno, obj


def encodable(value: Any) -> bool:
    """Whether every string in a JSON value, keys included, is real text (JSON's "\\ud800"
    escapes can spell lone surrogates, which no tokenizer or UTF-8 writer accepts). A loop,
    not recursion: json.loads accepts nesting nearly as deep as Python's stack."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
    return True


def check_id(value: str, path: Path, line: int, field: str) -> str:
    """An id is a non-empty string without whitespace or control characters (TREC files,
    which r2r writes and ir-measures reads, separate their columns by whitespace)."""
    if not value:
        raise DataError("empty id", file=path, line=line, field=field)
    bad = next((c for c in value if c.isspace() or unicodedata.category(c).startswith("C")), None)
    if bad is not None:
        raise DataError(
            f"id {value!r} holds whitespace or a control character ({bad!r})",
            file=path,
            line=line,
            field=field,
        )
    return value


def _field(obj: dict[str, Any], name: str, path: Path, line: int, *, required: bool = True) -> str:
    value = obj.get(name)
    if value is None:
        if required:
            raise DataError("missing", file=path, line=line, field=name)
        return ""
    if not isinstance(value, str):
        raise DataError(
            f"expected a string, got {type(value).__name__}", file=path, line=line, field=name
        )
    return value


def read_corpus(path: Path) -> dict[str, Passage]:
    corpus: dict[str, Passage] = {}
    for line, obj in read_jsonl(path):
        doc_id = check_id(_field(obj, "_id", path, line), path, line, "_id")
        if doc_id in corpus:
            raise DataError(f"duplicate id {doc_id!r}", file=path, line=line, field="_id")
        title = _field(obj, "title", path, line, required=False)
        text = _field(obj, "text", path, line)
        if not text.strip() and not title.strip():
            raise DataError(
                f"empty text for document {doc_id!r}", file=path, line=line, field="text"
            )
        corpus[doc_id] = Passage(id=doc_id, text=text, title=title)
    if not corpus:
        raise DataError("no document (only blank lines)", file=path)
    return corpus


def read_queries(path: Path) -> dict[str, Query]:
    queries: dict[str, Query] = {}
    for line, obj in read_jsonl(path):
        qid = check_id(_field(obj, "_id", path, line), path, line, "_id")
        if qid in queries:
            raise DataError(f"duplicate id {qid!r}", file=path, line=line, field="_id")
        text = _field(obj, "text", path, line)
        if not text.strip():
            raise DataError(f"empty text for query {qid!r}", file=path, line=line, field="text")
        queries[qid] = Query(id=qid, text=text)
    if not queries:
        raise DataError("no query (only blank lines)", file=path)
    return queries


def read_qrels(
    path: Path, queries: dict[str, Query], corpus: dict[str, Passage]
) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for lineno, raw in read_lines(path):
        if not raw.strip() or (lineno == 1 and raw.startswith("query-id")):
            continue
        parts = raw.rstrip("\r\n").split("\t")
        if len(parts) != 3:
            raise DataError(
                f"expected 3 tab-separated columns, got {len(parts)}", file=path, line=lineno
            )
        qid, doc_id, score = parts
        try:
            grade = int(score)
        except ValueError:
            header = f"; the header line is {QRELS_HEADER!r}" if lineno == 1 else ""
            raise DataError(
                f"score must be an integer, got {score!r}{header}",
                file=path,
                line=lineno,
                field="score",
            ) from None
        if qid not in queries:
            raise DataError(f"unknown query {qid!r}", file=path, line=lineno, field="query-id")
        if doc_id not in corpus:
            raise DataError(
                f"unknown document {doc_id!r}", file=path, line=lineno, field="corpus-id"
            )
        if doc_id in qrels.get(qid, {}):
            raise DataError(
                f"a second judgment of ({qid!r}, {doc_id!r})",
                file=path,
                line=lineno,
                field="corpus-id",
            )
        qrels.setdefault(qid, {})[doc_id] = grade
    return qrels


def read_beir(folder: str | Path, *, domain: str, name: str | None = None) -> RetrievalDataset:
    """Read and validate a BEIR folder. Splits whose qrels file is absent are empty."""
    folder = Path(folder)
    for required in ("corpus.jsonl", "queries.jsonl"):
        if not (folder / required).is_file():
            raise DataError(f"missing {required} in BEIR folder", file=folder)
    corpus = read_corpus(folder / "corpus.jsonl")
    queries = read_queries(folder / "queries.jsonl")
    qrels = {}
    # The standard splits, then any further evaluation split (qrels/<name>.tsv).
    extra = sorted(p.stem for p in (folder / "qrels").glob("*.tsv") if p.stem not in SPLITS)
    for split in (*SPLITS, *extra):
        path = folder / "qrels" / f"{split}.tsv"
        qrels[split] = read_qrels(path, queries, corpus) if path.is_file() else {}
    dataset = RetrievalDataset(
        name=name or folder.name, domain=domain, corpus=corpus, queries=queries, qrels=qrels
    )
    validate(dataset, source=folder)
    return dataset


def all_splits(dataset: RetrievalDataset) -> list[str]:
    """train, dev, test, then any further evaluation split the dataset has, by name."""
    return [*SPLITS, *sorted(set(dataset.qrels) - set(SPLITS))]


def validate(dataset: RetrievalDataset, *, source: str | Path | None = None) -> None:
    """Dataset-level checks that no single line can reveal."""
    where = source if source is not None else dataset.name
    if not any(dataset.split_queries(split) for split in SPLITS):
        raise DataError(f"domain {dataset.domain!r} has no query with a positive", file=where)
    seen: dict[str, str] = {}
    for split in all_splits(dataset):
        for qid in dataset.qrels.get(split, {}):
            if qid in seen and seen[qid] != split:
                raise DataError(
                    f"query {qid!r} is in both the {seen[qid]} and {split} splits",
                    file=Path(str(where)) / "qrels" / f"{split}.tsv",
                    field="query-id",
                )
            seen[qid] = split


# ----------------------------------------------------------------------------- writer
def _qrels_tsv(qrels: Qrels) -> str:
    lines = [QRELS_HEADER]
    for qid in sorted(qrels):
        for doc_id in sorted(qrels[qid]):
            lines.append(f"{qid}\t{doc_id}\t{qrels[qid][doc_id]}")
    return "\n".join(lines) + "\n"


def write_beir(dataset: RetrievalDataset, folder: str | Path) -> Path:
    """Write `dataset` as a BEIR folder, atomically (the whole folder appears at once)."""
    validate(dataset)
    folder = Path(folder)
    with atomic_path(folder, kind="beir") as tmp:
        (tmp / "qrels").mkdir(parents=True)
        with (tmp / "corpus.jsonl").open("w", encoding="utf-8") as fh:
            for doc in dataset.corpus.values():
                row = {"_id": doc.id, "title": doc.title, "text": doc.text}
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        with (tmp / "queries.jsonl").open("w", encoding="utf-8") as fh:
            for query in dataset.queries.values():
                fh.write(
                    json.dumps({"_id": query.id, "text": query.text}, ensure_ascii=False) + "\n"
                )
        for split in all_splits(dataset):
            (tmp / "qrels" / f"{split}.tsv").write_text(
                _qrels_tsv(dataset.qrels.get(split, {})), encoding="utf-8"
            )
    return folder


# ----------------------------------------------------------------------------- run files
def read_run(path: str | Path, *, domain: str | None = None) -> dict[str, dict[str, float]]:
    """A scored run: query id -> document id -> score.

    Lines are a TREC run (`qid Q0 doc rank score tag`) or three columns (`qid doc score`),
    whitespace separated; r2r's own run files prefix query ids with `domain/`, which is
    removed for `domain`'s queries. A query/document pair given twice is an error.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("no such run file", file=path)
    run: dict[str, dict[str, float]] = {}
    for line, text in read_lines(path):
        cells = text.split()
        if not cells:
            continue
        if len(cells) == 6:
            qid, doc, score = cells[0], cells[2], cells[4]
        elif len(cells) == 3:
            qid, doc, score = cells
        else:
            raise DataError(
                f"expected 6 columns (qid Q0 doc rank score tag) or 3 (qid doc score), "
                f"got {len(cells)}",
                file=path,
                line=line,
            )
        if domain is not None:
            qid = qid.removeprefix(f"{domain}/")
        try:
            value = float(score)
        except ValueError:
            raise DataError(f"score {score!r} is not a number", file=path, line=line) from None
        if value != value or value in (float("inf"), float("-inf")):
            raise DataError(f"score {score!r} is not finite", file=path, line=line)
        if doc in run.setdefault(qid, {}):
            raise DataError(f"query {qid!r} scores document {doc!r} twice", file=path, line=line)
        run[qid][doc] = value
    if not run:
        raise DataError("the run file holds no scores", file=path)
    return run
