"""The report names runs by what was swept: hand-written results.json files, exact tables."""

from __future__ import annotations

import csv
import json
import math
import shutil
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from r2r.errors import DataError
from r2r.report import main, parse_overrides, poolable, read_runs, settings_of, table1
from r2r.sweep import job_record

# The choices of a default job (as `r2r.sweep.job_record` writes them), to override per run.
CHOICES = {
    "sweep": "table1",
    "debug": "fast",
    "experiment": "tiny_synthetic",
    "router@routers.lsr": "lsr",
    "logger": "csv",
    "trainer": "cpu",
    "curriculum": "direct",
    "masking": "entity",
    "loss": "infonce",
    "data": "synthetic",
    "domain": "legal",
    "backbone": "tiny_qwen",
}
METRICS = (
    "| ndcg@5 | ndcg@10 | mrr@5 | mrr@10 | recall@5 | recall@10 | precision@5 | precision@10 |"
)


def job(*overrides: str, **choices: str) -> dict:
    """A job record: the default choices with `choices` changed, the given overrides."""
    return {"choices": CHOICES | choices, "overrides": list(overrides)}


def metrics(stages: Mapping[str, float], domain: str = "legal") -> dict[str, float]:
    """stage -> base: every metric@k of `domain` and of `all` is base + k."""
    return {
        f"{stage}/{d}/{m}@{k}": base + k
        for stage, base in stages.items()
        for d in (domain, "all")
        for m in ("ndcg", "mrr", "recall", "precision")
        for k in (5, 10)
    }


def write_run(
    folder: Path,
    values: Mapping[str, float],
    record: dict | None,
    config: dict | None = None,
    *,
    domain: str = "legal",
) -> None:
    """results.json in `folder`; without a `job` record when `record` is None."""
    folder.mkdir(parents=True)
    results = {"metrics": metrics(values, domain), "config": config or {"lora": {"r": 32}}}
    if record is not None:
        results["job"] = record
    (folder / "results.json").write_text(json.dumps(results))


def line(*cells: object) -> str:
    """A Table 1 markdown row: the text cells, then the metrics of base `cells[-1]`."""
    *text, base = cells
    values = [f"{base + k:.1f}" for _ in range(4) for k in (5, 10)]
    return "| " + " | ".join([*map(str, text), *values]) + " |"


def table1_md(path: Path) -> list[str]:
    assert main([str(path), "--no-plots"]) == 0
    return (path / "table1.md").read_text().splitlines()


def test_a_backbone_by_domain_grid(tmp_path: Path) -> None:
    """Four single-domain runs: the group `domain` becomes `domain (job)` beside the metric's
    domain; BM25 does not depend on the backbone (one row per domain), PT does."""
    bm25 = {"legal": 50.0, "medical": 60.0}
    for i, (backbone, domain, pt, tuned) in enumerate(
        [
            ("tiny_qwen", "legal", 20.0, 30.0),
            ("tiny_qwen", "medical", 21.0, 31.0),
            ("tiny_mistral", "legal", 22.0, 32.0),
            ("tiny_mistral", "medical", 23.0, 33.0),
        ]
    ):
        overrides = [f"backbone={backbone}", f"domain={domain}", "debug=fast", "paths.cache=/c"]
        write_run(
            tmp_path / f"{i}_backbone={backbone},domain={domain}",
            {"bm25": bm25[domain], "zero_shot": pt, "fine_tuned": tuned},
            job(*overrides, backbone=backbone, domain=domain),
            domain=domain,
        )
    md = table1_md(tmp_path)
    assert md[0] == "| backbone | domain (job) | split | domain | stage " + METRICS
    assert md[1] == "|---|---|---|---|---|" + "---:|" * 8
    assert md[2:] == [
        line("*", "legal", "test", "legal", "BM25", 50.0),
        line("tiny_mistral", "legal", "test", "legal", "PT", 22.0),
        line("tiny_qwen", "legal", "test", "legal", "PT", 20.0),
        line("tiny_mistral", "legal", "test", "legal", "fine-tuned", 32.0),
        line("tiny_qwen", "legal", "test", "legal", "fine-tuned", 30.0),
        line("*", "medical", "test", "medical", "BM25", 60.0),
        line("tiny_mistral", "medical", "test", "medical", "PT", 23.0),
        line("tiny_qwen", "medical", "test", "medical", "PT", 21.0),
        line("tiny_mistral", "medical", "test", "medical", "fine-tuned", 33.0),
        line("tiny_qwen", "medical", "test", "medical", "fine-tuned", 31.0),
        line("*", "legal", "test", "all", "BM25", 50.0),
        line("*", "medical", "test", "all", "BM25", 60.0),
        line("tiny_mistral", "legal", "test", "all", "PT", 22.0),
        line("tiny_mistral", "medical", "test", "all", "PT", 23.0),
        line("tiny_qwen", "legal", "test", "all", "PT", 20.0),
        line("tiny_qwen", "medical", "test", "all", "PT", 21.0),
        line("tiny_mistral", "legal", "test", "all", "fine-tuned", 32.0),
        line("tiny_mistral", "medical", "test", "all", "fine-tuned", 33.0),
        line("tiny_qwen", "legal", "test", "all", "fine-tuned", 30.0),
        line("tiny_qwen", "medical", "test", "all", "fine-tuned", 31.0),
    ]
    with open(tmp_path / "table1.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == [
        *("backbone", "domain (job)", "split", "domain", "stage"),
        *("ndcg@5", "ndcg@10", "mrr@5", "mrr@10", "recall@5", "recall@10"),
        *("precision@5", "precision@10", "run"),
    ]
    # A shared row names the first of its runs.
    first = tmp_path / "0_backbone=tiny_qwen,domain=legal"
    assert rows[1] == ["*", "legal", "test", "legal", "BM25", *["55.0", "60.0"] * 4, str(first)]
    assert len(rows) == 21


def test_a_loss_pair_shares_its_bm25_and_pt_rows(tmp_path: Path) -> None:
    """`-m loss=infonce,bce domain=legal`: only `loss` varies, so it is the only setting
    column (backbone, domain, debug are the same in both runs)."""
    for i, (loss, tuned) in enumerate([("infonce", 30.0), ("bce", 25.0)]):
        write_run(
            tmp_path / f"{i}_domain=legal,loss={loss}",
            {"bm25": 50.0, "zero_shot": 20.0, "fine_tuned": tuned},
            job("debug=fast", "domain=legal", f"loss={loss}", loss=loss),
        )
    md = table1_md(tmp_path)
    assert md[0] == "| loss | split | domain | stage " + METRICS
    assert md[2:] == [
        line("*", "test", "legal", "BM25", 50.0),
        line("*", "test", "legal", "PT", 20.0),
        line("bce", "test", "legal", "fine-tuned", 25.0),
        line("infonce", "test", "legal", "fine-tuned", 30.0),
        line("*", "test", "all", "BM25", 50.0),
        line("*", "test", "all", "PT", 20.0),
        line("bce", "test", "all", "fine-tuned", 25.0),
        line("infonce", "test", "all", "fine-tuned", 30.0),
    ]


def test_the_dense_row_and_the_ceiling_column_of_every_row(tmp_path: Path) -> None:
    """The dense baseline is a row after BM25; a run that recorded BM25's recall at the
    reranking depth shows it on every row of that split and domain."""
    folder = tmp_path / "0_domain=legal"
    write_run(
        folder,
        {"bm25": 50.0, "dense": 40.0, "zero_shot": 20.0, "fine_tuned": 30.0},
        job("debug=fast", "domain=legal"),
    )
    results = json.loads((folder / "results.json").read_text())
    results["metrics"] |= {"bm25/legal/recall@depth": 40.8, "bm25/all/recall@depth": 45.0}
    (folder / "results.json").write_text(json.dumps(results))
    md = table1_md(tmp_path)
    assert md[0] == "| split | domain | stage " + METRICS + " ceiling |"
    assert md[2:] == [
        line("test", "legal", "BM25", 50.0) + " 40.8 |",
        line("test", "legal", "dense (MiniLM)", 40.0) + " 40.8 |",
        line("test", "legal", "PT", 20.0) + " 40.8 |",
        line("test", "legal", "fine-tuned", 30.0) + " 40.8 |",
        line("test", "all", "BM25", 50.0) + " 45.0 |",
        line("test", "all", "dense (MiniLM)", 40.0) + " 45.0 |",
        line("test", "all", "PT", 20.0) + " 45.0 |",
        line("test", "all", "fine-tuned", 30.0) + " 45.0 |",
    ]
    with open(tmp_path / "table1.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][-2:] == ["ceiling", "run"]
    assert rows[1][-2:] == ["40.8", str(folder)]


def test_lora_rank_by_value_and_from_the_config_of_a_run_that_kept_the_default(
    tmp_path: Path,
) -> None:
    """`lora.r=8,16` beside a run without the override (its config: r=32); ranks sort as
    numbers (8 before 16)."""
    for name, overrides, tuned in [
        ("r16", ["lora.r=16"], 31.0),
        ("r8", ["lora.r=8"], 30.0),
        ("default", [], 32.0),
    ]:
        write_run(tmp_path / name, {"bm25": 50.0, "fine_tuned": tuned}, job(*overrides))
    assert table1_md(tmp_path)[0] == "| lora.r | split | domain | stage " + METRICS
    assert table1_md(tmp_path)[2:6] == [
        line("*", "test", "legal", "BM25", 50.0),
        line("8", "test", "legal", "fine-tuned", 30.0),
        line("16", "test", "legal", "fine-tuned", 31.0),
        line("32", "test", "legal", "fine-tuned", 32.0),
    ]


def test_curriculum_and_masking_with_the_stage1_rows_and_a_second_split(tmp_path: Path) -> None:
    """`sweep=table1` and `sweep=masking` into one directory: the grid that launched a job is
    no setting of it; S1 rows for the EAG runs; `test_seen` rows after the `test` rows."""
    runs = [
        ("0_curriculum=direct", "direct", "entity", "table1", None, 30.0, 60.0),
        ("1_curriculum=eag", "eag", "entity", "table1", 35.0, 40.0, 55.0),
        ("0_curriculum=eag,masking=none", "eag", "none", "masking", 33.0, 38.0, 50.0),
    ]
    for name, curriculum, masking, sweep, stage1, tuned, seen in runs:
        values = {"bm25": 50.0, "zero_shot": 20.0, "fine_tuned": tuned}
        values |= {"stage1": stage1} if stage1 is not None else {}
        values |= {"fine_tuned:test_seen": seen}
        overrides = [f"sweep={sweep}", f"curriculum={curriculum}", f"masking={masking}"]
        record = job(*overrides, curriculum=curriculum, masking=masking, sweep=sweep)
        write_run(tmp_path / name, values, record)
    md = table1_md(tmp_path)
    assert md[0] == "| curriculum | masking | split | domain | stage " + METRICS
    legal = [
        line("*", "*", "test", "legal", "BM25", 50.0),
        line("*", "*", "test", "legal", "PT", 20.0),
        line("eag", "entity", "test", "legal", "S1", 35.0),
        line("eag", "none", "test", "legal", "S1", 33.0),
        line("direct", "entity", "test", "legal", "fine-tuned", 30.0),
        line("eag", "entity", "test", "legal", "fine-tuned", 40.0),
        line("eag", "none", "test", "legal", "fine-tuned", 38.0),
    ]
    seen = [
        line("direct", "entity", "test_seen", "legal", "fine-tuned", 60.0),
        line("eag", "entity", "test_seen", "legal", "fine-tuned", 55.0),
        line("eag", "none", "test_seen", "legal", "fine-tuned", 50.0),
    ]
    # test (legal, then all), then test_seen (legal, then all)
    assert md[2:] == [
        *legal,
        *[r.replace("| legal |", "| all |") for r in legal],
        *seen,
        *[r.replace("| legal |", "| all |") for r in seen],
    ]


def test_without_a_job_record_the_differing_config_leaves_name_the_runs(tmp_path: Path) -> None:
    """Results written before the `job` record: the differing leaves of the resolved configs
    (where a run lives, folders inside it, and whether it skips are not settings). One run without the record
    is enough: every run is then compared on its config."""

    def config(curriculum: str, r: int, out: str) -> dict:
        return {
            "seed": 0,
            "curriculum": {"name": curriculum},
            "lora": {"r": r, "alpha": 64},
            "domains": ["legal"],
            "paths": {"output": f"/runs/{out}"},
            "trainer": {"default_root_dir": f"/runs/{out}", "max_steps": 6},
            "skip_finished": out == "a",
        }

    write_run(tmp_path / "a", {"fine_tuned": 30.0}, None, config("direct", 32, "a"))
    write_run(tmp_path / "b", {"fine_tuned": 40.0}, job(), config("eag", 32, "b"))
    # Outside a Hydra run (a composed config) the record is empty: no record either.
    assert job_record() == {"choices": {}, "overrides": []}
    write_run(tmp_path / "c", {"fine_tuned": 41.0}, job_record(), config("eag", 8, "c"))
    md = table1_md(tmp_path)
    assert md[0] == "| curriculum.name | lora.r | split | domain | stage " + METRICS
    assert md[2:5] == [
        line("direct", "32", "test", "legal", "fine-tuned", 30.0),
        line("eag", "8", "test", "legal", "fine-tuned", 41.0),
        line("eag", "32", "test", "legal", "fine-tuned", 40.0),
    ]


def test_one_run_or_runs_that_agree_give_no_setting_column_and_never_fail(tmp_path: Path) -> None:
    write_run(tmp_path / "a", {"bm25": 50.0, "fine_tuned": 30.0}, job("loss=bce", loss="bce"))
    assert table1_md(tmp_path)[0] == "| split | domain | stage " + METRICS
    # The same job twice (two sweeps read together) with different numbers: both rows.
    write_run(tmp_path / "b", {"bm25": 50.0, "fine_tuned": 31.0}, job("loss=bce", loss="bce"))
    _, rows = table1(read_runs(tmp_path))
    assert [(r.domain, r.stage, r.values["ndcg@10"], Path(r.run).name) for r in rows] == [
        ("legal", "BM25", 60.0, "a"),
        ("legal", "fine-tuned", 40.0, "a"),
        ("legal", "fine-tuned", 41.0, "b"),
        ("all", "BM25", 60.0, "a"),
        ("all", "fine-tuned", 40.0, "a"),
        ("all", "fine-tuned", 41.0, "b"),
    ]


def test_settings_of_job_records() -> None:
    """An override of a group is its choice; other overrides are settings of their own,
    values as Hydra parses them (a list of groups, `domain=[legal,medical]`, is no choice to
    Hydra); unset groups are null; override keys another run lacks come from its config;
    `zero_shot` and `curriculum.<stage>.test` (which rows a run also scores) and
    `experts_from` (where its adapters were read from) are no settings."""
    records: Sequence[dict] = [
        {
            "job": {
                "choices": {"backbone": "tiny_qwen", "debug": "fast"},
                "overrides": [
                    "backbone=tiny_qwen",
                    "domain=[legal,medical]",
                    "zero_shot=False",
                    "curriculum.stage1.test=false",
                    "experts_from=/runs/a",
                    "curriculum.stage1.max_steps=3",
                ],
            },
            "config": {"zero_shot": False, "domains": ["legal", "medical"]},
        },
        {
            "job": {"choices": {"backbone": "tiny_mistral"}, "overrides": ["paths.cache=/c"]},
            "config": {
                "zero_shot": True,
                "domains": ["legal"],
                "curriculum": {"stage1": {"max_steps": 5}},
            },
        },
    ]
    assert settings_of(records, [Path("a"), Path("b")]) == [
        {
            "backbone": "tiny_qwen",
            "curriculum.stage1.max_steps": "3",
            "debug": "fast",
            "domain": "[legal,medical]",
        },
        {
            "backbone": "tiny_mistral",
            "curriculum.stage1.max_steps": "5",
            "debug": "null",
            "domain": "null",
        },
    ]
    assert parse_overrides(
        ["lora.r=8", "++optimizer.lr=1.0e-3", "~routers.tfidf", "router@routers.lsr=tfidf"]
    ) == {
        "lora.r": "8",
        "optimizer.lr": "0.001",
        "routers.tfidf": "~",
        "router@routers.lsr": "tfidf",
    }
    bad = {"job": {"choices": {"loss": "bce"}, "overrides": ["lora.r=8=9"]}, "config": {}}
    with pytest.raises(ValueError, match=r"^run/results\.json: job\.overrides: "):
        settings_of([bad], [Path("run/results.json")])


def write_routing(folder: Path, shift: float = 0.0, legal_shift: float = 0.0) -> None:
    """routing.json beside a run's results.json: three routers, two experts; `shift` added
    to the routers' metrics, `legal_shift` to the legal expert's forgetting row."""
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
                f"all/{m}@{k}": ndcg + shift + k for m in ("ndcg", "mrr", "recall") for k in (5, 10)
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
        "legal": {
            "legal/ndcg@10": 26.0 + legal_shift,
            "medical/ndcg@10": 29.96 + legal_shift,
            "all/ndcg@10": 28.0 + legal_shift,
        },
        "medical": {"legal/ndcg@10": 17.5, "medical/ndcg@10": 38.0, "all/ndcg@10": 27.7},
    }
    summary = {"domains": ["legal", "medical"], "routers": routers, "forgetting": forgetting}
    (folder / "routing.json").write_text(json.dumps(summary))


def test_tables_2_and_3_name_runs_by_their_settings_and_figures(tmp_path: Path) -> None:
    """`sweep=routing`: two jobs on one run's experts, the LSR's layer swept."""
    sweep = tmp_path / "sweep"
    for i, layer in enumerate(["1", "-1"]):
        record = job(f"routers.lsr.layer={layer}", "experts_from=/runs/0")
        write_run(sweep / str(i), {"bm25": 50.0, "fine_tuned": 30.0}, record)
        write_routing(sweep / str(i), shift=float(i))
    # A run that did not route (one domain) is in Table 1 only.
    write_run(sweep / "2", {"bm25": 50.0, "fine_tuned": 30.0}, job("domain=legal"))
    assert main([str(sweep), "--out", str(tmp_path / "report")]) == 0
    out = tmp_path / "report"
    table2 = (out / "table2.md").read_text().splitlines()
    assert table2[0] == (
        "| routers.lsr.layer | router | accuracy | macro-F1 | ndcg@5 | ndcg@10 | mrr@5 | "
        "mrr@10 | recall@5 | recall@10 | params | routing/reranking % |"
    )
    # Runs by layer (as numbers); in each, the references first (none, oracle), then the
    # routers; routing time in percent.
    assert table2[2:5] == [
        "| -1 | none | – | – | 26.0 | 31.0 | 26.0 | 31.0 | 26.0 | 31.0 | 0 | 0.00 |",
        "| -1 | oracle | 100.0 | 100.0 | 38.0 | 43.0 | 38.0 | 43.0 | 38.0 | 43.0 | 0 | 0.00 |",
        "| -1 | lsr | 90.0 | 90.0 | 36.0 | 41.0 | 36.0 | 41.0 | 36.0 | 41.0 | 1,538 | 1.25 |",
    ]
    assert table2[5].startswith("| 1 | none | – | – | 25.0 |")
    table3 = (out / "table3.md").read_text().splitlines()
    assert table3[:7] == [
        f"routers.lsr.layer=-1 ({sweep / '1'}), ndcg@10 (Δ vs base):",
        "",
        "| model | legal | medical |",
        "|---|---:|---:|",
        "| base | 20.0 | 30.0 |",
        "| legal | 26.0 (+6.0) | 30.0 (+0.0) |",  # -0.04 rounds to 0.0: never "-0.0"
        "| medical | 17.5 (-2.5) | 38.0 (+8.0) |",
    ]
    rows = (out / "table3.csv").read_text().splitlines()
    assert rows[0] == "routers.lsr.layer,model,domain,ndcg@10,Δ vs base,run"
    assert rows[1:4] == [
        f"-1,base,legal,20.0,,{sweep / '1'}",
        f"-1,base,medical,30.0,,{sweep / '1'}",
        f"-1,legal,legal,26.0,6.0,{sweep / '1'}",
    ]
    # Table 1 shows the third run too (its layer is the config's); where the experts were
    # read from is no setting.
    assert (out / "table1.md").read_text().startswith("| routers.lsr.layer | split |")
    for name in ("table1", "forgetting_0", "forgetting_1"):
        png = out / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"![{name}](plots/{name}.png)" in (out / "report.md").read_text()
    assert not list(out.glob("plots/*.partial"))


def test_runs_that_nothing_tells_apart_are_an_error(tmp_path: Path) -> None:
    """Where seeds vary, two runs on different experts_from folders with the same settings
    and seed would pool as two seeds of one cell: the report names them instead."""
    for name, seed, source in (("0", 1, "a"), ("1", 1, "b"), ("2", 2, "c")):
        write_run(
            tmp_path / name, {"fine_tuned": 30.0}, job(f"seed={seed}", f"experts_from={source}")
        )
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path), "--no-plots"])
    assert exit_.value.code == 2
    with pytest.raises(
        DataError, match=rf"^{tmp_path / '1' / 'results.json'}: the same settings as"
    ):
        poolable(read_runs(tmp_path))
    shutil.rmtree(tmp_path / "1")  # seeds 1 and 2: one cell of two seeds
    poolable(read_runs(tmp_path))
    assert main([str(tmp_path), "--no-plots"]) == 0
    assert "± " in (tmp_path / "table1.md").read_text()


def test_failed_jobs_are_listed(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_run(tmp_path / "0_ok", {"fine_tuned": 30.0}, job())
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


def test_a_truncated_results_file_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "0_a").mkdir()
    (tmp_path / "0_a" / "results.json").write_text('{"metrics": {"fine_tuned/legal/ndcg@10": 3')
    with pytest.raises(SystemExit) as info:
        main([str(tmp_path), "--no-plots"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / '0_a' / 'results.json'}: not a complete results")
    assert err.count("\n") == 1


# Per-query nDCG@10 of a query with one relevant document of two: 100 where it is ranked
# first, 100 / log2(3) where second (as r2r.metrics computes it: dcg / idcg, idcg = 1).
HIT, MISS = 100.0, 100.0 * (1 / math.log2(3))
QUERIES = ("legal/q1", "legal/q2", "legal/q3", "medical/q1", "medical/q2")


def write_trec(folder: Path, row: str, hits: set[str]) -> None:
    """runs/<row>.trec and runs/qrels.test.trec: every query judges `a` relevant, `b` not;
    a query in `hits` ranks `a` first."""
    runs = folder / "runs"
    runs.mkdir(exist_ok=True)
    lines = [
        f"{q} Q0 {doc} {rank} {3 - rank}.0 {row}"
        for q in QUERIES
        for rank, doc in enumerate(("a", "b") if q in hits else ("b", "a"), start=1)
    ]
    (runs / f"{row}.trec").write_text("\n".join(lines) + "\n")
    (runs / "qrels.test.trec").write_text("".join(f"{q} 0 a 1\n{q} 0 b 0\n" for q in QUERIES))


# curriculum -> per seed: Table 1's fine-tuned base (ndcg@10 is base + 10), the queries
# its ranking gets right. PT gets legal/q3 right in every run.
SEEDED = {
    "direct": [
        (30.0, {"legal/q1"}),
        (33.0, {"legal/q1", "legal/q2"}),
        (36.0, {"legal/q1", "medical/q1"}),
    ],
    "eag": [
        (35.0, {"legal/q1", "legal/q2", "legal/q3"}),
        (36.0, {"legal/q1", "legal/q2", "medical/q1"}),
        (40.0, {"legal/q2", "legal/q3", "medical/q1", "medical/q2"}),
    ],
}
PT_HITS = {"legal/q3"}
# BM25 gets these right in every run; the fused row per curriculum and seed: Table 1's base
# and the queries it gets right (BM25's, and one more).
BM25_HITS = {"legal/q1", "legal/q2", "medical/q1"}
FUSED = {
    "direct": [(50.0, BM25_HITS | {"medical/q2"})] * 3,
    "eag": [(51.0, BM25_HITS), (52.0, BM25_HITS | {"legal/q3"}), (54.0, BM25_HITS)],
}


def write_seeded_sweep(sweep: Path) -> None:
    """`-m curriculum=direct,eag seed=0,1,2`: six runs with results.json and TREC runs."""
    for i, (curriculum, seeds) in enumerate(SEEDED.items()):
        for seed, (tuned, hits) in enumerate(seeds):
            folder = sweep / f"{3 * i + seed}_curriculum={curriculum},seed={seed}"
            record = job(f"curriculum={curriculum}", f"seed={seed}", curriculum=curriculum)
            fused, fused_hits = FUSED[curriculum][seed]
            values = {"bm25": 50.0, "zero_shot": 20.0, "fine_tuned": tuned, "fused": fused}
            write_run(folder, values, record)
            write_trec(folder, "fine_tuned", hits)
            write_trec(folder, "zero_shot", PT_HITS)
            write_trec(folder, "bm25", BM25_HITS)
            write_trec(folder, "fused", fused_hits)


def half_width(values: Sequence[float]) -> float:
    """The 95% Student-t interval's half-width: t(0.975, n - 1) * s / sqrt(n)."""
    n = len(values)
    return float(scipy.stats.t.ppf(0.975, n - 1)) * (statistics.stdev(values) / math.sqrt(n))


def test_seeds_are_one_cell_with_a_95_percent_interval(tmp_path: Path) -> None:
    """Three seeds per curriculum: one row per curriculum, `mean ± half-width` of the
    t-interval over seeds; BM25 and PT (the same in every seed) are shared rows, ± 0.0."""
    write_seeded_sweep(tmp_path)
    md = table1_md(tmp_path)
    assert md[0] == "| curriculum | split | domain | stage " + METRICS + " n_seeds |"
    assert md[1] == "|---|---|---|---|" + "---:|" * 9
    direct = half_width([30.0, 33.0, 36.0])  # the same for every metric: base + k
    eag = half_width([35.0, 36.0, 40.0])
    assert round(direct, 4) == 7.4524  # t(0.975, 2) = 4.3027, s = 3

    def row(*text: str, mean: float, width: float) -> str:
        cells = [f"{mean + k:.1f} ± {width:.1f}" for _ in range(4) for k in (5, 10)]
        return "| " + " | ".join([*text, *cells, "3"]) + " |"

    legal = [
        row("*", "test", "legal", "BM25", mean=50.0, width=0.0),
        row("*", "test", "legal", "PT", mean=20.0, width=0.0),
        row("direct", "test", "legal", "fine-tuned", mean=33.0, width=direct),
        row("eag", "test", "legal", "fine-tuned", mean=37.0, width=eag),
        row("direct", "test", "legal", "fused", mean=50.0, width=0.0),
        row("eag", "test", "legal", "fused", mean=52.0 + 1 / 3, width=half_width([51, 52, 54])),
    ]
    assert md[2:] == [*legal, *[r.replace("| legal |", "| all |") for r in legal]]
    with open(tmp_path / "table1.csv", newline="") as f:
        rows = list(csv.reader(f))
    head = ["curriculum", "split", "domain", "stage", "ndcg@5", "ndcg@5 ci_low", "ndcg@5 ci_high"]
    assert rows[0][:7] == head
    assert rows[0][-4:] == ["precision@10 ci_low", "precision@10 ci_high", "n_seeds", "run"]
    tuned = rows[3]
    assert tuned[:4] == ["direct", "test", "legal", "fine-tuned"]
    ndcg10 = [float(v) for v in tuned[7:10]]
    assert ndcg10 == [43.0, 43.0 - direct, 43.0 + direct]
    assert tuned[-2:] == ["3", str(tmp_path / "0_curriculum=direct,seed=0")]


def test_paired_tests_over_queries_pool_the_seeds(tmp_path: Path) -> None:
    """Fine-tuned vs PT and fused vs BM25 per curriculum, EAG vs direct: a query's nDCG@10
    is its mean over
    the three seeds, then a paired randomisation test over the queries of each domain and
    of all (exact: all sign flips of up to 13 queries)."""
    write_seeded_sweep(tmp_path)
    assert main([str(tmp_path)]) == 0  # with the bars' error bars (95% CI over seeds)
    assert (tmp_path / "plots" / "table1.png").read_bytes()[:4] == b"\x89PNG"

    def pooled(hits: Sequence[set[str]]) -> dict[str, float]:
        return {q: statistics.fmean(HIT if q in h else MISS for h in hits) for q in QUERIES}

    direct = pooled([h for _, h in SEEDED["direct"]])
    eag = pooled([h for _, h in SEEDED["eag"]])
    pt = pooled([PT_HITS] * 3)
    bm25 = pooled([BM25_HITS] * 3)
    fused = {c: pooled([h for _, h in FUSED[c]]) for c in FUSED}
    # legal/q1: direct gets it right in every seed, EAG in two of three.
    assert (direct["legal/q1"], eag["legal/q1"], pt["legal/q1"]) == (
        HIT,
        (2 * HIT + MISS) / 3,
        MISS,
    )

    def expected(settings: str, comparison: str, a: dict, b: dict) -> list[list[str]]:
        rows = []
        for domain in ("legal", "medical", "all"):
            qids = [q for q in QUERIES if domain == "all" or q.startswith(domain)]
            x, y = [a[q] for q in qids], [b[q] for q in qids]
            p = scipy.stats.permutation_test(
                (np.array(x), np.array(y)),
                lambda a, b, axis: np.mean(a - b, axis=axis),
                permutation_type="samples",
                rng=0,
            ).pvalue
            diff = statistics.fmean(u - v for u, v in zip(x, y, strict=True))
            rows.append([settings, comparison, domain, str(len(qids)), str(diff), str(float(p))])
        return rows

    with open(tmp_path / "paired.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["curriculum", "comparison", "domain", "n queries", "Δ ndcg@10", "p-value"]
    assert rows[1:] == [
        *expected("direct", "fine-tuned vs PT", direct, pt),
        *expected("eag", "fine-tuned vs PT", eag, pt),
        *expected("direct", "fused vs BM25", fused["direct"], bm25),
        *expected("eag", "fused vs BM25", fused["eag"], bm25),
        *expected("*", "EAG vs direct", eag, direct),
    ]
    # Two cases by hand, all 2^n sign flips of the differences (d = HIT - MISS): direct vs
    # PT on legal, (d, d/3, -d): 4 of 8 flips reach a sum >= d/3, 6 of 8 <= d/3, so
    # p = 2 * min(4/8, 6/8) = 1; EAG vs direct on medical, (d/3, d/3): p = 2 * 1/4.
    d = HIT - MISS
    assert float(rows[1][4]) == pytest.approx(d / 9)
    assert (float(rows[1][5]), rows[14][2], float(rows[14][5])) == (1.0, "medical", 0.5)
    # Fused vs BM25 (direct) on all: one query of five gains d in every seed, (0, 0, 0, 0, d):
    # half the flips reach a sum >= d, all of them <= d, so p = 2 * min(1/2, 1) = 1.
    assert rows[9][:5] == ["direct", "fused vs BM25", "all", "5", str(d / 5)]
    assert float(rows[9][5]) == 1.0
    md = (tmp_path / "paired.md").read_text().splitlines()
    assert md[0] == "| curriculum | comparison | domain | n queries | Δ ndcg@10 | p-value |"
    assert md[2] == "| direct | fine-tuned vs PT | legal | 3 | +4.1 | 1 |"
    assert "## Paired tests" in (tmp_path / "report.md").read_text()


def test_a_curriculum_without_its_own_pt_row_is_tested_against_the_others(
    tmp_path: Path,
) -> None:
    """A sweep that scores PT in the EAG runs only (`zero_shot=false` in the direct ones):
    direct's fine-tuned vs PT tests use that PT row, the same figures as with its own."""
    write_seeded_sweep(tmp_path)
    assert main([str(tmp_path), "--no-plots"]) == 0
    before = (tmp_path / "paired.csv").read_text()
    for run in tmp_path.glob("*curriculum=direct*"):
        (run / "runs" / "zero_shot.trec").unlink()
    assert main([str(tmp_path), "--no-plots"]) == 0
    assert (tmp_path / "paired.csv").read_text() == before
    assert "direct,fine-tuned vs PT,all," in before
    for run in tmp_path.glob("*curriculum=eag*"):  # no PT anywhere: no such test
        (run / "runs" / "zero_shot.trec").unlink()
    assert main([str(tmp_path), "--no-plots"]) == 0
    assert "fine-tuned vs PT" not in (tmp_path / "paired.csv").read_text()


def test_a_bad_trec_line_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_seeded_sweep(tmp_path)
    bad = tmp_path / "0_curriculum=direct,seed=0" / "runs" / "fine_tuned.trec"
    bad.write_text("legal/q1 Q0 a first 1.0 x\n")
    with pytest.raises(SystemExit) as info:
        main([str(tmp_path), "--no-plots"])
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        f"error: {bad}:1: not a TREC line (qid _ doc integer ...): 'legal/q1 Q0 a first 1.0 x'\n"
    )


def test_routed_runs_over_seeds_are_one_cell_and_tested_against_the_oracle(
    tmp_path: Path,
) -> None:
    """`-m seed=0,1,2` that routed: Tables 2 and 3 show one cell, `mean ± half-width` over
    the seeds; paired.csv tests each router's routed ranking against the oracle's."""
    for seed in range(3):
        folder = tmp_path / f"{seed}_seed={seed}"
        write_run(folder, {"bm25": 50.0, "fine_tuned": 30.0}, job(f"seed={seed}"))
        write_routing(folder, shift=float(seed), legal_shift=float(seed))
        # The oracle gets every query right; the LSR misses two legal queries, and one
        # medical query in seed 0.
        write_trec(folder, "routed.oracle", set(QUERIES))
        missed = {"legal/q1", "legal/q2"} | ({"medical/q1"} if seed == 0 else set())
        write_trec(folder, "routed.lsr", set(QUERIES) - missed)
        write_trec(folder, "routed.none", set())
    assert main([str(tmp_path), "--no-plots"]) == 0
    table2 = (tmp_path / "table2.md").read_text().splitlines()
    assert table2[0] == (
        "| router | accuracy | macro-F1 | ndcg@5 | ndcg@10 | mrr@5 | mrr@10 | recall@5 | "
        "recall@10 | params | routing/reranking % | n_seeds |"
    )
    width = half_width([40.0, 41.0, 42.0])  # the LSR's ndcg@10 over the seeds
    assert f"{width:.1f}" == "2.5"
    lsr = ["90.0 ± 0.0"] * 2 + ["36.0 ± 2.5", "41.0 ± 2.5"] * 3 + ["1,538", "1.25 ± 0.00", "3"]
    assert table2[2:] == [
        "| none | – | – | " + " | ".join(["26.0 ± 2.5", "31.0 ± 2.5"] * 3) + " | 0 | "
        "0.00 ± 0.00 | 3 |",
        "| oracle | 100.0 ± 0.0 | 100.0 ± 0.0 | "
        + " | ".join(["38.0 ± 2.5", "43.0 ± 2.5"] * 3)
        + " | 0 | 0.00 ± 0.00 | 3 |",
        "| lsr | " + " | ".join(lsr) + " |",
    ]
    with open(tmp_path / "table2.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][:7] == [
        "router",
        "accuracy",
        "accuracy ci_low",
        "accuracy ci_high",
        "macro-F1",
        "macro-F1 ci_low",
        "macro-F1 ci_high",
    ]
    assert rows[0][-6:] == [
        "params",
        "routing/reranking %",
        "routing/reranking % ci_low",
        "routing/reranking % ci_high",
        "n_seeds",
        "run",
    ]
    ndcg10 = rows[0].index("ndcg@10")
    assert [float(v) for v in rows[3][ndcg10 : ndcg10 + 3]] == [41.0, 41.0 - width, 41.0 + width]
    assert rows[3][-2:] == ["3", str(tmp_path / "0_seed=0")]
    first = tmp_path / "0_seed=0"
    assert (tmp_path / "table3.md").read_text().splitlines()[:7] == [
        f"{first}, 3 seeds, ndcg@10 ± 95% CI (Δ vs base):",
        "",
        "| model | legal | medical |",
        "|---|---:|---:|",
        "| base | 20.0 ± 0.0 | 30.0 ± 0.0 |",
        "| legal | 27.0 ± 2.5 (+7.0) | 31.0 ± 2.5 (+1.0) |",  # 30.96 - 30 = 0.96
        "| medical | 17.5 ± 0.0 (-2.5) | 38.0 ± 0.0 (+8.0) |",
    ]
    table3 = (tmp_path / "table3.csv").read_text().splitlines()
    assert table3[0] == "model,domain,ndcg@10,ndcg@10 ci_low,ndcg@10 ci_high,Δ vs base,n_seeds,run"
    assert table3[1] == f"base,legal,20.0,20.0,20.0,,3,{first}"
    # Paired: d = HIT - MISS per query the LSR misses. Legal (-d, -d, 0): the exact test's
    # 8 sign flips reach a sum <= -2d in 2, p = 2 * 2/8; medical (-d/3, 0): p = 2 * 2/4,
    # capped at 1; all (-d, -d, 0, -d/3, 0): 4 of 32 flips reach <= -7d/3, p = 2 * 4/32.
    d = HIT - MISS
    with open(tmp_path / "paired.csv", newline="") as f:
        paired = [r for r in csv.reader(f) if r[0] == "lsr vs oracle"]
    assert [(r[1], r[2], float(r[4])) for r in paired] == [
        ("legal", "3", 0.5),
        ("medical", "2", 1.0),
        ("all", "5", 0.25),
    ]
    assert [float(r[3]) for r in paired] == pytest.approx([-2 * d / 3, -d / 6, -7 * d / 15])
    md = (tmp_path / "paired.md").read_text()
    assert "| lsr vs oracle | all | 5 | -17.2 | 0.25 |" in md
    assert "none vs oracle" not in md and "oracle vs oracle" not in md
