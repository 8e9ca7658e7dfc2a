"""`python -m r2r.export`: each expert as a CrossEncoder folder with r2r's scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from r2r.cli import main as cli_main
from r2r.errors import DataError
from r2r.export import export, main
from r2r.routing import OracleRouter
from r2r.routing.system import RoutedReranker
from tests.routing.test_rerank_cli import TINY

DOMAINS = ("legal", "medical")
QUERIES = ["bail granted to the accused", "aspirin dose for adults", "appeal heard"]
DOCUMENTS = ["the court granted bail", "take 75 mg of aspirin daily", "appeal dismissed"]


@pytest.fixture(scope="module")
def exported(random_experts, expert_bank, tmp_path_factory: pytest.TempPathFactory):
    bank = expert_bank(random_experts(DOMAINS, scale=0.2))
    system = RoutedReranker(bank, OracleRouter(DOMAINS), threshold=0.0, backbone_config=TINY)
    folder = system.save(tmp_path_factory.mktemp("system") / "system")
    out = tmp_path_factory.mktemp("export") / "out"
    with torch.no_grad():
        export(folder, out)
    return folder, out


def test_an_exported_expert_scores_as_r2r_in_sentence_transformers(exported) -> None:
    from sentence_transformers import CrossEncoder

    folder, out = exported
    system = RoutedReranker.load(folder)
    queries = [q for q in QUERIES for _ in DOCUMENTS]
    documents = DOCUMENTS * len(QUERIES)
    for name in DOMAINS:
        ours = system.bank.score(name, queries, documents)
        model = CrossEncoder(str(out / "experts" / name), local_files_only=True, device="cpu")
        theirs = model.predict(list(zip(queries, documents, strict=True)), batch_size=4)
        assert theirs.tolist() == pytest.approx(ours, abs=1e-4)
    # The experts differ: each folder holds its own merged weights.
    assert system.bank.score("legal", queries, documents) != pytest.approx(
        system.bank.score("medical", queries, documents), abs=1e-3
    )


def test_the_router_and_routing_table_travel_as_plain_files(exported) -> None:
    folder, out = exported
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "experts", "routing"]
    assert sorted(p.name for p in (out / "experts").iterdir()) == ["legal", "medical"]
    assert json.loads((out / "routing" / "system.json").read_text()) == json.loads(
        (folder / "system.json").read_text()
    )
    assert (out / "routing" / "router" / "router.json").is_file()
    card = (out / "README.md").read_text()
    assert 'CrossEncoder("experts/legal")' in card and "load_tiny" in card
    # Nothing staged is left beside the output.
    assert [p.name for p in out.parent.iterdir()] == ["out"]


def test_an_existing_output_is_refused_untouched(exported, tmp_path: Path, capsys) -> None:
    folder, _ = exported
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("keep")
    with pytest.raises(DataError, match="already exists"):
        export(folder, taken)
    assert main([str(folder), str(taken)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert [p.name for p in taken.iterdir()] == ["mine.txt"]
    assert cli_main(["export", str(tmp_path), str(tmp_path / "new")]) == 2  # `r2r export`
    assert "not a saved r2r system" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
