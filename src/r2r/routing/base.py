"""What every router is: queries in, a probability per domain expert out.

A router is fitted on (query text, domain) pairs from the training splits and returns an
(N, D) tensor of probabilities over its `domains`. The routed system sends a query to the
argmax expert, or to the bare backbone when the top probability is under its threshold; a
router that returns all-zero rows (`none`) therefore always leaves the backbone bare.

Routers are saved as a folder holding `router.json` (kind, domains and the kind's own
settings) and, for trained ones, their weights; `load_router` rebuilds any of them.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch

from r2r.files import write_json_atomic


class Featurizer(Protocol):
    """Texts -> fixed-size float32 features, (N,) -> (N, dim). `key` names the features
    (model, layer, pooling, template...) for caching: equal keys mean equal features."""

    key: str
    dim: int

    def __call__(self, texts: Sequence[str]) -> torch.Tensor: ...


class Router(ABC):
    """Domain probabilities per query. Subclasses set `kind` and register with `@register`."""

    kind: ClassVar[str]

    def __init__(self, domains: Sequence[str]) -> None:
        if not domains or len(set(domains)) != len(domains):
            raise ValueError(f"a router needs distinct domains, got {list(domains)}")
        self.domains = tuple(domains)

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> Router:
        """Learn from (query text, domain) pairs; routers that learn nothing check the labels."""
        self.check_labels(texts, labels)
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
    def create(cls, domains: Sequence[str], settings: dict[str, Any], **deps: Any) -> Router:
        """A new router from its settings; `deps` (backbone=, model=, cache_dir=) are passed
        on only to the kinds that read them."""
        return cls(domains, **settings)

    @classmethod
    def load(cls, folder: Path, domains: Sequence[str], settings: dict[str, Any], **deps: Any):
        return cls(domains, **settings)

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


def build_router(
    kind: str, domains: Sequence[str], settings: dict[str, Any], **deps: Any
) -> Router:
    """A new (unfitted) router of `kind`, e.g. `build_router("lsr", domains, {"layer": -1},
    backbone=backbone, model=model, cache_dir=path)`."""
    if kind not in ROUTERS:
        raise ValueError(f"unknown router kind {kind!r}; known {sorted(ROUTERS)}")
    return ROUTERS[kind].create(domains, dict(settings), **deps)


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
    return ROUTERS[meta["kind"]].load(folder, meta["domains"], meta.get("settings", {}), **deps)


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

    def __init__(self, domains: Sequence[str], *, seed: int = 0) -> None:
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
