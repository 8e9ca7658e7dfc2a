"""Every config node binds to the signature it feeds, and its values have one home (YAML).

`binding_violations(cfg)` walks a composed config. A node with `_target_` is bound to that
callable; a node without one is bound through `FEEDS` (the callables the pipeline passes its
keys to); a value no callable reads must be listed in `READ_BY_PIPELINE`. Every key of a
bound node must be a parameter of its callable (a misspelt or ignored key fails), and a
parameter that a node of r2r's own sets must have no Python default: YAML is its one home.
Third-party callables (lightning, torch, transformers, wandb) are checked for key names only.
"""

from __future__ import annotations

import fnmatch
import functools
import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.utils import _locate
from omegaconf import DictConfig, OmegaConf

CONF = Path(__file__).resolve().parents[1] / "conf"

# Nodes without `_target_`, by path (`*`: any one key): the callables the pipeline passes
# their keys to as keyword arguments (every key must fit each of them).
FEEDS: dict[str, tuple[str, ...]] = {
    "inputs": ("r2r.models.templates.PairEncoder",),
    "datamodule": ("r2r.data.datamodule.RerankDataModule",),
    "lora": ("r2r.models.experts.add_lora", "r2r.models.experts.start_expert"),
    "scorer": ("r2r.models.scorer.RerankerScorer",),
    "best_adapter": ("r2r.lit_reranker.BestAdapter",),
    "checkpoint": ("r2r.checkpoints.PeriodicCheckpoint",),
    "progress": ("r2r.progress.configure",),
    "routing": ("r2r.routing.system.RoutedReranker",),
    "fusion": ("r2r.fusion.choose",),
    "routing.trainer": ("lightning.Trainer",),
    "routing.pseudo_queries": ("r2r.routing.pseudo.pseudo_queries",),
    "curriculum.*.trainer": ("lightning.Trainer",),
}

# Values no callable receives: the pipeline reads them itself (switches, labels, paths) or
# they are interpolated into nodes that are bound (`INTERPOLATED`). A path covers its subtree.
READ_BY_PIPELINE = (
    "seed",
    "domain.names",
    "zero_shot",
    "baselines",
    "experts_from",
    "mask_test",
    "skip_finished",
    "optimized_metric",
    "paths",
    "data.name",
    "data.sizes",
    "data.seed",
    "eag_steps",
    "routing.enabled",
    "routing.deploy",
    "routing.fallback",
    "routing.balanced",
    "routing.probes",
    "routing.note",
)
# Plain values that exist only to be interpolated: once any of a table's values is, all must
# be (a table no node reads is dormant: debug=fast sets data.sizes for data=real too).
INTERPOLATED = ("data.sizes", "data.seed", "eag_steps", "routing.balanced")

# Nodes that only hold other nodes (each child is bound or read by the pipeline).
CONTAINERS = ("", "data", "data.sources", "domain", "logger", "routers", "curriculum")

# Callables that take **kwargs: where those go, and the names the callable fills itself.
KWARGS_GO_TO: dict[str, tuple[str, frozenset[str]]] = {
    "r2r.models.backbones.load_tiny": ("r2r.models.tiny.build_tiny", frozenset({"arch"})),
    "r2r.models.templates.named_template": ("r2r.models.templates.PromptTemplate", frozenset()),
    "r2r.models.experts.start_expert": ("r2r.models.experts.add_lora", frozenset({"model"})),
    "lightning.pytorch.loggers.wandb.WandbLogger": ("wandb.init", frozenset()),
    "lightning.pytorch.strategies.ddp.DDPStrategy": (
        "torch.nn.parallel.DistributedDataParallel",
        frozenset({"module", "device_ids", "output_device"}),
    ),
}

HYDRA_KEYS = {"_target_", "_partial_", "_args_", "_recursive_", "_convert_"}

# Callables whose keyword arguments replace the fields of a named, shipped object (a prompt
# template): its values live in that object, so the keys are checked but not the defaults.
OVERRIDES = {"r2r.models.templates.named_template"}

# Violations still to fix, EXACTLY (the test fails when one is fixed until it is removed
# here, and on any new one).
PENDING: set[str] = set()


class BindingError(AssertionError):
    pass


def _matches(path: str, pattern: str, *, subtree: bool = False) -> bool:
    """Dotted `path` against `pattern` key by key (`*` is one key); `subtree`: or below it."""
    parts, want = path.split(".") if path else [], pattern.split(".") if pattern else []
    if len(parts) < len(want) or (not subtree and len(parts) != len(want)):
        return False
    return all(fnmatch.fnmatchcase(p, w) for p, w in zip(parts[: len(want)], want, strict=True))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _name(fn: Any) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def parameters(target: str) -> tuple[dict[str, tuple[inspect.Parameter, str]], str | None]:
    """Keyword-passable parameters of `target` (-> the callable that owns each), following
    **kwargs through `KWARGS_GO_TO`; and the name of a callable whose **kwargs go nowhere known."""
    fn = _locate(target)
    params, unknown_kwargs = {}, None
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            params[p.name] = (p, _name(fn))
        elif p.kind is p.VAR_KEYWORD:
            # Aliases (lightning.pytorch.loggers.WandbLogger) resolve to their defining module.
            forward = KWARGS_GO_TO.get(_name(fn)) or KWARGS_GO_TO.get(target)
            if forward is None:
                unknown_kwargs = _name(fn)
                continue
            inner, inner_unknown = parameters(forward[0])
            for name, value in inner.items():
                if name not in forward[1]:
                    params.setdefault(name, value)
            unknown_kwargs = inner_unknown
    return params, unknown_kwargs


def _bind(path: str, node: dict, targets: tuple[str, ...]) -> Iterator[str]:
    for target in targets:
        params, unknown_kwargs = parameters(target)
        for key in node:
            key_path = _join(path, key)
            if key in HYDRA_KEYS or _read_by_pipeline(key_path):
                continue
            if key not in params and _feeds(key_path) is not None:
                continue  # a node of its own (routing.trainer), bound when walked
            if key not in params:
                where = (
                    f" (its **kwargs go nowhere known: {unknown_kwargs})" if unknown_kwargs else ""
                )
                yield f"{key_path}: not a parameter of {target}{where}"
                continue
            param, owner = params[key]
            # r2r's own: a value the config sets has its one home there, no Python default.
            if (
                owner.startswith("r2r.")
                and target not in OVERRIDES
                and param.default is not param.empty
            ):
                yield f"{key_path}: {owner} has a default ({param.default!r})"


def _read_by_pipeline(path: str) -> bool:
    return any(_matches(path, p, subtree=True) for p in READ_BY_PIPELINE)


def _feeds(path: str) -> Any:
    return next((v for p, v in FEEDS.items() if _matches(path, p)), None)


def _walk(path: str, node: Any) -> Iterator[str]:
    if path and _read_by_pipeline(path):
        return
    container = any(_matches(path, c) for c in CONTAINERS)
    if node is None and (container or _feeds(path) is not None):
        return  # a node switched off (logger=none, curriculum.stage1: null)
    if not isinstance(node, dict):
        yield f"{path}: a value no signature and no stage reads"
        return
    feeds = _feeds(path)
    if "_target_" in node:
        targets: tuple[str, ...] | None = (node["_target_"],)
    elif feeds is not None:
        targets = feeds
    else:
        targets = None
    if targets is not None:
        yield from _bind(path, node, targets)
        for key, value in node.items():
            # A nested node (a template, a strategy, a DDP strategy) is bound in turn; a plain
            # dict value (datamodule.max_queries) is one argument.
            child = _join(path, key)
            if isinstance(value, dict) and ("_target_" in value or _feeds(child) is not None):
                yield from _walk(child, value)
    elif container:
        for key, value in node.items():
            yield from _walk(_join(path, key), value)
    else:
        yield f"{path}: a node with no _target_, in no table of this test"


def _leaves(path: str, node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(_join(path, key), value)
    else:
        yield path


def _interpolations(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _interpolations(value)
    elif isinstance(node, list):
        for value in node:
            yield from _interpolations(value)
    elif isinstance(node, str):
        yield from re.findall(r"\$\{([\w.]+)\}", node)


def binding_violations(cfg: DictConfig) -> list[str]:
    """Every key of `cfg` that binds to no parameter, or to one of r2r's with a default."""
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    violations = list(_walk("", resolved))
    used = set(_interpolations(OmegaConf.to_container(cfg, resolve=False)))
    for root in INTERPOLATED:
        node = OmegaConf.select(cfg, root)
        if node is None:
            leaves = []
        elif OmegaConf.is_config(node):
            leaves = list(_leaves(root, OmegaConf.to_container(node)))
        else:  # a plain value (data.seed)
            leaves = [root]
        if any(leaf in used for leaf in leaves):
            violations += [f"{leaf}: interpolated nowhere" for leaf in leaves if leaf not in used]
    return sorted(set(violations))


def assert_binds(cfg: DictConfig, pending: set[str] = PENDING) -> None:
    """Raise `BindingError` naming each violation not in `pending`."""
    new = [v for v in binding_violations(cfg) if v not in pending]
    if new:
        raise BindingError("config keys that bind to no signature:\n  " + "\n  ".join(new))


# Every option of every group; `sweep` and `hydra/` configure Hydra itself, not r2r.
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in {"hydra", "sweep"})
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]


def _override(group: str, option: str) -> str:
    # Router options sit under routers.<name> (all of them at once, for Table 2).
    return f"router@routers.{option}={option}" if group == "router" else f"{group}={option}"


@functools.cache
def option_violations(group: str, option: str) -> frozenset[str]:
    """The violations of the main config under one option (composed and resolved once)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                f"paths.root={CONF.parent}",
                "paths.output=/out",
                "paths.cache=/cache",
                _override(group, option),
            ],
        )
    return frozenset(binding_violations(cfg))


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_resolves_and_binds(group: str, option: str) -> None:
    assert option_violations(group, option) <= PENDING


def test_pending_is_exactly_todays_violations() -> None:
    assert frozenset().union(*(option_violations(g, o) for g, o in OPTIONS)) == PENDING


MISSPELT = [
    (["+seeed=1"], "seeed: a value no signature and no stage reads"),
    (["+mining.top_kk=5"], "mining.top_kk: not a parameter of r2r.data.mining.MiningSettings"),
    (["masking=predictive", "+masking.rat=0.1"], "masking.rat: not a parameter"),
    (["+backbone.sed=1"], "backbone.sed: not a parameter of r2r.models.backbones.load_tiny"),
    (["backbone=qwen", "+backbone.dtyp=float32"], "backbone.dtyp: not a parameter"),
    (["+backbone.template.prefx=x"], "backbone.template.prefx: not a parameter"),
    (["+data.nme=x"], "data.nme: a value no signature and no stage reads"),
    (["+data.sizes.n_entitis=3"], "data.sizes.n_entitis: interpolated nowhere"),
    (["+data.sources.legal.n_entitis=3"], "data.sources.legal.n_entitis: not a parameter"),
    (["data=beir", "+data.sources.legal.fold=x"], "data.sources.legal.fold: not a parameter"),
    (["+logger.csv.save_dirr=x"], "logger.csv.save_dirr: not a parameter"),
    (["logger=wandb", "+logger.wandb.grop=x"], "logger.wandb.grop: not a parameter"),
    (["+trainer.max_step=3"], "trainer.max_step: not a parameter of lightning.Trainer"),
    (["trainer=ddp", "+trainer.strategy.find_unused=1"], "trainer.strategy.find_unused: not a"),
    (["+loss.temprature=2"], "loss.temprature: not a parameter of r2r.losses.infonce"),
    (["+routers.lsr.layr=2"], "routers.lsr.layr: not a parameter"),
    (["+routers.tfidf.c=1"], "routers.tfidf.c: not a parameter"),
    (["curriculum=eag", "+curriculum.stage1.monitr=x"], "curriculum.stage1.monitr: not a"),
    (["+curriculum.fine_tuned.trainer.max_step=1"], "curriculum.fine_tuned.trainer.max_step: not"),
    (["+curriculum.fine_tune.max_steps=1"], "curriculum.fine_tune: a node with no _target_"),
    (["+training.mod=pointwise"], "training.mod: not a parameter of r2r.data.examples.Training"),
    (["+routing.trainer.max_epoch=1"], "routing.trainer.max_epoch: not a parameter"),
    (["+domain.name=[legal]"], "domain.name: a value no signature and no stage reads"),
    (["+inputs.max_lenght=1"], "inputs.max_lenght: not a parameter"),
    (["+datamodule.train_batchsize=2"], "datamodule.train_batchsize: not a parameter"),
    (["+lora.rr=3"], "lora.rr: not a parameter of r2r.models.experts.add_lora"),
    (["+routing.treshold=0.1"], "routing.treshold: not a parameter"),
    (["+best_adapter.moniter=x"], "best_adapter.moniter: not a parameter"),
    (["+optimizer.l=0.1"], "optimizer.l: not a parameter of torch.optim.AdamW"),
]


@pytest.mark.parametrize(("overrides", "expected"), MISSPELT, ids=[o[-1] for o, _ in MISSPELT])
def test_a_misspelt_key_fails_naming_its_path(make_cfg, overrides: list[str], expected: str):
    cfg = make_cfg(*overrides)
    with pytest.raises(BindingError, match=re.escape(expected)):
        assert_binds(cfg)


def test_a_python_default_for_a_configured_value_fails(make_cfg) -> None:
    # EntityMasking's `domain` defaults to None: set from YAML, the value would have two homes.
    cfg = make_cfg("+masking.domain=legal")
    with pytest.raises(BindingError, match=re.escape("masking.domain: r2r.data.masking")):
        assert_binds(cfg)
