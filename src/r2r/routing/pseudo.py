"""Pseudo-queries: short spans of a domain's own documents, as extra router training data.

A domain's few training queries teach a router their register (AILA's 24 long case
narratives against 1,420 short medical and finance questions) as much as their topic.
Sentences of the domain's documents, cut to a question's length, add the topic without
the register. Only training documents are read: a document judged relevant to a query of
any other split (dev, test, ...) is left out, so no evaluation query's evidence is learnt.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence

from r2r.types import LabelledQueries, RetrievalDataset

# A sentence ends at . ! or ? before a space, or at a line break (table rows, headings).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[^\W\d_]{2,}")  # a word of at least two letters


def pseudo_queries(
    datasets: Mapping[str, RetrievalDataset],
    *,
    per_domain: int,
    max_words: int,
    min_words: int,
    forms: Sequence[str],
    seed: int,
) -> LabelledQueries:
    """At most `per_domain` spans per domain, labelled with their domain, domain by domain.

    A span is a document's title or one of its sentences, cut to its first `max_words`
    words; spans with fewer than `min_words` words of letters (numbers, table cells) are
    skipped, and each distinct span counts once. The sample is seeded by (`seed`, domain)
    and kept in corpus order (documents by id). Each span is put into one of `forms` (a
    format string with `{span}`, e.g. `What about {span}?`), drawn with the same seed: the
    same question forms in every domain, so that a router cannot tell domains apart by
    form (short questions in one domain, statements in another) but only by topic.
    """
    if not forms or any("{span}" not in form for form in forms):
        raise ValueError(f"forms={list(forms)} must be format strings holding {{span}}")
    if per_domain < 0 or not 1 <= min_words <= max_words:
        raise ValueError(
            f"per_domain={per_domain} must be >= 0 and 1 <= min_words={min_words} <= "
            f"max_words={max_words}"
        )
    texts: list[str] = []
    domains: list[str] = []
    for domain, dataset in datasets.items():
        spans = document_spans(dataset, max_words=max_words, min_words=min_words)
        rng = random.Random(f"{seed}:{domain}")
        keep = sorted(rng.sample(range(len(spans)), min(per_domain, len(spans))))
        texts += [rng.choice(forms).format(span=spans[i]) for i in keep]
        domains += [domain] * len(keep)
    return LabelledQueries(tuple(texts), tuple(domains))


def document_spans(dataset: RetrievalDataset, *, max_words: int, min_words: int) -> list[str]:
    """Every distinct span of `dataset`'s training documents, in corpus order."""
    held_out = {
        doc
        for split, qrels in dataset.qrels.items()
        if split != "train"
        for judged in qrels.values()
        for doc, grade in judged.items()
        if grade > 0
    }
    spans: dict[str, None] = {}  # ordered set
    for doc_id in sorted(set(dataset.corpus) - held_out):
        passage = dataset.corpus[doc_id]
        for sentence in [passage.title, *_SENTENCE_END.split(passage.text)]:
            words = sentence.split()[:max_words]
            if len(_WORD.findall(" ".join(words))) >= min_words:
                spans[" ".join(words)] = None
    return list(spans)
