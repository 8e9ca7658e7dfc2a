"""An embedded multi-domain reranking benchmark, generated from a seed (no external data).

Each domain (legal, medical, finance) is a world of `n_entities` anchor entities (court
cases, drugs, companies) with typed attributes (parties, statutes, courts; diseases, genes,
dosages; tickers, executives, amounts, fiscal periods; dates, numbers, person names). Every
anchor has one document per relation of its domain (7 each: e.g. a company's revenue,
dividend, debt maturity, acquisition, CEO change, buyback and guidance), each a fact
rendered with one of three templates, among sentences about the entity (25-60 words).

What the generator guarantees (tests/data/test_synthetic.py checks each):
- Pure: the output depends only on the arguments (`random.Random` seeded from strings, no
  global RNG, no `hash()`); the same seed gives identical datasets in any process.
- A query asks about one (entity, relation) pair and has exactly one positive (grade 1): the
  document stating that relation for that entity. Its hard negatives are the entity's other
  relation documents (6 per query), which share the entity's strings and so rank high under
  BM25; documents stating the same relation for other entities share its template words.
  Queries paraphrase the document wording, so relevance is decided by the relation asked
  about, not by word overlap.
- Entity-disjoint splits: anchors are partitioned into train/dev/test pools (sizes follow
  the query counts); each split's queries come from its own pool, sampled without repeating
  a pair. Named entity strings are allocated once per world, so no entity string of a test
  query occurs in any train query or train positive. The corpus holds every pool's documents.
- In-distribution test split: `n_test_seen_queries` > 0 adds the split `test_seen`, queries
  about train-pool entities on (entity, relation) pairs that no train query asks. Comparing
  `test` with `test_seen` shows how much of a model's skill rests on having seen the entities.
- Surface-cue shortcuts, for Entity Abstraction studies: with `echo_rate` a query about a
  relation that has a key entity (an acquired company, a drug's disease, a statute; 2-4
  of the 7 relations per domain have one) opens
  with a sentence naming that entity, which only the positive states: entity overlap then
  identifies the positive. With `distractor_rate` it names another relation's key entity,
  which only a hard negative states: entity overlap then misleads. Both accept a per-split
  mapping (e.g. echo only in train) to build a shortcut that fails at test time.
- `entities()` is the gazetteer of every typed string the documents contain, consistent with
  `generate()` for the same seed and n_entities; entity types per domain: `ENTITY_TYPES`.
- Sizes are arguments without defaults (conf/data/synthetic.yaml holds the run's). E.g. 40
  entities -> 280 documents; 160/30/40 train/dev/test queries drawn from 28/5/7 entities.
  Documents run 25-60 words, plain queries 4-16 words (up to 30 with a cue sentence).
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from r2r.data.synthetic import names
from r2r.data.synthetic.domains import SPECS
from r2r.data.synthetic.generator import (
    MENTIONS,
    SEEN_SPLIT,
    DocFact,
    LabelledDataset,
    QueryFact,
    Rate,
    build_world,
    generate_labelled,
    template_texts,
)
from r2r.types import DOMAINS, RetrievalDataset

__all__ = [
    "ENTITY_TYPES",
    "MENTIONS",
    "RELATIONS",
    "SEEN_SPLIT",
    "TOKENIZER_SIZES",
    "DocFact",
    "LabelledDataset",
    "QueryFact",
    "entities",
    "generate",
    "generate_all",
    "generate_labelled",
    "tokenizer_training_text",
]

ENTITY_TYPES: dict[str, tuple[str, ...]] = {d: spec.entity_types for d, spec in SPECS.items()}
RELATIONS: dict[str, tuple[str, ...]] = {
    d: tuple(rel.name for rel in spec.relations) for d, spec in SPECS.items()
}


def generate(
    domain: str,
    *,
    seed: int,
    n_entities: int,
    n_train_queries: int,
    n_dev_queries: int,
    n_test_queries: int,
    n_test_seen_queries: int,
    echo_rate: Rate = 0.25,
    distractor_rate: Rate = 0.25,
) -> RetrievalDataset:
    """The dataset `synthetic-{domain}`; `generate_labelled` adds the ground truth. The sizes
    have their one home in the config (conf/data/synthetic.yaml `sizes`): no defaults here."""
    return generate_labelled(
        domain,
        seed=seed,
        n_entities=n_entities,
        n_train_queries=n_train_queries,
        n_dev_queries=n_dev_queries,
        n_test_queries=n_test_queries,
        n_test_seen_queries=n_test_seen_queries,
        echo_rate=echo_rate,
        distractor_rate=distractor_rate,
    ).dataset


def generate_all(
    domains: Iterable[str], *, seed: int, **options: int | Rate
) -> dict[str, RetrievalDataset]:
    # The domain name is part of every RNG stream, so one seed gives each domain its own world.
    return {d: generate(d, seed=seed, **options) for d in domains}


def entities(domain: str, *, seed: int, n_entities: int) -> dict[str, list[str]]:
    """Entity type -> the sorted strings of that type in `generate(domain, seed=seed, ...)`'s
    corpus (queries only name strings that the corpus contains)."""
    world = build_world(domain, seed=seed, n_entities=n_entities)
    return {t: list(values) for t, values in world.gazetteer.items()}


# The datasets the tiny backbones' tokenizer is trained on: fixed with that vocabulary, so
# not the config's sizes (changing these changes every tiny model's tokenizer).
TOKENIZER_SIZES = {
    "n_entities": 40,
    "n_train_queries": 160,
    "n_dev_queries": 30,
    "n_test_queries": 40,
    "n_test_seen_queries": 0,
}


def tokenizer_training_text() -> list[str]:
    """Texts covering the generator's vocabulary: every template, every word list and one
    seed's datasets of `TOKENIZER_SIZES` (~250 KB); the tiny test backbones train their BPE
    on it."""
    texts: list[str] = []
    for domain in DOMAINS:
        labelled = generate_labelled(domain, seed=0, **TOKENIZER_SIZES)
        texts += [doc.text for doc in labelled.dataset.corpus.values()]
        texts += [query.text for query in labelled.dataset.queries.values()]
        world = build_world(domain, seed=0, n_entities=3)
        fillers = SPECS[domain].make_fillers(random.Random(0))
        texts += template_texts(domain, world.entities[0], fillers)
    texts += [" ".join(words) for words in names.WORD_LISTS]
    return texts
