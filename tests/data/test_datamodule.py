"""RerankDataModule's evaluation lists: seeded query limits per domain and split."""

from __future__ import annotations

import re

import pytest

from r2r.data.datamodule import RerankDataModule
from r2r.data.examples import Training
from r2r.data.masking.strategies import EntityMasking
from r2r.data.mining import BM25Miner, MiningSettings
from r2r.data.synthetic import generate_all

DATASETS = generate_all(
    ["legal", "medical"],
    seed=0,
    n_entities=40,
    n_train_queries=160,
    n_dev_queries=30,
    n_test_queries=40,
    n_test_seen_queries=20,
)
MINER = BM25Miner(
    MiningSettings(
        top_k=10,
        depth={},
        include_positives=False,
        group_size=8,
        hard_negatives=4,
        hard_skip=0,
        hard_depth=30,
        seed=0,
    )
)
N_POSITIVE_IN_TOP10 = 76  # test queries whose positive BM25 ranks in the top 10
PLACEHOLDER = re.compile(r"\[[A-Z]+_[A-Z]+\]")


SETTINGS = {
    "training": Training("listwise", None),
    "train_batch_size": 8,
    "eval_batch_size": 32,
    "num_workers": 0,
    "max_queries": {},
    "seed": 0,
}


def module(**kwargs) -> RerankDataModule:
    # The lists need no encoder; batches (not built here) would.
    return RerankDataModule(DATASETS, MINER, encoder=None, **(SETTINGS | kwargs))


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
    # The sample follows sample_seed (the data split's seed) where given, not the run's seed.
    assert ids == query_ids(module(max_queries={"test": 5}, seed=1, sample_seed=0), "test")
    assert ids != query_ids(module(max_queries={"test": 5}, seed=0, sample_seed=1), "test")
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


def test_masked_split_abstracts_query_and_candidates_alike() -> None:
    """`test_masked` = the test lists under the eval masker: same ids, scores and judgments;
    an entity gets one placeholder in the query and in every candidate; nothing else moves."""
    plain = module().candidate_lists("test")
    dm = module(eval_masker=EntityMasking())
    masked = dm.candidate_lists("test_masked")
    assert masked == module(eval_masker=EntityMasking()).candidate_lists("test_masked")
    assert len(masked) == len(plain) == 80
    n_shared = n_positive = 0
    for before, after in zip(plain, masked, strict=True):
        assert after.query.id == before.query.id
        assert [p.id for p in after.passages] == [p.id for p in before.passages]
        assert after.first_stage_scores == before.first_stage_scores
        assert after.relevance == before.relevance
        assert after.query.text != before.query.text
        for positive in [p for p in after.passages if after.relevance.get(p.id)]:
            n_positive += 1
            query_marks = set(PLACEHOLDER.findall(after.query.text))
            n_shared += bool(query_marks & set(PLACEHOLDER.findall(positive.text)))
    # Synthetic queries always name their entity, which the positive states.
    assert n_shared == n_positive == N_POSITIVE_IN_TOP10
    with pytest.raises(ValueError, match="needs an eval_masker"):
        module().candidate_lists("test_masked")


def test_evaluation_batches_pass_a_precision_plugins_conversion() -> None:
    """trainer.precision=bf16-true converts every batch; the PairRefs ride along unchanged
    (Lightning used to fail rebuilding the frozen dataclasses)."""
    import torch
    from lightning.pytorch.plugins.precision import HalfPrecision

    from r2r.data.collate import PairCollator, eval_pairs

    def encoder(queries: list[str], documents: list[str]) -> dict[str, torch.Tensor]:
        return {"input_ids": torch.zeros(len(queries), 3, dtype=torch.long), "w": torch.ones(2)}

    refs = eval_pairs(module().candidate_lists("test")[:2])
    batch = PairCollator(encoder)(refs)
    converted = HalfPrecision("bf16-true").convert_input(batch)
    assert list(converted["refs"]) == refs
    assert (converted["input_ids"].dtype, converted["w"].dtype) == (torch.long, torch.bfloat16)
