"""A sweep's one-domain experts, assembled into one routed job per group (Tables 2 and 3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from r2r.assemble import assemble, groups, main
from r2r.pipeline import run
from r2r.routing.system import RoutedReranker


def write_results(folder: Path, domain: str, backbone: str, **extra) -> None:
    folder.mkdir(parents=True)
    config = {
        "backbone": {"arch": backbone},
        "domain": {"names": [domain] if isinstance(domain, str) else domain},
        "paths": {"output": str(folder), "cache": "/cache"},
        # A path inside the job's own folder is not a setting.
        "trainer": {"default_root_dir": str(folder)},
        "logger": {"csv": {"save_dir": str(folder)}},
        **extra,
    }
    (folder / "results.json").write_text(json.dumps({"metrics": {}, "config": config}))


def test_jobs_that_differ_only_in_their_domain_form_a_group(tmp_path: Path) -> None:
    for i, (domain, backbone) in enumerate(
        [("legal", "qwen"), ("medical", "qwen"), ("legal", "mistral"), ("finance", "mistral")]
    ):
        write_results(tmp_path / f"{i}_job", domain, backbone)
    write_results(tmp_path / "4_alone", "legal", "gemma")  # no other domain: no group
    write_results(tmp_path / "5_both", ["legal", "medical"], "qwen")  # routes by itself
    write_results(tmp_path / "6_other_lr", "medical", "qwen", optimizer={"lr": 0.1})
    write_results(tmp_path / "7_again", "legal", "qwen")  # the first job of a domain is kept
    assert groups(tmp_path) == [
        {"legal": tmp_path / "0_job", "medical": tmp_path / "1_job"},
        {"legal": tmp_path / "2_job", "finance": tmp_path / "3_job"},
    ]


def test_assembling_routes_the_experts_of_two_one_domain_jobs(make_cfg, tmp_path) -> None:
    sweep = tmp_path / "sweep"
    cheap = ["~routers.embedding_mlp", "~routers.tfidf", "~routers.random", "zero_shot=false"]
    metrics = {}
    for domain in ("legal", "medical"):
        out = sweep / f"job_{domain}"
        metrics[domain] = run(
            make_cfg("debug=fast", f"domain={domain}", "logger=none", f"paths.output={out}", *cheap)
        )
    (folder,) = assemble(sweep)
    assert folder == sweep / "assembled" / "0_all"  # no overrides besides the domain
    results = json.loads((folder / "results.json").read_text())
    assert results["job"]["choices"] == {"domain": "legal+medical"}
    for domain in ("legal", "medical"):  # the experts are reused, not trained again
        key = f"fine_tuned/{domain}/ndcg@10"
        assert results["metrics"][key] == pytest.approx(metrics[domain][key], abs=1e-9)
    routing = json.loads((folder / "routing.json").read_text())
    assert sorted(routing["routers"]) == ["lsr", "lsr@0.6", "none", "oracle"]
    assert sorted(routing["forgetting"]) == ["base", "legal", "medical"]
    system = RoutedReranker.load(folder / "system")
    assert system.experts == ["legal", "medical"]
    assert system.rerank("What did the court hold?", ["a ruling", "a dose"]).expert in (
        "legal",
        "medical",
    )
    # Done once: a second call finds its results and skips the job.
    assert main([str(sweep)]) == 0
    assert json.loads((folder / "results.json").read_text())["metrics"] == results["metrics"]
