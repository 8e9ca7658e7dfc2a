from __future__ import annotations

import json
from pathlib import Path

import pytest

from r2r.data.errors import DataError
from r2r.data.sources import aila, pubmedqa, tatqa
from r2r.types import SPLITS, Passage, Query, RetrievalDataset

SHARED_DATA = Path(__file__).parents[2].parent / "shared" / "data"


def split_of(dataset: RetrievalDataset) -> dict[str, str]:
    return {qid: split for split in SPLITS for qid in dataset.qrels[split]}


# ----------------------------------------------------------------------------- AILA fixtures
AILA_QUERIES = (
    "AILA_Q1||The appellant was dismissed from the bank.\n"
    "AILA_Q2||A writ petition was filed || under Article 226.\n"
    "\n"
    "AILA_Q3||The accused was convicted of theft.\n"
    "AILA_Q4||No statute applies here.\n"
)
AILA_STATUTES = {
    "S1": "Title: Equality before law\nDesc: The State shall not deny to any person equality.\n",
    "S2": "Title: Power of High Courts to issue writs\nDesc: Every High Court shall have power.\n",
    "S10": "Title: Punishment for theft\nDesc: Whoever commits theft shall be punished.\n",
}
AILA_QRELS = (
    "AILA_Q1 Q0 S1 1\nAILA_Q1 Q0 S2 0\nAILA_Q1 Q0 S10 0\n"
    "AILA_Q2 Q0 S1 1\nAILA_Q2 Q0 S2 1\nAILA_Q2 Q0 S10 0\n"
    "AILA_Q3 Q0 S1 0\nAILA_Q3 Q0 S2 0\nAILA_Q3 Q0 S10 1\n"
    "AILA_Q4 Q0 S1 0\nAILA_Q4 Q0 S2 0\nAILA_Q4 Q0 S10 0\n"
)


def write_aila(
    root: Path,
    queries: str = AILA_QUERIES,
    statutes: dict[str, str] = AILA_STATUTES,
    qrels: str = AILA_QRELS,
) -> Path:
    (root / "Object_statutes").mkdir(parents=True)
    (root / "Query_doc.txt").write_text(queries, encoding="utf-8")
    for doc_id, text in statutes.items():
        (root / "Object_statutes" / f"{doc_id}.txt").write_text(text, encoding="utf-8")
    (root / "relevance_judgments_statutes.txt").write_text(qrels, encoding="utf-8")
    return root


def test_aila_corpus_queries_and_qrels(tmp_path: Path) -> None:
    raw = aila.read(write_aila(tmp_path))
    assert list(raw.corpus) == ["S1", "S2", "S10"]  # numeric, not lexical, order
    assert raw.corpus["S2"] == Passage(
        id="S2",
        title="Power of High Courts to issue writs",
        text="Every High Court shall have power.",
    )
    # Only the first "||" separates the id; the text may contain more.
    assert raw.queries["AILA_Q2"] == Query(
        id="AILA_Q2", text="A writ petition was filed || under Article 226."
    )
    assert raw.without_positive == ["AILA_Q4"]
    assert raw.dropped_judgments == ()

    dataset = aila.convert(tmp_path, seed=0)
    assert (dataset.name, dataset.domain) == ("aila2019", "legal")
    assert list(dataset.queries) == ["AILA_Q1", "AILA_Q2", "AILA_Q3"]
    assert split_of(dataset) == {"AILA_Q1": "train", "AILA_Q3": "dev", "AILA_Q2": "test"}
    # Grade-0 judgments are explicit negatives and travel with their query.
    assert dataset.qrels["test"] == {"AILA_Q2": {"S1": 1, "S2": 1, "S10": 0}}
    assert dataset.positives("test", "AILA_Q2") == ["S1", "S2"]


def test_aila_missing_statute_is_set_aside(tmp_path: Path) -> None:
    # The public release judges S58 but ships no S58.txt; that judgment is reported, not fatal.
    write_aila(tmp_path, qrels=AILA_QRELS + "AILA_Q1 Q0 S58 1\n")
    raw = aila.read(tmp_path)
    assert raw.dropped_judgments == (("AILA_Q1", "S58"),)
    assert raw.judgments["AILA_Q1"] == {"S1": 1, "S2": 0, "S10": 0}


@pytest.mark.parametrize(
    ("kwargs", "file", "line", "field", "message"),
    [
        (
            {"queries": "AILA_Q1||ok\nAILA_Q2 no separator\n"},
            "Query_doc.txt",
            2,
            "id",
            "expected 'AILA_Q<n>||<text>'",
        ),
        ({"queries": "AILA_Q1||  \n"}, "Query_doc.txt", 1, "text", "empty text"),
        ({"queries": "AILA_Q1||a\nAILA_Q1||b\n"}, "Query_doc.txt", 2, "id", "duplicate"),
        (
            {"statutes": {**AILA_STATUTES, "S2": "Title: Writs\n"}},
            "Object_statutes/S2.txt",
            None,
            "Desc",
            "no 'Desc: ...' line",
        ),
        (
            {"statutes": {**AILA_STATUTES, "S2": "Title: Writs\nDesc:  \n"}},
            "Object_statutes/S2.txt",
            None,
            "Desc",
            "empty statute text",
        ),
        (
            {"statutes": {**AILA_STATUTES, "S2": "Title: Writs\nBody: text\n"}},
            "Object_statutes/S2.txt",
            2,
            None,
            "expected a 'Title: ...'",
        ),
        (
            {"qrels": AILA_QRELS + "AILA_Q9 Q0 S1 1\n"},
            "relevance_judgments_statutes.txt",
            13,
            "query-id",
            "unknown query 'AILA_Q9'",
        ),
        (
            {"qrels": AILA_QRELS + "AILA_Q1 Q0 X7 1\n"},
            "relevance_judgments_statutes.txt",
            13,
            "corpus-id",
            "unknown document 'X7'",
        ),
        (
            {"qrels": "AILA_Q1 Q0 S1 yes\n"},
            "relevance_judgments_statutes.txt",
            1,
            "score",
            "grade must be an integer",
        ),
        (
            {"qrels": "AILA_Q1 Q0 S1\n"},
            "relevance_judgments_statutes.txt",
            1,
            None,
            "got 3 columns",
        ),
        (
            {"qrels": "AILA_Q1 Q0 S1 1\nAILA_Q1 Q0 S1 0\n"},
            "relevance_judgments_statutes.txt",
            2,
            "corpus-id",
            "duplicate judgment",
        ),
    ],
)
def test_aila_errors(
    tmp_path: Path, kwargs: dict, file: str, line: int | None, field: str | None, message: str
) -> None:
    write_aila(tmp_path, **kwargs)
    with pytest.raises(DataError, match=message) as info:
        aila.convert(tmp_path, seed=0)
    assert (info.value.file, info.value.line, info.value.field) == (
        str(tmp_path / file),
        line,
        field,
    )


def test_aila_missing_file(tmp_path: Path) -> None:
    write_aila(tmp_path)
    (tmp_path / "relevance_judgments_statutes.txt").unlink()
    with pytest.raises(DataError, match="missing file") as info:
        aila.convert(tmp_path, seed=0)
    assert info.value.file == str(tmp_path / "relevance_judgments_statutes.txt")


# ----------------------------------------------------------------------------- PubMedQA
PUBMEDQA = {
    "101": {
        "QUESTION": "Does aspirin reduce stroke risk?",
        "CONTEXTS": ["Aspirin was given to 200 patients.", "Stroke rates fell by half."],
        "LABELS": ["METHODS", "RESULTS"],
        "MESHES": ["Aspirin", "Stroke"],
        "final_decision": "yes",
    },
    "102": {
        "QUESTION": "Is coffee linked to insomnia?",
        "CONTEXTS": ["Coffee intake was surveyed."],
        "LABELS": ["METHODS"],
    },
    "103": {"QUESTION": "Do statins cause myalgia?", "CONTEXTS": ["Myalgia was reported."]},
    "104": {"QUESTION": "Does an abstract without contexts count?", "CONTEXTS": []},
}


def write_json(folder: Path, name: str, obj: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(obj, indent=1), encoding="utf-8")
    return folder


def test_pubmedqa(tmp_path: Path) -> None:
    write_json(tmp_path, "ori_pqal.json", PUBMEDQA)
    raw = pubmedqa.read(tmp_path)
    assert raw.corpus == {
        "101-0": Passage(id="101-0", text="Aspirin was given to 200 patients."),
        "101-1": Passage(id="101-1", text="Stroke rates fell by half."),
        "102-0": Passage(id="102-0", text="Coffee intake was surveyed."),
        "103-0": Passage(id="103-0", text="Myalgia was reported."),
    }
    assert raw.without_positive == ["104"]

    dataset = pubmedqa.convert(tmp_path, seed=0)
    assert (dataset.name, dataset.domain) == ("pubmedqa", "medical")
    assert dataset.queries == {
        "101": Query(id="101", text="Does aspirin reduce stroke risk?"),
        "102": Query(id="102", text="Is coffee linked to insomnia?"),
        "103": Query(id="103", text="Do statins cause myalgia?"),
    }
    assert split_of(dataset) == {"101": "train", "103": "dev", "102": "test"}
    assert dataset.qrels["train"] == {"101": {"101-0": 1, "101-1": 1}}
    assert dataset.positives("test", "102") == ["102-0"]


@pytest.mark.parametrize(
    ("text", "line", "field", "message"),
    [
        (
            '{\n "101": {\n  "QUESTION": "q",\n  "CONTEXTS": ["a",]\n }\n}',
            4,
            None,
            "malformed JSON",
        ),
        ('["not", "a", "dict"]', None, None, "expected a JSON object keyed by pmid"),
        ('{"101": {"CONTEXTS": ["a"]}}', None, "QUESTION", "pmid 101: missing"),
        ('{"101": {"QUESTION": " ", "CONTEXTS": ["a"]}}', None, "QUESTION", "pmid 101: empty"),
        ('{"101": {"QUESTION": "q", "CONTEXTS": "a"}}', None, "CONTEXTS", "expected list, got str"),
        ('{"101": {"QUESTION": "q", "CONTEXTS": ["a", ""]}}', None, "CONTEXTS", "context 1"),
        ('{"101": {"QUESTION": "q"}, "101": {"QUESTION": "r"}}', None, "101", "duplicate key"),
    ],
)
def test_pubmedqa_errors(
    tmp_path: Path, text: str, line: int | None, field: str | None, message: str
) -> None:
    (tmp_path / "ori_pqal.json").write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=message) as info:
        pubmedqa.convert(tmp_path, seed=0)
    assert (info.value.file, info.value.line, info.value.field) == (
        str(tmp_path / "ori_pqal.json"),
        line,
        field,
    )


# ----------------------------------------------------------------------------- TAT-QA
def tatqa_question(uid: str, text: str, answer_from: str, rel: list[str]) -> dict:
    return {
        "uid": uid,
        "order": 1,
        "question": text,
        "answer": ["x"],
        "answer_type": "span",
        "answer_from": answer_from,
        "rel_paragraphs": rel,
        "scale": "",
    }


TATQA = [
    {
        "table": {
            "uid": "t1",
            "table": [
                ["", "", "Years Ended September 30,", ""],
                ["", "2019", "2018", ""],
                ["Fixed  Price", "$  1,452.4", "$ 1,146.2 ", ""],
                ["", "", "", ""],
                ["Total sales", "$1,496.5", "$1,202.9", ""],
            ],
        },
        "paragraphs": [
            {"uid": "a", "order": 1, "text": "Sales by contract type."},
            {"uid": "b", "order": 2, "text": "On a cost-plus contract we are paid costs."},
        ],
        "questions": [
            tatqa_question("q1", "What is paid on a cost-plus contract?", "text", ["2"]),
            tatqa_question("q2", "What were total sales in 2019?", "table-text", ["1"]),
            tatqa_question("q3", "What was the change in total sales?", "table", []),
        ],
    },
    {
        "table": {"uid": "t2", "table": [["Revenue", "10"], ["Cost", "4"]]},
        "paragraphs": [{"uid": "c", "order": 1, "text": "Revenue grew."}],
        "questions": [
            tatqa_question("q4", "What was revenue?", "table", []),
            tatqa_question("q5", "Why did revenue grow?", "text", []),
        ],
    },
]


def test_tatqa_table_linearisation() -> None:
    assert tatqa.linearise_table(TATQA[0]["table"]["table"]) == (
        "Years Ended September 30,\n"
        "2019 | 2018\n"
        "Fixed Price | $ 1,452.4 | $ 1,146.2\n"
        "Total sales | $1,496.5 | $1,202.9"
    )


def test_tatqa(tmp_path: Path) -> None:
    write_json(tmp_path, "tatqa_dataset_dev.json", TATQA)
    raw = tatqa.read(tmp_path)
    assert list(raw.corpus) == ["t1-table", "t1-p1", "t1-p2", "t2-table", "t2-p1"]
    assert raw.corpus["t1-p2"] == Passage(
        id="t1-p2", text="On a cost-plus contract we are paid costs."
    )
    assert raw.corpus["t2-table"] == Passage(id="t2-table", text="Revenue | 10\nCost | 4")
    assert raw.without_positive == ["q5"]

    dataset = tatqa.convert(tmp_path, seed=0)
    assert (dataset.name, dataset.domain) == ("tatqa", "finance")
    assert dataset.queries["q2"] == Query(id="q2", text="What were total sales in 2019?")
    assert split_of(dataset) == {"q1": "train", "q3": "train", "q2": "dev", "q4": "test"}
    assert dataset.qrels == {
        "train": {"q1": {"t1-p2": 1}, "q3": {"t1-table": 1}},
        "dev": {"q2": {"t1-p1": 1, "t1-table": 1}},
        "test": {"q4": {"t2-table": 1}},
    }


def tatqa_with(**changes: object) -> list[dict]:
    """TATQA with the first question of the first report updated by `changes`."""
    reports = json.loads(json.dumps(TATQA))
    reports[0]["questions"][0].update(changes)
    return reports


@pytest.mark.parametrize(
    ("reports", "field", "message"),
    [
        (tatqa_with(rel_paragraphs=["7"]), "rel_paragraphs", "question q1: rel_paragraph '7'"),
        (tatqa_with(question=""), "question", "question q1: empty text"),
        (tatqa_with(uid="q2"), "uid", "duplicate question uid 'q2'"),
        ([{**TATQA[0], "paragraphs": [{"order": 1, "text": " "}]}], "text", "paragraph 1: empty"),
        ([{**TATQA[0], "table": {"uid": "t1", "table": [["", " "]]}}], "table", "empty table"),
        ([{"paragraphs": [], "questions": []}], "table", "report 0: missing"),
        ([TATQA[0], TATQA[0]], "uid", "duplicate table uid 't1'"),
    ],
)
def test_tatqa_errors(tmp_path: Path, reports: list[dict], field: str, message: str) -> None:
    write_json(tmp_path, "tatqa_dataset_dev.json", reports)
    with pytest.raises(DataError, match=message) as info:
        tatqa.convert(tmp_path, seed=0)
    assert (info.value.file, info.value.line, info.value.field) == (
        str(tmp_path / "tatqa_dataset_dev.json"),
        None,
        field,
    )


def test_tatqa_missing_key_names_the_question(tmp_path: Path) -> None:
    reports = json.loads(json.dumps(TATQA))
    del reports[1]["questions"][0]["answer_from"]
    write_json(tmp_path, "tatqa_dataset_dev.json", reports)
    with pytest.raises(DataError, match="question q4: missing") as info:
        tatqa.convert(tmp_path, seed=0)
    assert info.value.field == "answer_from"


def test_tatqa_malformed_json_line(tmp_path: Path) -> None:
    text = json.dumps(TATQA, indent=1).replace('"Revenue grew."', '"Revenue grew.",', 1)
    line = text.splitlines().index('    "text": "Revenue grew.",') + 2  # the "}" after it
    (tmp_path / "tatqa_dataset_dev.json").write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match="malformed JSON") as info:
        tatqa.convert(tmp_path, seed=0)
    assert info.value.line == line


def tatqa_public_test() -> list[dict]:
    """TATQA as the public tatqa_dataset_test.json has it: questions without answers."""
    reports = json.loads(json.dumps(TATQA))
    for report in reports:
        report["questions"] = [
            {key: q[key] for key in ("uid", "order", "question")} for q in report["questions"]
        ]
    return reports


def test_tatqa_answer_less_test_file_points_to_the_gold_file(tmp_path: Path) -> None:
    path = write_json(tmp_path, "tatqa_dataset_test.json", tatqa_public_test()) / (
        "tatqa_dataset_test.json"
    )
    with pytest.raises(DataError) as info:
        tatqa.read(path)
    assert str(info.value) == (
        f"{path} field 'rel_paragraphs': question q1: no gold evidence (neither "
        "rel_paragraphs nor answer_from), as in the answer-less public "
        "tatqa_dataset_test.json; convert tatqa_dataset_test_gold.json, which has them"
    )


@pytest.mark.parametrize(
    ("present", "read"),
    [
        (tatqa.RAW_FILES, "tatqa_dataset_dev.json"),
        (
            ("tatqa_dataset_train.json", "tatqa_dataset_test_gold.json"),
            "tatqa_dataset_test_gold.json",
        ),
        (("tatqa_dataset_train.json", "tatqa_dataset_test.json"), "tatqa_dataset_train.json"),
    ],
)
def test_tatqa_folder_reads_the_first_known_file(
    tmp_path: Path, present: tuple[str, ...], read: str
) -> None:
    for name in present:
        write_json(tmp_path, name, TATQA)
    assert tatqa.read(tmp_path).path == tmp_path / read


def test_tatqa_file_under_any_name(tmp_path: Path) -> None:
    write_json(tmp_path, "my_copy.json", TATQA)
    raw = tatqa.read(tmp_path / "my_copy.json")
    assert (raw.path, len(raw.queries), len(raw.corpus)) == (tmp_path / "my_copy.json", 5, 5)


def test_raw_path_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        pubmedqa.read(tmp_path)
    assert str(info.value) == f"{tmp_path}: no raw file in this folder; tried ori_pqal.json"
    with pytest.raises(DataError) as info:
        tatqa.read(tmp_path / "absent.json")
    assert str(info.value) == f"{tmp_path / 'absent.json'}: no such file or folder"
    write_json(tmp_path, "Query_doc.txt", [])
    with pytest.raises(DataError, match=r"AILA 2019 is a folder \(Query_doc.txt, ") as info:
        aila.read(tmp_path / "Query_doc.txt")
    assert info.value.file == str(tmp_path / "Query_doc.txt")


def test_pubmedqa_file_under_any_name_and_labels_only(tmp_path: Path) -> None:
    write_json(tmp_path, "test_set.json", PUBMEDQA)
    assert sorted(pubmedqa.read(tmp_path / "test_set.json").queries) == ["101", "102", "103", "104"]
    write_json(tmp_path, "test_ground_truth.json", {"101": "yes", "102": "no"})
    with pytest.raises(DataError) as info:
        pubmedqa.read(tmp_path / "test_ground_truth.json")
    assert str(info.value) == (
        f"{tmp_path / 'test_ground_truth.json'}: pmid 101: a label ('yes') where an entry "
        "belongs: this is a labels-only file; the questions and contexts are in ori_pqal.json"
    )


# ----------------------------------------------------------------------------- splits
@pytest.mark.parametrize("module", [aila, pubmedqa, tatqa])
def test_splits_are_seeded(tmp_path: Path, module) -> None:
    if module is aila:
        write_aila(tmp_path)
    elif module is pubmedqa:
        write_json(tmp_path, "ori_pqal.json", PUBMEDQA)
    else:
        write_json(tmp_path, "tatqa_dataset_dev.json", TATQA)
    first = split_of(module.convert(tmp_path, seed=0))
    assert split_of(module.convert(tmp_path, seed=0)) == first
    assert split_of(module.convert(tmp_path, seed=3)) != first


def test_fractions_are_passed_through(tmp_path: Path) -> None:
    write_json(tmp_path, "ori_pqal.json", PUBMEDQA)
    dataset = pubmedqa.convert(tmp_path, seed=0, fractions=(1.0, 0.0, 0.0))
    assert sorted(dataset.qrels["train"]) == ["101", "102", "103"]
    assert dataset.qrels["dev"] == dataset.qrels["test"] == {}


@pytest.mark.parametrize("split", SPLITS)
def test_one_named_split_takes_every_kept_query(tmp_path: Path, split: str) -> None:
    write_json(tmp_path, "tatqa_dataset_dev.json", TATQA)
    dataset = tatqa.convert(tmp_path, seed=0, split=split)
    expected = {
        "q1": {"t1-p2": 1},
        "q2": {"t1-p1": 1, "t1-table": 1},
        "q3": {"t1-table": 1},
        "q4": {"t2-table": 1},
    }
    assert dataset.qrels == {s: (expected if s == split else {}) for s in SPLITS}


def test_unknown_split_is_refused(tmp_path: Path) -> None:
    write_json(tmp_path, "ori_pqal.json", PUBMEDQA)
    with pytest.raises(ValueError, match="split must be one of train, dev, test, got 'val'"):
        pubmedqa.convert(tmp_path, seed=0, split="val")


# ----------------------------------------------------------------------------- real data
@pytest.mark.slow
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is absent")
@pytest.mark.parametrize(
    ("module", "docs", "splits", "judgments", "positives", "dropped_judgments"),
    [
        (aila, 197, (24, 8, 8), 7880, 175, (("AILA_Q2", "S58"), ("AILA_Q33", "S58"))),
        (pubmedqa, 2357, (420, 140, 140), 2357, 2357, ()),
        (tatqa, 1634, (1000, 334, 334), 2205, 2205, ()),
    ],
)
def test_real_data(
    module,
    docs: int,
    splits: tuple[int, int, int],
    judgments: int,
    positives: int,
    dropped_judgments: tuple[tuple[str, str], ...],
) -> None:
    raw = module.read(SHARED_DATA / module.RAW_DIR)
    dataset = raw.to_dataset(seed=0)
    assert len(dataset.corpus) == docs
    assert tuple(len(dataset.qrels[split]) for split in SPLITS) == splits
    rows = [
        grade
        for split in SPLITS
        for judged in dataset.qrels[split].values()
        for grade in judged.values()
    ]
    assert (len(rows), sum(grade > 0 for grade in rows)) == (judgments, positives)
    assert raw.without_positive == []
    assert raw.dropped_judgments == dropped_judgments
