"""The main job: data -> BM25 baseline -> zero-shot backbone -> one LoRA expert per domain.

This is the only module that reads the Hydra config; everything it calls takes plain
arguments. Returns the flat metric dict (keys `stage/domain/metric@k`).
"""

from __future__ import annotations

import json
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
from r2r.models.experts import add_lora, save_adapter
from r2r.models.scorer import RerankerScorer
from r2r.types import RetrievalDataset

log = logging.getLogger(__name__)
STAGES = ("bm25", "zero_shot", "fine_tuned")


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


def make_trainer(cfg: DictConfig, loggers: list, callbacks: list) -> L.Trainer:
    return instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks)


def run(cfg: DictConfig) -> dict[str, float]:
    started = time.perf_counter()
    L.seed_everything(cfg.seed, workers=True)
    out = Path(cfg.paths.output)
    loggers = list(instantiate(cfg.logger).values()) if cfg.get("logger") else []

    datasets = load_datasets(cfg)
    miner = BM25Miner(instantiate(cfg.mining), cache_dir=Path(cfg.paths.cache) / "mining")
    backbone = instantiate(cfg.backbone)
    encoder = PairEncoder(backbone.tokenizer, backbone.template, **cfg.inputs)

    def datamodule(domains: dict[str, RetrievalDataset]) -> RerankDataModule:
        return RerankDataModule(domains, miner, encoder, seed=cfg.seed, **cfg.datamodule)

    every_domain = datamodule(datasets)
    test_lists = every_domain.candidate_lists("test")
    scored = {"bm25": first_stage(test_lists)}
    metrics = evaluate(scored["bm25"], "bm25")

    # Zero-shot: the frozen backbone as it comes, on every domain's test lists at once.
    zero_shot = RerankerModule(
        RerankerScorer.from_backbone(backbone),
        loss=instantiate(cfg.loss),
        optimizer=instantiate(cfg.optimizer),
        test_stage="zero_shot",
    )
    make_trainer(cfg, loggers, []).test(zero_shot, datamodule=every_domain, verbose=False)
    scored["zero_shot"] = zero_shot.last_scored
    metrics |= evaluate(scored["zero_shot"], "zero_shot")

    # One expert per domain, each trained from the same frozen base and scored on its own
    # domain's test lists; the pooled `fine_tuned/all` row routes each query to its expert.
    scored["fine_tuned"] = []
    model = backbone.model
    for domain, dataset in datasets.items():
        log.info("training the %s expert", domain)
        model = add_lora(model, **cfg.lora)
        module = RerankerModule(
            RerankerScorer.from_backbone(backbone, model),
            loss=instantiate(cfg.loss),
            optimizer=instantiate(cfg.optimizer),
            scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
            test_stage="fine_tuned",
        )
        dm = datamodule({domain: dataset})
        trainer = make_trainer(cfg, loggers, [BestAdapter(**cfg.best_adapter)])
        trainer.fit(module, datamodule=dm)
        trainer.test(module, datamodule=dm, verbose=False)
        scored["fine_tuned"] += module.last_scored
        save_adapter(model, out / "experts" / domain)
        model = model.unload()  # back to the bare base for the next domain
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
    log.debug(json.dumps(metrics))
    return metrics
