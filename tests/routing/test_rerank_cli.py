"""`python -m r2r.rerank`: a JSONL file of queries and candidates through a saved system."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from r2r.data.errors import DataError
from r2r.fusion import Fusion
from r2r.rerank import main, read_requests
from r2r.routing import OracleRouter
from r2r.routing.system import RoutedReranker
from r2r.types import Passage

DOMAINS = ("legal", "medical")
TINY = {
    "_target_": "r2r.models.backbones.load_tiny",
    "arch": "qwen",
    "seed": 0,
    "template": {"_target_": "r2r.models.templates.named_template", "name": "qwen3_reranker"},
}
ROWS = [
    {
        "id": "a",
        "query": "bail granted",
        "documents": ["bail", "aspirin", "appeal"],
        "domain": "legal",
    },
    {
        "id": "b",
        "query": "aspirin dose",
        "documents": [
            {"id": "x", "text": "75 mg daily"},
            {"id": "y", "text": "bail", "title": "t"},
        ],
        "domain": "medical",
    },
    {"id": "c", "query": "appeal heard", "documents": ["appeal dismissed"], "domain": "legal"},
]


@pytest.fixture(scope="module")
def system_dir(random_experts, expert_bank, tmp_path_factory: pytest.TempPathFactory) -> Path:
    bank = expert_bank(random_experts(DOMAINS, scale=0.2))
    system = RoutedReranker(bank, OracleRouter(DOMAINS), threshold=0.0, backbone_config=TINY)
    return system.save(tmp_path_factory.mktemp("system") / "system")


@pytest.fixture(scope="module")
def fused_system_dir(random_experts, expert_bank, tmp_path_factory: pytest.TempPathFactory) -> Path:
    bank = expert_bank(random_experts(DOMAINS, scale=0.2))
    fusion = Fusion("interpolate", {"legal": 0.0, "medical": 0.5}, 60, "ndcg@10")
    system = RoutedReranker(
        bank, OracleRouter(DOMAINS), threshold=0.0, backbone_config=TINY, fusion=fusion
    )
    return system.save(tmp_path_factory.mktemp("fused") / "system")


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_cli_writes_the_systems_rankings_in_input_order(system_dir: Path, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", ROWS)
    assert main([str(system_dir), str(source), str(tmp_path / "out.jsonl"), "--top-n", "2"]) == 0
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [row["id"] for row in out] == ["a", "b", "c"]
    assert [row["expert"] for row in out] == ["legal", "medical", "legal"]
    assert out[1]["probabilities"] == {"legal": 0.0, "medical": 1.0}
    assert [len(row["ranking"]) for row in out] == [2, 2, 1]
    # The same numbers as the Python API on the same system.
    system = RoutedReranker.load(system_dir)
    docs_b = [Passage("x", "75 mg daily"), Passage("y", "bail", "t")]
    want = system.rerank("aspirin dose", docs_b, top_n=2, true_domain="medical")
    assert [(r["id"], r["index"]) for r in out[1]["ranking"]] == [
        (r.id, r.index) for r in want.ranking
    ]
    assert [r["score"] for r in out[1]["ranking"]] == pytest.approx(
        [r.score for r in want.ranking], abs=1e-6
    )
    assert out[0]["ranking"][0]["id"] == str(out[0]["ranking"][0]["index"])


def test_requests_with_first_stage_scores_are_fused(
    fused_system_dir: Path, system_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        {**ROWS[0], "scores": [1.0, 3.0, 2.0]},  # legal: weight 0, BM25's order
        {**ROWS[1], "scores": [0, 7.5]},  # medical: weight 0.5
        ROWS[2],  # no scores: the expert's own
    ]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    assert main([str(fused_system_dir), str(source), str(tmp_path / "out.jsonl")]) == 0
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [row["fused"] for row in out] == [True, True, False]
    assert [r["index"] for r in out[0]["ranking"]] == [1, 2, 0]
    assert [r["score"] for r in out[0]["ranking"]] == [1.0, 0.5, 0.0]
    system = RoutedReranker.load(fused_system_dir)
    docs_b = [Passage("x", "75 mg daily"), Passage("y", "bail", "t")]
    want = system.rerank("aspirin dose", docs_b, true_domain="medical", first_stage_scores=[0, 7.5])
    assert [(r["id"], r["score"]) for r in out[1]["ranking"]] == [
        (r.id, pytest.approx(r.score, abs=1e-6)) for r in want.ranking
    ]
    # A system saved without fusion ranks by its experts' scores alone, and says so.
    capsys.readouterr()
    assert main([str(system_dir), str(source), str(tmp_path / "plain.jsonl")]) == 0
    assert "has no fusion.json: the requests' first-stage scores are not used" in (
        capsys.readouterr().err
    )
    plain = [json.loads(line) for line in (tmp_path / "plain.jsonl").read_text().splitlines()]
    assert [row["fused"] for row in plain] == [False, False, False]


@pytest.mark.parametrize(
    ("lines", "where"),
    [
        (['{"query": "q", "documents": ["d"], "domain": "legal"}', "{not json"], ":2"),
        ([{"query": "", "documents": ["d"]}], ":1 field 'query'"),
        ([{"query": "q", "documents": []}], ":1 field 'documents'"),
        ([{"query": "q", "documents": ["d", {"title": "no text"}]}], ":1 field 'documents[1]'"),
        # Ids are strings or integers, never coerced from other JSON types:
        ([{"id": ["a"], "query": "q", "documents": ["d"]}], ":1 field 'id'"),
        ([{"id": False, "query": "q", "documents": ["d"]}], ":1 field 'id'"),
        ([{"query": "q", "documents": [{"id": 1.5, "text": "a"}]}], ":1 field 'documents[0].id'"),
        (
            [{"query": "q", "documents": [{"text": "a", "title": 7}]}],
            ":1 field 'documents[0].title'",
        ),
        (
            [{"query": "q", "documents": [{"id": "1", "text": "a"}, {"id": "1", "text": "b"}]}],
            ":1 field 'documents'",
        ),
        ([{"id": "z", "query": "q", "documents": ["d"]}] * 2, ":2 field 'id'"),
        (
            [
                {"query": "q", "documents": ["d"], "domain": "legal"},
                {"query": "q", "documents": ["d"]},
            ],
            ":2 field 'domain'",
        ),
        ([{"query": "q", "documents": ["d", "e"], "scores": [1.0]}], ":1 field 'scores'"),
        ([{"query": "q", "documents": ["d"], "scores": 1.0}], ":1 field 'scores'"),
        ([{"query": "q", "documents": ["d", "e"], "scores": [1, "2"]}], ":1 field 'scores[1]'"),
        ([{"query": "q", "documents": ["d"], "scores": [True]}], ":1 field 'scores[0]'"),
        (['{"query": "q", "documents": ["d"], "scores": [NaN]}'], ":1 field 'scores[0]'"),
    ],
)
def test_bad_input_names_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: list, where: str
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", lines)
    with pytest.raises(DataError) as err:
        read_requests(source)
    assert f"{source}{where}" in str(err.value)
    # The command line: that one error line, exit 2, no traceback and no output file.
    assert main([str(tmp_path / "no_system"), str(source), str(tmp_path / "out.jsonl")]) == 2
    assert capsys.readouterr().err == f"error: {err.value}\n"
    assert not (tmp_path / "out.jsonl").exists()


def test_bad_input_fails_before_loading_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", ["[1, 2]"])
    assert main([str(tmp_path / "no_system"), str(source), str(tmp_path / "out.jsonl")]) == 2
    assert capsys.readouterr().err == f"error: {source}:1: each line must be a JSON object\n"
    assert not (tmp_path / "out.jsonl").exists()
    with pytest.raises(DataError, match="no such file"):
        read_requests(tmp_path / "missing.jsonl")
