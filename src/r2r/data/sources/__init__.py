"""Converters from raw public datasets to `RetrievalDataset`s, one module per source.

Each source module exposes ``NAME``, ``DOMAIN``, ``RAW_DIR`` (its folder under the shared
data root), ``read(raw) -> RawSource`` and ``convert(raw, *, seed, fractions, split)``.
Reading and splitting are separate so callers can report what the split step dropped.
A single-file source also has ``RAW_FILES``: the names it looks for, in order, when `raw`
is a folder (`raw` may also name the file itself, under any name).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r2r.data.errors import DataError
from r2r.data.io import validate
from r2r.data.splits import assign_splits
from r2r.types import SPLITS, Passage, Query, RetrievalDataset, Split

DEFAULT_FRACTIONS: tuple[float, float, float] = (0.6, 0.2, 0.2)


@dataclass(frozen=True)
class RawSource:
    """A raw dataset read into r2r types, before queries are split."""

    name: str
    domain: str
    path: Path
    corpus: dict[str, Passage]
    queries: dict[str, Query]
    judgments: dict[str, dict[str, int]]  # qid -> doc id -> grade, for every judged query
    # Judgments the raw data makes on documents it does not ship (see aila.py).
    dropped_judgments: tuple[tuple[str, str], ...] = ()

    @property
    def without_positive(self) -> list[str]:
        """Ids of queries that no split can use: no document is judged relevant."""
        return sorted(
            qid
            for qid in self.queries
            if not any(grade > 0 for grade in self.judgments.get(qid, {}).values())
        )

    def to_dataset(
        self,
        *,
        seed: int,
        fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
        split: Split | None = None,
    ) -> RetrievalDataset:
        """Queries split by a seeded shuffle, or all into `split` when it is given.

        One named split is for a raw file that is already a split of its own (TAT-QA's
        public test file becomes r2r's test split); `seed` and `fractions` then go unused.
        """
        dropped = set(self.without_positive)
        kept = [qid for qid in self.queries if qid not in dropped]
        if split is None:
            split_of = assign_splits(kept, fractions=fractions, seed=seed)
        elif split in SPLITS:
            split_of = dict.fromkeys(kept, split)
        else:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        qrels: dict[str, dict[str, dict[str, int]]] = {split: {} for split in SPLITS}
        for qid in kept:
            qrels[split_of[qid]][qid] = dict(self.judgments[qid])
        dataset = RetrievalDataset(
            name=self.name,
            domain=self.domain,
            corpus=dict(self.corpus),
            queries={qid: self.queries[qid] for qid in kept},
            qrels=qrels,
        )
        validate(dataset, source=self.path)
        return dataset


# ----------------------------------------------------------------------------- raw readers
def find_raw_file(raw: Path, names: tuple[str, ...]) -> Path:
    """`raw` itself when it is a file; in a folder, the first of `names` that exists."""
    raw = Path(raw)
    if raw.is_file():
        return raw
    if not raw.is_dir():
        raise DataError("no such file or folder", file=raw)
    for name in names:
        if (raw / name).is_file():
            return raw / name
    raise DataError(f"no raw file in this folder; tried {', '.join(names)}", file=raw)


def read_text(path: Path) -> str:
    if not path.is_file():
        raise DataError("missing file", file=path)
    try:
        # utf-8-sig: some raw releases were saved on Windows with a byte-order mark.
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=path) from None


def read_json(path: Path) -> Any:
    def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        # json.loads keeps the last of repeated keys; a repeated pmid would lose a query.
        obj: dict[str, Any] = {}
        for key, value in pairs:
            if key in obj:
                raise DataError(f"duplicate key {key!r}", file=path, field=key)
            obj[key] = value
        return obj

    try:
        return json.loads(read_text(path), object_pairs_hook=no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise DataError(f"malformed JSON ({exc.msg})", file=path, line=exc.lineno) from None


def require(obj: Any, key: str, kind: type | tuple[type, ...], *, path: Path, where: str) -> Any:
    """`obj[key]` checked to be of `kind`; `where` names the entry for the message."""
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}", file=path)
    if key not in obj:
        raise DataError(f"{where}: missing", file=path, field=key)
    value = obj[key]
    if not isinstance(value, kind):
        expected = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise DataError(
            f"{where}: expected {expected}, got {type(value).__name__}", file=path, field=key
        )
    return value


def require_text(obj: Any, key: str, *, path: Path, where: str) -> str:
    text = require(obj, key, str, path=path, where=where)
    if not text.strip():
        raise DataError(f"{where}: empty text", file=path, field=key)
    return text
