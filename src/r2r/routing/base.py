"""What every router is: queries in, a probability per domain expert out.

A router is fitted on the labelled queries of a `QueryData` (the run's DataModule, or a
`QuerySet` in memory) and returns an (N, D) tensor of probabilities over its `domains`.
The routed system sends a query to the
argmax expert, or to the bare backbone when the top probability is under its threshold; a
router that returns all-zero rows (`none`) therefore always leaves the backbone bare.

Configs build routers by `_target_` (a partial: `build_router` adds the domains and what
the router reads, e.g. the backbone). Saved, a router is a folder holding `router.json`
(kind, domains and the kind's own settings) and, for trained ones, its weights;
`load_router` rebuilds it by kind from the `ROUTERS` registry (nothing in the file is run).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch

from r2r.files import write_json_atomic
from r2r.types import LabelledQueries

if TYPE_CHECKING:
    import lightning as L
    from torch.utils.data import DataLoader


class Featurizer(Protocol):
    """Texts -> fixed-size float32 features, (N,) -> (N, dim). `key` names the features
    (model, layer, pooling, template...) for caching: equal keys mean equal features."""

    key: str
    dim: int

    def __call__(self, texts: Sequence[str]) -> torch.Tensor: ...


TrainerFactory = Callable[[int], "L.Trainer"]  # epochs -> a trainer that stops after them


class QueryData(Protocol):
    """Where routers get their training data: the labelled queries of a split, and batches
    of (features (B, dim), domain ids (B,)) for heads trained on features."""

    def queries(self, split: str) -> LabelledQueries: ...

    def router_dataloader(
        self,
        split: str,
        featurize: Callable[[Sequence[str]], torch.Tensor],
        domains: Sequence[str],
        *,
        batch_size: int,
        shuffle: bool,
    ) -> DataLoader | None: ...


class Router(ABC):
    """Domain probabilities per query. Subclasses set `kind` and register with `@register`."""

    kind: ClassVar[str]

    def __init__(self, domains: Sequence[str]) -> None:
        if not domains or len(set(domains)) != len(domains):
            raise ValueError(f"a router needs distinct domains, got {list(domains)}")
        self.domains = tuple(domains)

    def fit(self, data: QueryData, *, trainer: TrainerFactory | None = None) -> Router:
        """Learn from `data`'s training queries; routers trained with Lightning build their
        trainer with `trainer(epochs)` (the run's). Routers that learn nothing check the
        labels."""
        train = data.queries("train")
        self.check_labels(train.texts, train.domains)
        return self

    @abstractmethod
    def predict_proba(
        self, texts: Sequence[str], *, true_domains: Sequence[str] | None = None
    ) -> torch.Tensor:
        """(N, D) float32 probabilities over `domains` (rows of zeros: no expert).
        `true_domains` is read by the oracle only."""

    @property
    def n_params(self) -> int:
        """Parameters the router adds to the system (a frozen backbone's are not counted)."""
        return 0

    def settings(self) -> dict[str, Any]:
        """The kind's own constructor settings, saved in router.json."""
        return {}

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.save_weights(folder)
        meta = {"kind": self.kind, "domains": list(self.domains), "settings": self.settings()}
        write_json_atomic(folder / "router.json", meta)
        return folder

    def save_weights(self, folder: Path) -> None:  # noqa: B027 (optional hook)
        """Write trained state next to router.json (nothing for rule-based routers)."""

    @classmethod
    def load(cls, folder: Path, domains: Sequence[str], settings: dict[str, Any], **deps: Any):
        """Rebuild a saved router from its settings; `deps` as in `build_router`."""
        return build_router(functools.partial(cls, **settings), domains, **deps)

    def check_labels(self, texts: Sequence[str], labels: Sequence[str]) -> None:
        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} queries but {len(labels)} labels")
        if unknown := sorted(set(labels) - set(self.domains)):
            raise ValueError(f"labels {unknown} are not among the router's domains {self.domains}")

    def label_ids(self, labels: Sequence[str]) -> torch.Tensor:
        index = {d: i for i, d in enumerate(self.domains)}
        return torch.tensor([index[label] for label in labels], dtype=torch.long)


ROUTERS: dict[str, type[Router]] = {}


def register(cls: type[Router]) -> type[Router]:
    ROUTERS[cls.kind] = cls
    return cls


def build_router(factory: Callable[..., Router], domains: Sequence[str], **deps: Any) -> Router:
    """A new (unfitted) router from `factory` (a config's partial, e.g. `lsr` with its
    settings bound) for `domains`; of `deps` (backbone=, model=, cache_dir=) only those the
    router's constructor takes are passed."""
    target = factory.func if isinstance(factory, functools.partial) else factory
    accepted = inspect.signature(target).parameters
    return factory(domains, **{k: v for k, v in deps.items() if k in accepted})


def load_router(folder: str | Path, **deps: Any) -> Router:
    """Rebuild a saved router; `deps` are what its kind needs (e.g. `backbone=` for lsr)."""
    folder = Path(folder)
    path = folder / "router.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} holds no router.json (not a saved router)")
    meta = json.loads(path.read_text(encoding="utf-8"))
    if meta.get("kind") not in ROUTERS:
        raise ValueError(
            f"{path}: unknown router kind {meta.get('kind')!r}; known {sorted(ROUTERS)}"
        )
    cls = ROUTERS[meta["kind"]]
    accepted = inspect.signature(cls).parameters
    saved = {k: v for k, v in ADDED_SETTINGS.items() if k in accepted} | meta.get("settings", {})
    return cls.load(folder, meta["domains"], saved, **deps)


# Settings added after routers were first saved, with the value a router saved before had.
ADDED_SETTINGS: dict[str, Any] = {"balanced": False}


def one_hot(indices: Sequence[int], n: int) -> torch.Tensor:
    out = torch.zeros(len(indices), n)
    if len(indices):
        out[torch.arange(len(indices)), torch.tensor(list(indices))] = 1.0
    return out


@register
class OracleRouter(Router):
    """The true domain: the upper bound of routing (needs `true_domains`)."""

    kind = "oracle"

    def predict_proba(self, texts, *, true_domains=None):
        if true_domains is None:
            raise ValueError("the oracle router needs true_domains (the queries' real domains)")
        self.check_labels(texts, true_domains)
        return one_hot([self.domains.index(d) for d in true_domains], len(self.domains))


@register
class RandomRouter(Router):
    """A uniformly random expert per query, seeded by (seed, query text): the same query gets
    the same expert in any batch or order."""

    kind = "random"

    def __init__(self, domains: Sequence[str], *, seed: int) -> None:
        super().__init__(domains)
        self.seed = seed

    def settings(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def predict_proba(self, texts, *, true_domains=None):
        picks = [_stable_int(f"{self.seed}\0{t}") % len(self.domains) for t in texts]
        return one_hot(picks, len(self.domains))


@register
class NoRouter(Router):
    """No experts: every row is zero, so the system scores with the bare backbone."""

    kind = "none"

    def predict_proba(self, texts, *, true_domains=None):
        return torch.zeros(len(texts), len(self.domains))


def _stable_int(text: str) -> int:
    # hash() is salted per process; a digest gives the same number everywhere.
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")
