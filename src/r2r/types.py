"""Domain types shared across r2r. Named once here; modules pass these, not tuples."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Split = Literal["train", "dev", "test"]
SPLITS: tuple[Split, ...] = ("train", "dev", "test")
DOMAINS: tuple[str, ...] = ("legal", "medical", "finance")

# qid -> doc id -> graded relevance (0 = judged non-relevant)
Qrels = Mapping[str, Mapping[str, int]]


@dataclass(frozen=True)
class Passage:
    id: str
    text: str
    title: str = ""

    @property
    def content(self) -> str:
        """The text a reranker reads: title and body."""
        return f"{self.title}\n{self.text}" if self.title else self.text


@dataclass(frozen=True)
class Query:
    id: str
    text: str


@dataclass(frozen=True)
class RetrievalDataset:
    """One domain's corpus, queries and per-split qrels (the BEIR folder, in memory)."""

    name: str
    domain: str
    corpus: Mapping[str, Passage]
    queries: Mapping[str, Query]
    qrels: Mapping[str, Qrels]  # split -> qrels

    def split_queries(self, split: Split) -> list[Query]:
        """Queries judged in `split` that have at least one positive, sorted by id."""
        judged = self.qrels.get(split, {})
        return [
            self.queries[qid]
            for qid in sorted(judged)
            if any(grade > 0 for grade in judged[qid].values())
        ]

    def positives(self, split: Split, qid: str) -> list[str]:
        return sorted(d for d, g in self.qrels.get(split, {}).get(qid, {}).items() if g > 0)


@dataclass(frozen=True)
class RankingGroup:
    """A training group: one query, its positive first, then negatives."""

    domain: str
    query: Query
    passages: tuple[Passage, ...]


@dataclass(frozen=True)
class TrainingExample:
    """What one training step row holds: a query and one or more passages with their graded
    labels (the qrels grade over the domain's top grade, in [0, 1]; 0 = not relevant) and,
    when distilling, a teacher's scores.

    Listwise: the group (positive first, then negatives); pairwise: two passages, the higher
    graded first; pointwise: one passage.
    """

    domain: str
    query: Query
    passages: tuple[Passage, ...]
    labels: tuple[float, ...]
    teacher: tuple[float, ...] | None = None


@dataclass(frozen=True)
class CandidateList:
    """An evaluation item: a query, the first stage's candidates and its scores."""

    domain: str
    query: Query
    passages: tuple[Passage, ...]
    first_stage_scores: tuple[float, ...]
    relevance: Mapping[str, int] = field(default_factory=dict)  # doc id -> grade


@dataclass(frozen=True)
class PairRef:
    """One (query, candidate) pair of a candidate list, to score during evaluation."""

    candidates: CandidateList
    position: int


@dataclass(frozen=True)
class LabelledQueries:
    """Query texts with their domains: what routers are trained and evaluated on."""

    texts: tuple[str, ...]
    domains: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.domains):
            raise ValueError(f"{len(self.texts)} queries but {len(self.domains)} domains")


@dataclass(frozen=True)
class ScoredList:
    """A candidate list with one score per passage (any scorer: BM25, a reranker, ...)."""

    candidates: CandidateList
    scores: tuple[float, ...]
