"""The main job, as named stages: baselines -> curriculum (adapters) -> evaluated rows ->
routing -> outputs.

This is the only module that reads the Hydra config; everything it calls takes plain
arguments. Each stage takes what it needs and returns what it made. `run` returns the flat
metric dict (keys `stage[:split]/domain/metric@k`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from r2r import fusion, progress, tracking
from r2r.checkpoints import RECORD, PeriodicCheckpoint, reusable
from r2r.curriculum import JOINT, Stage, in_order
from r2r.data.datamodule import MASKED, QuerySet, RerankDataModule
from r2r.data.masking.strategies import Masker
from r2r.data.mining import BM25Miner
from r2r.devices import resolve_device, world
from r2r.errors import DataError
from r2r.evaluation import (
    CEILING,
    ceiling,
    collapsed,
    dense,
    evaluate,
    first_stage,
    results_table,
    trec_qrels,
    trec_run,
)
from r2r.files import atomic_path, write_json_atomic, write_text_atomic
from r2r.fusion import Fusion
from r2r.lit_progress import TrainingProgress
from r2r.lit_reranker import BestAdapter, NonFiniteLoss, RerankerModule, val_check_batches
from r2r.losses import check_loss
from r2r.models.backbones import Backbone
from r2r.models.experts import (
    ADAPTER_FILES,
    ExpertBank,
    load_adapter,
    save_adapter,
    start_expert,
)
from r2r.models.scorer import RerankerScorer
from r2r.models.templates import PairEncoder
from r2r.routing import build_router
from r2r.routing.embeddings import MiniLMFeaturizer
from r2r.routing.evaluation import (
    RouterResult,
    ScoreMatrix,
    evaluate_router,
    forgetting,
    routed_row,
    routing_report,
    routing_summary,
    score_matrix,
)
from r2r.routing.probes import load_probes
from r2r.routing.pseudo import pseudo_queries
from r2r.routing.system import RoutedReranker
from r2r.sweep import (
    Interrupted,
    clear_failure,
    finished_metrics,
    job_record,
    record_failure,
)
from r2r.types import SPLITS, LabelledQueries, RetrievalDataset, ScoredList

log = logging.getLogger(__name__)
Adapters = dict[str, dict[str, Path]]  # stage -> unit (domain, or JOINT) -> adapter folder
Scored = dict[str, list[ScoredList]]  # row (`stage[:split]`) -> scored lists


@dataclass(frozen=True)
class Job:
    """What every stage of one job shares: its data, backbone and output directory."""

    cfg: DictConfig
    out: Path
    datasets: dict[str, RetrievalDataset]
    backbone: Backbone
    miner: BM25Miner
    eval_masker: Masker | None
    loggers: list
    # Every domain's evaluation lists and router queries (one DataModule, built once).
    data: RerankDataModule | None = None

    @property
    def domains(self) -> list[str]:
        return list(self.datasets)

    def datamodule(
        self, domains: Sequence[str] | None = None, masker: Masker | None = None
    ) -> RerankDataModule:
        return RerankDataModule(
            {d: self.datasets[d] for d in domains or self.domains},
            self.miner,
            PairEncoder(self.backbone.tokenizer, self.backbone.template, **self.cfg.inputs),
            training=instantiate(self.cfg.training),
            masker=masker,
            eval_masker=self.eval_masker,
            seed=self.cfg.seed,
            # The evaluation sample (max_queries) follows the data split's seed, not training's.
            sample_seed=self.cfg.data.get("seed", self.cfg.seed),
            **self.cfg.datamodule,
        )

    @property
    def device(self) -> torch.device:
        """Where this job evaluates: the device the trainer used (under DDP, this rank's
        own); Lightning hands the model back on the CPU after every fit."""
        return resolve_device(self.cfg.trainer.accelerator)

    def bank(self, adapters: Mapping[str, Path]) -> ExpertBank:
        """The adapters on the backbone, on the job's device."""
        return ExpertBank(
            self.backbone,
            adapters,
            inputs=OmegaConf.to_container(self.cfg.inputs, resolve=True),
            batch_size=self.cfg.datamodule.eval_batch_size,
            device=self.device,
            scorer=OmegaConf.to_container(self.cfg.scorer, resolve=True),
        )


# ---------------------------------------------------------------------------- the job
def run(cfg: DictConfig) -> dict[str, float]:
    """One job: skipped when its output directory holds results of this same config
    (`skip_finished`); its loggers get the resolved config and are closed at the end; a
    failure is recorded as failed.json before it is raised."""
    out = Path(cfg.paths.output)
    try:  # a missing model or raw-data folder fails here (r2r.config): this job's failure
        config = OmegaConf.to_container(cfg, resolve=True)
    except InterpolationResolutionError as error:
        record_failure(out, error)
        raise
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


def train_and_test(cfg: DictConfig, loggers: list) -> dict[str, float]:
    """baselines -> curriculum -> evaluated rows -> routing -> outputs; the metric dict."""
    started = time.perf_counter()
    job = prepare(cfg, loggers)
    adapters = train_curriculum(job)
    # Under DDP every rank scores its share of the evaluation lists and gets all the scores.
    rank, size = world()
    log.info("evaluation on %s: rank %d of %d scores 1 list in %d", job.device, rank, size, size)
    splits = eval_splits(job)
    scored = baselines(job, splits) | stage_rows(job, adapters, splits)
    fused = fit_fusion(job, adapters[last_stage(cfg)]) if fuses(job) else None
    if fused:
        scored |= fused_rows(fused, scored, last_stage(cfg), splits)
    experts = expert_matrix(job, adapters[last_stage(cfg)]) if routes(job) else None
    if rank_zero_only.rank:  # DDP: rank 0 goes on alone and writes; this rank's copy goes
        shutil.rmtree(job.out, ignore_errors=True)
        return {}
    alone()
    metrics = {k: v for row, items in scored.items() for k, v in evaluate(items, row).items()}
    metrics |= ceilings(job, splits)
    routing = route(job, *experts, fused) if experts else {}
    write_outputs(job, splits, scored, metrics, routing, fused, time.perf_counter() - started)
    return metrics


def alone() -> None:
    """After DDP training, rank 0 goes on by itself: without the process group, nothing
    later (a router's metrics, a trainer) waits for the ranks that have finished."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def check(cfg: DictConfig) -> None:
    """Config errors that would otherwise surface after data preparation or training."""
    routers = list(cfg.get("routers") or {})
    if cfg.routing.enabled and cfg.routing.deploy and cfg.routing.deploy not in routers:
        raise ValueError(f"routing.deploy={cfg.routing.deploy!r} is not in routers {routers}")
    if unknown := sorted(set(cfg.mining.depth) - set(cfg.data.sources)):
        raise ValueError(
            f"mining.depth names {unknown}, not a domain of data={cfg.data.name} "
            f"({list(cfg.data.sources)})"
        )
    training = instantiate(cfg.training)
    check_loss(instantiate(cfg.loss), training.shape, teacher=bool(training.teacher))
    stages(cfg)


def launches_processes(cfg: DictConfig) -> bool:
    """Whether the trainer will start its own DDP processes: Lightning then re-runs the
    command line in each, which must be a single run (see run.py), unless the ranks were
    already started by torchrun or Slurm."""
    strategy = cfg.trainer.get("strategy")
    target = strategy.get("_target_", "") if isinstance(strategy, DictConfig) else str(strategy)
    external = any(k in os.environ for k in ("LOCAL_RANK", "SLURM_PROCID", "TORCHELASTIC_RUN_ID"))
    return "ddp" in target.lower() and not external


# ---------------------------------------------------------------------------- stages
def prepare(cfg: DictConfig, loggers: list) -> Job:
    """Datasets of the selected domains, the miner, the frozen backbone and (mask_test) the
    masker of the `test_masked` lists, fitted on the training groups."""
    L.seed_everything(cfg.seed, workers=True)
    progress.configure(**cfg.progress)
    log.info(headline(cfg))
    sources, wanted = cfg.data.sources, list(cfg.domain.names)
    if not (found := [d for d in wanted if d in sources]):
        raise ValueError(
            f"data={cfg.data.name} has no domain among {wanted}; it has {list(sources)}"
        )
    if missing := [d for d in wanted if d not in sources]:
        log.warning("data=%s has no %s data; running %s", cfg.data.name, missing, found)
    # Under DDP another rank keeps its own copy of the adapters in a scratch folder.
    rank = rank_zero_only.rank
    out = Path(cfg.paths.output) / (f".rank{rank}" if rank else "")
    # The backbone first: a model that cannot be found fails before any data work.
    backbone = instantiate(cfg.backbone)
    miner = BM25Miner(instantiate(cfg.mining), cache_dir=Path(cfg.paths.cache) / "mining")
    datasets = {d: instantiate(sources[d]) for d in found}
    testable(datasets)
    job = Job(cfg, out, datasets, backbone, miner, None, loggers)
    # mask_test: the masker of the `test_masked` lists, fitted on the training groups.
    masker = instantiate(cfg.masking).fit(job.datamodule().groups()) if cfg.mask_test else None
    job = replace(job, eval_masker=masker)
    return replace(job, data=job.datamodule())


def testable(datasets: Mapping[str, RetrievalDataset]) -> None:
    """Every selected domain can be tested, before any model or data work: a domain without
    a test query with a positive (qrels/test.tsv missing, misnamed or all zero) would drop
    out of every test row and leave the pooled `all` row covering the others only."""
    for domain, dataset in datasets.items():
        if not dataset.split_queries("test"):
            raise DataError(
                f"domain {domain!r} has no test query with a positive (its qrels/test.tsv "
                "is missing, empty or all zero): it cannot be tested; fix its data or "
                f"leave it out of domain.names ({list(datasets)})",
                file=dataset.name,
            )


def headline(cfg: DictConfig) -> str:
    """One line that says what this run is: backbone, data, device, precision, lr, steps."""
    choice = job_record()["choices"].get("backbone")
    backbone = cfg.backbone.get("name_or_path") or choice or cfg.backbone._target_
    accelerator = cfg.trainer.accelerator
    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    return (
        f"backbone {backbone} | data {cfg.data.name} {list(cfg.domain.names)} | device "
        f"{accelerator} | precision {cfg.trainer.precision} | lr {cfg.optimizer.lr:g} | steps "
        f"{cfg.trainer.max_steps} | training {cfg.training.mode}, loss "
        f"{cfg.loss._target_.rsplit('.', 1)[-1]}"
    )


def stages(cfg: DictConfig) -> dict[str, Stage]:
    """The curriculum's stages in training order."""
    return dict(in_order({name: instantiate(node) for name, node in cfg.curriculum.items()}))


def last_stage(cfg: DictConfig) -> str:
    """The stage that trains the experts."""
    return list(stages(cfg))[-1]


def train_curriculum(job: Job) -> Adapters:
    """Every stage's adapters, trained (or copied from `reuse`) and saved in order."""
    adapters: Adapters = {}
    for name, stage in stages(job.cfg).items():
        adapters[name] = {}
        for unit in stage.units(job.domains):
            init = None if stage.init is None else initial(adapters[stage.init], unit)
            train = reuse_adapter if stage.reuse else train_adapter
            try:
                adapters[name][unit] = train(job, name, stage, unit, init)
            except (Interrupted, NonFiniteLoss) as stop:  # failed.json says where
                stop.where = stop.where or f"stage {name}, the {unit} adapter"
                raise
    return adapters


def initial(adapters: Mapping[str, Path], unit: str) -> Path:
    """The adapter an adapter of `unit` starts from: its own domain's, else the joint one."""
    return adapters[unit] if unit in adapters else adapters[JOINT]


def train_adapter(job: Job, name: str, stage: Stage, unit: str, init: Path | None) -> Path:
    """Train one adapter of `stage` for `unit` and save it; the base is bare again after.
    A rerun into the same output directory reuses the adapter saved with this same config,
    or resumes its training from the last checkpoint (`checkpoint.every_n_steps`)."""
    cfg = job.cfg
    record = adapter_record(cfg, name, stage, init)
    root = Path(cfg.paths.output)  # rank 0's: under DDP every rank decides alike
    if reusable(stage.path(root, unit), record):
        log.info(
            "stage %s: the %s adapter is already trained (%s), reused",
            name,
            unit,
            stage.path(root, unit),
        )
        return stage.path(root, unit)
    checkpoint = PeriodicCheckpoint(
        root / "checkpoints", f"{name}/{unit}", record=record, **cfg.checkpoint
    )
    if (step := checkpoint.resumable_step()) is None:
        log.info("stage %s: training the %s adapter", name, unit)
    else:
        log.info("stage %s: resuming the %s adapter from step %d", name, unit, step)
    domains = job.domains if unit == JOINT else [unit]
    datamodule = job.datamodule(domains, instantiate(cfg.masking) if stage.masked else None)
    reseed(cfg.seed, name, unit)
    model = start_expert(job.backbone.model, init_from=init, **cfg.lora)
    module = RerankerModule(
        RerankerScorer.from_backbone(job.backbone, model, **cfg.scorer),
        loss=instantiate(cfg.loss),
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler, num_training_steps=stage.max_steps),
        log_prefix=f"{name}/" if unit == JOINT else f"{unit}/",
    )
    replaced = {**(stage.trainer or {})}
    settings = {**cfg.trainer, **replaced}
    replaced["val_check_interval"] = val_check_batches(
        settings["val_check_interval"], settings.get("accumulate_grad_batches", 1)
    )
    replaced["enable_progress_bar"] = progress.lightning_bar(settings)
    trainer = instantiate(
        cfg.trainer,
        **replaced,
        max_steps=stage.max_steps,  # optimizer steps, in Lightning too
        logger=job.loggers or False,
        callbacks=[
            BestAdapter(monitor=stage.monitor, mode=cfg.best_adapter.mode),
            TrainingProgress(f"{name} {unit}"),
            checkpoint,  # last: it saves what BestAdapter chose at a validation
        ],
    )
    try:
        trainer.fit(
            module, datamodule=datamodule, ckpt_path=None if step is None else checkpoint.path
        )
    except Interrupted as stop:  # failed.json says where
        stop.where = f"stage {name}, the {unit} adapter, step {trainer.global_step}"
        raise
    folder = save_adapter(model, stage.path(job.out, unit), records={RECORD: record})
    model.unload()  # back to the bare base for the next adapter
    if trainer.is_global_zero:
        checkpoint.remove()
    return folder


def adapter_record(cfg: DictConfig, name: str, stage: Stage, init: Path | None) -> dict:
    """What decides the weights of an adapter of stage `name`: its config keys and the
    adapter it starts from (a digest of its files). A rerun reuses a saved adapter, or
    resumes a checkpoint, only of the same record."""
    config = OmegaConf.to_container(cfg, resolve=True)
    keys = [*ADAPTER_KEYS, *(["masking"] if stage.masked else [])]
    record = {key: config.get(key) for key in keys}
    record["curriculum"] = {name: config["curriculum"][name]}
    record["init"] = None if init is None else adapter_digest(init)
    return record


# The config keys an adapter's weights depend on (besides its stage and initial adapter).
ADAPTER_KEYS = (
    "seed",
    "backbone",
    "data",
    "domain",
    "mining",
    "inputs",
    "datamodule",
    "training",
    "loss",
    "lora",
    "optimizer",
    "scheduler",
    "trainer",
    "best_adapter",
)


def adapter_digest(folder: Path) -> str:
    """sha256 of an adapter's files (its config and weights)."""
    digest = hashlib.sha256()
    for file in ADAPTER_FILES:
        digest.update((folder / file).read_bytes())
    return digest.hexdigest()


def reuse_adapter(job: Job, name: str, stage: Stage, unit: str, init: Path | None) -> Path:
    """Copy `unit`'s adapter of `stage` from the finished run `stage.reuse`."""
    source = stage.path(Path(stage.reuse), unit)
    log.info("stage %s: the %s adapter from %s", name, unit, source)
    load_adapter(job.backbone.model, source).unload()  # fails early on a bad folder
    with atomic_path(stage.path(job.out, unit), kind="expert") as staged:
        shutil.copytree(source, staged)
    return stage.path(job.out, unit)


def reseed(seed: int, *parts: str) -> None:
    """Seed every RNG for one adapter's training from (seed, stage, unit), so its LoRA
    initialisation, batch order and dropout do not depend on what ran before it."""
    digest = hashlib.sha256("/".join([str(seed), *parts]).encode()).digest()
    L.seed_everything(int.from_bytes(digest[:4], "big") % 2**31, workers=True, verbose=False)


def eval_splits(job: Job) -> list[str]:
    """`test`, any further evaluation split a dataset has (the synthetic benchmark's
    in-distribution `test_seen`), by name, and `test_masked` under mask_test."""
    extra = {
        split
        for dataset in job.datasets.values()
        for split in dataset.qrels
        if split not in SPLITS and dataset.split_queries(split)
    }
    return ["test", *sorted(extra), *(["test" + MASKED] if job.eval_masker else [])]


def row_key(row: str, split: str) -> str:
    """Metric prefix of a row on a split: `fine_tuned` on test, `fine_tuned:test_seen`."""
    return row if split == "test" else f"{row}:{split}"


def baselines(job: Job, splits: Sequence[str]) -> Scored:
    """BM25's own ranking, MiniLM's (`baselines.dense`) and the bare backbone (zero_shot)
    when asked for, on the same lists."""
    lists = {split: job.data.candidate_lists(split) for split in splits}
    scored = {row_key("bm25", sp): first_stage(lists[sp]) for sp in splits}
    if job.cfg.baselines.dense and (encoder := dense_encoder(job.device)):
        # One call for every split: a text in several splits' lists is embedded once.
        pooled = iter(dense([c for sp in splits for c in lists[sp]], encoder))
        scored |= {row_key("dense", sp): [next(pooled) for _ in lists[sp]] for sp in splits}
    if job.cfg.zero_shot:
        bank = job.bank({})
        scored |= {
            row_key("zero_shot", sp): bank.score_lists(None, lists[sp], sharded=True)
            for sp in splits
        }
        bank.close()
    return scored


def dense_encoder(device: torch.device) -> MiniLMFeaturizer | None:
    """The MiniLM encoder of the dense row; None, with a warning, without its package (an
    optional baseline: the run goes on without the row)."""
    try:
        return MiniLMFeaturizer(device=device)
    except ImportError as error:
        log.warning("dense row skipped: %s", error)
        return None


def ceilings(job: Job, splits: Sequence[str]) -> dict[str, float]:
    """BM25's recall at the reranking depth on every split (`bm25[:split]/domain/
    recall@depth`): the most any row can recall. A warning names every domain below
    `baselines.min_recall`, whose rows then mostly measure the first stage's misses."""
    found = {
        k: v
        for sp in splits
        for k, v in ceiling(job.data.candidate_lists(sp), row_key("bm25", sp)).items()
    }
    for key, value in found.items():
        row, domain, _ = key.split("/")
        if domain in job.domains and value < job.cfg.baselines.min_recall:
            log.warning(
                "%s %s: the candidate lists (top %d) hold %.1f%% of the positives, below "
                "baselines.min_recall=%g; rerank deeper (mining.depth.%s)",
                row,
                domain,
                job.miner.settings.depth_of(domain),
                value,
                job.cfg.baselines.min_recall,
                domain,
            )
    return found


def stage_rows(job: Job, adapters: Adapters, splits: Sequence[str]) -> Scored:
    """Each tested stage's adapters on the evaluation lists: a joint adapter on every list,
    a domain's adapter on its own domain's lists."""
    scored: Scored = {}
    for name, stage in stages(job.cfg).items():
        if not stage.test:
            continue
        bank = job.bank(adapters[name])
        for split in splits:
            lists = job.data.candidate_lists(split)
            scored[row_key(name, split)] = [
                item
                for unit in adapters[name]
                for item in bank.score_lists(
                    unit, [c for c in lists if unit in (JOINT, c.domain)], sharded=True
                )
            ]
        bank.close()
    return scored


def fuses(job: Job) -> bool:
    """Whether the job fits the experts' fusion: their stage is tested (the `fused` row) or
    the job routes (system/ carries it); a train-only job scores no dev lists for it."""
    routing = job.cfg.routing.enabled and len(job.domains) > 1
    return stages(job.cfg)[last_stage(job.cfg)].test or routing


def fit_fusion(job: Job, experts: Mapping[str, Path]) -> Fusion:
    """Each expert's weight against the first stage (r2r.fusion), chosen on its own domain's
    dev lists (scored sharded, like the test lists); saved beside the experts."""
    bank = job.bank(experts)
    lists = job.data.candidate_lists("dev")
    dev = [
        item
        for unit in experts
        for item in bank.score_lists(unit, [c for c in lists if c.domain == unit], sharded=True)
    ]
    bank.close()
    fused = fusion.choose(dev, **job.cfg.fusion)
    fused.save(job.out / stages(job.cfg)[last_stage(job.cfg)].folder / fusion.FILE)
    log.info("fusion (%s): the experts' weights %s", fused.method, dict(fused.weights))
    return fused


def fused_rows(fused: Fusion, scored: Scored, stage: str, splits: Sequence[str]) -> Scored:
    """The `fused` row: the experts' rows (`stage`) fused with the first stage, per split
    (none where the stage is not tested)."""
    return {
        row_key("fused", split): [fused.fuse_list(item) for item in scored[row_key(stage, split)]]
        for split in splits
        if row_key(stage, split) in scored
    }


def routes(job: Job) -> bool:
    """Whether the job routes: asked to, and with more than one domain to route among."""
    if job.cfg.routing.enabled and len(job.domains) < 2:
        log.info("routing skipped: one domain (%s), nothing to route", job.domains)
    return job.cfg.routing.enabled and len(job.domains) > 1


def expert_matrix(job: Job, experts: Mapping[str, Path]) -> tuple[ExpertBank, ScoreMatrix]:
    """The experts' bank and the pooled test lists scored under each expert and the bare
    backbone (the routers' rows and the forgetting table read it); sharded under DDP."""
    bank = job.bank(experts)
    return bank, score_matrix(bank, job.domains, job.data.candidate_lists("test"), sharded=True)


def route(job: Job, bank: ExpertBank, matrix: ScoreMatrix, fused: Fusion | None) -> dict:
    """Fit every router in `routers` on the training queries' domains and the pseudo-queries
    (with the run's trainer), evaluate each on the pooled test lists (Table 2) and the probe
    questions, next to every expert on every domain (forgetting, `matrix`), and each
    `routing.fallback` router again with its threshold; save the `routing.deploy` router
    with the experts and their fusion as `system/`. Writes routing.{md,json} and each
    router's routed test ranking (`runs/routed.<router>.trec`); returns routing.json."""
    cfg = job.cfg
    pseudo = pseudo_queries(job.datasets, **cfg.routing.pseudo_queries)
    data = router_data(job.data, pseudo, seed=cfg.seed)
    probes = load_probes(cfg.routing.probes) if cfg.routing.probes else None
    results, systems = [], {}
    for name, factory in instantiate(cfg.routers).items():
        router = build_router(
            factory,
            job.domains,
            backbone=job.backbone,
            model=bank.model,
            cache_dir=Path(cfg.paths.cache) / "features",
        )
        started = time.perf_counter()
        router.fit(data, trainer=lambda epochs: router_trainer(job, epochs))
        systems[name] = RoutedReranker(
            bank,
            router,
            threshold=cfg.routing.threshold,
            backbone_config=OmegaConf.to_container(cfg.backbone, resolve=True),
            fusion=fused,
        )
        fit_s = time.perf_counter() - started
        results.append(evaluate_router(name, systems[name], matrix, fit_s=fit_s, probes=probes))
    for name, threshold in (cfg.routing.fallback or {}).items():
        if name in systems:  # a router dropped from `routers` has no fallback row
            fallback = RoutedReranker(bank, systems[name].router, threshold=threshold)
            results.append(
                evaluate_router(f"{name}@{threshold:g}", fallback, matrix, probes=probes)
            )
    if cfg.routing.deploy:
        systems[cfg.routing.deploy].save(job.out / "system")
    write_routed_runs(job, results)
    return write_routing(job, results, forgetting(matrix), data, probes, len(pseudo.texts))


def write_routed_runs(job: Job, results: Sequence[RouterResult]) -> None:
    """Each router's routed test ranking as a TREC run, for paired tests against the oracle."""
    for result in results:
        row = routed_row(result.name)
        write_text_atomic(job.out / "runs" / f"{row}.trec", trec_run(result.routed, row))


def router_data(data: RerankDataModule, pseudo: LabelledQueries, *, seed: int) -> QuerySet:
    """What routers learn from: the training queries with the pseudo-queries, and the dev
    queries (no pseudo-query among them: dev accuracy is on real queries)."""
    train = data.queries("train")
    both = LabelledQueries(train.texts + pseudo.texts, train.domains + pseudo.domains)
    return QuerySet(both, data.queries("dev"), seed=seed)


def router_trainer(job: Job, epochs: int) -> L.Trainer:
    """The run's trainer for a router's head: `routing.trainer` keys replaced, the
    router's own number of epochs; Lightning's bar only on a terminal (a head trains in
    seconds: no log lines)."""
    settings = {**job.cfg.trainer, **job.cfg.routing.trainer}
    return instantiate(
        job.cfg.trainer,
        **job.cfg.routing.trainer,
        max_epochs=epochs,
        logger=job.loggers or False,
        enable_progress_bar=progress.lightning_bar(settings),
    )


def write_routing(
    job: Job,
    results: list,
    table: dict,
    data: QuerySet,
    probes: LabelledQueries | None,
    n_pseudo: int,
) -> dict:
    test = job.data.candidate_lists("test")
    counts = {
        "domains": job.domains,
        "n_queries": len(test),
        "n_unseen": len({c.query.text for c in test} - set(data.queries("train").texts)),
        "n_probes": sum(d in job.domains for d in probes.domains) if probes else 0,
        "n_pseudo": n_pseudo,
    }
    report = routing_report(results, table, note=job.cfg.routing.note, **counts)
    write_text_atomic(job.out / "routing.md", report)
    summary = routing_summary(results, table, deployed=job.cfg.routing.deploy, **counts)
    write_json_atomic(job.out / "routing.json", summary)
    print(report)
    return summary


def ceiling_lines(job: Job, splits: Sequence[str], metrics: Mapping[str, float]) -> str:
    """results.md's lines on BM25's recall at each domain's reranking depth."""
    lines = ["\nBM25 recall at the reranking depth (the most any row can recall):\n"]
    for split in splits:
        keys = {d: f"{row_key('bm25', split)}/{d}/{CEILING}" for d in job.domains}
        cells = [
            f"{d} {metrics[key]:.1f} (top {job.miner.settings.depth_of(d)})"
            for d, key in keys.items()
            if key in metrics
        ]
        lines.append(f"- {split}: {', '.join(cells)}\n")
    return "".join(lines)


def write_outputs(
    job: Job,
    splits: Sequence[str],
    scored: Scored,
    metrics: dict,
    routing: dict,
    fused: Fusion | None,
    wall: float,
) -> None:
    """results.md / results.json, TREC qrels and runs (re-scorable by any trec_eval tool),
    and the final metrics to the loggers."""
    rows = ["bm25", "dense", "zero_shot", *stages(job.cfg), "fused"]
    table = results_table(metrics, [row_key(r, sp) for sp in splits for r in rows])
    counts = Counter(c.domain for c in job.data.candidate_lists("test"))
    table += "\n`all` pools the test queries of " + ", ".join(
        f"{d} ({counts[d]})" for d in job.domains
    )
    table += ".\n"
    if fused:
        table += (
            f"`fused` ({fused.method}): the experts' weight against the first stage, chosen "
            f"on dev {fused.metric}: "
            + ", ".join(f"{d} {w:g}" for d, w in fused.weights.items())
            + ".\n"
        )
    table += ceiling_lines(job, splits, metrics)
    # Rows whose scores are one value per list on a domain (collapsed training): flagged.
    flat = sorted(f"{key}/{d}" for key, items in scored.items() for d in collapsed(items))
    if flat:
        log.warning("collapsed scores (every list one tie): %s", ", ".join(flat))
        table += f"\nCollapsed (every list scored as one tie): {', '.join(flat)}\n"
    write_text_atomic(job.out / "results.md", table)
    for split in splits:
        qrels = trec_qrels(job.data.candidate_lists(split))
        write_text_atomic(job.out / "runs" / f"qrels.{split}.trec", qrels)
    for key, items in scored.items():
        write_text_atomic(job.out / "runs" / f"{key.replace(':', '.')}.trec", trec_run(items, key))
    results = {
        "metrics": metrics,
        "collapsed": flat,
        "fusion": fused.summary() if fused else None,
        "wall_time_s": round(wall, 1),
        "job": job_record(),
        "config": OmegaConf.to_container(job.cfg, resolve=True),
    }
    write_json_atomic(job.out / "results.json", results)
    tracking.log_results(job.loggers, metrics, tracking.routing_tables(routing))
    print(table)
    print(f"results: {job.out / 'results.json'} ({wall:.0f} s)")
