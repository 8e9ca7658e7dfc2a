"""Routers that classify fixed query features, and the Latent Semantic Router built on them.

`FeatureRouter` trains a small head (linear or MLP, `heads.py`) on the features of any
`Featurizer`, with Lightning: the batches come from the run's DataModule (features computed
once per split, optionally cached on disk) and the run's trainer settings apply. `LatentSemanticRouter` (kind "lsr", METHOD.md section 5) is a
FeatureRouter over the frozen backbone's own hidden state of the query (`LatentFeaturizer`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from r2r.files import atomic_path
from r2r.routing.base import Featurizer, QueryData, Router, TrainerFactory, register
from r2r.routing.features import FeatureCache, LatentFeaturizer, Pooling
from r2r.routing.heads import HeadKind, Standardize, balanced_weights, make_head

if TYPE_CHECKING:
    import lightning as L

    from r2r.models.backbones import Backbone

HEAD_FILE = "head.safetensors"


class FeatureRouter(Router):
    """p(d|q) = softmax(head(standardize(features(q)))), trained with cross-entropy.

    featurizer: texts -> (N, dim) features; any `Featurizer`.
    head, hidden, dropout: the head (`make_head`).
    standardize: z-score features with the training set's mean and std (buffers, so
        `n_params` is the head's parameters alone).
    balanced: weight the cross-entropy so that every domain counts the same
        (`balanced_weights`), however few training queries it has.
    epochs, lr, weight_decay, batch_size, seed: AdamW training for `epochs` passes over the
        training queries; `seed` seeds the head's initialisation and dropout (the caller's
        RNG is left untouched), the data's own seed the order of the batches.
    cache: where features are kept between calls (training and evaluation query sets are
        featurized once each).

    Subclasses set `kind`, build their featurizer and rebuild it in `load`.
    """

    def __init__(
        self,
        domains: Sequence[str],
        featurizer: Featurizer,
        *,
        head: HeadKind,
        hidden: int,
        dropout: float,
        standardize: bool,
        balanced: bool,
        epochs: int,
        lr: float,
        weight_decay: float,
        batch_size: int,
        seed: int,
        cache: FeatureCache | None = None,
    ) -> None:
        super().__init__(domains)
        if epochs < 1 or batch_size < 1:
            raise ValueError(f"epochs={epochs} and batch_size={batch_size} must be >= 1")
        if lr <= 0 or weight_decay < 0:
            raise ValueError(f"lr={lr} must be > 0 and weight_decay={weight_decay} >= 0")
        self.featurizer = featurizer
        self.head_kind, self.hidden, self.dropout = head, hidden, dropout
        self.standardize, self.balanced = standardize, balanced
        self.epochs, self.lr, self.weight_decay = epochs, lr, weight_decay
        self.batch_size, self.seed = batch_size, seed
        self.cache = cache
        self.head = self._new_head()  # checks the head settings now, not at fit time
        self.fitted = False
        self.metrics: dict[str, float] = {}  # the last epoch's logged values after `fit`
        self.steps = 0  # optimizer steps of the last `fit`

    def settings(self) -> dict[str, Any]:
        return {
            "head": self.head_kind,
            "hidden": self.hidden,
            "dropout": self.dropout,
            "standardize": self.standardize,
            "balanced": self.balanced,
            "epochs": self.epochs,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "batch_size": self.batch_size,
            "seed": self.seed,
        }

    def _new_head(self) -> nn.Sequential:
        """Standardize -> head, seeded: (N, dim) features -> (N, D) logits."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            head = make_head(
                self.head_kind,
                self.featurizer.dim,
                len(self.domains),
                hidden=self.hidden,
                dropout=self.dropout,
            )
        return nn.Sequential(Standardize(self.featurizer.dim), head)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.head.parameters())

    def features(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, dim) float32 features, through the cache when there is one."""
        if isinstance(texts, str):
            raise TypeError("routers take a sequence of texts, not one string")
        features = self.cache.get(self.featurizer, texts) if self.cache else self.featurizer(texts)
        if features.shape != (len(texts), self.featurizer.dim):
            raise ValueError(
                f"featurizer {self.featurizer.key!r} returned {tuple(features.shape)} for "
                f"{len(texts)} texts; expected {(len(texts), self.featurizer.dim)}"
            )
        return features.float()

    def fit(
        self,
        data: QueryData,
        *,
        trainer: TrainerFactory | None = None,
        log_prefix: str | None = None,
    ) -> FeatureRouter:
        """Train a fresh head for `epochs` on `data`'s training queries, validating on its
        dev queries when there are any (logs `{log_prefix}train/loss`,
        `{log_prefix}val/accuracy`, `{log_prefix}val/macro_f1`; the prefix defaults to
        `router/<kind>/`, so that two routers' curves in one run stay apart). `trainer(epochs)` builds
        the run's trainer (its device, precision and limits apply); without it, a quiet CPU
        trainer."""
        train = data.queries("train")
        self.check_labels(train.texts, train.domains)
        if not train.texts:
            raise ValueError("cannot fit a router on zero queries")
        if absent := [d for d in self.domains if d not in set(train.domains)]:
            warnings.warn(
                f"no training query for domains {absent}: the router will rarely route to them",
                stacklevel=2,
            )
        batches = {
            split: data.router_dataloader(
                split, self.features, self.domains, batch_size=self.batch_size, shuffle=shuffle
            )
            for split, shuffle in (("train", True), ("dev", False))
        }
        head = self._new_head()
        features, labels = batches["train"].dataset.tensors  # (N, dim), (N,)
        if self.standardize:
            head[0].fit(features)
        # Training code is imported only to train: a served router needs none of it.
        from r2r.routing.lit_router import RouterModule

        module = RouterModule(
            head,
            len(self.domains),
            lr=self.lr,
            weight_decay=self.weight_decay,
            log_prefix=default_prefix(self) if log_prefix is None else log_prefix,
            class_weights=balanced_weights(labels, len(self.domains)) if self.balanced else None,
        )
        fitter = (trainer or quiet_trainer)(self.epochs)
        # fork_rng: MLP dropout draws from the global RNG; seed it here without moving the
        # caller's stream.
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            torch.manual_seed(self.seed)
            # Features are in memory: loader workers would only add start-up time.
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            # Validation is optional; RouterModule always defines the step.
            warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")
            fitter.fit(module, train_dataloaders=batches["train"], val_dataloaders=batches["dev"])
        self.head = module.head.cpu().eval()
        self.metrics = {k: float(v) for k, v in fitter.callback_metrics.items()}
        self.steps = fitter.global_step
        self.fitted = True
        return self

    def predict_proba(self, texts, *, true_domains=None):
        if not self.fitted:
            raise RuntimeError(
                f"the {type(self).__name__} is not fitted: call fit() or load_router()"
            )
        features = self.features(texts)
        if not len(texts):
            return torch.zeros(0, len(self.domains))
        self.head.eval()
        with torch.no_grad():
            return torch.softmax(self.head(features), dim=1)  # (N, D)

    def save_weights(self, folder: Path) -> None:
        if not self.fitted:
            raise RuntimeError(f"cannot save an unfitted {type(self).__name__}")
        state = {name: t.detach().contiguous() for name, t in self.head.state_dict().items()}
        with atomic_path(Path(folder) / HEAD_FILE) as tmp:
            save_file(state, str(tmp))

    def load_weights(self, folder: Path) -> FeatureRouter:
        """Read the head saved by `save_weights` (the featurizer is the subclass's to rebuild)."""
        path = Path(folder) / HEAD_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: not the folder of a fitted {type(self).__name__}"
            )
        try:
            self.head.load_state_dict(load_file(path))
        except RuntimeError as err:
            raise ValueError(
                f"{path} does not fit a {self.head_kind} head over {self.featurizer.dim}-d "
                f"features and {len(self.domains)} domains: {err}"
            ) from None
        self.head.eval()
        self.fitted = True
        return self


@register
class LatentSemanticRouter(FeatureRouter):
    """The paper's router: a head over the frozen backbone's hidden state of the query alone.

    backbone, model: whose features (`model` defaults to the backbone's; adapters on either
        are switched off while featurizing).
    layer, pooling, template, max_length, feature_batch_size: the `LatentFeaturizer`'s.
    cache_dir: a `FeatureCache` folder, or None for no cache.
    head ... seed: the head and its training, as in `FeatureRouter`.
    """

    kind = "lsr"

    def __init__(
        self,
        domains: Sequence[str],
        *,
        backbone: Backbone,
        layer: int,
        pooling: Pooling,
        template: str,
        max_length: int,
        feature_batch_size: int,
        head: HeadKind,
        hidden: int,
        dropout: float,
        standardize: bool,
        balanced: bool,
        epochs: int,
        lr: float,
        weight_decay: float,
        batch_size: int,
        seed: int,
        model: nn.Module | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        featurizer = LatentFeaturizer.from_backbone(
            backbone,
            model,
            layer=layer,
            pooling=pooling,
            template=template,
            max_length=max_length,
            batch_size=feature_batch_size,
        )
        super().__init__(
            domains,
            featurizer,
            head=head,
            hidden=hidden,
            dropout=dropout,
            standardize=standardize,
            balanced=balanced,
            epochs=epochs,
            lr=lr,
            weight_decay=weight_decay,
            batch_size=batch_size,
            seed=seed,
            cache=FeatureCache(cache_dir) if cache_dir is not None else None,
        )
        self.backbone_name = backbone.name
        self.layer, self.pooling, self.template = layer, pooling, template
        self.max_length, self.feature_batch_size = max_length, feature_batch_size

    def settings(self) -> dict[str, Any]:
        return {
            "backbone": self.backbone_name,  # checked on load: features of another model differ
            "layer": self.layer,
            "pooling": self.pooling,
            "template": self.template,
            "max_length": self.max_length,
            "feature_batch_size": self.feature_batch_size,
            **super().settings(),
        }

    @classmethod
    def load(
        cls,
        folder: Path,
        domains: Sequence[str],
        settings: dict[str, Any],
        *,
        backbone: Backbone | None = None,
        model: nn.Module | None = None,
        cache_dir: str | Path | None = None,
        **unused: Any,
    ) -> LatentSemanticRouter:
        """Rebuild on `backbone` (`load_router(folder, backbone=...)`), the one it was fitted on."""
        meta = Path(folder) / "router.json"
        if backbone is None:
            raise ValueError(f"{meta}: an lsr router reads its backbone: pass backbone=")
        settings = dict(settings)
        trained_on = settings.pop("backbone", None)
        if trained_on != backbone.name:
            raise ValueError(
                f"{meta}: this lsr router was fitted on the features of backbone "
                f"{trained_on!r}, but it is being loaded onto {backbone.name!r}"
            )
        router = cls(domains, backbone=backbone, model=model, cache_dir=cache_dir, **settings)
        router.load_weights(folder)
        return router


@register
class EmbeddingRouter(FeatureRouter):
    """The external-embedding baseline (`embedding_mlp`): an MLP head over an offline sentence
    encoder's features, MiniLM (`MiniLMFeaturizer`) unless `model_path` names another
    sentence-transformers folder.

    model_path, max_length, feature_batch_size: the `MiniLMFeaturizer`'s.
    cache_dir: a `FeatureCache` folder, or None for no cache.
    head ... seed: the head and its training, as in `FeatureRouter`.
    """

    kind = "embedding_mlp"

    def __init__(
        self,
        domains: Sequence[str],
        *,
        model_path: str | Path | None,
        max_length: int | None,
        feature_batch_size: int,
        head: HeadKind,
        hidden: int,
        dropout: float,
        standardize: bool,
        balanced: bool,
        epochs: int,
        lr: float,
        weight_decay: float,
        batch_size: int,
        seed: int,
        cache_dir: str | Path | None = None,
    ) -> None:
        from r2r.routing.embeddings import MiniLMFeaturizer

        featurizer = MiniLMFeaturizer(
            model_path, batch_size=feature_batch_size, max_length=max_length
        )
        super().__init__(
            domains,
            featurizer,
            head=head,
            hidden=hidden,
            dropout=dropout,
            standardize=standardize,
            balanced=balanced,
            epochs=epochs,
            lr=lr,
            weight_decay=weight_decay,
            batch_size=batch_size,
            seed=seed,
            cache=FeatureCache(cache_dir) if cache_dir is not None else None,
        )
        self.model_path = None if model_path is None else str(model_path)
        self.max_length, self.feature_batch_size = max_length, feature_batch_size

    def settings(self) -> dict[str, Any]:
        return {
            "model_path": self.model_path,
            "max_length": self.max_length,
            "feature_batch_size": self.feature_batch_size,
            **super().settings(),
        }

    @classmethod
    def load(
        cls,
        folder: Path,
        domains: Sequence[str],
        settings: dict[str, Any],
        *,
        cache_dir: str | Path | None = None,
        **deps: Any,  # backbone=, model=: not read, the encoder is its own model
    ) -> EmbeddingRouter:
        router = cls(domains, cache_dir=cache_dir, **settings)
        router.load_weights(folder)
        return router


def default_prefix(router: Router) -> str:
    """`router/<kind>/` (`router/` for a bare FeatureRouter, which has no kind)."""
    kind = getattr(router, "kind", None)
    return f"router/{kind}/" if kind else "router/"


def quiet_trainer(epochs: int) -> L.Trainer:
    """A CPU trainer for `epochs`, without logger, checkpoints or progress bar: routers fitted
    outside a run (`router.fit(QuerySet(...))`)."""
    import lightning as L

    return L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
    )
