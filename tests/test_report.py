from __future__ import annotations

import json
from pathlib import Path

import pytest

from r2r.report import backbone_name, collect, main, masking_name


def write_run(
    folder: Path,
    curriculum: str,
    masking: str,
    tuned: float,
    *,
    seen: float | None = None,
    zero_shot: bool = True,
) -> None:
    """A results.json; `seen` adds a `test_seen` split whose fine-tuned values start there."""
    folder.mkdir(parents=True)
    metrics = {}
    stages = [("bm25", 50.0), ("fine_tuned", tuned)]
    stages += [("zero_shot", 20.0)] if zero_shot else []
    stages += [("fine_tuned:test_seen", seen)] if seen is not None else []
    for stage, base in stages:
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
        "| backbone | data | split | domain | config | ndcg@5 | ndcg@10 | mrr@5 | mrr@10 | "
        "recall@5 | recall@10 | precision@5 | precision@10 |"
    )
    assert (
        md[5]
        == "| tiny_qwen | synthetic | test | legal | PT+S1+S2 (entity) | "
        + " | ".join(["45.0", "50.0"] * 4)
        + " |"
    )
    csv_lines = (tmp_path / "report" / "table1.csv").read_text().splitlines()
    assert len(csv_lines) == 11 and csv_lines[0].startswith(
        "backbone,data,split,domain,config,ndcg@5"
    )


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


def test_splits_get_their_own_rows(tmp_path: Path) -> None:
    """`stage:split` keys become rows of that split, after the test rows; a run that skipped
    the zero-shot row (zero_shot=false) takes the PT row from another run."""
    write_run(tmp_path / "direct", "direct", "EntityMasking", 30.0, seen=60.0)
    write_run(tmp_path / "eag", "eag", "EntityMasking", 40.0, seen=55.0, zero_shot=False)
    rows = collect(tmp_path)
    assert [(r.split, r.domain, r.config) for r in rows] == [
        ("test", "legal", "BM25"),
        ("test", "legal", "PT"),
        ("test", "legal", "PT+S2"),
        ("test", "legal", "PT+S1+S2 (entity)"),
        ("test", "all", "BM25"),
        ("test", "all", "PT"),
        ("test", "all", "PT+S2"),
        ("test", "all", "PT+S1+S2 (entity)"),
        ("test_seen", "legal", "PT+S2"),
        ("test_seen", "legal", "PT+S1+S2 (entity)"),
        ("test_seen", "all", "PT+S2"),
        ("test_seen", "all", "PT+S1+S2 (entity)"),
    ]
    assert [r.values["ndcg@10"] for r in rows[-4:]] == [70.0, 65.0, 70.0, 65.0]
    assert rows[1].run == str(tmp_path / "direct")


def test_backbone_names() -> None:
    assert backbone_name({"_target_": "r2r.models.backbones.load_gguf_smollm2"}) == "smollm2"
    assert backbone_name({"_target_": "x.load_tiny", "arch": "mistral"}) == "tiny_mistral"
    hub = {"_target_": "r2r.models.backbones.load_hub", "name_or_path": "Qwen/Qwen3-Reranker-0.6B"}
    assert backbone_name(hub) == "Qwen/Qwen3-Reranker-0.6B"


def write_routing(folder: Path) -> None:
    """routing.json beside a run's results.json: three routers, two experts."""
    routers = {
        name: {
            "accuracy": accuracy,
            "macro_f1": accuracy,
            "n_params": params,
            "fit_s": 0.1,
            "routing_s": 0.01,
            "reranking_s": 2.0,
            "time_fraction": fraction,
            "metrics": {
                f"all/{m}@{k}": ndcg + k for m in ("ndcg", "mrr", "recall") for k in (5, 10)
            },
        }
        for name, accuracy, params, fraction, ndcg in [
            ("lsr", 90.0, 1538, 0.0125, 30.0),
            ("none", None, 0, 0.0, 20.0),
            ("oracle", 100.0, 0, 0.0, 32.0),
        ]
    }
    forgetting = {
        "base": {"legal/ndcg@10": 20.0, "medical/ndcg@10": 30.0, "all/ndcg@10": 25.0},
        "legal": {"legal/ndcg@10": 26.0, "medical/ndcg@10": 29.96, "all/ndcg@10": 28.0},
        "medical": {"legal/ndcg@10": 17.5, "medical/ndcg@10": 38.0, "all/ndcg@10": 27.7},
    }
    summary = {"domains": ["legal", "medical"], "routers": routers, "forgetting": forgetting}
    (folder / "routing.json").write_text(json.dumps(summary))


def test_tables_2_and_3_and_figures(tmp_path: Path) -> None:
    write_run(tmp_path / "sweep" / "0", "direct", "EntityMasking", 30.0)
    write_routing(tmp_path / "sweep" / "0")
    assert main([str(tmp_path / "sweep"), "--out", str(tmp_path / "report")]) == 0
    out = tmp_path / "report"
    table2 = (out / "table2.md").read_text().splitlines()
    assert table2[0] == (
        "| backbone | data | job | router | accuracy | macro-F1 | ndcg@5 | ndcg@10 | mrr@5 | mrr@10 | "
        "recall@5 | recall@10 | params | routing/reranking % |"
    )
    # The references first (none, oracle), then the routers; routing time in percent.
    assert table2[2:] == [
        "| tiny_qwen | synthetic | 0 | none | – | – | 25.0 | 30.0 | 25.0 | 30.0 | 25.0 | 30.0 | 0 | 0.00 |",
        "| tiny_qwen | synthetic | 0 | oracle | 100.0 | 100.0 | 37.0 | 42.0 | 37.0 | 42.0 | 37.0 | 42.0 | 0 | 0.00 |",
        "| tiny_qwen | synthetic | 0 | lsr | 90.0 | 90.0 | 35.0 | 40.0 | 35.0 | 40.0 | 35.0 | 40.0 | 1,538 | 1.25 |",
    ]
    assert (out / "table3.md").read_text().splitlines()[2:] == [
        "| model | legal | medical |",
        "|---|---:|---:|",
        "| base | 20.0 | 30.0 |",
        "| legal | 26.0 (+6.0) | 30.0 (+0.0) |",  # -0.04 rounds to 0.0: never "-0.0"
        "| medical | 17.5 (-2.5) | 38.0 (+8.0) |",
    ]
    rows = (out / "table3.csv").read_text().splitlines()
    assert rows[0] == "backbone,data,model,domain,ndcg@10,Δ vs base,run"
    assert rows[1:4] == [
        f"tiny_qwen,synthetic,base,legal,20.0,,{tmp_path / 'sweep' / '0'}",
        f"tiny_qwen,synthetic,base,medical,30.0,,{tmp_path / 'sweep' / '0'}",
        f"tiny_qwen,synthetic,legal,legal,26.0,6.0,{tmp_path / 'sweep' / '0'}",
    ]
    for name in ("table1_tiny_qwen_synthetic", "forgetting_tiny_qwen_synthetic"):
        png = out / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"![{name}](plots/{name}.png)" in (out / "report.md").read_text()
    assert not list(out.glob("plots/*.partial"))


def test_failed_jobs_are_listed(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_run(tmp_path / "0_ok", "direct", "EntityMasking", 30.0)
    (tmp_path / "1_bad").mkdir()
    (tmp_path / "1_bad" / "failed.json").write_text(
        json.dumps({"error": "ValueError: bad", "traceback": "..."})
    )
    assert main([str(tmp_path), "--no-plots"]) == 0
    report = (tmp_path / "report.md").read_text()
    assert f"## Failed jobs (1)\n\n- {tmp_path / '1_bad'}: ValueError: bad\n" in report
    assert not (tmp_path / "plots").exists() and not (tmp_path / "table2.md").exists()
    assert f"failed job: {tmp_path / '1_bad'}: ValueError: bad" in capsys.readouterr().out


def test_a_sweep_without_results_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "0_bad").mkdir()
    (tmp_path / "0_bad" / "failed.json").write_text(json.dumps({"error": "E: x"}))
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path)])
    assert exit_.value.code == 2
    assert "no results.json under" in capsys.readouterr().err
