"""The main job: data -> BM25 baseline -> zero-shot backbone -> [EAG stage 1] -> one LoRA
expert per domain -> routers and routed reranking over the experts.

This is the only module that reads the Hydra config; everything it calls takes plain
arguments. Returns the flat metric dict (keys `stage/domain/metric@k`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from r2r import tracking
from r2r.data.datamodule import MASKED, PairEncoder, RerankDataModule
from r2r.data.mining import BM25Miner
from r2r.evaluation import evaluate, first_stage, results_table, trec_qrels, trec_run
from r2r.files import write_json_atomic, write_text_atomic
from r2r.lit_reranker import BestAdapter, RerankerModule
from r2r.models.backbones import Backbone
from r2r.models.experts import add_lora, load_adapter, save_adapter, start_expert
from r2r.models.scorer import RerankerScorer
from r2r.routing import NoRouter, build_router
from r2r.routing.evaluation import (
    evaluate_router,
    forgetting,
    routing_report,
    routing_rows,
    routing_summary,
    score_matrix,
)
from r2r.routing.system import RoutedReranker
from r2r.sweep import clear_failure, finished_metrics, job_record, record_failure
from r2r.types import SPLITS, CandidateList, RetrievalDataset, ScoredList

log = logging.getLogger(__name__)
STAGES = ("bm25", "zero_shot", "stage1", "fine_tuned")


def load_datasets(cfg: DictConfig) -> dict[str, RetrievalDataset]:
    sources = cfg.data.sources
    missing = [d for d in cfg.domains if d not in sources]
    if len(missing) == len(cfg.domains):
        raise ValueError(
            f"data={cfg.data.name} has no domain among {list(cfg.domains)}; "
            f"it provides {list(sources)}"
        )
    if missing:
        log.warning("data=%s has no %s data; running %s", cfg.data.name, missing, list(sources))
    return {d: instantiate(sources[d]) for d in cfg.domains if d in sources}


def reseed(seed: int, *parts: str) -> None:
    """Seed every RNG for one adapter's training from (seed, stage, domain), so its LoRA
    initialisation, batch order and dropout do not depend on what ran before it (evaluation
    data loaders draw from the global RNG: an extra split would otherwise change training)."""
    digest = hashlib.sha256("/".join([str(seed), *parts]).encode()).digest()
    L.seed_everything(int.from_bytes(digest[:4], "big") % 2**31, workers=True, verbose=False)


def eval_splits(datasets: dict[str, RetrievalDataset]) -> list[str]:
    """`test`, then any further evaluation split a dataset has (the synthetic benchmark's
    in-distribution `test_seen`), by name."""
    extra = {
        split
        for dataset in datasets.values()
        for split in dataset.qrels
        if split not in SPLITS and dataset.split_queries(split)
    }
    return ["test", *sorted(extra)]


def stage_key(stage: str, split: str) -> str:
    """Metric prefix of a stage on a split: `fine_tuned` on test, `fine_tuned:test_seen`."""
    return stage if split == "test" else f"{stage}:{split}"


def test_on(
    trainer: L.Trainer,
    module: RerankerModule,
    datamodule: RerankDataModule,
    stage: str,
    splits: Sequence[str],
) -> dict[str, list[ScoredList]]:
    """Score `datamodule`'s candidate lists of each split; keys as `stage_key`."""
    scored = {}
    for split in splits:
        lists = datamodule.candidate_lists(split)
        if not lists:  # a domain without this split
            continue
        module.test_stage = stage_key(stage, split)
        trainer.test(module, dataloaders=datamodule.eval_dataloader(lists), verbose=False)
        scored[module.test_stage] = module.last_scored
    return scored


def fit_adapter(
    cfg: DictConfig,
    scorer: RerankerScorer,
    datamodule: RerankDataModule,
    loggers: list,
    *,
    steps: int,
    monitor: str,
    test_stage: str | None,
    name: str,
    splits: Sequence[str] = ("test",),
    trainer_overrides: dict | None = None,
) -> dict[str, list[ScoredList]]:
    """Train the scorer's adapter for `steps`, keep the best `monitor` weights, then score
    the `splits` as `test_stage` (none if it is None). `name` (`stage1`, `legal`) prefixes
    the training and validation keys of this adapter. `trainer_overrides` replace
    `cfg.trainer` keys."""
    module = RerankerModule(
        scorer,
        loss=instantiate(cfg.loss),
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler, num_training_steps=steps)
        if cfg.get("scheduler")
        else None,
        log_prefix=f"{name}/",
    )
    trainer = instantiate(
        cfg.trainer,
        **(trainer_overrides or {}),
        max_steps=steps,
        logger=loggers or False,
        callbacks=[BestAdapter(monitor=monitor, mode=cfg.best_adapter.mode)],
    )
    trainer.fit(module, datamodule=datamodule)
    if test_stage is None:
        return {}
    return test_on(trainer, module, datamodule, test_stage, splits)


def route_and_evaluate(
    cfg: DictConfig,
    backbone: Backbone,
    datasets: dict[str, RetrievalDataset],
    test_lists: Sequence[CandidateList],
    out: Path,
) -> dict:
    """Fit every router in `cfg.routers` on the training queries' domains, evaluate each on
    the pooled test lists (Table 2) next to every expert on every domain (forgetting), save
    the `routing.deploy` router with the experts as `system/`. Writes routing.{md,json}."""
    domains = list(datasets)
    if len(domains) < 2:
        log.info("routing skipped: one domain (%s), nothing to route", domains)
        return {}
    texts = [q.text for d in domains for q in datasets[d].split_queries("train")]
    labels = [d for d in domains for _ in datasets[d].split_queries("train")]
    system = RoutedReranker(
        backbone,
        {d: out / "experts" / d for d in domains},
        NoRouter(domains),
        threshold=cfg.routing.threshold,
        inputs=OmegaConf.to_container(cfg.inputs, resolve=True),
        batch_size=cfg.datamodule.eval_batch_size,
        backbone_config=OmegaConf.to_container(cfg.backbone, resolve=True),
    )
    matrix = score_matrix(system, test_lists)
    results, routers = [], {}
    for name, spec in cfg.routers.items():
        settings = OmegaConf.to_container(spec, resolve=True)
        routers[name] = build_router(
            settings.pop("kind"),
            domains,
            settings,
            backbone=backbone,
            model=system.model,
            cache_dir=Path(cfg.paths.cache) / "features",
        )
        started = time.perf_counter()
        routers[name].fit(texts, labels)
        fit_s = time.perf_counter() - started
        results.append(replace(evaluate_router(name, routers[name], system, matrix), fit_s=fit_s))
    if cfg.routing.deploy:
        system.router = routers[cfg.routing.deploy]
        system.save(out / "system")
    table = forgetting(matrix)
    counts = {
        "domains": domains,
        "n_queries": len(test_lists),
        "n_unseen": len({c.query.text for c in test_lists} - set(texts)),
    }
    report = routing_report(results, table, **counts)
    write_text_atomic(out / "routing.md", report)
    summary = routing_summary(results, table, deployed=cfg.routing.deploy, **counts)
    write_json_atomic(out / "routing.json", summary)
    print(report)
    return summary


def run(cfg: DictConfig) -> dict[str, float]:
    """One job: skipped when its output directory holds results of this same config
    (`skip_finished`); its loggers get the resolved config and are closed at the end; a
    failure is recorded as failed.json before it is raised."""
    out = Path(cfg.paths.output)
    config = OmegaConf.to_container(cfg, resolve=True)
    if cfg.skip_finished and (metrics := finished_metrics(out, config)) is not None:
        log.info("skipped: %s already holds this job's results", out)
        return metrics
    clear_failure(out)
    loggers = []
    try:
        check(cfg)  # before the loggers create any folder
        loggers = list(instantiate(cfg.logger).values()) if cfg.get("logger") else []
        tracking.start(loggers, config)
        metrics = train_and_test(cfg, loggers)
    except BaseException as error:
        record_failure(out, error)
        tracking.finish(loggers, "failed")
        raise
    tracking.finish(loggers, "success")
    return metrics


def launches_processes(cfg: DictConfig) -> bool:
    """Whether the trainer will start its own DDP processes: Lightning then re-runs the
    command line in each, which must be a single run (see run.py), unless the ranks were
    already started by torchrun or Slurm."""
    strategy = cfg.trainer.get("strategy")
    target = strategy.get("_target_", "") if isinstance(strategy, DictConfig) else str(strategy)
    external = any(k in os.environ for k in ("LOCAL_RANK", "SLURM_PROCID", "TORCHELASTIC_RUN_ID"))
    return "ddp" in target.lower() and not external


def check(cfg: DictConfig) -> None:
    """Config errors that would otherwise surface after training."""
    routers = list(cfg.get("routers") or {})
    if cfg.routing.enabled and cfg.routing.deploy and cfg.routing.deploy not in routers:
        raise ValueError(f"routing.deploy={cfg.routing.deploy!r} is not in routers {routers}")


def train_and_test(cfg: DictConfig, loggers: list) -> dict[str, float]:
    started = time.perf_counter()
    L.seed_everything(cfg.seed, workers=True)
    # Under DDP every rank runs the whole job (trainer calls must match across ranks). Rank
    # 0 owns the output directory; another rank keeps its own copy of the adapters (equal
    # to rank 0's: DDP keeps them in sync) in a scratch folder and stops before routing.
    rank = rank_zero_only.rank
    out = Path(cfg.paths.output) / (f".rank{rank}" if rank else "")

    datasets = load_datasets(cfg)
    miner = BM25Miner(instantiate(cfg.mining), cache_dir=Path(cfg.paths.cache) / "mining")
    backbone = instantiate(cfg.backbone)
    encoder = PairEncoder(backbone.tokenizer, backbone.template, **cfg.inputs)

    def datamodule(domains: dict[str, RetrievalDataset], masker=None) -> RerankDataModule:
        return RerankDataModule(
            domains,
            miner,
            encoder,
            masker=masker,
            eval_masker=eval_masker,
            seed=cfg.seed,
            **cfg.datamodule,
        )

    eval_masker = None
    every_domain = datamodule(datasets)
    splits = eval_splits(datasets)
    if cfg.mask_test:
        # Diagnostic split `test_masked`: test lists abstracted by `masking` (fitted on the
        # training groups), scored at every stage.
        eval_masker = instantiate(cfg.masking).fit(every_domain.groups())
        every_domain = datamodule(datasets)
        splits.append("test" + MASKED)
    scored = {stage_key("bm25", sp): first_stage(every_domain.candidate_lists(sp)) for sp in splits}

    # Zero-shot: the frozen backbone as it comes, on every domain's test lists at once.
    if cfg.zero_shot:
        zero_shot = RerankerModule(
            RerankerScorer.from_backbone(backbone),
            loss=instantiate(cfg.loss),
            optimizer=instantiate(cfg.optimizer),
        )
        tester = instantiate(cfg.trainer, logger=loggers or False)
        scored |= test_on(tester, zero_shot, every_domain, "zero_shot", splits)

    # EAG stage 1 (curriculum=eag): one adapter on the union of the selected domains'
    # training groups, abstracted by the masking strategy; dev and test stay unmasked.
    base = backbone.model
    stage1 = cfg.curriculum.stage1
    stage1_dir: Path | None = None
    if stage1 and cfg.experts_from:
        log.info("stage 1 skipped: the experts come from %s", cfg.experts_from)
    elif stage1 and stage1.from_adapter:
        stage1_dir = Path(stage1.from_adapter)
    elif stage1:
        log.info("stage 1: one adapter on %s, masking=%s", list(datasets), cfg.masking._target_)
        reseed(cfg.seed, "stage1")
        model = add_lora(base, **cfg.lora)
        scored |= fit_adapter(
            cfg,
            RerankerScorer.from_backbone(backbone, model),
            datamodule(datasets, masker=instantiate(cfg.masking)),
            loggers,
            steps=stage1.max_steps,
            monitor=stage1.monitor,
            test_stage="stage1" if stage1.test else None,
            name="stage1",
            splits=splits,
            trainer_overrides=OmegaConf.to_container(stage1.trainer) if stage1.trainer else None,
        )
        stage1_dir = save_adapter(model, out / "stage1")
        model.unload()

    # Stage 2: one expert per domain (from the stage-1 adapter under EAG, else fresh), each
    # scored on its own domain's test lists; `fine_tuned/all` routes each query to its expert.
    for domain, dataset in datasets.items():
        if cfg.experts_from:
            # Reuse a finished run's expert: scored and copied, not trained.
            source = Path(cfg.experts_from) / "experts" / domain
            log.info("the %s expert from %s", domain, source)
            model = load_adapter(base, source)
            expert = test_on(
                instantiate(cfg.trainer, logger=loggers or False),
                RerankerModule(
                    RerankerScorer.from_backbone(backbone, model),
                    loss=instantiate(cfg.loss),
                    optimizer=instantiate(cfg.optimizer),
                ),
                datamodule({domain: dataset}),
                "fine_tuned",
                splits,
            )
        else:
            log.info("training the %s expert", domain)
            reseed(cfg.seed, "stage2", domain)
            model = start_expert(base, init_from=stage1_dir, **cfg.lora)
            expert = fit_adapter(
                cfg,
                RerankerScorer.from_backbone(backbone, model),
                datamodule({domain: dataset}),
                loggers,
                steps=cfg.trainer.max_steps,
                monitor=cfg.best_adapter.monitor,
                test_stage="fine_tuned",
                name=domain,
                splits=splits,
            )
        for key, items in expert.items():
            scored[key] = scored.get(key, []) + items
        save_adapter(model, out / "experts" / domain)
        model.unload()  # back to the bare base for the next domain
    metrics = {}
    for key, items in scored.items():
        metrics |= evaluate(items, key)
    if rank:
        shutil.rmtree(out, ignore_errors=True)
        return metrics
    routing = {}
    if cfg.routing.enabled and cfg.get("routers"):
        test_lists = every_domain.candidate_lists("test")
        routing = route_and_evaluate(cfg, backbone, datasets, test_lists, out)

    wall = time.perf_counter() - started
    table = results_table(metrics, [stage_key(st, sp) for sp in splits for st in STAGES])
    write_text_atomic(out / "results.md", table)
    # TREC files let any trec_eval-compatible tool re-score the run.
    for split in splits:
        name = f"qrels.{split}.trec"
        write_text_atomic(out / "runs" / name, trec_qrels(every_domain.candidate_lists(split)))
    for key, items in scored.items():
        write_text_atomic(out / "runs" / f"{key.replace(':', '.')}.trec", trec_run(items, key))
    write_json_atomic(
        out / "results.json",
        {
            "metrics": metrics,
            "wall_time_s": round(wall, 1),
            "config": OmegaConf.to_container(cfg, resolve=True),
            "job": job_record(),
        },
    )
    tracking.log_results(loggers, metrics, {"routing": routing_rows(routing)} if routing else None)
    print(table)
    print(f"results: {out / 'results.json'} ({wall:.0f} s)")
    return metrics
