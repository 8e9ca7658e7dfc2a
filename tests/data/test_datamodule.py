"""RerankDataModule's evaluation lists: seeded query limits per domain and split."""

from __future__ import annotations

import pytest

from r2r.data.datamodule import RerankDataModule
from r2r.data.mining import BM25Miner, MiningSettings
from r2r.data.synthetic import generate_all

DATASETS = generate_all(["legal", "medical"], seed=0, n_test_seen_queries=20)
MINER = BM25Miner(MiningSettings(top_k=10))


def module(**kwargs) -> RerankDataModule:
    # The lists need no encoder; batches (not built here) would.
    return RerankDataModule(DATASETS, MINER, encoder=None, **kwargs)


def query_ids(dm: RerankDataModule, split: str) -> list[str]:
    return [c.query.id for c in dm.candidate_lists(split)]


def test_max_queries_samples_each_domain_with_the_seed() -> None:
    full = query_ids(module(), "test")
    assert len(full) == 80  # 40 test queries per domain
    limited = module(max_queries={"test": 5, "dev": None})
    ids = query_ids(limited, "test")
    assert len(ids) == 10
    assert [i.split("-")[0] for i in ids] == ["legal"] * 5 + ["medical"] * 5
    # A subset of the full lists, in their order, the same lists each time.
    assert ids == [i for i in full if i in set(ids)]
    assert ids == query_ids(module(max_queries={"test": 5}), "test")
    assert ids != query_ids(module(max_queries={"test": 5}, seed=1), "test")
    # Other splits keep every query; a limit above the count changes nothing.
    assert query_ids(limited, "dev") == query_ids(module(), "dev")
    assert query_ids(module(max_queries={"test_seen": 50}), "test_seen") == query_ids(
        module(), "test_seen"
    )
    assert len(query_ids(module(max_queries={"test_seen": 3}), "test_seen")) == 6


@pytest.mark.parametrize(
    ("limits", "message"),
    [({"train": 5}, "not train"), ({"test": 0}, "at least 1")],
)
def test_max_queries_rejects_bad_limits(limits: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        module(max_queries=limits)
