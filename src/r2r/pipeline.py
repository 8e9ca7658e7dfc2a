"""The main job: data -> BM25 baseline -> zero-shot backbone -> [EAG stage 1] -> one LoRA
expert per domain.

This is the only module that reads the Hydra config; everything it calls takes plain
arguments. Returns the flat metric dict (keys `stage/domain/metric@k`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from r2r.data.datamodule import PairEncoder, RerankDataModule
from r2r.data.io import write_json_atomic, write_text_atomic
from r2r.data.mining import BM25Miner
from r2r.evaluation import evaluate, first_stage, results_table, trec_qrels, trec_run
from r2r.lit_reranker import BestAdapter, RerankerModule
from r2r.models.experts import add_lora, save_adapter, start_expert
from r2r.models.scorer import RerankerScorer
from r2r.types import RetrievalDataset

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


def fit_adapter(
    cfg: DictConfig,
    scorer: RerankerScorer,
    datamodule: RerankDataModule,
    loggers: list,
    *,
    steps: int,
    monitor: str,
    test_stage: str | None,
    trainer_overrides: dict | None = None,
) -> RerankerModule:
    """Train the scorer's adapter for `steps`, keep the best `monitor` weights, then test
    (unless `test_stage` is None). `trainer_overrides` replace `cfg.trainer` keys."""
    module = RerankerModule(
        scorer,
        loss=instantiate(cfg.loss),
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler, num_training_steps=steps)
        if cfg.get("scheduler")
        else None,
        test_stage=test_stage or "test",
    )
    trainer = instantiate(
        cfg.trainer,
        **(trainer_overrides or {}),
        max_steps=steps,
        logger=loggers or False,
        callbacks=[BestAdapter(monitor=monitor, mode=cfg.best_adapter.mode)],
    )
    trainer.fit(module, datamodule=datamodule)
    if test_stage is not None:
        trainer.test(module, datamodule=datamodule, verbose=False)
    return module


def run(cfg: DictConfig) -> dict[str, float]:
    started = time.perf_counter()
    L.seed_everything(cfg.seed, workers=True)
    out = Path(cfg.paths.output)
    loggers = list(instantiate(cfg.logger).values()) if cfg.get("logger") else []

    datasets = load_datasets(cfg)
    miner = BM25Miner(instantiate(cfg.mining), cache_dir=Path(cfg.paths.cache) / "mining")
    backbone = instantiate(cfg.backbone)
    encoder = PairEncoder(backbone.tokenizer, backbone.template, **cfg.inputs)

    def datamodule(domains: dict[str, RetrievalDataset], masker=None) -> RerankDataModule:
        return RerankDataModule(
            domains, miner, encoder, masker=masker, seed=cfg.seed, **cfg.datamodule
        )

    every_domain = datamodule(datasets)
    test_lists = every_domain.candidate_lists("test")
    scored = {"bm25": first_stage(test_lists)}
    metrics = evaluate(scored["bm25"], "bm25")

    # Zero-shot: the frozen backbone as it comes, on every domain's test lists at once.
    if cfg.zero_shot:
        zero_shot = RerankerModule(
            RerankerScorer.from_backbone(backbone),
            loss=instantiate(cfg.loss),
            optimizer=instantiate(cfg.optimizer),
            test_stage="zero_shot",
        )
        tester = instantiate(cfg.trainer, logger=loggers or False)
        tester.test(zero_shot, datamodule=every_domain, verbose=False)
        scored["zero_shot"] = zero_shot.last_scored
        metrics |= evaluate(scored["zero_shot"], "zero_shot")

    # EAG stage 1 (curriculum=eag): one adapter on the union of the selected domains'
    # training groups, abstracted by the masking strategy; dev and test stay unmasked.
    base = backbone.model
    stage1 = cfg.curriculum.stage1
    stage1_dir: Path | None = None
    if stage1 and stage1.from_adapter:
        stage1_dir = Path(stage1.from_adapter)
    elif stage1:
        log.info("stage 1: one adapter on %s, masking=%s", list(datasets), cfg.masking._target_)
        model = add_lora(base, **cfg.lora)
        module = fit_adapter(
            cfg,
            RerankerScorer.from_backbone(backbone, model),
            datamodule(datasets, masker=instantiate(cfg.masking)),
            loggers,
            steps=stage1.max_steps,
            monitor=stage1.monitor,
            test_stage="stage1" if stage1.test else None,
            trainer_overrides=OmegaConf.to_container(stage1.trainer) if stage1.trainer else None,
        )
        if stage1.test:
            scored["stage1"] = module.last_scored
            metrics |= evaluate(scored["stage1"], "stage1")
        stage1_dir = save_adapter(model, out / "stage1")
        model.unload()

    # Stage 2: one expert per domain (from the stage-1 adapter under EAG, else fresh), each
    # scored on its own domain's test lists; `fine_tuned/all` routes each query to its expert.
    scored["fine_tuned"] = []
    for domain, dataset in datasets.items():
        log.info("training the %s expert", domain)
        model = start_expert(base, init_from=stage1_dir, **cfg.lora)
        module = fit_adapter(
            cfg,
            RerankerScorer.from_backbone(backbone, model),
            datamodule({domain: dataset}),
            loggers,
            steps=cfg.trainer.max_steps,
            monitor=cfg.best_adapter.monitor,
            test_stage="fine_tuned",
        )
        scored["fine_tuned"] += module.last_scored
        save_adapter(model, out / "experts" / domain)
        model.unload()  # back to the bare base for the next domain
    metrics |= evaluate(scored["fine_tuned"], "fine_tuned")

    wall = time.perf_counter() - started
    table = results_table(metrics, STAGES)
    write_text_atomic(out / "results.md", table)
    # TREC files let any trec_eval-compatible tool re-score the run.
    write_text_atomic(out / "runs" / "qrels.test.trec", trec_qrels(test_lists))
    for stage, items in scored.items():
        write_text_atomic(out / "runs" / f"{stage}.trec", trec_run(items, stage))
    write_json_atomic(
        out / "results.json",
        {
            "metrics": metrics,
            "wall_time_s": round(wall, 1),
            "config": OmegaConf.to_container(cfg, resolve=True),
        },
    )
    for logger in loggers:
        logger.log_metrics(metrics)
        logger.save()
    print(table)
    print(f"results: {out / 'results.json'} ({wall:.0f} s)")
    return metrics
