"""One backbone, one named LoRA adapter per domain, a router: the routed reranker.

    system = RoutedReranker.load("outputs/.../system", device="auto")
    result = system.rerank("What is the bail period?", ["doc one", "doc two"], top_n=1)
    result.expert, result.probabilities, result.ranking[0].score
    # With the first stage's scores of the documents: fused (r2r.fusion, system/fusion.json)
    system.rerank("What is the bail period?", docs, first_stage_scores=[12.1, 7.4])

Every query goes to its router's top expert, or to the bare backbone when the top
probability is under `threshold` (a router that gives no probability, `none`, always
leaves the backbone bare); a query given its `expert` skips the router (probability 1 for
that expert). `rerank_batch` routes many queries at once and scores the
pairs expert by expert through the `ExpertBank`, so each forward pass runs under a single
adapter. A system saved with its experts' fusion weights (fusion.json) fuses a query's
scores with the first stage's where they are given and an expert scored it; the bare
backbone has no weight and ranks by its own scores.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from r2r.errors import DataError
from r2r.files import atomic_path, write_json_atomic
from r2r.fusion import FILE as FUSION_FILE
from r2r.fusion import Fusion
from r2r.metrics import rank
from r2r.models import backbones
from r2r.models.backbones import Backbone, torch_dtype
from r2r.models.experts import ExpertBank
from r2r.models.templates import named_template
from r2r.routing.base import Router, load_router
from r2r.types import Passage

Document = str | Passage


@dataclass(frozen=True)
class Ranked:
    """One reranked document: its position in the input, its id and its score."""

    index: int
    id: str
    score: float


@dataclass(frozen=True)
class RerankResult:
    """The routing decision and the ranking for one query."""

    expert: str | None  # None: the bare backbone
    probabilities: Mapping[str, float]
    ranking: tuple[Ranked, ...]  # best first
    fused: bool = False  # the scores are the expert's fused with the first stage's


def route(
    probabilities: torch.Tensor, domains: Sequence[str], threshold: float
) -> list[tuple[str | None, dict[str, float]]]:
    """(expert or None, probabilities by domain) per row of (N, D) `probabilities`: the top
    domain, or None (the bare backbone) when its probability is under `threshold` or the row
    is all zeros (router `none`, whatever the threshold)."""
    out = []
    for row in probabilities.tolist():
        by_domain = dict(zip(domains, row, strict=True))
        top = max(range(len(row)), key=row.__getitem__)
        chosen = domains[top] if row[top] > 0 and row[top] >= threshold else None
        out.append((chosen, by_domain))
    return out


class RoutedReranker:
    """Routes each query to one expert of an `ExpertBank` and reranks with it.

    Built whole from a bank and a router; `backbone_config` (the backbone's Hydra config) is
    what `save` writes so that `load` can rebuild the backbone; `fusion` (a weight per
    expert) fuses the scores of requests that carry the first stage's scores.
    """

    def __init__(
        self,
        bank: ExpertBank,
        router: Router,
        *,
        threshold: float,
        backbone_config: Mapping[str, Any] | None = None,
        fusion: Fusion | None = None,
    ) -> None:
        if missing := sorted(set(router.domains) - set(bank.names)):
            raise ValueError(f"the router routes to {missing}, which have no expert")
        if fusion is not None and (missing := sorted(set(router.domains) - set(fusion.weights))):
            raise ValueError(f"the fusion has no weight for the experts {missing}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be within [0, 1], got {threshold}")
        self.bank = bank
        self.router = router
        self.threshold = threshold
        self.backbone_config = dict(backbone_config or {})
        self.fusion = fusion

    @property
    def experts(self) -> list[str]:
        return list(self.router.domains)

    def route(
        self, queries: Sequence[str], *, true_domains: Sequence[str] | None = None
    ) -> list[tuple[str | None, dict[str, float]]]:
        """(expert or None, probabilities by domain) per query."""
        probs = self.router.predict_proba(queries, true_domains=true_domains)
        return route(probs, self.router.domains, self.threshold)

    def rerank(
        self,
        query: str,
        documents: Sequence[Document],
        top_n: int | None = None,
        *,
        true_domain: str | None = None,
        first_stage_scores: Sequence[float] | None = None,
        expert: str | None = None,
    ) -> RerankResult:
        truth = None if true_domain is None else [true_domain]
        first = None if first_stage_scores is None else [first_stage_scores]
        return self.rerank_batch(
            [(query, documents)],
            top_n,
            true_domains=truth,
            first_stage_scores=first,
            experts=None if expert is None else [expert],
        )[0]

    def rerank_batch(
        self,
        items: Sequence[tuple[str, Sequence[Document]]],
        top_n: int | None = None,
        *,
        true_domains: Sequence[str] | None = None,
        first_stage_scores: Sequence[Sequence[float] | None] | None = None,
        experts: Sequence[str | None] | None = None,
    ) -> list[RerankResult]:
        """Route every query, then score all pairs of one expert together. Where an item has
        first-stage scores (one per document; None: not that item) and `fusion`, its
        expert's scores are fused with them. An item given its expert in `experts` (None:
        routed) is not routed: it goes to that expert with probability 1."""
        if top_n is not None and top_n < 1:
            raise ValueError(f"top_n must be at least 1, got {top_n}")
        first = list(first_stage_scores or [None] * len(items))
        if len(first) != len(items):
            raise ValueError(f"{len(items)} queries but {len(first)} first-stage score lists")
        for i, ((_, docs), given) in enumerate(zip(items, first, strict=True)):
            if given is not None and len(given) != len(docs):
                raise ValueError(
                    f"query {i}: {len(docs)} documents but {len(given)} first-stage scores"
                )
        routes = self._routes(items, true_domains, experts)
        texts = [[_text(d) for d in docs] for _, docs in items]
        scores: list[list[float]] = [[0.0] * len(docs) for docs in texts]
        by_expert: dict[str | None, list[tuple[int, int]]] = {}
        for i, (expert, _) in enumerate(routes):
            by_expert.setdefault(expert, []).extend((i, j) for j in range(len(texts[i])))
        for expert, pairs in by_expert.items():
            got = self.bank.score(
                expert, [items[i][0] for i, _ in pairs], [texts[i][j] for i, j in pairs]
            )
            for (i, j), value in zip(pairs, got, strict=True):
                scores[i][j] = value
        results = []
        for (_, docs), (expert, probs), item_scores, given in zip(
            items, routes, scores, first, strict=True
        ):
            ids = [_id(d, j) for j, d in enumerate(docs)]
            fused = self.fusion is not None and expert is not None and given is not None
            if fused:
                item_scores = list(self.fusion.fuse(expert, item_scores, given, ids))
            position = {doc_id: j for j, doc_id in enumerate(ids)}
            order = rank(ids, item_scores)[:top_n]
            ranking = tuple(Ranked(position[d], d, item_scores[position[d]]) for d in order)
            results.append(RerankResult(expert, probs, ranking, fused))
        return results

    def _routes(
        self,
        items: Sequence[tuple[str, Sequence[Document]]],
        true_domains: Sequence[str] | None,
        experts: Sequence[str | None] | None,
    ) -> list[tuple[str | None, dict[str, float]]]:
        given = list(experts or [None] * len(items))
        if len(given) != len(items):
            raise ValueError(f"{len(items)} queries but {len(given)} experts")
        if unknown := sorted({e for e in given if e is not None} - set(self.experts)):
            raise ValueError(f"no experts {unknown} (has {self.experts})")
        free = [i for i, e in enumerate(given) if e is None]
        routed = iter(
            self.route(
                [items[i][0] for i in free],
                true_domains=None if true_domains is None else [true_domains[i] for i in free],
            )
            if free
            else []
        )
        return [
            next(routed) if e is None else (e, {d: float(d == e) for d in self.experts})
            for e in given
        ]

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | Path) -> Path:
        """`system.json`, `experts/<name>/` (peft adapters), `router/` and, with a fusion,
        `fusion.json`, written whole."""
        if not self.backbone_config:
            raise ValueError("save needs backbone_config (the backbone's Hydra config)")
        folder = Path(folder)
        with atomic_path(folder, kind="system") as staged:
            for name in self.experts:
                shutil.copytree(self.bank.adapters[name], staged / "experts" / name)
            self.router.save(staged / "router")
            meta = {
                "backbone": self.backbone_config,
                "experts": self.experts,
                "threshold": self.threshold,
                "inputs": self.bank.inputs,
                "batch_size": self.bank.batch_size,
                "scorer": self.bank.scorer_options,
            }
            write_json_atomic(staged / "system.json", meta)
            if self.fusion is not None:
                self.fusion.save(staged / FUSION_FILE)
        return folder

    @classmethod
    def load(
        cls,
        folder: str | Path,
        *,
        backbone: Backbone | None = None,
        device: str | torch.device = "cpu",
        dtype: str | None = None,
    ) -> RoutedReranker:
        """Rebuild a saved system on `device` ("cpu", "cuda", "cuda:N" or "auto": CUDA where
        available); the backbone comes from its saved config unless given, in its saved
        dtype or `dtype` ("float32", "bfloat16", "float16": e.g. bf16 on a GPU for a
        system trained in fp32 on a CPU). Its router's backbone features are computed on
        that device too. A system saved without fusion.json (or before fusion existed)
        loads without fusion."""
        folder = Path(folder)
        path = folder / "system.json"
        if not path.is_file():
            raise FileNotFoundError(f"{folder} holds no system.json (not a saved r2r system)")
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(f"not a JSON file ({err})", file=path) from None
        experts = expert_names(meta.get("experts"), path)
        fusion = Fusion.load(folder / FUSION_FILE) if (folder / FUSION_FILE).is_file() else None
        if backbone is None:
            node = meta.get("backbone")
            if dtype is not None:
                torch_dtype(dtype)  # a bad name fails before the weights load
                node = {**node, "dtype": dtype} if isinstance(node, dict) else node
            backbone = build_backbone(node, path)
        elif dtype is not None:
            raise ValueError(
                "load: pass dtype or backbone, not both (a given backbone keeps its own)"
            )
        bank = ExpertBank(
            backbone,
            {name: folder / "experts" / name for name in experts},
            inputs=meta["inputs"],
            batch_size=meta["batch_size"],
            device=device,
            scorer=scorer_options(meta.get("scorer", {}), path),
        )
        router = load_router(folder / "router", backbone=backbone, model=bank.model)
        return cls(
            bank,
            router,
            threshold=meta["threshold"],
            backbone_config=meta["backbone"],
            fusion=fusion,
        )


# What a system.json may name: r2r's own backbone loaders and template builder. A saved
# system is data, not code: anything else is refused before anything runs.
SAFE_TARGETS = {
    f"r2r.models.backbones.{name}": getattr(backbones, name)
    for name in ("load_hub", "load_gguf_smollm2", "load_tiny")
} | {"r2r.models.templates.named_template": named_template}
EXPERT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def scorer_options(node: Any, path: Path) -> dict[str, Any]:
    """A system.json's `scorer` options (systems saved before them have none)."""
    kinds = {"share_prefix": (bool,), "chunk_tokens": (int, type(None))}
    if not isinstance(node, dict) or any(
        key not in kinds or not isinstance(value, kinds[key]) for key, value in node.items()
    ):
        raise DataError(
            f"`scorer` must map share_prefix (true/false) and chunk_tokens (an integer or "
            f"null); got {node!r}",
            file=path,
        )
    return dict(node)


def build_backbone(node: Any, path: Path) -> Backbone:
    """The backbone a system.json describes, built only from `SAFE_TARGETS` (checked whole
    before any of them is called), with its values taken literally (no interpolation)."""
    check_node(node, path, "backbone")
    return build(node)


def check_node(node: Any, path: Path, where: str) -> None:
    if isinstance(node, list):
        for i, item in enumerate(node):
            check_node(item, path, f"{where}[{i}]")
        return
    if not isinstance(node, dict):
        if where == "backbone":
            raise DataError("expected an object with a _target_", file=path, field=where)
        return
    if where == "backbone" and "_target_" not in node:
        raise DataError("expected an object with a _target_", file=path, field=where)
    for key, value in node.items():
        if key == "_target_" and value not in SAFE_TARGETS:
            raise DataError(
                f"refused: {value!r} is not an r2r backbone loader (allowed: "
                f"{', '.join(sorted(SAFE_TARGETS))})",
                file=path,
                field=f"{where}._target_",
            )
        if key.startswith("_") and key != "_target_":
            raise DataError(f"refused: {key!r} is not allowed", file=path, field=f"{where}.{key}")
        check_node(value, path, f"{where}.{key}")


def build(node: Any) -> Any:
    if isinstance(node, list):
        return [build(item) for item in node]
    if not isinstance(node, dict):
        return node
    values = {k: build(v) for k, v in node.items() if k != "_target_"}
    return SAFE_TARGETS[node["_target_"]](**values) if "_target_" in node else values


def expert_names(names: Any, path: Path) -> list[str]:
    """The saved experts' names: plain folder names, so each stays inside experts/."""
    if not isinstance(names, list) or not names:
        raise DataError("expected a non-empty list of expert names", file=path, field="experts")
    for name in names:
        if not isinstance(name, str) or not EXPERT_NAME.fullmatch(name):
            raise DataError(
                f"refused: {name!r} is not a plain folder name", file=path, field="experts"
            )
    return names


def _text(document: Document) -> str:
    return document.content if isinstance(document, Passage) else document


def _id(document: Document, index: int) -> str:
    return document.id if isinstance(document, Passage) else str(index)
