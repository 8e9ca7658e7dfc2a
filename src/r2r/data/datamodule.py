"""The one DataModule of r2r: everything the backbone is trained or scored on.

Reranker training examples (any training mode, optionally masked for EAG stage 1), the dev
and test candidate lists, and the labelled queries and feature batches routers are trained
on, for the selected domains.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from r2r.data.collate import ExampleCollator, PairCollator, eval_pairs
from r2r.data.examples import Training
from r2r.data.masking.strategies import Masker, mask_groups, mask_lists
from r2r.data.mining import BM25Miner
from r2r.data.sampler import DomainBatchSampler, ResumableLoader
from r2r.models.templates import PairEncoder
from r2r.types import (
    CandidateList,
    LabelledQueries,
    RankingGroup,
    RetrievalDataset,
    Split,
    TrainingExample,
)

MASKED = "_masked"  # split suffix: the split's lists abstracted by the eval masker
Featurize = Callable[[Sequence[str]], torch.Tensor]  # texts (N,) -> features (N, dim)


class RerankDataModule(L.LightningDataModule):
    """Training examples, candidate lists and router queries of the selected domains.

    training: the training mode (`Training`: listwise groups, pairwise, pointwise rows;
        optional teacher scores).
    masker: abstracts the training groups (EAG stage 1); eval_masker: a fitted masker for
        the `<split>_masked` lists.
    train_batch_size: examples per step (groups, pairs or rows, by mode).
    eval_batch_size: (query, passage) pairs per scoring batch.
    max_queries: evaluate on a seeded sample of at most N queries per domain, per split.
    seed: the run's seed (training order, masking); sample_seed: the max_queries sample's
        (the data split's seed, so that runs of every training seed score the same queries;
        None: `seed`).
    """

    def __init__(
        self,
        datasets: Mapping[str, RetrievalDataset],
        miner: BM25Miner,
        encoder: PairEncoder,
        *,
        training: Training,
        train_batch_size: int,
        eval_batch_size: int,
        num_workers: int,
        max_queries: Mapping[str, int | None],
        seed: int,
        sample_seed: int | None = None,
        masker: Masker | None = None,
        eval_masker: Masker | None = None,
    ) -> None:
        super().__init__()
        limits = {k: v for k, v in max_queries.items() if v is not None}
        if "train" in limits:
            raise ValueError("max_queries limits evaluation splits (dev, test, ...), not train")
        if bad := sorted(k for k, v in limits.items() if v < 1):
            raise ValueError(f"max_queries must be at least 1, got {limits} for {bad}")
        self.max_queries = limits
        self.datasets = dict(datasets)
        self.miner = miner
        self.encoder = encoder
        self.training = training
        self.masker = masker
        self.eval_masker = eval_masker
        self.train_batch_size = train_batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.sample_seed = seed if sample_seed is None else sample_seed
        self._groups: list[RankingGroup] | None = None
        self._examples: list[TrainingExample] | None = None
        self._lists: dict[Split, list[CandidateList]] = {}

    @property
    def domains(self) -> list[str]:
        return sorted(self.datasets)

    # ------------------------------------------------------------------ reranker training
    def groups(self) -> list[RankingGroup]:
        """The mined training groups (abstracted by `masker`, if any), domain by domain."""
        if self._groups is None:
            groups = [
                g
                for d in self.domains
                for g in self.miner.training_groups(self.datasets[d], "train")
            ]
            if self.masker is not None:
                # Only training groups are abstracted; dev and test lists stay as they are.
                groups = mask_groups(groups, self.masker.fit(groups), seed=self.seed)
            self._groups = groups
        return self._groups

    def examples(self) -> list[TrainingExample]:
        """The training examples of the training mode, built from `groups()`."""
        if self._examples is None:
            teachers = self.training.teacher_runs(self.domains)
            self._examples = self.training.examples(self.groups(), self.datasets, teachers)
        return self._examples

    def train_dataloader(self) -> DataLoader:
        examples = self.examples()
        if not examples:
            raise ValueError(f"no training examples for domains {self.domains}")
        sampler = DomainBatchSampler(
            [e.domain for e in examples], self.train_batch_size, seed=self.seed
        )
        return ResumableLoader(
            examples,
            batch_sampler=sampler,
            collate_fn=ExampleCollator(self.encoder, grouped=self.training.mode != "pointwise"),
            num_workers=self.num_workers,
            # Its own generator: starting a pass draws a seed from it, not from the global
            # RNG, whose state a resumed fit restores from the checkpoint.
            generator=torch.Generator().manual_seed(self.seed),
        )

    # ------------------------------------------------------------------ evaluation
    def candidate_lists(self, split: Split) -> list[CandidateList]:
        """BM25 candidate lists of `split`, domain by domain; under `max_queries`, a seeded
        sample of at most that many queries per domain (the same sample in every run).
        `<split>_masked` is `<split>` abstracted by `eval_masker`."""
        if split not in self._lists and split.endswith(MASKED):
            if self.eval_masker is None:
                raise ValueError(f"split {split!r} needs an eval_masker")
            lists = self.candidate_lists(split.removesuffix(MASKED))
            self._lists[split] = mask_lists(lists, self.eval_masker, seed=self.seed)
        if split not in self._lists:
            limit = self.max_queries.get(split)
            self._lists[split] = []
            for d in self.domains:
                lists = self.miner.candidate_lists(self.datasets[d], split)
                if limit is not None and len(lists) > limit:
                    rng = random.Random(f"{self.sample_seed}:{d}:{split}")
                    keep = set(rng.sample(range(len(lists)), limit))
                    lists = [c for i, c in enumerate(lists) if i in keep]
                self._lists[split] += lists
        return self._lists[split]

    def eval_dataloader(self, lists: Sequence[CandidateList]) -> DataLoader:
        return DataLoader(
            eval_pairs(lists),
            batch_size=self.eval_batch_size,
            shuffle=False,
            collate_fn=PairCollator(self.encoder),
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader(self.candidate_lists("dev"))

    # ------------------------------------------------------------------ router training
    def queries(self, split: Split) -> LabelledQueries:
        """The judged queries of `split` (with a positive) and their domains."""
        found = [(q.text, d) for d in self.domains for q in self.datasets[d].split_queries(split)]
        return LabelledQueries(tuple(t for t, _ in found), tuple(d for _, d in found))

    def router_dataloader(
        self,
        split: Split,
        featurize: Featurize,
        domains: Sequence[str],
        *,
        batch_size: int,
        shuffle: bool,
    ) -> DataLoader | None:
        """(features (B, dim), domain ids (B,)) batches of `split`'s queries, the ids
        indexing `domains`; None when the split has no query."""
        return feature_loader(
            self.queries(split), featurize, domains, batch_size, shuffle=shuffle, seed=self.seed
        )


class QuerySet:
    """Labelled queries held in memory, served as `RerankDataModule` serves them: to train
    a router outside a run (`router.fit(QuerySet(train))`)."""

    def __init__(
        self, train: LabelledQueries, dev: LabelledQueries | None = None, *, seed: int = 0
    ) -> None:
        self.splits = {"train": train, "dev": dev or LabelledQueries((), ())}
        self.seed = seed

    @classmethod
    def of(cls, texts: Sequence[str], domains: Sequence[str], **kwargs) -> QuerySet:
        return cls(LabelledQueries(tuple(texts), tuple(domains)), **kwargs)

    def queries(self, split: Split) -> LabelledQueries:
        return self.splits.get(split, LabelledQueries((), ()))

    def router_dataloader(self, split, featurize, domains, *, batch_size, shuffle):
        return feature_loader(
            self.queries(split), featurize, domains, batch_size, shuffle=shuffle, seed=self.seed
        )


def feature_loader(
    queries: LabelledQueries,
    featurize: Featurize,
    domains: Sequence[str],
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
) -> DataLoader | None:
    """Features are computed once for the whole split (the featurizer caches them); the
    head then trains on them for many epochs."""
    if not queries.texts:
        return None
    if unknown := sorted(set(queries.domains) - set(domains)):
        raise ValueError(f"queries of domains {unknown}, which are not among {list(domains)}")
    index = {d: i for i, d in enumerate(domains)}
    labels = torch.tensor([index[d] for d in queries.domains], dtype=torch.long)
    return DataLoader(
        TensorDataset(featurize(queries.texts), labels),
        batch_size=batch_size,
        shuffle=shuffle,
        generator=torch.Generator().manual_seed(seed) if shuffle else None,
    )
