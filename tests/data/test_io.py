from __future__ import annotations

import json
from pathlib import Path

import pytest

from r2r.data.errors import DataError
from r2r.data.io import read_beir, write_beir
from r2r.files import MARKER, atomic_path
from r2r.types import Passage, Query, RetrievalDataset


def tiny_dataset() -> RetrievalDataset:
    corpus = {
        "d1": Passage("d1", "Section 302 prescribes the penalty for murder.", "IPC 302"),
        "d2": Passage("d2", "Bail may be granted by the High Court."),
        "d3": Passage("d3", "Limitation period for appeals is ninety days."),
    }
    queries = {"q1": Query("q1", "What is the punishment for murder?"), "q2": Query("q2", "bail?")}
    qrels = {"train": {"q1": {"d1": 1, "d2": 0}}, "dev": {}, "test": {"q2": {"d2": 2}}}
    return RetrievalDataset("toy", "legal", corpus, queries, qrels)


def write_folder(root: Path, corpus: list[str], queries: list[str], qrels: dict[str, str]) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("\n".join(corpus) + "\n")
    (root / "queries.jsonl").write_text("\n".join(queries) + "\n")
    for split, text in qrels.items():
        (root / "qrels" / f"{split}.tsv").write_text(text)
    return root


GOOD_CORPUS = [
    json.dumps({"_id": "d1", "title": "T", "text": "alpha"}),
    json.dumps({"_id": "d2", "text": "beta"}),
]
GOOD_QUERIES = [json.dumps({"_id": "q1", "text": "alpha?"})]


def test_round_trip(tmp_path: Path) -> None:
    ds = tiny_dataset()
    write_beir(ds, tmp_path / "toy")
    back = read_beir(tmp_path / "toy", domain="legal")
    assert back == ds
    assert (tmp_path / "toy" / "qrels" / "train.tsv").read_text() == (
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\n"
    )
    assert back.split_queries("train") == [Query("q1", "What is the punishment for murder?")]
    assert back.positives("test", "q2") == ["d2"]
    assert back.corpus["d1"].content == "IPC 302\nSection 302 prescribes the penalty for murder."


def test_rewrite_replaces_folder_whole(tmp_path: Path) -> None:
    ds = tiny_dataset()
    write_beir(ds, tmp_path / "toy")
    (tmp_path / "toy" / "stale.txt").write_text("old")
    write_beir(ds, tmp_path / "toy")
    assert sorted(p.name for p in (tmp_path / "toy").iterdir()) == [
        MARKER,  # r2r's mark: a later write may replace this folder, and only this kind
        "corpus.jsonl",
        "qrels",
        "queries.jsonl",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy"]  # no temp left behind


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("corpus", "queries", "qrels", "file", "line", "field", "text"),
    [
        (["{not json"], GOOD_QUERIES, {}, "corpus.jsonl", 1, None, "malformed JSON"),
        ([*GOOD_CORPUS, json.dumps({"text": "x"})], GOOD_QUERIES, {}, "corpus.jsonl", 3, "_id", "missing"),
        ([*GOOD_CORPUS, json.dumps({"_id": "d1", "text": "x"})], GOOD_QUERIES, {}, "corpus.jsonl", 3, "_id", "duplicate"),
        ([*GOOD_CORPUS, json.dumps({"_id": "d3", "text": "  "})], GOOD_QUERIES, {}, "corpus.jsonl", 3, "text", "empty text"),
        (GOOD_CORPUS, [json.dumps({"_id": "q1", "text": ""})], {}, "queries.jsonl", 1, "text", "empty text"),
        (GOOD_CORPUS, GOOD_QUERIES, {"train": "query-id\tcorpus-id\tscore\nq9\td1\t1\n"}, "train.tsv", 2, "query-id", "unknown query 'q9'"),
        (GOOD_CORPUS, GOOD_QUERIES, {"test": "q1\td7\t1\n"}, "test.tsv", 1, "corpus-id", "unknown document 'd7'"),
        (GOOD_CORPUS, GOOD_QUERIES, {"dev": "q1\td1\tyes\n"}, "dev.tsv", 1, "score", "integer"),
        (GOOD_CORPUS, GOOD_QUERIES, {"dev": "q1 d1 1\n"}, "dev.tsv", 1, None, "3 tab-separated"),
        # Strict input (each of these was accepted, coerced or crashed late before):
        (GOOD_CORPUS, [json.dumps({"_id": "q 1", "text": "x"})], {}, "queries.jsonl", 1, "_id", "id 'q 1' holds whitespace or a control character (' ')"),
        ([json.dumps({"_id": "d\t1", "text": "x"})], GOOD_QUERIES, {}, "corpus.jsonl", 1, "_id", "holds whitespace"),
        ([json.dumps({"_id": "d\x07", "text": "x"})], GOOD_QUERIES, {}, "corpus.jsonl", 1, "_id", "control character ('\\x07')"),
        ([json.dumps({"_id": False, "text": False})], GOOD_QUERIES, {}, "corpus.jsonl", 1, "_id", "expected a string, got bool"),
        ([json.dumps({"_id": 7, "text": "x"})], GOOD_QUERIES, {}, "corpus.jsonl", 1, "_id", "expected a string, got int"),
        ([*GOOD_CORPUS, json.dumps({"_id": "d3", "text": 42})], GOOD_QUERIES, {}, "corpus.jsonl", 3, "text", "expected a string, got int"),
        (GOOD_CORPUS, ['{"_id": "q1", "text": "bad \\ud800 half"}'], {}, "queries.jsonl", 1, "text", "lone surrogate"),
        ([], GOOD_QUERIES, {}, "corpus.jsonl", None, None, "no document (only blank lines)"),
        (GOOD_CORPUS, GOOD_QUERIES, {"test": "qid\tdocid\tscore\nq1\td1\t1\n"}, "test.tsv", 1, "score", "the header line is 'query-id\\tcorpus-id\\tscore'"),
        (GOOD_CORPUS, GOOD_QUERIES, {"test": "q1\td1\t1\nq1\td1\t0\n"}, "test.tsv", 2, "corpus-id", "a second judgment of ('q1', 'd1')"),
        # Found by tests/test_properties.py (each crashed with another error before):
        (['{"_id": 1' + "0" * 5000 + "}"], GOOD_QUERIES, {}, "corpus.jsonl", 1, None, "malformed JSON (Exceeds the limit (4300 digits)"),
        (GOOD_CORPUS, ['{"_id": ' + "[" * 5000 + "]" * 5000 + "}"], {}, "queries.jsonl", 1, None, "malformed JSON (nested too deeply)"),
        ([*GOOD_CORPUS, '{"_id": "d3", "text": ' + "[" * 600 + "]" * 600 + "}"], GOOD_QUERIES, {}, "corpus.jsonl", 3, "text", "expected a string, got list"),
        (GOOD_CORPUS, ['{"_id": "q1", "text": "x", "\\udc00": 1}'], {}, "queries.jsonl", 1, None, "a field name holds a lone surrogate"),
    ],
)  # fmt: skip
def test_bad_input_names_file_line_field(
    tmp_path: Path, corpus, queries, qrels, file, line, field, text
) -> None:
    folder = write_folder(tmp_path / "ds", corpus, queries, qrels)
    with pytest.raises(DataError) as info:
        read_beir(folder, domain="legal")
    err = info.value
    assert Path(err.file).name == file
    assert (err.line, err.field) == (line, field)
    assert text in str(err)
    assert str(err).startswith(str(folder))


def test_an_empty_file_names_itself(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "ds", GOOD_CORPUS, GOOD_QUERIES, {})
    (folder / "queries.jsonl").write_text("")
    with pytest.raises(DataError) as info:
        read_beir(folder, domain="legal")
    assert str(info.value) == f"{folder / 'queries.jsonl'}: empty file"


def test_bytes_that_are_not_utf8_name_file_and_line(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "ds", GOOD_CORPUS, GOOD_QUERIES, {})
    with (folder / "queries.jsonl").open("ab") as fh:
        fh.write(b'{"_id": "q2", "text": "caf\xff"}\n')
    with pytest.raises(DataError) as info:
        read_beir(folder, domain="legal")
    assert str(info.value) == f"{folder / 'queries.jsonl'}:2: not UTF-8 (byte 0xff at column 27)"


def test_domain_without_positives_is_an_error(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "ds", GOOD_CORPUS, GOOD_QUERIES, {"train": "q1\td1\t0\n"})
    with pytest.raises(DataError, match="domain 'medical' has no query with a positive"):
        read_beir(folder, domain="medical")


def test_query_in_two_splits_is_an_error(tmp_path: Path) -> None:
    folder = write_folder(
        tmp_path / "ds", GOOD_CORPUS, GOOD_QUERIES, {"train": "q1\td1\t1\n", "test": "q1\td2\t1\n"}
    )
    with pytest.raises(DataError, match="both the train and test splits"):
        read_beir(folder, domain="legal")


def test_missing_files(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"missing corpus\.jsonl"):
        read_beir(tmp_path / "empty", domain="legal")


def test_further_evaluation_splits_round_trip(tmp_path: Path) -> None:
    """A split beyond train/dev/test (e.g. the synthetic `test_seen`) is written and read."""
    ds = tiny_dataset()
    ds = RetrievalDataset(
        ds.name,
        ds.domain,
        {**ds.corpus},
        {**ds.queries, "q3": Query("q3", "limitation?")},
        {**ds.qrels, "test_seen": {"q3": {"d3": 1}}},
    )
    write_beir(ds, tmp_path / "toy")
    assert sorted(p.name for p in (tmp_path / "toy" / "qrels").iterdir()) == [
        "dev.tsv",
        "test.tsv",
        "test_seen.tsv",
        "train.tsv",
    ]
    back = read_beir(tmp_path / "toy", domain="legal")
    assert back == ds
    assert list(back.qrels) == ["train", "dev", "test", "test_seen"]
    # A query judged in two splits is an error there too.
    (tmp_path / "toy" / "qrels" / "test_seen.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq2\td3\t1\n"
    )
    with pytest.raises(DataError, match="both the test and test_seen splits"):
        read_beir(tmp_path / "toy", domain="legal")
