from __future__ import annotations

from pathlib import Path

import pytest

from r2r.data.synthetic import tokenizer
from r2r.models.tiny import TOKENIZER_FILE


def test_the_shipped_tiny_tokenizer_is_the_one_the_corpus_trains() -> None:
    # Fails when the generator's words or the templates change without a regenerated file:
    # run `python -m r2r.data.synthetic.tokenizer`.
    assert tokenizer.train_tiny_tokenizer() == TOKENIZER_FILE.read_text(encoding="utf-8")


@pytest.fixture
def shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in shipped file, and a stand-in training that returns "new"."""
    path = tmp_path / "tiny_tokenizer.json"
    path.write_text("old", encoding="utf-8")
    monkeypatch.setattr(tokenizer, "TOKENIZER_FILE", path)
    monkeypatch.setattr(tokenizer, "train_tiny_tokenizer", lambda: "new")
    return path


def test_check_reports_a_stale_file_and_writes_nothing(
    shipped: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert tokenizer.main(["--check"]) == 1
    assert shipped.read_text(encoding="utf-8") == "old"
    assert "is stale: run python -m r2r.data.synthetic.tokenizer" in capsys.readouterr().out


def test_regenerating_rewrites_the_file_then_check_passes(shipped: Path) -> None:
    assert tokenizer.main([]) == 0
    assert shipped.read_text(encoding="utf-8") == "new"
    assert tokenizer.main(["--check"]) == 0
