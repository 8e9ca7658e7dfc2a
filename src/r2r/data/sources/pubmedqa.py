"""PubMedQA (``ori_pqal.json``, PQA-L) -> medical `RetrievalDataset`.

Query = an entry's QUESTION (id = its pmid); each of its CONTEXTS is a passage
``<pmid>-<i>`` and a positive for that query; the corpus holds the contexts of every
entry, so the other abstracts are the candidates. Passage titles are left empty: the
only per-context label is its section name (BACKGROUND, RESULTS, ...), which says
nothing about the topic, and a title is what a reranker reads first. Any file of the
same shape converts when named itself (PQA-A's ``ori_pqaa.json``, the ``test_set.json``
that PubMedQA's ``split_dataset.py`` writes); ``test_ground_truth.json`` holds only labels.
"""

from __future__ import annotations

from pathlib import Path

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

NAME = "pubmedqa"
DOMAIN = "medical"
RAW_DIR = "medical/pubmedqa"

RAW_FILES = ("ori_pqal.json",)  # in a folder; a file passed itself may have any name


def read(raw: Path) -> RawSource:
    """`raw`: a PubMedQA file under any name, or a folder holding one of `RAW_FILES`."""
    path = find_raw_file(raw, RAW_FILES)
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
        if isinstance(entry, str):  # test_ground_truth.json: pmid -> "yes" | "no" | "maybe"
            raise DataError(
                f"{where}: a label ({entry!r}) where an entry belongs: this is a labels-only "
                "file; the questions and contexts are in ori_pqal.json",
                file=path,
            )
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
    raw: Path,
    *,
    seed: int,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    split: Split | None = None,
) -> RetrievalDataset:
    return read(raw).to_dataset(seed=seed, fractions=fractions, split=split)
