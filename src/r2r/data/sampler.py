"""Training batches that keep to one domain, sharded across DDP ranks; a loader of them that
an interrupted fit resumes where it stopped."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler


class DomainBatchSampler(Sampler[list[int]]):
    """Shuffled batches that never mix domains (each batch is one domain's groups).

    Re-seeded per epoch from (seed, epoch), so runs are reproducible; `state_dict` is where
    the next pass starts (its epoch and first batch), which `load_state_dict` sets.

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
        self.start = 0  # batches of the next pass to skip (a resumed epoch)
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
        # A generator: nothing moves on until the first batch is drawn. A DataLoader with
        # workers calls iter() twice per pass and draws from the second iterator only.
        rank, world = self._ranks()
        epoch, start = self.epoch, self.start
        self.epoch, self.start = epoch + 1, 0
        for batch in self._batches(epoch, world)[start:]:
            yield batch[rank::world]

    def __len__(self) -> int:
        return len(self._batches(self.epoch, self._ranks()[1]))

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "start": self.start}

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, start = state["epoch"], state["start"]
        if start >= len(self._batches(epoch, self._ranks()[1])):  # that epoch was done
            epoch, start = epoch + 1, 0
        self.epoch, self.start = epoch, start


class ResumableLoader(DataLoader):
    """A DataLoader of `DomainBatchSampler` batches that a resumed Lightning fit continues
    mid-epoch with the batch after the last one trained.

    Lightning keeps the `state_dict()` of a training loader that has one in its checkpoints
    and hands it to `load_state_dict` before a resumed fit draws a batch. The position is
    counted here, in batches handed to training, not in the sampler: worker processes draw
    from the sampler ahead of training.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._position: dict[str, int] | None = None  # the pass under way

    def __iter__(self) -> Iterator[Any]:
        position = self.batch_sampler.state_dict()
        batches = super().__iter__()  # draws the pass from the sampler
        self._position = position
        return self._counted(batches, position)

    @staticmethod
    def _counted(batches: Iterator[Any], position: dict[str, int]) -> Iterator[Any]:
        for batch in batches:
            position["start"] += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return dict(self._position or self.batch_sampler.state_dict())

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batch_sampler.load_state_dict(state)
