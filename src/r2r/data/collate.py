"""Collators: training examples and evaluation pairs -> padded model inputs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from r2r.models.scorer import query_groups
from r2r.models.templates import PairEncoder
from r2r.types import PairRef, TrainingExample


@dataclass(frozen=True)
class ExampleCollator:
    """A batch of training examples of one size (groups of G, pairs, or single rows).

    Returns the encoded (query, passage) rows, row b * G + j being example b's passage j,
    their query `groups` (`query_groups`),
    with `labels` (and `teacher` when the examples carry teacher scores) shaped (B, G) for
    groups and pairs, (B,) for rows (`group_size` None), as the losses take them.
    """

    encoder: PairEncoder
    grouped: bool

    def __call__(self, examples: list[TrainingExample]) -> dict[str, Any]:
        size = len(examples[0].passages)
        if any(len(e.passages) != size for e in examples):
            raise ValueError("all examples in a batch must have the same number of passages")
        if not self.grouped and size != 1:
            raise ValueError(f"pointwise examples hold one passage, got {size}")
        queries = [e.query.text for e in examples for _ in e.passages]
        documents = [p.content for e in examples for p in e.passages]
        batch: dict[str, Any] = {
            **self.encoder(queries, documents),  # (B * G, L)
            "groups": query_groups(queries),
            "group_size": size if self.grouped else None,
            "labels": _matrix([e.labels for e in examples], self.grouped),
        }
        teachers = [e.teacher for e in examples]
        if any(t is not None for t in teachers):
            if any(t is None for t in teachers):
                raise ValueError("some examples of the batch have teacher scores, some not")
            batch["teacher"] = _matrix(teachers, self.grouped)
        return batch


def _matrix(rows: list, grouped: bool) -> torch.Tensor:
    values = torch.tensor(rows, dtype=torch.float32)  # (B, G)
    return values if grouped else values[:, 0]  # rows: (B,)


class Refs:
    """An evaluation batch's PairRefs, iterable in order and opaque to Lightning's batch
    walkers (a precision plugin's `convert_input` would try to rebuild the frozen PairRef
    dataclasses and fail, e.g. under trainer.precision=bf16-true)."""

    __slots__ = ("items",)

    def __init__(self, items: list[PairRef]) -> None:
        self.items = tuple(items)

    def __iter__(self) -> Iterator[PairRef]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class PairCollator:
    """Evaluation pairs -> encoded rows, their query `groups`, and the `refs` that place
    each score in its list."""

    encoder: PairEncoder

    def __call__(self, refs: list[PairRef]) -> dict[str, Any]:
        queries = [r.candidates.query.text for r in refs]
        documents = [r.candidates.passages[r.position].content for r in refs]
        return {
            **self.encoder(queries, documents),
            "groups": query_groups(queries),
            "refs": Refs(refs),
        }


def eval_pairs(lists) -> list[PairRef]:
    """Every (list, position) pair of the candidate lists, in order."""
    return [PairRef(c, i) for c in lists for i in range(len(c.passages))]
