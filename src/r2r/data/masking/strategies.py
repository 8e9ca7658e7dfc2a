"""Masking strategies for EAG Stage 1: none | entity | predictive | random.

Every strategy is a pure function of (group, seed): it returns a new `RankingGroup` whose
ids and domain are unchanged and whose query text, passage titles and passage texts are
masked; the input is never modified, no global RNG is touched, and seeds are derived from
strings (never `hash()`), so the same seed gives the same output in any process.

Masking is for *training* groups only. Evaluation data (dev/test candidate lists) must stay
unmasked; keeping it so is the caller's job (the datamodule masks train groups only).

`fit(train_groups)` is where a strategy may look at the training set: `PredictiveMasking`
learns which n-grams signal relevance there, and `RandomMasking(match=...)` measures the
masking rate of the strategy it controls for. Others return self unchanged.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from r2r.data.masking.recognizers import (
    EntitySpan,
    Recognizer,
    RuleRecognizer,
    literal_spans,
    normalise,
    resolve_overlaps,
)
from r2r.types import CandidateList, Passage, RankingGroup

__all__ = [
    "MASK",
    "EntityMasking",
    "MaskStats",
    "Masker",
    "NoMasking",
    "PredictiveMasking",
    "RandomMasking",
    "group_seed",
    "group_texts",
    "mask_groups",
    "placeholder_labels",
    "word_spans",
]

MASK = "[MASK]"
_MEMO_SIZE = 200_000  # texts whose entity spans EntityMasking keeps
_WORD = re.compile(r"\w+")  # a "word token", the unit of every masking rate


class Masker(Protocol):
    def fit(self, groups: Sequence[RankingGroup]) -> Masker: ...
    def __call__(self, group: RankingGroup, seed: int) -> RankingGroup: ...


@dataclass(frozen=True)
class MaskStats:
    """What a strategy masks in one group, counted in word tokens of the original texts."""

    masked_tokens: int
    total_tokens: int
    spans: int  # masked units: entity mentions, masked n-gram occurrences or random spans


def group_seed(seed: int, index: int) -> int:
    """The seed of group `index` under run seed `seed` (SHA-256, stable across processes)."""
    digest = hashlib.sha256(f"r2r-mask/{seed}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def mask_groups(groups: Sequence[RankingGroup], masker: Masker, *, seed: int) -> list[RankingGroup]:
    """Mask every group; group i gets `group_seed(seed, i)`. Pass a different `seed` per epoch
    to re-draw placeholders and random masks each epoch."""
    return [masker(group, group_seed(seed, i)) for i, group in enumerate(groups)]


def mask_lists(lists: Sequence[CandidateList], masker: Masker, *, seed: int) -> list[CandidateList]:
    """Evaluation lists abstracted as training groups are (the query and all its candidates
    consistently, list i with `group_seed(seed, i)`); ids, scores and judgments unchanged.
    Only for diagnostics: how much a model's ranking rests on the masked strings."""
    out = []
    for i, c in enumerate(lists):
        masked = masker(RankingGroup(c.domain, c.query, c.passages), group_seed(seed, i))
        out.append(replace(c, query=masked.query, passages=masked.passages))
    return out


def group_texts(group: RankingGroup) -> list[str]:
    """The texts masking touches, in a fixed order: query, then (title, text) per passage."""
    texts = [group.query.text]
    for passage in group.passages:
        texts += [passage.title, passage.text]
    return texts


def _with_texts(group: RankingGroup, texts: Sequence[str]) -> RankingGroup:
    passages = tuple(
        Passage(id=p.id, title=texts[1 + 2 * i], text=texts[2 + 2 * i])
        for i, p in enumerate(group.passages)
    )
    return replace(group, query=replace(group.query, text=texts[0]), passages=passages)


def word_spans(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in _WORD.finditer(text)]


def _substitute(text: str, spans: Sequence[tuple[int, int, str]]) -> str:
    """Replace non-overlapping (start, end, replacement) spans, sorted by start."""
    out, last = [], 0
    for start, end, new in spans:
        out += [text[last:start], new]
        last = end
    out.append(text[last:])
    return "".join(out)


def _mask_tokens(text: str, tokens: Sequence[tuple[int, int]], masked: Sequence[bool]) -> str:
    # One [MASK] per masked word token, so a masked text keeps its token count.
    return _substitute(text, [(s, e, MASK) for (s, e), m in zip(tokens, masked, strict=True) if m])


class NoMasking:
    """The identity: Stage 1 on the original data."""

    def fit(self, groups: Sequence[RankingGroup]) -> NoMasking:
        return self

    def __call__(self, group: RankingGroup, seed: int) -> RankingGroup:
        return group

    def mask_stats(self, group: RankingGroup, seed: int) -> MaskStats:
        return MaskStats(0, sum(len(word_spans(t)) for t in group_texts(group)), 0)


# ----------------------------------------------------------------------------- entity
def placeholder_labels(n: int) -> list[str]:
    """A..Z, then AA, AB, ... (bijective base 26): the first max(n, 26) labels."""
    labels = []
    for k in range(1, max(n, 26) + 1):
        label = ""
        while k:
            k, r = divmod(k - 1, 26)
            label = chr(ord("A") + r) + label
        labels.append(label)
    return labels


class EntityMasking:
    """Named entities -> type-consistent, randomised placeholders ("Zeekr" -> [COMPANY_A]).

    Within a group the same entity (casefolded, whitespace-collapsed string) gets the same
    placeholder in the query, every title and every passage; different entities of a type get
    different letters, drawn per group and type from the seed. With `recognizer=None` a
    `RuleRecognizer` for each group's domain is built and cached (`domain` forces one domain's
    rules for every group). An entity recognised in one text of the group is also masked where
    the group's other texts repeat it without the context the rules need (propagation).
    """

    def __init__(self, recognizer: Recognizer | None = None, *, domain: str | None = None) -> None:
        self.recognizer = recognizer
        self.domain = domain
        self._recognizers: dict[str, Recognizer] = {}
        # Passages recur across groups and epochs; recognition is a pure function of
        # (domain, text), so its results are memoised (bounded, first come first kept).
        self._memo: dict[tuple[str, str], list[EntitySpan]] = {}

    def __repr__(self) -> str:
        return f"EntityMasking(recognizer={self.recognizer!r}, domain={self.domain!r})"

    def fit(self, groups: Sequence[RankingGroup]) -> EntityMasking:
        return self

    def recognizer_for(self, domain: str) -> Recognizer:
        if self.recognizer is not None:
            return self.recognizer
        domain = self.domain or domain
        if domain not in self._recognizers:
            self._recognizers[domain] = RuleRecognizer(domain)
        return self._recognizers[domain]

    def _recognise(self, domain: str, text: str) -> list[EntitySpan]:
        if not text:
            return []
        key = (domain, text)
        if key in self._memo:
            return self._memo[key]
        spans = self.recognizer_for(domain)(text)
        if len(self._memo) < _MEMO_SIZE:
            self._memo[key] = spans
        return spans

    def group_spans(self, group: RankingGroup) -> list[list[EntitySpan]]:
        """Entity spans per text of `group_texts(group)`, propagated across the group."""
        texts = group_texts(group)
        spans = [self._recognise(group.domain, t) for t in texts]
        known: dict[str, str] = {}  # surface string -> type of its first mention
        for text_spans in spans:
            for s in text_spans:
                known.setdefault(s.text, s.type)
        # Mixed-case names echo in any case ("ZEEKR HOLDINGS" in a title); all-caps strings
        # (tickers, genes) only as written, since "ALL" or "IT" would hit ordinary words.
        folded = {k: v for k, v in known.items() if k != k.upper() and len(k) >= 4}
        exact = {k: v for k, v in known.items() if k not in folded}
        out = []
        for text, text_spans in zip(texts, spans, strict=True):
            echoes = (
                [*literal_spans(text, exact), *literal_spans(text, folded, ignore_case=True)]
                if text
                else []
            )
            tiers = {s: 1 for s in echoes if s not in text_spans}
            out.append(resolve_overlaps([*text_spans, *echoes], tiers=tiers))
        return out

    def _assign(self, spans: Sequence[Sequence[EntitySpan]], seed: int) -> dict[str, str]:
        """Normalised entity -> placeholder; the type is that of its first mention."""
        kinds: dict[str, str] = {}
        for text_spans in spans:
            for s in text_spans:
                kinds.setdefault(normalise(s.text), s.type)
        by_type: dict[str, list[str]] = {}
        for key, kind in kinds.items():  # first-mention order: deterministic
            by_type.setdefault(kind, []).append(key)
        names: dict[str, str] = {}
        for kind, keys in sorted(by_type.items()):
            # One stream per (seed, type): a type's letters do not depend on other types.
            rng = random.Random(f"r2r-eag/{seed}/{kind}")
            labels = rng.sample(placeholder_labels(len(keys)), len(keys))
            for key, label in zip(keys, labels, strict=True):
                names[key] = f"[{kind}_{label}]"
        return names

    def __call__(self, group: RankingGroup, seed: int) -> RankingGroup:
        spans = self.group_spans(group)
        names = self._assign(spans, seed)
        texts = [
            _substitute(t, [(s.start, s.end, names[normalise(s.text)]) for s in text_spans])
            for t, text_spans in zip(group_texts(group), spans, strict=True)
        ]
        return _with_texts(group, texts)

    def mask_stats(self, group: RankingGroup, seed: int) -> MaskStats:
        masked = total = n_spans = 0
        for text, text_spans in zip(group_texts(group), self.group_spans(group), strict=True):
            tokens = word_spans(text)
            total += len(tokens)
            n_spans += len(text_spans)
            masked += sum(any(s.start < e and b < s.end for s in text_spans) for b, e in tokens)
        return MaskStats(masked, total, n_spans)


class _TokenMasker:
    """Shared by the strategies that replace word tokens by [MASK]: a subclass decides
    which tokens (`_masks`); applying them and counting them is the same for all."""

    def _masks(self, group: RankingGroup, seed: int) -> tuple[list, list[list[bool]], int]:
        raise NotImplementedError

    def __call__(self, group: RankingGroup, seed: int) -> RankingGroup:
        tokens, masked, _ = self._masks(group, seed)
        texts = [
            _mask_tokens(t, toks, m)
            for t, toks, m in zip(group_texts(group), tokens, masked, strict=True)
        ]
        return _with_texts(group, texts)

    def mask_stats(self, group: RankingGroup, seed: int) -> MaskStats:
        tokens, masked, n_spans = self._masks(group, seed)
        return MaskStats(sum(map(sum, masked)), sum(map(len, tokens)), n_spans)


# ----------------------------------------------------------------------------- predictive
Ngram = tuple[str, ...]


def _ngrams(words: Sequence[str], max_n: int) -> set[Ngram]:
    return {tuple(words[i : i + n]) for n in range(1, max_n + 1) for i in range(len(words) - n + 1)}


def _words(text: str) -> list[str]:
    return [w.casefold() for w in _WORD.findall(text)]


class PredictiveMasking(_TokenMasker):
    """Masks the surface cues most predictive of relevance on the training set.

    `fit` scores each lowercased word n-gram (n <= max_ngram) by the smoothed log-odds ratio
    of occurring in both the query and the passage for (query, positive) pairs versus
    (query, negative) pairs:
        log((a + .5) / (P - a + .5)) - log((b + .5) / (N - b + .5))
    with a / b the positive / negative pairs sharing the n-gram, P / N the numbers of such
    pairs; n-grams with a + b < min_count or a score <= 0 are dropped. `__call__` masks every
    occurrence (query, titles, passages) of the group's highest-scoring n-grams, one [MASK]
    per word token, until at least `rate` of the group's word tokens are masked. The result
    depends on the fit only; the seed just orders n-grams of equal score.
    """

    def __init__(self, *, rate: float, max_ngram: int, min_count: int) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"PredictiveMasking: rate must be in [0, 1], got {rate}")
        if max_ngram < 1 or min_count < 1:
            raise ValueError(
                f"PredictiveMasking: max_ngram and min_count must be >= 1, got {max_ngram}, {min_count}"
            )
        self.rate, self.max_ngram, self.min_count = rate, max_ngram, min_count
        self.scores: dict[Ngram, float] | None = None

    def __repr__(self) -> str:
        fitted = "unfitted" if self.scores is None else f"{len(self.scores)} cues"
        return f"PredictiveMasking(rate={self.rate}, max_ngram={self.max_ngram}, {fitted})"

    def fit(self, groups: Sequence[RankingGroup]) -> PredictiveMasking:
        if not groups:
            raise ValueError("PredictiveMasking.fit: no training groups")
        pos_hits: Counter[Ngram] = Counter()
        neg_hits: Counter[Ngram] = Counter()
        n_pos = n_neg = 0
        for group in groups:
            query = _ngrams(_words(group.query.text), self.max_ngram)
            for i, passage in enumerate(group.passages):
                shared = query & _ngrams(_words(passage.content), self.max_ngram)
                if i == 0:  # a RankingGroup holds its positive first
                    n_pos += 1
                    pos_hits.update(shared)
                else:
                    n_neg += 1
                    neg_hits.update(shared)
        scores = {}
        for gram in pos_hits.keys() | neg_hits.keys():
            a, b = pos_hits[gram], neg_hits[gram]
            if a + b < self.min_count:
                continue
            score = math.log((a + 0.5) / (n_pos - a + 0.5)) - math.log(
                (b + 0.5) / (n_neg - b + 0.5)
            )
            if score > 0:
                scores[gram] = score
        self.scores = scores
        return self

    def top(self, k: int = 20) -> list[tuple[str, float]]:
        """The k best cues (n-gram joined by spaces, score), best first; ties by n-gram."""
        return [
            (" ".join(g), s)
            for g, s in sorted(self._fitted().items(), key=lambda x: (-x[1], x[0]))[:k]
        ]

    def _fitted(self) -> dict[Ngram, float]:
        if self.scores is None:
            raise RuntimeError(
                "PredictiveMasking: call fit(train_groups) before masking (it learns the cues)"
            )
        return self.scores

    def _masks(
        self, group: RankingGroup, seed: int
    ) -> tuple[list[list[tuple[int, int]]], list[list[bool]], int]:
        scores = self._fitted()
        texts = group_texts(group)
        tokens = [word_spans(t) for t in texts]
        words = [
            [t[s:e].casefold() for s, e in toks] for t, toks in zip(texts, tokens, strict=True)
        ]
        where: dict[Ngram, list[tuple[int, int]]] = {}  # n-gram -> (text, first token) occurrences
        for ti, ws in enumerate(words):
            for n in range(1, self.max_ngram + 1):
                for i in range(len(ws) - n + 1):
                    gram = tuple(ws[i : i + n])
                    if gram in scores:
                        where.setdefault(gram, []).append((ti, i))
        rng = random.Random(f"r2r-predictive/{seed}")
        tie = {gram: rng.random() for gram in sorted(where)}
        masked = [[False] * len(ws) for ws in words]
        total = sum(len(ws) for ws in words)
        budget = self.rate * total
        count = n_spans = 0
        for gram in sorted(where, key=lambda g: (-scores[g], tie[g])):
            if count >= budget:
                break
            for ti, i in where[gram]:
                n_spans += 1
                for j in range(i, i + len(gram)):
                    count += not masked[ti][j]
                    masked[ti][j] = True
        return tokens, masked, n_spans


# ----------------------------------------------------------------------------- random
class RandomMasking(_TokenMasker):
    """The control: random word spans -> [MASK] (one per token) at `rate` of the group's word
    tokens (query, titles, passages). With `match=EntityMasking(...)` (or any strategy with a
    `mask_stats` method), `fit` measures that strategy's masking rate (masked / all word
    tokens, pooled over the training groups) and its mean masked span length, and uses them,
    so the control masks as much text, in spans as long, as the strategy it controls for
    (`rate=None` then).
    """

    def __init__(self, *, rate: float | None, match: Masker | None) -> None:
        if (rate is None) == (match is None):
            raise ValueError("RandomMasking: give exactly one of rate= and match= (the other None)")
        if rate is not None and not 0.0 <= rate <= 1.0:
            raise ValueError(f"RandomMasking: rate must be in [0, 1], got {rate}")
        if match is not None and not hasattr(match, "mask_stats"):
            raise TypeError(f"RandomMasking: match={match!r} has no mask_stats(group, seed)")
        self.rate, self.match = rate, match
        self.mean_span = 2.0  # word tokens per masked span

    def __repr__(self) -> str:
        return (
            f"RandomMasking(rate={self.rate}, match={self.match!r}, mean_span={self.mean_span:.2f})"
        )

    def fit(self, groups: Sequence[RankingGroup]) -> RandomMasking:
        if self.match is None:
            return self
        if not groups:
            raise ValueError("RandomMasking.fit: no training groups to measure the rate on")
        self.match.fit(groups)
        stats = [self.match.mask_stats(g, group_seed(0, i)) for i, g in enumerate(groups)]  # type: ignore[attr-defined]
        masked = sum(s.masked_tokens for s in stats)
        total = sum(s.total_tokens for s in stats)
        spans = sum(s.spans for s in stats)
        self.rate = masked / total if total else 0.0
        self.mean_span = masked / spans if spans else 1.0
        return self

    def _masks(
        self, group: RankingGroup, seed: int
    ) -> tuple[list[list[tuple[int, int]]], list[list[bool]], int]:
        if self.rate is None:
            raise RuntimeError("RandomMasking(match=...): call fit(train_groups) before masking")
        tokens = [word_spans(t) for t in group_texts(group)]
        flat = [(ti, i) for ti, toks in enumerate(tokens) for i in range(len(toks))]
        masked = [[False] * len(toks) for toks in tokens]
        budget = min(round(self.rate * len(flat)), len(flat))
        rng = random.Random(f"r2r-random/{seed}")
        # Span lengths uniform on 1..L with mean ~ mean_span.
        longest = max(1, round(2 * self.mean_span - 1))
        count = n_spans = 0
        free = list(range(len(flat)))
        while count < budget:
            start = rng.choice(free)
            ti, i = flat[start]
            length = min(rng.randint(1, longest), budget - count)
            n_spans += 1
            for j in range(i, min(i + length, len(tokens[ti]))):
                if not masked[ti][j]:
                    masked[ti][j] = True
                    count += 1
            free = [k for k in free if not masked[flat[k][0]][flat[k][1]]]
        return tokens, masked, n_spans
