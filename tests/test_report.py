from __future__ import annotations

import json
from pathlib import Path

import pytest

from r2r.report import collect, main, masking_name


def write_run(folder: Path, curriculum: str, masking: str, tuned: float) -> None:
    folder.mkdir(parents=True)
    metrics = {}
    for stage, base in (("bm25", 50.0), ("zero_shot", 20.0), ("fine_tuned", tuned)):
        for domain in ("legal", "all"):
            for metric in ("ndcg", "mrr", "recall", "precision"):
                for k in (5, 10):
                    metrics[f"{stage}/{domain}/{metric}@{k}"] = base + k
    config = {
        "backbone": {"_target_": "r2r.models.backbones.load_tiny", "arch": "qwen"},
        "data": {"name": "synthetic"},
        "curriculum": {"name": curriculum},
        "masking": {"_target_": f"r2r.data.masking.strategies.{masking}"},
    }
    (folder / "results.json").write_text(json.dumps({"metrics": metrics, "config": config}))


def test_table1_from_a_sweep(tmp_path: Path) -> None:
    write_run(tmp_path / "0_direct", "direct", "EntityMasking", 30.0)
    write_run(tmp_path / "1_eag_entity", "eag", "EntityMasking", 40.0)
    write_run(tmp_path / "2_eag_none", "eag", "NoMasking", 35.0)
    rows = collect(tmp_path)
    assert [(r.domain, r.config) for r in rows] == [
        ("legal", "BM25"),
        ("legal", "PT"),
        ("legal", "PT+S2"),
        ("legal", "PT+S1+S2 (entity)"),
        ("legal", "PT+S1+S2 (none)"),
        ("all", "BM25"),
        ("all", "PT"),
        ("all", "PT+S2"),
        ("all", "PT+S1+S2 (entity)"),
        ("all", "PT+S1+S2 (none)"),
    ]
    assert rows[3].values["ndcg@10"] == 50.0
    assert main([str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    md = (tmp_path / "report" / "table1.md").read_text().splitlines()
    assert md[0] == (
        "| backbone | data | domain | config | ndcg@5 | ndcg@10 | mrr@5 | mrr@10 | "
        "recall@5 | recall@10 | precision@5 | precision@10 |"
    )
    assert (
        md[5]
        == "| tiny_qwen | synthetic | legal | PT+S1+S2 (entity) | "
        + " | ".join(["45.0", "50.0"] * 4)
        + " |"
    )
    csv_lines = (tmp_path / "report" / "table1.csv").read_text().splitlines()
    assert len(csv_lines) == 11 and csv_lines[0].startswith("backbone,data,domain,config,ndcg@5")


def test_duplicate_configuration(tmp_path: Path) -> None:
    # masking is unused by curriculum=direct: identical runs collapse into one row...
    write_run(tmp_path / "a", "direct", "EntityMasking", 30.0)
    write_run(tmp_path / "b", "direct", "NoMasking", 30.0)
    assert [r.config for r in collect(tmp_path)].count("PT+S2") == 2  # legal + all
    # ...but two different results for one configuration are an error.
    write_run(tmp_path / "c", "direct", "NoMasking", 31.0)
    with pytest.raises(ValueError, match="two runs give"):
        collect(tmp_path)


def test_empty_sweep(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no results\.json"):
        collect(tmp_path)


def test_masking_names() -> None:
    assert masking_name("r2r.data.masking.strategies.NoMasking") == "none"
    assert masking_name("r2r.data.masking.strategies.PredictiveMasking") == "predictive"
