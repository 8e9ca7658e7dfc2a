"""Rerank a JSONL file of queries and candidates with a saved routed system.

    python -m r2r.rerank SYSTEM_DIR queries.jsonl ranked.jsonl [--top-n 10] [--device auto]

Each input line: {"id": "q1", "query": "...", "documents": ["text", ...] or
[{"id": "d1", "text": "...", "title": "..."}, ...], "domain": "legal" (optional, read only
by the oracle router), "scores": [12.1, 7.4, ...] (optional: the first stage's score of
each document, in order; a system saved with fusion.json then fuses its expert's scores
with them)}. Each output line, in input order: {"id", "expert" (null: the bare backbone),
"probabilities", "fused" (whether the scores are fused), "ranking": [{"index", "id",
"score"}, ...] best first}.
Bad input fails before any scoring, naming the file, line and field; the output file
appears only when complete.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.progress import Progress

from r2r.data.io import read_jsonl
from r2r.devices import resolve_device
from r2r.errors import DataError
from r2r.files import OutputError, atomic_path, check_target
from r2r.routing.system import Document, RerankResult, RoutedReranker
from r2r.types import Passage


@dataclass(frozen=True)
class Request:
    id: str
    query: str
    documents: tuple[Document, ...]
    domain: str | None
    line: int
    scores: tuple[float, ...] | None = None  # the first stage's, one per document


def read_requests(path: Path) -> list[Request]:
    if not path.is_file():
        raise DataError("no such file", file=path)
    requests, seen = [], set()
    for line_no, row in read_jsonl(path):
        requests.append(_request(row, path, line_no, default_id=str(len(requests))))
        if requests[-1].id in seen:
            raise DataError("duplicate id", file=path, line=line_no, field="id")
        seen.add(requests[-1].id)
    if not requests:
        raise DataError("no requests", file=path)
    given = [r for r in requests if r.domain is not None]
    if given and len(given) != len(requests):
        odd = next(r for r in requests if r.domain is None)
        raise DataError(
            "other requests give a domain (oracle routing needs all or none)",
            file=path,
            line=odd.line,
            field="domain",
        )
    return requests


def _request(row: dict, path: Path, line_no: int, *, default_id: str) -> Request:
    def bad(message: str, field: str) -> DataError:
        return DataError(message, file=path, line=line_no, field=field)

    query = row.get("query")
    if not isinstance(query, str) or not query.strip():
        raise bad("must be a non-empty string", "query")
    docs = row.get("documents")
    if not isinstance(docs, list) or not docs:
        raise bad("must be a non-empty list", "documents")
    documents: list[Document] = []
    for k, doc in enumerate(docs):
        field = f"documents[{k}]"
        if isinstance(doc, str) and doc.strip():
            documents.append(doc)
        elif isinstance(doc, dict) and isinstance(doc.get("text"), str) and doc["text"].strip():
            title = doc.get("title") or ""
            if not isinstance(title, str):
                raise bad("must be a string", f"{field}.title")
            documents.append(
                Passage(ident(doc.get("id"), str(k), bad, f"{field}.id"), doc["text"], title)
            )
        else:
            raise bad('must be a non-empty string or {"text": ...}', field)
    ids = [d.id if isinstance(d, Passage) else str(k) for k, d in enumerate(documents)]
    if len(set(ids)) != len(ids):
        raise bad("document ids must be unique", "documents")
    domain = row.get("domain")
    if domain is not None and not isinstance(domain, str):
        raise bad("must be a string", "domain")
    scores = row.get("scores")
    if scores is not None:
        if not isinstance(scores, list) or len(scores) != len(documents):
            raise bad(f"must be a list of {len(documents)} numbers, one per document", "scores")
        for k, score in enumerate(scores):
            if isinstance(score, bool) or not isinstance(score, int | float):
                raise bad("must be a number", f"scores[{k}]")
            if not math.isfinite(score):
                raise bad("must be finite", f"scores[{k}]")
        scores = tuple(float(score) for score in scores)
    return Request(
        ident(row.get("id"), default_id, bad, "id"),
        query,
        tuple(documents),
        domain,
        line_no,
        scores,
    )


def ident(value: object, default: str, bad: Callable[[str, str], DataError], field: str) -> str:
    """An id as given (a string, or an integer written as one), or `default` when absent."""
    if value is None:
        return default
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise bad("must be a non-empty string or an integer", field)


def result_row(request: Request, result: RerankResult) -> dict:
    return {
        "id": request.id,
        "expert": result.expert,
        "probabilities": dict(result.probabilities),
        "fused": result.fused,
        "ranking": [{"index": r.index, "id": r.id, "score": r.score} for r in result.ranking],
    }


def rerank_requests(
    system: RoutedReranker,
    requests: Sequence[Request],
    target: Path,
    *,
    top_n: int | None = None,
    chunk: int = 32,
    progress: bool = True,
) -> int:
    """Rerank `requests` into the JSONL file `target` (written whole); returns their count."""
    truth = [r.domain for r in requests] if requests and requests[0].domain else None
    with (
        atomic_path(target) as tmp,
        tmp.open("w", encoding="utf-8") as out,
        Progress(disable=not progress, transient=True) as bar,
    ):
        task = bar.add_task("reranking", total=len(requests))
        for start in range(0, len(requests), chunk):
            part = requests[start : start + chunk]
            results = system.rerank_batch(
                [(r.query, r.documents) for r in part],
                top_n,
                true_domains=truth[start : start + chunk] if truth else None,
                first_stage_scores=[r.scores for r in part],
            )
            for request, result in zip(part, results, strict=True):
                out.write(json.dumps(result_row(request, result)) + "\n")
            bar.advance(task, len(part))
    return len(requests)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("system", type=Path, help="a saved system folder (system.json)")
    parser.add_argument("input", type=Path, help="JSONL: id, query, documents[, domain][, scores]")
    parser.add_argument("output", type=Path, help="JSONL of rankings, in input order")
    parser.add_argument("--top-n", type=int, default=None, help="keep the best N (default all)")
    parser.add_argument("--chunk", type=int, default=32, help="queries routed per batch")
    parser.add_argument(
        "--device", default="cpu", help="cpu, cuda, cuda:N or auto (CUDA where available)"
    )
    args = parser.parse_args(argv)
    if args.top_n is not None and args.top_n < 1:
        parser.error(f"--top-n must be at least 1, got {args.top_n}")
    if args.chunk < 1:
        parser.error(f"--chunk must be at least 1, got {args.chunk}")
    try:
        device = resolve_device(args.device)
    except ValueError as err:
        parser.error(f"--device: {err}")
    try:  # bad input or output fails before any model loads
        requests = read_requests(args.input)
        check_target(args.output)
        system = RoutedReranker.load(args.system, device=device)
    except (DataError, OutputError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if system.fusion is None and any(r.scores is not None for r in requests):
        print(
            f"note: {args.system} has no fusion.json: the requests' first-stage scores are "
            "not used",
            file=sys.stderr,
        )
    n = rerank_requests(system, requests, args.output, top_n=args.top_n, chunk=args.chunk)
    print(f"reranked {n} queries -> {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
