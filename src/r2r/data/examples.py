"""Training modes: what one training example is (the `training` config group).

The miner gives groups (a query, a positive, then hard and random negatives). A mode turns
them into the examples a loss trains on, each passage with its graded label (the qrels
grade over the domain's top grade, so 0/1/2 become 0, 0.5, 1) and, when a teacher run is
given, the teacher's score:

- listwise: each group as it is (B x G), positive first;
- pairwise: pairs (better, worse) (B x 2): the positive against each of its negatives, and
  every two positives of one query with different grades;
- pointwise: every distinct (query, passage) of the groups as one row (N).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from r2r.data.errors import DataError
from r2r.data.io import read_run
from r2r.types import RankingGroup, RetrievalDataset, TrainingExample

Mode = Literal["listwise", "pairwise", "pointwise"]
# The example shape of each mode, as the losses name it (r2r.losses.SHAPES).
SHAPES: dict[str, str] = {"listwise": "groups", "pairwise": "pairs", "pointwise": "rows"}
Run = Mapping[str, Mapping[str, float]]  # query id -> document id -> score


@dataclass(frozen=True)
class Training:
    """How training examples are made: `mode` and, to distil a stronger reranker, a run file
    of its scores per domain (`teacher`: domain -> path; TREC run or `qid doc score`)."""

    mode: Mode
    teacher: Mapping[str, str] | None

    def __post_init__(self) -> None:
        if self.mode not in SHAPES:
            raise ValueError(f"training.mode={self.mode!r}; expected one of {sorted(SHAPES)}")

    @property
    def shape(self) -> str:
        return SHAPES[self.mode]

    def teacher_runs(self, domains: Sequence[str]) -> dict[str, Run]:
        """The teacher's scores of each domain in `domains` (none without a teacher)."""
        if not self.teacher:
            return {}
        if missing := [d for d in domains if d not in self.teacher]:
            raise ValueError(
                f"training.teacher has no run file for {missing} (it names {sorted(self.teacher)})"
            )
        return {d: read_run(self.teacher[d], domain=d) for d in domains}

    def examples(
        self,
        groups: Sequence[RankingGroup],
        datasets: Mapping[str, RetrievalDataset],
        teachers: Mapping[str, Run],
    ) -> list[TrainingExample]:
        """The training examples of `groups` (mined from `datasets`' train split)."""
        top = {d: top_grade(dataset) for d, dataset in datasets.items()}
        labelled = [
            _labelled(g, datasets[g.domain], top[g.domain], teachers.get(g.domain)) for g in groups
        ]
        if self.mode == "listwise":
            return labelled
        if self.mode == "pairwise":
            return _pairs(labelled)
        return _rows(labelled)


def top_grade(dataset: RetrievalDataset) -> int:
    """The highest grade of the training qrels (1 for binary judgments)."""
    return max((g for q in dataset.qrels.get("train", {}).values() for g in q.values()), default=1)


def _labelled(
    group: RankingGroup, dataset: RetrievalDataset, top: int, teacher: Run | None
) -> TrainingExample:
    judged = dataset.qrels.get("train", {}).get(group.query.id, {})
    labels = tuple(max(judged.get(p.id, 0), 0) / max(top, 1) for p in group.passages)
    scores = None
    if teacher is not None:
        scores = _teacher_scores(teacher, group, dataset.name)
    return TrainingExample(group.domain, group.query, group.passages, labels, scores)


def _teacher_scores(teacher: Run, group: RankingGroup, name: str) -> tuple[float, ...]:
    """The teacher's scores of the group's passages; a passage it did not rank (a random
    negative below its cut-off) gets the lowest score it gave that query."""
    ranked = teacher.get(group.query.id)
    if not ranked:
        raise DataError(
            f"the teacher run scores no document of training query {group.query.id!r} of {name}"
        )
    floor = min(ranked.values())
    return tuple(ranked.get(p.id, floor) for p in group.passages)


def _pairs(groups: Sequence[TrainingExample]) -> list[TrainingExample]:
    """(better, worse) pairs: each group's positive against its negatives, then positives of
    one query with different grades; each distinct pair once, in first-seen order."""
    pairs: dict[tuple, TrainingExample] = {}

    def add(a: TrainingExample, i: int, b: TrainingExample, j: int) -> None:
        """Passage i of example a above passage j of example b (one query)."""
        key = (a.domain, a.query.id, a.passages[i].id, b.passages[j].id)
        teacher = None if a.teacher is None else (a.teacher[i], b.teacher[j])
        labels = (a.labels[i], b.labels[j])
        passages = (a.passages[i], b.passages[j])
        pairs.setdefault(key, TrainingExample(a.domain, a.query, passages, labels, teacher))

    positives: dict[tuple[str, str], list[TrainingExample]] = {}
    for e in groups:
        for j in range(1, len(e.passages)):
            if e.labels[0] > e.labels[j]:
                add(e, 0, e, j)
        positives.setdefault((e.domain, e.query.id), []).append(e)
    for found in positives.values():
        for a in found:
            for b in found:
                if a.labels[0] > b.labels[0]:
                    add(a, 0, b, 0)
    return list(pairs.values())


def _rows(groups: Sequence[TrainingExample]) -> list[TrainingExample]:
    """Every distinct (domain, query, passage) of the groups as a one-passage example."""
    rows: dict[tuple[str, str, str], TrainingExample] = {}
    for e in groups:
        for i, passage in enumerate(e.passages):
            rows.setdefault(
                (e.domain, e.query.id, passage.id),
                TrainingExample(
                    e.domain,
                    e.query,
                    (passage,),
                    (e.labels[i],),
                    None if e.teacher is None else (e.teacher[i],),
                ),
            )
    return list(rows.values())
