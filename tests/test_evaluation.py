"""First-stage rows on hand-made candidate lists: the dense row and the recall ceiling."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from r2r.evaluation import ceiling, dense
from r2r.metrics import rank
from r2r.types import CandidateList, Passage, Query

VECTORS = {
    "q": [1.0, 0.0],
    "a": [3.0, 4.0],  # cos 0.6 (not unit length: dense normalises)
    "b": [0.0, 2.0],  # cos 0
    "c": [-1.0, 1.0],  # cos -0.7071
}


def candidates(
    domain: str, qid: str, text: str, ids: Sequence[str], relevance: dict[str, int]
) -> CandidateList:
    passages = tuple(Passage(i, i) for i in ids)
    return CandidateList(domain, Query(qid, text), passages, (0.0,) * len(ids), relevance)


def test_dense_scores_are_cosines_and_each_text_is_embedded_once() -> None:
    seen: list[str] = []

    def embed(texts: Sequence[str]) -> torch.Tensor:
        seen.extend(texts)
        return torch.tensor([VECTORS[t] for t in texts])

    lists = [
        candidates("legal", "1", "q", ["b", "c", "a"], {"a": 1}),
        candidates("legal", "2", "q", ["c", "a"], {"c": 1}),
    ]
    first, second = dense(lists, embed)
    assert first.candidates is lists[0]
    assert first.scores == pytest.approx((0.0, -(0.5**0.5), 0.6))
    assert rank(["b", "c", "a"], first.scores) == ["a", "b", "c"]
    assert second.scores == pytest.approx((-(0.5**0.5), 0.6))
    assert sorted(seen) == ["a", "b", "c", "q"]


def test_ceiling_is_the_mean_share_of_each_querys_positives_in_its_list() -> None:
    lists = [
        # 1 of its 2 positives is in the list; the judged non-relevant "z" does not count.
        candidates("legal", "1", "q", ["a", "c"], {"a": 1, "b": 2, "z": 0}),
        candidates("legal", "2", "q", ["a", "c"], {"c": 1}),
        candidates("medical", "3", "q", ["a", "c"], {"b": 1}),
        candidates("medical", "4", "q", ["a"], {"z": 0}),  # no positive: left out
    ]
    assert ceiling(lists, "bm25:dev") == {
        "bm25:dev/legal/recall@depth": 75.0,
        "bm25:dev/medical/recall@depth": 0.0,
        "bm25:dev/all/recall@depth": 50.0,
    }
