"""Training batches that keep to one domain, sharded across DDP ranks."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


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
