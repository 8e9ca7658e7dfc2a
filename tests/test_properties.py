"""Property tests (hypothesis): every reader of user files fails only with a DataError,
the BEIR writer and reader round-trip exactly, and the ranking metrics agree with
ir-measures (trec_eval) on random rankings."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from r2r.data.errors import DataError
from r2r.data.io import read_beir, read_corpus, read_qrels, read_queries, read_run, write_beir
from r2r.metrics import RankingEvaluator
from r2r.rerank import read_requests
from r2r.types import SPLITS, Passage, Query, RetrievalDataset

# Cheap enough for the default suite (~5 s); no example database left in the work tree.
FAST = settings(
    max_examples=60,
    derandomize=True,  # the same examples on every run: CI cannot flake
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# ----------------------------------------------------------------------------- strategies
# Real text: any code point but a lone surrogate (UTF-8 cannot hold one).
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
# Ids as io.check_id accepts them: no whitespace, no control/format/unassigned characters.
ID = st.text(
    st.characters(blacklist_categories=("C", "Z")).filter(lambda c: not c.isspace()),
    min_size=1,
    max_size=12,
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)


def mostly(common: st.SearchStrategy, rare: st.SearchStrategy, odds: int = 10) -> st.SearchStrategy:
    """`rare` once in `odds` draws, else `common` (one_of would draw each as often)."""
    return st.sampled_from(range(odds)).flatmap(lambda i: rare if i == 0 else common)


# Few distinct ids, so that duplicates and known/unknown references both come up.
QIDS = mostly(st.sampled_from(["q1", "q2", "legal/q1"]), ID)
DOCS = mostly(st.sampled_from(["d1", "d2", "0"]), ID)
WORDS_ONLY = TEXT.filter(str.strip)
WORDS = mostly(WORDS_ONLY, TEXT)  # mostly not blank


def maybe(right: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly the right kind of value, sometimes any JSON."""
    return mostly(right, JSON)


# Lines every reader meets in each run: bytes that are not UTF-8, and JSON that json.loads
# rejects with no JSONDecodeError, or accepts nested deeper than a recursive walk can go.
HOSTILE = [
    "\udc80 q1 d1 1",
    '{"_id": 1' + "0" * 5000 + "}",
    '{"_id": ' + "[" * 5000 + "]" * 5000 + "}",
    '{"_id": "a", "text": ' + "[" * 600 + "]" * 600 + "}",
]


def jsonl(row: st.SearchStrategy[dict]) -> st.SearchStrategy[bytes]:
    """JSON lines of `row`s, any JSON objects, blank lines and broken lines."""
    line = mostly(
        row.map(lambda r: json.dumps(r, ensure_ascii=False)),
        st.one_of(
            st.dictionaries(TEXT, JSON, max_size=3).map(json.dumps),
            st.sampled_from(["", "  ", "[1]", '{"_id": "a",', "null"]),
            TEXT,
        ),
    )
    return st.lists(line, max_size=4).map(lambda rows: "".join(r + "\n" for r in rows).encode())


def tsv(row: st.SearchStrategy[tuple[str, ...]], header: str = "") -> st.SearchStrategy[bytes]:
    """Lines of `row` cells, of random cells, or of random text; an optional header."""
    cells = st.lists(st.sampled_from(["q1", "d1", "Q0", "1", "nan", "-2e3"]) | TEXT, max_size=7)
    line = mostly(row, cells.map(tuple) | TEXT.map(lambda t: (t,)))
    separator = mostly(st.just("\t"), st.sampled_from([" ", "\t\t"]))
    rows = st.lists(st.tuples(line, separator), max_size=4).map(
        lambda rows: "".join(sep.join(cells) + "\n" for cells, sep in rows)
    )
    return st.tuples(st.sampled_from(["", header]), rows).map(lambda hr: "".join(hr).encode())


def file_bytes(structured: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Random bytes, random text (lone surrogates written as the bytes UTF-8 forbids), and
    files shaped like the format with random content."""
    surrogate_text = st.text(max_size=60).map(lambda t: t.encode("utf-8", "surrogatepass"))
    return mostly(structured, st.binary(max_size=80) | surrogate_text, odds=4)


def partial(
    fields: dict[str, st.SearchStrategy], optional: dict[str, st.SearchStrategy] | None = None
) -> st.SearchStrategy[dict]:
    """Objects with `fields`, sometimes missing some, each mostly of the right kind."""
    optional = {k: maybe(v) for k, v in (optional or {}).items()}
    full = st.fixed_dictionaries({k: maybe(v) for k, v in fields.items()}, optional=optional)
    some = st.fixed_dictionaries({}, optional={k: maybe(v) for k, v in fields.items()})
    return mostly(full, some)


CORPUS = jsonl(partial({"_id": DOCS, "text": WORDS}, {"title": TEXT}))
QUERIES = jsonl(partial({"_id": QIDS, "text": WORDS}))
DOCUMENT = WORDS | partial({"text": WORDS}, {"id": DOCS, "title": TEXT})
REQUESTS = jsonl(
    partial(
        {"query": WORDS, "documents": st.lists(DOCUMENT, min_size=1, max_size=3)},
        {"id": QIDS, "domain": st.sampled_from(["legal", "medical"])},
    )
)
GRADES = mostly(st.integers(-2, 3).map(str), st.sampled_from(["1.5", "", "x", "9" * 5000]))
QRELS = tsv(st.tuples(QIDS, DOCS, GRADES), header="query-id\tcorpus-id\tscore\n")
SCORES = mostly(st.floats().map(repr) | st.integers().map(str), st.sampled_from(["x", "1e999"]))
RUN = tsv(
    st.tuples(QIDS, DOCS, SCORES)
    | st.tuples(QIDS, st.just("Q0"), DOCS, st.integers(1, 9).map(str), SCORES, st.just("bm25"))
)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("properties")


# ----------------------------------------------------------------------------- readers
def qrels_reader(path: Path) -> dict[str, dict[str, int]]:
    queries = {q: Query(q, "text") for q in ("q1", "q2", "legal/q1")}
    return read_qrels(path, queries, {d: Passage(d, "text") for d in ("d1", "d2", "0")})


READERS = {
    "corpus": (read_corpus, CORPUS),
    "queries": (read_queries, QUERIES),
    "rerank input": (read_requests, REQUESTS),
    "qrels": (qrels_reader, QRELS),
    "run": (read_run, RUN),
    "run of a domain": (lambda path: read_run(path, domain="legal"), RUN),
}


@pytest.mark.parametrize("name", list(READERS))
def test_readers_raise_only_data_errors(scratch: Path, name: str) -> None:
    reader, shaped = READERS[name]
    path = scratch / "input"

    parsed = []

    @FAST
    @given(data=file_bytes(shaped))
    @example(data=HOSTILE[0].encode("utf-8", "surrogatepass"))
    @example(data=HOSTILE[1].encode())
    @example(data=HOSTILE[2].encode())
    @example(data=HOSTILE[3].encode())
    def property_(data: bytes) -> None:
        path.write_bytes(data)
        with contextlib.suppress(DataError):
            parsed.append(reader(path))

    property_()
    # Shaped files must pass the reader's checks at times, else the property exercised
    # only its first ones.
    assert any(parsed)


# ----------------------------------------------------------------------------- round trip
@st.composite
def datasets(draw: st.DrawFn) -> RetrievalDataset:
    """A valid BEIR dataset: unique ids, texts not blank, each judged query in one split
    (the standard ones, at times a further evaluation split), at least one positive."""
    doc_ids = draw(st.lists(ID, min_size=1, max_size=6, unique=True))
    query_ids = draw(st.lists(ID, min_size=1, max_size=5, unique=True))
    corpus = {}
    for doc_id in doc_ids:
        title = draw(TEXT)
        corpus[doc_id] = Passage(doc_id, draw(TEXT if title.strip() else WORDS_ONLY), title)
    queries = {q: Query(q, draw(WORDS_ONLY)) for q in query_ids}
    splits = SPLITS + (("heldout",) if draw(st.booleans()) else ())
    qrels: dict[str, dict[str, dict[str, int]]] = {split: {} for split in splits}
    grades = st.integers(-(2**31), 2**31)
    for i, qid in enumerate(query_ids):
        judged = draw(st.lists(st.sampled_from(doc_ids), max_size=4, unique=True))
        if i == 0:  # validate() wants a positive in a standard split
            qrels[draw(st.sampled_from(SPLITS))][qid] = {
                doc_ids[0]: draw(st.integers(1, 3)),
                **{d: draw(grades) for d in judged if d != doc_ids[0]},
            }
        elif judged:
            qrels[draw(st.sampled_from(splits))][qid] = {d: draw(grades) for d in judged}
    return RetrievalDataset("rt", "legal", corpus, queries, qrels)


@FAST
@given(dataset=datasets())
def test_beir_round_trips_exactly(scratch: Path, dataset: RetrievalDataset) -> None:
    folder = write_beir(dataset, scratch / "beir")
    assert read_beir(folder, domain="legal", name="rt") == dataset
    assert (folder / "qrels" / "heldout.tsv").is_file() == ("heldout" in dataset.qrels)


# ----------------------------------------------------------------------------- metrics
KS = (1, 3, 5, 10)


@st.composite
def rankings(draw: st.DrawFn) -> list[tuple[str, list[str], list[float], dict[str, int]]]:
    """Queries of (id, doc ids, scores, relevance): scores tie often or never; graded and
    negative judgements; relevant documents the ranking missed."""
    out = []
    for q in range(draw(st.integers(1, 4))):
        n = draw(st.integers(1, 15))
        doc_ids = [f"d{i}" for i in draw(st.permutations(range(40)))[:n]]
        if draw(st.booleans()):
            scores = [float(s) for s in draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))]
        else:
            scores = draw(
                st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=n, max_size=n, unique=True)
            )
        grade = st.sampled_from([-1, 0, 0, 1, 2, 3])
        relevance = {d: draw(grade) for d in doc_ids if draw(st.booleans())}
        for i in range(draw(st.integers(0, 2))):
            relevance[f"missing{i}"] = draw(st.integers(0, 3))
        if not any(g > 0 for g in relevance.values()):
            relevance[draw(st.sampled_from([*doc_ids, "missing9"]))] = 1
        out.append((f"q{q}", doc_ids, scores, relevance))
    return out


@FAST
@given(queries=rankings())
def test_metrics_equal_ir_measures(queries) -> None:
    ir_measures = pytest.importorskip("ir_measures")
    from ir_measures import RR, P, R, nDCG

    names = {"ndcg": nDCG, "mrr": RR, "precision": P, "recall": R}
    evaluator = RankingEvaluator(ks=KS)
    run: dict[str, dict[str, float]] = {}
    for qid, doc_ids, scores, relevance in queries:
        result = evaluator.add("legal", qid, doc_ids, scores, relevance)
        if len(set(np.float32(scores).tolist())) == len(scores):
            run[qid] = dict(zip(doc_ids, scores, strict=True))
        else:
            # trec_eval breaks ties by doc id descending, r2r ascending (metrics.py), and
            # compares scores in single precision (1 and 1 - 1e-9 tie): give it r2r's
            # order as distinct scores, so both measure the same ranking.
            run[qid] = {d: float(len(result.ranked) - i) for i, d in enumerate(result.ranked)}
    key_of = {measure @ k: f"{metric}@{k}" for metric, measure in names.items() for k in KS}
    measures = list(key_of)
    ours = {r.query_id: r.metrics for r in evaluator.per_query()}
    rows = list(ir_measures.iter_calc(measures, evaluator.qrels("legal"), run))
    assert len(rows) == len(queries) * len(measures)
    for row in rows:
        got = ours[row.query_id][key_of[row.measure]]
        assert got == pytest.approx(row.value, abs=1e-9), row
