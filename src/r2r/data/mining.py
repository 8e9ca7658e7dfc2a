"""BM25 candidate mining: evaluation candidate lists and training groups.

Labels come from the qrels; BM25 (bm25s) only decides which non-positives are hard.
Results are cached on disk as document ids, keyed by a fingerprint of the dataset and of
every setting that produced them, so a rerun or a sweep over unrelated knobs re-uses them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import bm25s
import numpy as np

from r2r.files import write_json_atomic
from r2r.progress import Reporter
from r2r.types import CandidateList, RankingGroup, RetrievalDataset, Split

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class MiningSettings:
    """Every knob that changes what the miner returns (and so the cache key). Their one
    home is the config (`mining` in conf/config.yaml): no default here for what it sets."""

    top_k: int  # evaluation candidates per query
    # Domain -> its own number of evaluation candidates (deeper than top_k where the
    # first stage misses positives and the corpus is small); other domains keep top_k.
    depth: Mapping[str, int]
    include_positives: bool  # eval variant: add missing positives to the top-k
    group_size: int  # 1 positive + (group_size - 1) negatives
    hard_negatives: int  # drawn from the BM25 rank window below; the rest are random
    hard_skip: int  # non-positives skipped at the very top (false-negative guard)
    hard_depth: int  # window end, in ranks among non-positives
    stopwords: str = "en"  # bm25s's stopword list (the config leaves it as is)
    seed: int

    def __post_init__(self) -> None:
        if self.group_size < 2:
            raise ValueError(
                f"group_size must be >= 2 (1 positive + negatives), got {self.group_size}"
            )
        if not 0 <= self.hard_negatives <= self.group_size - 1:
            raise ValueError(
                f"hard_negatives must be in [0, group_size - 1 = {self.group_size - 1}], "
                f"got {self.hard_negatives}"
            )
        if not 0 <= self.hard_skip < self.hard_depth:
            raise ValueError(
                f"need 0 <= hard_skip < hard_depth, got {self.hard_skip}, {self.hard_depth}"
            )
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        # A plain dict (Hydra passes a DictConfig), so the settings compare and copy as values.
        object.__setattr__(self, "depth", dict(self.depth))
        if bad := {d: k for d, k in self.depth.items() if not isinstance(k, int) or k < 1}:
            raise ValueError(f"depth must map domains to a top-k >= 1, got {bad}")

    def depth_of(self, domain: str) -> int:
        """The number of evaluation candidates of `domain`'s queries."""
        return self.depth.get(domain, self.top_k)


def dataset_fingerprint(dataset: RetrievalDataset) -> str:
    digest = hashlib.sha256()
    for doc in dataset.corpus.values():
        digest.update(f"d\0{doc.id}\0{doc.title}\0{doc.text}\n".encode())
    for query in dataset.queries.values():
        digest.update(f"q\0{query.id}\0{query.text}\n".encode())
    for split in sorted(dataset.qrels):
        for qid in sorted(dataset.qrels[split]):
            for doc_id, grade in sorted(dataset.qrels[split][qid].items()):
                digest.update(f"r\0{split}\0{qid}\0{doc_id}\0{grade}\n".encode())
    return digest.hexdigest()[:16]


class BM25Miner:
    """Mines candidates and training groups for one dataset with BM25 over its corpus."""

    def __init__(self, settings: MiningSettings, cache_dir: str | Path | None = None) -> None:
        self.settings = settings
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None

    # -------------------------------------------------------------- public API
    def candidate_lists(self, dataset: RetrievalDataset, split: Split) -> list[CandidateList]:
        """BM25 top-k for each judged query of `split` (with its scores), in query-id order;
        k is the dataset's domain's depth."""
        s = self.settings
        key = ("candidates", split, s.depth_of(dataset.domain), s.include_positives, s.stopwords)
        cached = self._cached(
            dataset,
            key,
            lambda: self._mine_candidates(dataset, split),
            lambda value: candidates_problem(value, dataset, split),
        )
        judged = dataset.qrels.get(split, {})
        return [
            CandidateList(
                domain=dataset.domain,
                query=dataset.queries[qid],
                passages=tuple(dataset.corpus[d] for d, _ in ranked),
                first_stage_scores=tuple(score for _, score in ranked),
                relevance=dict(judged[qid]),
            )
            for qid, ranked in cached.items()
        ]

    def training_groups(
        self, dataset: RetrievalDataset, split: Split = "train"
    ) -> list[RankingGroup]:
        """One group per (query, positive): the positive first, then hard and random negatives."""
        # Training groups do not depend on the evaluation depth: the same cache key.
        key = (
            "groups",
            split,
            *astuple_without(self.settings, "top_k", "include_positives", "depth"),
        )
        cached = self._cached(
            dataset,
            key,
            lambda: self._mine_groups(dataset, split),
            lambda value: groups_problem(value, dataset, split, self.settings.group_size),
        )
        return [
            RankingGroup(
                domain=dataset.domain,
                query=dataset.queries[row["query"]],
                passages=tuple(dataset.corpus[d] for d in row["passages"]),
            )
            for row in cached
        ]

    # -------------------------------------------------------------- mining
    def _rankings(
        self, dataset: RetrievalDataset, queries: list[str], split: Split
    ) -> dict[str, list[tuple[str, float]]]:
        """Full BM25 ranking of the corpus for each query; ties broken by doc id."""
        doc_ids = sorted(dataset.corpus)
        texts = [dataset.corpus[d].content for d in doc_ids]
        retriever = bm25s.BM25()
        retriever.index(
            bm25s.tokenize(texts, stopwords=self.settings.stopwords, show_progress=False),
            show_progress=False,
        )
        tokenized = bm25s.tokenize(
            [dataset.queries[q].text for q in queries],
            stopwords=self.settings.stopwords,
            return_ids=False,
            show_progress=False,
        )
        ids = np.array(doc_ids)
        out: dict[str, list[tuple[str, float]]] = {}
        with Reporter(f"mine {dataset.name} {split}", len(queries), "queries") as progress:
            for qid, tokens in zip(queries, tokenized, strict=True):
                scores = retriever.get_scores(tokens)
                # doc_ids are sorted, so a stable sort on -score keeps id order within ties.
                order = np.argsort(-scores, kind="stable")
                out[qid] = [
                    (str(d), float(s)) for d, s in zip(ids[order], scores[order], strict=True)
                ]
                progress.advance()
        return out

    def _mine_candidates(self, dataset: RetrievalDataset, split: Split) -> dict[str, list]:
        s = self.settings
        qids = [q.id for q in dataset.split_queries(split)]
        rankings = self._rankings(dataset, qids, split)
        out = {}
        for qid in qids:
            top = rankings[qid][: s.depth_of(dataset.domain)]
            if s.include_positives:
                present = {d for d, _ in top}
                rank_of = {d: (i, sc) for i, (d, sc) in enumerate(rankings[qid])}
                missing = [d for d in dataset.positives(split, qid) if d not in present]
                top = top + [
                    (d, rank_of[d][1]) for d in sorted(missing, key=lambda d: rank_of[d][0])
                ]
            out[qid] = [[d, sc] for d, sc in top]
        return out

    def _mine_groups(self, dataset: RetrievalDataset, split: Split) -> list[dict]:
        s = self.settings
        qids = [q.id for q in dataset.split_queries(split)]
        rankings = self._rankings(dataset, qids, split)
        all_docs = sorted(dataset.corpus)
        groups = []
        for qid in qids:
            positives = dataset.positives(split, qid)
            excluded = set(positives)
            window = [d for d, _ in rankings[qid] if d not in excluded][s.hard_skip : s.hard_depth]
            for pos in positives:
                # String seeds are hashed with SHA-512 by random.Random: stable across runs.
                rng = random.Random(f"{s.seed}/{dataset.name}/{qid}/{pos}")
                hard = rng.sample(window, min(s.hard_negatives, len(window)))
                taken = excluded | set(hard)
                pool = [d for d in all_docs if d not in taken]
                n_random = s.group_size - 1 - len(hard)
                if n_random > len(pool):
                    raise ValueError(
                        f"{dataset.name}: corpus too small for group_size={s.group_size} "
                        f"(query {qid!r} has {len(pool) + len(hard)} possible negatives)"
                    )
                groups.append({"query": qid, "passages": [pos, *hard, *rng.sample(pool, n_random)]})
        return groups

    # -------------------------------------------------------------- cache
    def _cached(
        self,
        dataset: RetrievalDataset,
        key: tuple,
        compute: Callable[[], Any],
        problem: Callable[[Any], str | None],
    ) -> Any:
        """`compute()`, or its earlier result from the cache. A cache file that cannot be
        read or does not hold what `compute` returns (a run killed mid-write by an older
        r2r, a full disk, a hand edit) is a miss: recomputed, with a warning naming it."""
        if self.cache_dir is None:
            return compute()
        name = hashlib.sha256(json.dumps([dataset_fingerprint(dataset), *key]).encode()).hexdigest()
        path = self.cache_dir / f"{dataset.name}-{key[0]}-{key[1]}-{name[:16]}.json"
        if path.is_file():
            try:
                value = json.loads(path.read_text(encoding="utf-8"))
                reason = problem(value)
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if reason is None:
                return value
            log.warning("%s: unreadable cache file (%s); recomputing", path, reason)
        value = compute()
        write_json_atomic(path, value)
        return value


def candidates_problem(value: Any, dataset: RetrievalDataset, split: Split) -> str | None:
    """What is wrong with a cached `_mine_candidates` result; None if nothing."""
    qids = [q.id for q in dataset.split_queries(split)]
    if not isinstance(value, dict) or sorted(value) != sorted(qids):
        return f"expected the candidates of the {len(qids)} {split} queries"
    for qid, ranked in value.items():
        if not isinstance(ranked, list) or not all(
            isinstance(row, list)
            and len(row) == 2
            and isinstance(row[0], str)
            and row[0] in dataset.corpus
            and isinstance(row[1], (int, float))
            for row in ranked
        ):
            return f"query {qid!r}: expected [document id, score] rows"
    return None


def groups_problem(
    value: Any, dataset: RetrievalDataset, split: Split, group_size: int
) -> str | None:
    """What is wrong with a cached `_mine_groups` result; None if nothing."""
    n_groups = sum(len(dataset.positives(split, q.id)) for q in dataset.split_queries(split))
    if not isinstance(value, list) or len(value) != n_groups:
        return f"expected {n_groups} {split} groups"
    for i, row in enumerate(value):
        passages = row.get("passages") if isinstance(row, dict) else None
        if (
            not isinstance(row, dict)
            or row.get("query") not in dataset.queries
            or not isinstance(passages, list)
            or len(passages) != group_size
            or not all(isinstance(d, str) and d in dataset.corpus for d in passages)
        ):
            return f"group {i}: expected a query id and {group_size} document ids"
    return None


def astuple_without(settings: MiningSettings, *names: str) -> tuple:
    return tuple(v for k, v in asdict(settings).items() if k not in names)
