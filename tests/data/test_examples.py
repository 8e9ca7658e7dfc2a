"""Training modes: graded labels, pairs, rows and teacher scores from a run file."""

from __future__ import annotations

from pathlib import Path

import pytest

from r2r.data.errors import DataError
from r2r.data.examples import Training
from r2r.data.io import read_run
from r2r.types import Passage, Query, RankingGroup, RetrievalDataset

DOCS = {d: Passage(d, f"text of {d}") for d in ("a", "b", "n1", "n2")}
DATASET = RetrievalDataset(
    name="toy",
    domain="legal",
    corpus=DOCS,
    queries={"q": Query("q", "the query")},
    # Graded qrels: a is grade 2, b grade 1, n2 judged non-relevant.
    qrels={"train": {"q": {"a": 2, "b": 1, "n2": 0}}},
)
# The miner's groups: one per positive, the positive first, then negatives.
GROUPS = [
    RankingGroup("legal", DATASET.queries["q"], (DOCS["a"], DOCS["n1"], DOCS["n2"])),
    RankingGroup("legal", DATASET.queries["q"], (DOCS["b"], DOCS["n1"], DOCS["n2"])),
]


def ids(example) -> tuple[str, ...]:
    return tuple(p.id for p in example.passages)


def test_listwise_keeps_the_groups_with_graded_labels() -> None:
    examples = Training("listwise", None).examples(GROUPS, {"legal": DATASET}, {})
    assert [ids(e) for e in examples] == [("a", "n1", "n2"), ("b", "n1", "n2")]
    # Grade over the top grade (2): a -> 1, b -> 0.5, unjudged and grade 0 -> 0.
    assert [e.labels for e in examples] == [(1.0, 0.0, 0.0), (0.5, 0.0, 0.0)]
    assert all(e.teacher is None for e in examples)


def test_pairwise_pairs_positives_with_negatives_and_grades_with_grades() -> None:
    examples = Training("pairwise", None).examples(GROUPS, {"legal": DATASET}, {})
    assert [(ids(e), e.labels) for e in examples] == [
        (("a", "n1"), (1.0, 0.0)),
        (("a", "n2"), (1.0, 0.0)),
        (("b", "n1"), (0.5, 0.0)),
        (("b", "n2"), (0.5, 0.0)),
        (("a", "b"), (1.0, 0.5)),  # two positives of one query, different grades
    ]


def test_pointwise_gives_each_distinct_pair_once() -> None:
    examples = Training("pointwise", None).examples(GROUPS, {"legal": DATASET}, {})
    assert [(ids(e), e.labels) for e in examples] == [
        (("a",), (1.0,)),
        (("n1",), (0.0,)),
        (("n2",), (0.0,)),
        (("b",), (0.5,)),
    ]


def test_teacher_scores_come_from_the_run_file(tmp_path: Path) -> None:
    run = tmp_path / "teacher.trec"
    # r2r's own run files name queries `domain/qid`; n2 is below the teacher's cut-off.
    run.write_text("legal/q Q0 a 1 4.5 t\nlegal/q Q0 b 2 2.0 t\nlegal/q Q0 n1 3 -1.0 t\n")
    training = Training("pointwise", {"legal": str(run)})
    teachers = training.teacher_runs(["legal"])
    assert teachers == {"legal": {"q": {"a": 4.5, "b": 2.0, "n1": -1.0}}}
    examples = training.examples(GROUPS, {"legal": DATASET}, teachers)
    # A passage the teacher did not rank gets the lowest score it gave the query.
    assert [(ids(e), e.teacher) for e in examples] == [
        (("a",), (4.5,)),
        (("n1",), (-1.0,)),
        (("n2",), (-1.0,)),
        (("b",), (2.0,)),
    ]
    listwise = Training("listwise", {"legal": str(run)}).examples(
        GROUPS, {"legal": DATASET}, teachers
    )
    assert [e.teacher for e in listwise] == [(4.5, -1.0, -1.0), (2.0, -1.0, -1.0)]


def test_a_teacher_must_cover_every_domain_and_query(tmp_path: Path) -> None:
    run = tmp_path / "teacher.tsv"
    run.write_text("other a 1.0\n")
    with pytest.raises(ValueError, match=r"no run file for \['medical'\]"):
        Training("listwise", {"legal": str(run)}).teacher_runs(["legal", "medical"])
    teachers = Training("listwise", {"legal": str(run)}).teacher_runs(["legal"])
    with pytest.raises(DataError, match="scores no document of training query 'q' of toy"):
        Training("listwise", {"legal": str(run)}).examples(GROUPS, {"legal": DATASET}, teachers)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("q a 1.0 extra\n", r"teacher.txt:1: expected 6 columns .* or 3 .*, got 4"),
        ("q a 1.0\nq b high\n", r"teacher.txt:2: score 'high' is not a number"),
        ("q a 1.0\nq a 2.0\n", r"teacher.txt:2: query 'q' scores document 'a' twice"),
        ("q a nan\n", r"teacher.txt:1: score 'nan' is not finite"),
        ("\n", r"teacher.txt: the run file holds no scores"),
        ("", r"teacher.txt: empty file"),
        ("q a 1.0\nq b \udcff\n", r"teacher.txt:2: not UTF-8 \(byte 0xff at column 5\)"),
    ],
)
def test_bad_run_files_name_file_and_line(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "teacher.txt"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(DataError, match=error):
        read_run(path)


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match=r"training.mode='triplet'"):
        Training("triplet", None)  # type: ignore[arg-type]
