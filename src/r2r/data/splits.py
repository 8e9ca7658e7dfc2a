"""Deterministic, seeded train/dev/test assignment of query ids."""

from __future__ import annotations

import random
from collections.abc import Iterable

from r2r.types import SPLITS, Split


def assign_splits(
    query_ids: Iterable[str], *, fractions: tuple[float, float, float], seed: int
) -> dict[str, Split]:
    """Shuffle the sorted ids with `seed` and cut them by `fractions` (train, dev, test).

    Sorting first makes the result independent of input order; every split that has a
    non-zero fraction gets at least one query when there are enough queries.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(
            f"fractions must be three non-negative numbers summing to 1, got {fractions}"
        )
    ids = sorted(set(query_ids))
    random.Random(seed).shuffle(ids)
    n = len(ids)
    n_dev = round(n * fractions[1])
    n_test = round(n * fractions[2])
    if n >= 3:
        n_dev = max(n_dev, 1 if fractions[1] > 0 else 0)
        n_test = max(n_test, 1 if fractions[2] > 0 else 0)
    n_train = n - n_dev - n_test
    bounds = {
        "train": (0, n_train),
        "dev": (n_train, n_train + n_dev),
        "test": (n_train + n_dev, n),
    }
    out: dict[str, Split] = {}
    for split in SPLITS:
        lo, hi = bounds[split]
        out.update({qid: split for qid in ids[lo:hi]})
    return out
