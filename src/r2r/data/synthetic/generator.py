"""Builds one domain's synthetic world (entities and documents) and samples its queries."""

from __future__ import annotations

import math
import random
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from r2r.data.io import validate
from r2r.data.synthetic import names as nm
from r2r.data.synthetic.domains import SPECS, DomainSpec, Relation, Slot
from r2r.types import SPLITS, Passage, Query, RetrievalDataset

Rate = float | Mapping[str, float]  # one rate for every split, or split -> rate
MENTIONS = ("plain", "echo", "distractor")
# The in-distribution test split: queries about training entities (entity-disjoint: `test`).
SEEN_SPLIT = "test_seen"
MIN_DOC_WORDS, MAX_DOC_WORDS = 25, 60


@dataclass(frozen=True)
class DocFact:
    entity: str  # the anchor entity's surface string
    relation: str


@dataclass(frozen=True)
class QueryFact:
    entity: str
    relation: str
    split: str
    mention: str  # plain | echo (names a key entity of the positive) | distractor (of a negative)
    cue: str  # the key entity string the query names; "" for plain queries


@dataclass(frozen=True)
class LabelledDataset:
    """A synthetic dataset with the generator's ground truth for every document and query."""

    dataset: RetrievalDataset
    docs: Mapping[str, DocFact]
    queries: Mapping[str, QueryFact]
    gazetteer: Mapping[str, tuple[str, ...]]  # entity type -> sorted strings in the corpus


@dataclass(frozen=True)
class _Doc:
    entity: int
    relation: int
    text: str


@dataclass(frozen=True)
class _World:
    spec: DomainSpec
    entities: tuple[dict[str, Slot], ...]
    docs: tuple[_Doc, ...]  # in id order
    gazetteer: dict[str, tuple[str, ...]]


def _rng(seed: int, *parts: object) -> random.Random:
    # A string seed is hashed with SHA-512 by `random`, so streams are stable across processes
    # (unlike hash(), which PYTHONHASHSEED salts) and independent per (domain, purpose).
    return random.Random(":".join(str(p) for p in (seed, *parts)))


def spec_for(domain: str) -> DomainSpec:
    if domain not in SPECS:
        raise ValueError(f"synthetic: unknown domain {domain!r}; expected one of {sorted(SPECS)}")
    return SPECS[domain]


def slots_of(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


def _render(template: str, values: Mapping[str, Slot], found: dict[str, set[str]]) -> str:
    for slot in slots_of(template):
        if values[slot].type is not None:
            found.setdefault(values[slot].type, set()).add(values[slot].value)
    return template.format_map({k: v.value for k, v in values.items()})


def _document(
    spec: DomainSpec,
    rel: Relation,
    entity: dict[str, Slot],
    rng: random.Random,
    found: dict[str, set[str]],
) -> str:
    values = {**entity, **spec.make_fillers(rng)}
    main = _render(rng.choice(rel.docs), values, found)
    # Entity sentences around the fact, as real filings, labels and judgments repeat their
    # identifiers: enough for MIN_DOC_WORDS, sometimes one more (lengths vary, so length
    # says nothing about relevance), never past MAX_DOC_WORDS.
    sentences, n_words = [main], len(main.split())
    one_more = rng.random() < 0.35
    for template in rng.sample(spec.background, len(spec.background)):
        if n_words >= MIN_DOC_WORDS:
            if not one_more:
                break
            one_more = False
        used: dict[str, set[str]] = {}
        sentence = _render(template, values, used)
        if n_words + len(sentence.split()) > MAX_DOC_WORDS:
            continue
        sentences.insert(rng.randrange(len(sentences) + 1), sentence)
        n_words += len(sentence.split())
        for entity_type, strings in used.items():
            found.setdefault(entity_type, set()).update(strings)
    return " ".join(sentences)


def build_world(domain: str, *, seed: int, n_entities: int) -> _World:
    spec = spec_for(domain)
    if n_entities < 3:
        raise ValueError(f"synthetic: n_entities={n_entities}; need at least 3 (one per split)")
    alloc = nm.Allocator(_rng(seed, domain, "entities"))
    entities = tuple(spec.make_entity(alloc) for _ in range(n_entities))
    rng = _rng(seed, domain, "documents")
    found: dict[str, set[str]] = {}
    docs = [
        _Doc(e, r, _document(spec, rel, entity, rng, found))
        for e, entity in enumerate(entities)
        for r, rel in enumerate(spec.relations)
    ]
    # Shuffled so that doc ids (and id-based tie breaking) say nothing about entity or relation.
    rng.shuffle(docs)
    gazetteer = {t: tuple(sorted(found[t])) for t in spec.entity_types if t in found}
    return _World(spec, entities, tuple(docs), gazetteer)


def pool_sizes(n_entities: int, n_relations: int, sizes: Mapping[str, int]) -> dict[str, int]:
    """Entities per split: proportional to its queries, at least enough (entity, relation)
    pairs for them; train takes the rest."""
    total = sum(sizes.values()) or 1
    pools = {}
    for split in ("dev", "test"):
        need = math.ceil(sizes[split] / n_relations)
        pools[split] = max(need, round(n_entities * sizes[split] / total)) if sizes[split] else 0
    pools["train"] = n_entities - pools["dev"] - pools["test"]
    for split in SPLITS:
        if pools[split] * n_relations < sizes[split]:
            raise ValueError(
                f"synthetic: n_entities={n_entities} cannot hold {sizes[split]} {split} queries "
                f"({n_relations} relations per entity, pools {pools}); raise n_entities"
            )
    return pools


def _rate(rate: Rate, split: str) -> float:
    return rate if isinstance(rate, (int, float)) else float(rate.get(split, 0.0))


def generate_labelled(
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
) -> LabelledDataset:
    world = build_world(domain, seed=seed, n_entities=n_entities)
    spec, relations = world.spec, world.spec.relations
    sizes = {"train": n_train_queries, "dev": n_dev_queries, "test": n_test_queries}
    pools = pool_sizes(n_entities, len(relations), sizes)
    n_unasked = pools["train"] * len(relations) - n_train_queries
    if n_test_seen_queries > n_unasked:
        raise ValueError(
            f"synthetic: {n_test_seen_queries} {SEEN_SPLIT} queries need as many (entity, "
            f"relation) pairs of the train pool that no train query asks; there are {n_unasked} "
            f"(pools {pools}); raise n_entities or lower n_train_queries"
        )
    order = list(range(n_entities))
    _rng(seed, domain, "pools").shuffle(order)
    bounds = {"train": (0, pools["train"]), "dev": (pools["train"], n_entities - pools["test"])}
    bounds["test"] = (n_entities - pools["test"], n_entities)

    corpus, doc_facts, positive = {}, {}, {}
    for i, doc in enumerate(world.docs):
        doc_id = f"{domain}-d{i:04d}"
        corpus[doc_id] = Passage(id=doc_id, text=doc.text)
        entity = world.entities[doc.entity][spec.anchor].value
        doc_facts[doc_id] = DocFact(entity, relations[doc.relation].name)
        positive[doc.entity, doc.relation] = doc_id

    queries, query_facts = {}, {}
    qrels: dict[str, dict[str, dict[str, int]]] = {split: {} for split in SPLITS}

    def ask(split: str, pairs: list[tuple[int, int]], rng: random.Random) -> None:
        echo, distractor = _rate(echo_rate, split), _rate(distractor_rate, split)
        for e, r in pairs:
            qid = f"{domain}-q{len(queries):04d}"
            text, mention, cue = _query(
                spec, relations[r], world.entities[e], rng, echo, distractor
            )
            queries[qid] = Query(id=qid, text=text)
            anchor = world.entities[e][spec.anchor].value
            query_facts[qid] = QueryFact(anchor, relations[r].name, split, mention, cue)
            qrels.setdefault(split, {})[qid] = {positive[e, r]: 1}

    unasked: list[tuple[int, int]] = []
    for split in SPLITS:
        # One stream per split: changing the number of train queries leaves dev and test as
        # they were.
        rng = _rng(seed, domain, "queries", split)
        lo, hi = bounds[split]
        pairs = [(e, r) for e in sorted(order[lo:hi]) for r in range(len(relations))]
        rng.shuffle(pairs)
        ask(split, pairs[: sizes[split]], rng)
        if split == "train":
            unasked = sorted(pairs[sizes[split] :])
    if n_test_seen_queries:
        # In-distribution test: train-pool entities, (entity, relation) pairs that no train
        # query asks. Its own stream, drawn last: the other splits are the same without it.
        rng = _rng(seed, domain, "queries", SEEN_SPLIT)
        ask(SEEN_SPLIT, rng.sample(unasked, n_test_seen_queries), rng)

    dataset = RetrievalDataset(
        name=f"synthetic-{domain}", domain=domain, corpus=corpus, queries=queries, qrels=qrels
    )
    validate(dataset)
    return LabelledDataset(dataset, doc_facts, query_facts, world.gazetteer)


def _query(
    spec: DomainSpec,
    rel: Relation,
    entity: dict[str, Slot],
    rng: random.Random,
    echo: float,
    distractor: float,
) -> tuple[str, str, str]:
    question = rng.choice(rel.queries).format_map({k: v.value for k, v in entity.items()})
    others = [o.key for o in spec.relations if o.key is not None and o is not rel]
    # The same draws happen whatever the rates, so changing a rate changes which queries
    # open with a cue sentence and nothing else.
    u_echo, u_distractor, u_context = rng.random(), rng.random(), rng.random()
    other = rng.choice(others) if others else None
    if rel.key is not None and u_echo < echo:
        mention, key = "echo", rel.key
    elif other is not None and u_distractor < distractor:
        mention, key = "distractor", other
    else:
        return question, "plain", ""
    contexts = spec.contexts[key]
    context = contexts[int(u_context * len(contexts))].format_map({key: entity[key].value})
    return f"{context} {question}", mention, entity[key].value


def template_texts(
    domain: str, entity: Mapping[str, Slot], fillers: Mapping[str, Slot]
) -> list[str]:
    """Every template of `domain` rendered once with the given values."""
    spec = spec_for(domain)
    values = {k: v.value for k, v in {**entity, **fillers}.items()}
    templates: Iterable[str] = [
        *spec.background,
        *(t for rel in spec.relations for t in (*rel.docs, *rel.queries)),
        *(t for ctx in spec.contexts.values() for t in ctx),
    ]
    return [t.format_map(values) for t in templates]
