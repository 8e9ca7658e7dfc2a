"""PubMedQA PQA-L (``ori_pqal.json``) -> medical `RetrievalDataset`.

Query = an entry's QUESTION (id = its pmid); each of its CONTEXTS is a passage
``<pmid>-<i>`` and a positive for that query; the corpus holds the contexts of every
entry, so the other abstracts are the candidates. Passage titles are left empty: the
only per-context label is its section name (BACKGROUND, RESULTS, ...), which says
nothing about the topic, and a title is what a reranker reads first.
"""

from __future__ import annotations

from pathlib import Path

from r2r.data.errors import DataError
from r2r.data.sources import DEFAULT_FRACTIONS, RawSource, read_json, require, require_text
from r2r.types import Passage, Query, RetrievalDataset

NAME = "pubmedqa"
DOMAIN = "medical"
RAW_DIR = "medical/pubmedqa"

RAW_FILE = "ori_pqal.json"


def read(raw: Path) -> RawSource:
    path = Path(raw) / RAW_FILE
    entries = read_json(path)
    if not isinstance(entries, dict):
        raise DataError(
            f"expected a JSON object keyed by pmid, got {type(entries).__name__}", file=path
        )
    corpus: dict[str, Passage] = {}
    queries: dict[str, Query] = {}
    judgments: dict[str, dict[str, int]] = {}
    for pmid, entry in entries.items():
        where = f"pmid {pmid}"
        if not pmid.strip():
            raise DataError("empty pmid", file=path)
        queries[pmid] = Query(id=pmid, text=require_text(entry, "QUESTION", path=path, where=where))
        contexts = require(entry, "CONTEXTS", list, path=path, where=where)
        for i, context in enumerate(contexts):
            if not isinstance(context, str) or not context.strip():
                raise DataError(
                    f"{where}: context {i} is empty or not text", file=path, field="CONTEXTS"
                )
            doc_id = f"{pmid}-{i}"
            corpus[doc_id] = Passage(id=doc_id, text=context)
            judgments.setdefault(pmid, {})[doc_id] = 1
    return RawSource(
        name=NAME, domain=DOMAIN, path=path, corpus=corpus, queries=queries, judgments=judgments
    )


def convert(
    raw: Path, *, seed: int, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
) -> RetrievalDataset:
    return read(raw).to_dataset(seed=seed, fractions=fractions)
