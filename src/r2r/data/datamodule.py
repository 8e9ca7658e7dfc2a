"""Datasets, collators and the DataModule shared by the reranker (and later) modules."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler

from r2r.data.masking.strategies import Masker, mask_groups, mask_lists
from r2r.data.mining import BM25Miner
from r2r.models.templates import PromptTemplate, encode_pairs
from r2r.types import CandidateList, RankingGroup, RetrievalDataset, Split

MASKED = "_masked"  # split suffix: the split's lists abstracted by the eval masker


@dataclass(frozen=True)
class PairRef:
    """One (query, candidate) pair to score during evaluation."""

    candidates: CandidateList
    position: int


@dataclass(frozen=True)
class PairEncoder:
    """Turns (query, document) texts into padded model inputs with the backbone's template."""

    tokenizer: Any
    template: PromptTemplate
    max_length: int = 256
    max_query_length: int = 64
    instruction: str | None = None

    def __call__(self, queries: Sequence[str], documents: Sequence[str]) -> dict[str, torch.Tensor]:
        return encode_pairs(
            self.tokenizer,
            self.template,
            queries,
            documents,
            max_length=self.max_length,
            max_query_length=self.max_query_length,
            instruction=self.instruction,
        )


@dataclass(frozen=True)
class GroupCollator:
    encoder: PairEncoder

    def __call__(self, groups: list[RankingGroup]) -> dict[str, Any]:
        size = len(groups[0].passages)
        if any(len(g.passages) != size for g in groups):
            raise ValueError("all groups in a batch must have the same size")
        queries = [g.query.text for g in groups for _ in g.passages]
        documents = [p.content for g in groups for p in g.passages]
        # (B * G, L): row b * G + j is group b's passage j; the positive is j == 0.
        return {**self.encoder(queries, documents), "group_size": size}


@dataclass(frozen=True)
class PairCollator:
    encoder: PairEncoder

    def __call__(self, refs: list[PairRef]) -> dict[str, Any]:
        queries = [r.candidates.query.text for r in refs]
        documents = [r.candidates.passages[r.position].content for r in refs]
        return {**self.encoder(queries, documents), "refs": refs}


class DomainBatchSampler(Sampler[list[int]]):
    """Shuffled batches that never mix domains (each batch is one domain's groups).

    Re-seeded per epoch from (seed, epoch), so runs are reproducible.

    Under DDP (`world_size` > 1) every rank draws the same global batches of
    `batch_size * world_size` groups and keeps its strided share, so one optimizer step of
    N processes sees exactly the groups of one single-process step with an N times larger
    batch. A global batch too short to give every rank a group (a domain's tail) is
    dropped: a rank without a batch would stall the others.
    """

    def __init__(
        self,
        domains: Sequence[str],
        batch_size: int,
        *,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        # None: read from torch.distributed when iterating (the process group is set up
        # by Lightning after the data loader is built).
        self._rank, self._world_size = rank, world_size
        self.by_domain: dict[str, list[int]] = {}
        for index, domain in enumerate(domains):
            self.by_domain.setdefault(domain, []).append(index)

    def _ranks(self) -> tuple[int, int]:
        rank, world = 0, 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        return (
            rank if self._rank is None else self._rank,
            world if self._world_size is None else self._world_size,
        )

    def _batches(self, epoch: int, world: int) -> list[list[int]]:
        """The global batches of `epoch`, each `batch_size * world` groups at most."""
        rng = random.Random(f"{self.seed}/{epoch}")
        size = self.batch_size * world
        batches = []
        for domain in sorted(self.by_domain):
            indices = list(self.by_domain[domain])
            rng.shuffle(indices)
            batches += [indices[i : i + size] for i in range(0, len(indices), size)]
        rng.shuffle(batches)
        # Dropped after the shuffle, so that N ranks of batch B draw the same random
        # sequence as one process of batch N*B.
        return [b for b in batches if len(b) >= world]

    def __iter__(self) -> Iterator[list[int]]:
        rank, world = self._ranks()
        batches = [b[rank::world] for b in self._batches(self.epoch, world)]
        self.epoch += 1
        return iter(batches)

    def __len__(self) -> int:
        return len(self._batches(self.epoch, self._ranks()[1]))


def eval_pairs(lists: Sequence[CandidateList]) -> list[PairRef]:
    return [PairRef(c, i) for c in lists for i in range(len(c.passages))]


class RerankDataModule(L.LightningDataModule):
    """Training groups (optionally masked, EAG stage 1), dev and test candidate lists for
    the selected domains."""

    def __init__(
        self,
        datasets: Mapping[str, RetrievalDataset],
        miner: BM25Miner,
        encoder: PairEncoder,
        *,
        masker: Masker | None = None,
        eval_masker: Masker | None = None,
        train_batch_size: int = 8,
        eval_batch_size: int = 32,
        num_workers: int = 0,
        max_queries: Mapping[str, int | None] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        limits = {k: v for k, v in (max_queries or {}).items() if v is not None}
        if "train" in limits:
            raise ValueError("max_queries limits evaluation splits (dev, test, ...), not train")
        if bad := sorted(k for k, v in limits.items() if v < 1):
            raise ValueError(f"max_queries must be at least 1, got {limits} for {bad}")
        self.max_queries = limits
        self.datasets = dict(datasets)
        self.miner = miner
        self.encoder = encoder
        self.masker = masker
        self.eval_masker = eval_masker  # a fitted masker for the `<split>_masked` lists
        self.train_batch_size = train_batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.seed = seed
        self._groups: list[RankingGroup] | None = None
        self._lists: dict[Split, list[CandidateList]] = {}

    @property
    def domains(self) -> list[str]:
        return sorted(self.datasets)

    def groups(self) -> list[RankingGroup]:
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
                    rng = random.Random(f"{self.seed}:{d}:{split}")
                    keep = set(rng.sample(range(len(lists)), limit))
                    lists = [c for i, c in enumerate(lists) if i in keep]
                self._lists[split] += lists
        return self._lists[split]

    def train_dataloader(self) -> DataLoader:
        groups = self.groups()
        if not groups:
            raise ValueError(f"no training groups for domains {self.domains}")
        sampler = DomainBatchSampler(
            [g.domain for g in groups], self.train_batch_size, seed=self.seed
        )
        return DataLoader(
            groups,
            batch_sampler=sampler,
            collate_fn=GroupCollator(self.encoder),
            num_workers=self.num_workers,
        )

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

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader(self.candidate_lists("test"))
