from __future__ import annotations

import json
from pathlib import Path

import pytest

from r2r.data.convert import main
from r2r.data.io import read_beir
from r2r.data.sources import aila, pubmedqa, tatqa


def write_shared(root: Path) -> Path:
    """A tiny shared-data tree holding the three raw formats."""
    legal = root / "legal" / "aila2019"
    (legal / "Object_statutes").mkdir(parents=True)
    (legal / "Query_doc.txt").write_text(
        "AILA_Q1||Bank officer dismissed.\nAILA_Q2||Writ filed.\nAILA_Q3||Theft.\n",
        encoding="utf-8",
    )
    for doc_id, title in (("S1", "Equality"), ("S2", "Writs")):
        (legal / "Object_statutes" / f"{doc_id}.txt").write_text(
            f"Title: {title}\nDesc: Text of {doc_id}.\n", encoding="utf-8"
        )
    (legal / "relevance_judgments_statutes.txt").write_text(
        "".join(f"AILA_Q{q} Q0 S{d} {int(q % 2 + 1 == d)}\n" for q in (1, 2, 3) for d in (1, 2)),
        encoding="utf-8",
    )
    medical = root / "medical" / "pubmedqa"
    medical.mkdir(parents=True)
    entries = {
        str(p): {"QUESTION": f"Question {p}?", "CONTEXTS": [f"Context of {p}."]} for p in (1, 2, 3)
    }
    (medical / "ori_pqal.json").write_text(json.dumps(entries), encoding="utf-8")
    finance = root / "finance" / "tatqa"
    finance.mkdir(parents=True)
    report = {
        "table": {"uid": "t1", "table": [["Revenue", "10"]]},
        "paragraphs": [{"uid": "p", "order": 1, "text": "Revenue grew."}],
        "questions": [
            {
                "uid": f"q{i}",
                "question": f"Q{i}?",
                "answer_from": "table-text",
                "rel_paragraphs": ["1"],
            }
            for i in (1, 2, 3)
        ],
    }
    (finance / "tatqa_dataset_dev.json").write_text(json.dumps([report]), encoding="utf-8")
    return root


def test_single_source_round_trips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = write_shared(tmp_path / "shared") / "legal" / "aila2019"
    out = tmp_path / "out" / "aila"
    argv = ["aila2019", "--raw", str(raw), "--out", str(out), "--seed", "3"]
    assert main([*argv, "--fractions", "0.4", "0.3", "0.3"]) == 0
    expected = aila.convert(raw, seed=3, fractions=(0.4, 0.3, 0.3))
    assert read_beir(out, domain="legal", name="aila2019") == expected
    assert "aila2019" in capsys.readouterr().out


def test_all_writes_one_folder_per_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "120")  # rich squeezes the summary table to the terminal
    shared = write_shared(tmp_path / "shared")
    out = tmp_path / "converted"
    assert main(["all", "--shared", str(shared), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["aila2019", "pubmedqa", "tatqa"]
    for module in (aila, pubmedqa, tatqa):
        written = read_beir(out / module.NAME, domain=module.DOMAIN)
        assert written == module.convert(shared / module.RAW_DIR, seed=0)  # r2r-convert's
    row = next(line for line in capsys.readouterr().out.splitlines() if "│ tatqa " in line)
    # dataset, domain, docs, train/dev/test queries, positives per query, dropped queries
    cells = [cell.strip() for cell in row.split("│")[1:-1]]
    assert cells == ["tatqa", "finance", "2", "1", "1", "1", "2.00", "0"]


def test_bad_data_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shared = write_shared(tmp_path / "shared")
    (shared / "finance" / "tatqa" / "tatqa_dataset_dev.json").write_text("[\n{\n", encoding="utf-8")
    out = tmp_path / "converted"
    assert main(["all", "--shared", str(shared), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert "tatqa_dataset_dev.json:3: malformed JSON" in captured.err
    assert "Traceback" not in captured.err
    assert not out.exists()  # the two good sources were not written either


def tatqa_report(answered: bool) -> dict:
    """One TAT-QA report with three questions, q3 without a positive; `answered=False`
    strips the gold fields, as the public tatqa_dataset_test.json does."""
    gold = [("table-text", ["1"]), ("text", ["2"]), ("text", [])]
    questions = [
        {"uid": f"q{i}", "order": i, "question": f"Q{i}?"}
        | ({"answer_from": source, "rel_paragraphs": rel} if answered else {})
        for i, (source, rel) in enumerate(gold, start=1)
    ]
    paragraphs = [{"uid": f"p{o}", "order": o, "text": f"Paragraph {o}."} for o in (1, 2)]
    return {
        "table": {"uid": "t1", "table": [["Revenue", "10"]]},
        "paragraphs": paragraphs,
        "questions": questions,
    }


def test_tatqa_gold_test_file_into_the_test_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    raw = tmp_path / "dataset_raw" / "tatqa_dataset_test_gold.json"
    raw.parent.mkdir()
    raw.write_text(json.dumps([tatqa_report(answered=True)]), encoding="utf-8")
    out = tmp_path / "tatqa-test"
    assert main(["tatqa", "--raw", str(raw), "--split", "test", "--out", str(out)]) == 0
    written = read_beir(out, domain="finance")
    assert written.qrels == {
        "train": {},
        "dev": {},
        "test": {"q1": {"t1-p1": 1, "t1-table": 1}, "q2": {"t1-p2": 1}},
    }
    assert sorted(written.corpus) == ["t1-p1", "t1-p2", "t1-table"]
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if "│ tatqa " in line)
    cells = [cell.strip() for cell in row.split("│")[1:-1]]
    assert cells == ["tatqa", "finance", "3", "0", "0", "2", "1.50", "1"]
    assert f"tatqa: {raw} -> {out}" in lines


def test_tatqa_answer_less_test_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = tmp_path / "tatqa_dataset_test.json"
    raw.write_text(json.dumps([tatqa_report(answered=False)]), encoding="utf-8")
    out = tmp_path / "out"
    assert main(["tatqa", "--raw", str(raw), "--split", "test", "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"error: {raw} field 'rel_paragraphs': question q1: no gold evidence (neither "
        "rel_paragraphs nor answer_from), as in the answer-less public "
        "tatqa_dataset_test.json; convert tatqa_dataset_test_gold.json, which has them\n"
    )
    assert not out.exists()


def test_folder_without_a_known_file_lists_the_names_tried(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "tatqa_dataset_test.json").write_text("[]", encoding="utf-8")
    assert main(["tatqa", "--raw", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path}: no raw file in this folder; tried tatqa_dataset_dev.json, "
        "tatqa_dataset_test_gold.json, tatqa_dataset_train.json\n"
    )


@pytest.mark.parametrize(
    "extra",
    [
        ["--fractions", "0.5", "0.5", "0.5"],
        ["--raw", "somewhere"],
        ["--split", "test", "--fractions", "1", "0", "0"],
        ["--split", "val"],
    ],
)
def test_bad_arguments_exit_2(tmp_path: Path, extra: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["all", "--out", str(tmp_path / "out"), *extra])
    assert info.value.code == 2
