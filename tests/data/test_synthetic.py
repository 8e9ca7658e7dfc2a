from __future__ import annotations

import functools
import random
import re

import pytest

from r2r.data.io import validate
from r2r.data.synthetic import (
    ENTITY_TYPES,
    RELATIONS,
    SEEN_SPLIT,
    DocFact,
    LabelledDataset,
    entities,
    generate,
    generate_all,
    generate_labelled,
    tokenizer_training_text,
)
from r2r.data.synthetic import names as nm
from r2r.data.synthetic.domains import SPECS
from r2r.data.synthetic.generator import pool_sizes, slots_of
from r2r.types import DOMAINS, SPLITS

WORD = re.compile(r"\w+")
# The base benchmark these tests count on (a run's sizes live in conf/data/synthetic.yaml).
SIZES = dict(
    n_entities=40, n_train_queries=160, n_dev_queries=30, n_test_queries=40, n_test_seen_queries=0
)


@functools.cache
def labelled(domain: str, seed: int = 0) -> LabelledDataset:
    return generate_labelled(domain, seed=seed, **SIZES)


def contains(text: str, entity: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(entity)}(?!\w)", text) is not None


@functools.cache
def docs_by_entity(domain: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for doc_id, fact in sorted(labelled(domain).docs.items()):
        out.setdefault(fact.entity, []).append(doc_id)
    return out


# ----------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("domain", DOMAINS)
def test_same_seed_same_dataset_different_seed_different(domain: str) -> None:
    assert generate(domain, seed=7, **SIZES) == generate(domain, seed=7, **SIZES)
    one, two = generate(domain, seed=7, **SIZES), generate(domain, seed=8, **SIZES)
    assert one.corpus != two.corpus
    assert one.queries != two.queries


def test_output_is_pinned_across_processes() -> None:
    # Exact strings: a change here means the benchmark changed (or the RNG is not seeded
    # from the arguments alone, e.g. hash() under a different PYTHONHASHSEED).
    legal, medical, finance = (labelled(d).dataset for d in ("legal", "medical", "finance"))
    assert legal.queries["legal-q0000"].text == (
        "I read that Article 173 of the Constitution was argued. "
        "Did Anil Menon v. Rhoora Holdings raise a constitutional question?"
    )
    assert medical.queries["medical-q0000"].text == (
        "My tumour carries a XBG5 mutation. What is Ravexastatin prescribed for?"
    )
    assert (
        finance.queries["finance-q0000"].text == "What does Novon Industries pay its shareholders?"
    )
    assert finance.qrels["train"]["finance-q0000"] == {"finance-d0072": 1}
    assert finance.corpus["finance-d0000"].text == (
        "Fenent Holdings, based in London, disclosed the figures in a regulatory filing on "
        "December 2, 2021. Under the merger agreement, Jorkr Group becomes a wholly owned "
        "subsidiary of Fenent Holdings; the purchase price was $579.6 million."
    )


def test_generate_all_matches_per_domain_generation() -> None:
    sizes = dict(
        n_entities=12, n_train_queries=40, n_dev_queries=8, n_test_queries=10, n_test_seen_queries=0
    )
    both = generate_all(["medical", "finance"], seed=3, **sizes)
    assert list(both) == ["medical", "finance"]
    assert both["finance"] == generate("finance", seed=3, **sizes)
    assert both["medical"].corpus != both["finance"].corpus


# ----------------------------------------------------------------------------- sizes
@pytest.mark.parametrize("domain", DOMAINS)
def test_base_sizes(domain: str) -> None:
    data = labelled(domain).dataset
    validate(data)
    assert (data.name, data.domain) == (f"synthetic-{domain}", domain)
    assert len(data.corpus) == 40 * len(RELATIONS[domain]) == 280
    assert len(data.queries) == 230
    assert {split: len(data.qrels[split]) for split in SPLITS} == {
        "train": 160,
        "dev": 30,
        "test": 40,
    }
    assert sorted(data.corpus)[:2] == [f"{domain}-d0000", f"{domain}-d0001"]
    doc_words = [len(p.text.split()) for p in data.corpus.values()]
    query_words = [len(q.text.split()) for q in data.queries.values()]
    assert all(25 <= n <= 60 for n in doc_words)
    assert all(4 <= n <= 30 for n in query_words)


def test_pool_sizes_follow_query_counts_and_reject_too_few_entities() -> None:
    sizes = {"train": 160, "dev": 30, "test": 40}
    assert pool_sizes(40, 7, sizes) == {"dev": 5, "test": 7, "train": 28}
    assert pool_sizes(12, 7, {"train": 40, "dev": 8, "test": 10}) == {
        "dev": 2,
        "test": 2,
        "train": 8,
    }
    with pytest.raises(ValueError, match="n_entities=20 cannot hold 160 train queries"):
        generate("legal", seed=0, **(SIZES | {"n_entities": 20}))
    with pytest.raises(ValueError, match="unknown domain 'tax'"):
        generate("tax", seed=0, **SIZES)


def test_custom_sizes() -> None:
    data = generate(
        "finance",
        seed=1,
        n_entities=10,
        n_train_queries=20,
        n_dev_queries=5,
        n_test_queries=7,
        n_test_seen_queries=0,
    )
    assert len(data.corpus) == 70
    assert [len(data.qrels[s]) for s in SPLITS] == [20, 5, 7]


# ----------------------------------------------------------------------------- relevance
@pytest.mark.parametrize("domain", DOMAINS)
def test_one_positive_stating_the_asked_relation_and_same_entity_hard_negatives(
    domain: str,
) -> None:
    data = labelled(domain)
    for split in SPLITS:
        for qid, judged in data.dataset.qrels[split].items():
            assert list(judged.values()) == [1]
            (positive,) = judged
            query = data.queries[qid]
            assert query.split == split
            assert data.docs[positive] == DocFact(query.entity, query.relation)
            assert contains(data.dataset.queries[qid].text, query.entity)
            hard = [d for d in docs_by_entity(domain)[data.queries[qid].entity] if d != positive]
            assert len(hard) == len(RELATIONS[domain]) - 1 >= 3
            assert {data.docs[d].relation for d in hard} == set(RELATIONS[domain]) - {
                query.relation
            }
            # Every document of the entity names it, so BM25 cannot tell them apart by entity.
            assert all(contains(data.dataset.corpus[d].text, query.entity) for d in hard)


@pytest.mark.parametrize("domain", DOMAINS)
def test_pairs_are_not_repeated_within_a_split(domain: str) -> None:
    data = labelled(domain)
    for split in SPLITS:
        pairs = [(q.entity, q.relation) for q in data.queries.values() if q.split == split]
        assert len(pairs) == len(set(pairs))


@pytest.mark.parametrize("domain", DOMAINS)
def test_word_overlap_does_not_find_the_positive(domain: str) -> None:
    data = labelled(domain)
    corpus = data.dataset.corpus
    judged = {q: j for split in SPLITS for q, j in data.dataset.qrels[split].items()}
    beaten = plain_beaten = n_plain = 0
    for qid, (positive,) in ((q, tuple(j)) for q, j in judged.items()):
        words = set(WORD.findall(data.dataset.queries[qid].text.lower()))
        hard = [d for d in docs_by_entity(domain)[data.queries[qid].entity] if d != positive]
        overlap = {
            d: len(words & set(WORD.findall(corpus[d].text.lower()))) for d in [*hard, positive]
        }
        hit = max(overlap[d] for d in hard) >= overlap[positive]
        beaten += hit
        if data.queries[qid].mention == "plain":
            n_plain, plain_beaten = n_plain + 1, plain_beaten + hit
    # Over seeds 0-40 the fractions stay above 0.76 (all queries) and 0.82 (plain ones).
    assert beaten / len(judged) >= 0.75
    assert plain_beaten / n_plain >= 0.8


# ----------------------------------------------------------------------------- entities
@pytest.mark.parametrize("domain", DOMAINS)
def test_test_entities_never_occur_in_training(domain: str) -> None:
    data = labelled(domain)
    named = [s for t, strings in data.gazetteer.items() for s in strings]
    train_texts = [data.dataset.queries[q].text for q in data.dataset.qrels["train"]]
    train_texts += [
        data.dataset.corpus[d].text for j in data.dataset.qrels["train"].values() for d in j
    ]
    train_blob = "\n".join(train_texts)
    n_checked = 0
    for qid in data.dataset.qrels["test"]:
        text = data.dataset.queries[qid].text
        found = [s for s in named if s in text and contains(text, s)]
        assert data.queries[qid].entity in found
        for entity in found:
            assert not contains(train_blob, entity), (qid, entity)
        n_checked += len(found)
    assert n_checked >= 40
    train_entities = {q.entity for q in data.queries.values() if q.split == "train"}
    test_entities = {q.entity for q in data.queries.values() if q.split == "test"}
    assert len(test_entities) == 7 and not train_entities & test_entities


@pytest.mark.parametrize("domain", DOMAINS)
def test_seen_split_asks_new_pairs_about_training_entities(domain: str) -> None:
    plain = generate_labelled(domain, seed=0, **SIZES)
    data = generate_labelled(domain, seed=0, **(SIZES | {"n_test_seen_queries": 30}))
    # Adding the split leaves the other splits (ids, texts, judgments) as they were.
    assert {k: v for k, v in data.dataset.queries.items() if k in plain.dataset.queries} == (
        plain.dataset.queries
    )
    assert {s: data.dataset.qrels[s] for s in SPLITS} == plain.dataset.qrels
    assert sorted(data.dataset.qrels) == ["dev", "test", "test_seen", "train"]
    validate(data.dataset)
    seen = [data.queries[q] for q in data.dataset.qrels[SEEN_SPLIT]]
    train = [q for q in data.queries.values() if q.split == "train"]
    assert len(seen) == 30 and all(q.split == SEEN_SPLIT for q in seen)
    # Every test_seen entity is a training entity; no (entity, relation) pair is a train one.
    assert {q.entity for q in seen} <= {q.entity for q in train}
    asked = {(q.entity, q.relation) for q in train}
    assert not asked & {(q.entity, q.relation) for q in seen}
    assert len({(q.entity, q.relation) for q in seen}) == 30
    # Each judged document states the asked relation for the asked entity.
    for qid, judged in data.dataset.qrels[SEEN_SPLIT].items():
        (doc_id,) = judged
        fact = data.docs[doc_id]
        assert (fact.entity, fact.relation) == (
            data.queries[qid].entity,
            data.queries[qid].relation,
        )
    assert generate_labelled(domain, seed=0, **(SIZES | {"n_test_seen_queries": 30})) == data


def test_seen_split_needs_unasked_training_pairs() -> None:
    # 40 entities: a train pool of 28 x 7 = 196 pairs, 160 of them asked -> 36 left.
    seen = generate("legal", seed=0, **(SIZES | {"n_test_seen_queries": 36})).qrels[SEEN_SPLIT]
    assert len(seen) == 36
    with pytest.raises(ValueError, match=r"37 test_seen queries .* there are 36"):
        generate("legal", seed=0, **(SIZES | {"n_test_seen_queries": 37}))


PATTERNS = {
    "legal": {
        "CASE": r"^[A-Z]\w+ [A-Z]\w+ v\. [A-Z]\w+ [A-Z]\w+$",
        "STATUTE": r"^(Section \d+ of the [A-Z][\w ]+|Article \d+ of the (Constitution|Limitation Act))$",
        "COURT": r"^(Supreme Court|High Court of [A-Z][\w ]+|\w+ Court of [A-Z]\w+)$",
        "MONEY": r"^Rs \d{1,2}(,\d\d)*,\d{3}$",
        "DATE": r"^\d{1,2} [A-Z][a-z]+ \d{4}$",
        "DURATION": r"^[a-z]+ years$",
    },
    "medical": {
        "DRUG": r"^[A-Z][a-z]+$",
        "GENE": r"^[A-Z]{3,4}\d{1,2}$",
        "DOSAGE": r"^\d+ mg(/kg)? (once|twice|three times) (daily|weekly)$|^\d+ mg(/kg)? every 12 hours$",
        "DISEASE": r"^([a-z]+ [a-z]+ [a-z]+|[A-Z]\w+ (syndrome|disease))$",
    },
    "finance": {
        "TICKER": r"^[A-Z]{3,4}$",
        "MONEY": r"^\$(\d{1,3}(,\d{3})*\.\d (million|billion)|\d+\.\d\d)$",
        "PERIOD": r"^(fiscal \d{4}|Q[1-4] \d{4}|the [a-z]+ quarter of \d{4})$",
        "PERCENT": r"^\d+(\.\d\d)?%$",
    },
}


@pytest.mark.parametrize("domain", DOMAINS)
def test_every_entity_type_appears_in_the_expected_form(domain: str) -> None:
    data = labelled(domain)
    assert tuple(data.gazetteer) == ENTITY_TYPES[domain]  # every declared type, in order
    blob = "\n".join(p.text for p in data.dataset.corpus.values())
    for entity_type, strings in data.gazetteer.items():
        assert strings and all(s in blob for s in strings), entity_type
        pattern = PATTERNS[domain].get(entity_type)
        if pattern is not None:
            assert all(re.match(pattern, s) for s in strings), (entity_type, strings[:5])
    assert entities(domain, seed=0, n_entities=40) == {
        t: list(s) for t, s in data.gazetteer.items()
    }
    assert len(data.gazetteer["PERSON"]) >= 37


def test_named_entity_strings_never_contain_each_other() -> None:
    alloc = nm.Allocator(random.Random(0))
    first = alloc.unique(lambda r: "Ravi Shah", "person")
    assert first == "Ravi Shah"
    with pytest.raises(ValueError, match="ran out of distinct company names"):
        alloc.unique(lambda r: "Ravi Shah Textiles", "company")


# ----------------------------------------------------------------------------- shortcuts
@pytest.mark.parametrize("domain", DOMAINS)
def test_echo_cues_name_the_positive_and_distractors_a_hard_negative(domain: str) -> None:
    data = labelled(domain)
    corpus = data.dataset.corpus
    seen = set()
    for split in SPLITS:
        for qid, judged in data.dataset.qrels[split].items():
            query = data.queries[qid]
            seen.add(query.mention)
            if query.mention == "plain":
                assert query.cue == ""
                continue
            (positive,) = judged
            assert contains(data.dataset.queries[qid].text, query.cue)
            naming = [
                d
                for d in docs_by_entity(domain)[data.queries[qid].entity]
                if contains(corpus[d].text, query.cue)
            ]
            assert len(naming) == 1
            assert (naming[0] == positive) == (query.mention == "echo")
    assert seen == {"plain", "echo", "distractor"}


def test_cue_rates_can_differ_per_split() -> None:
    data = generate_labelled(
        "medical", seed=0, **SIZES, echo_rate={"train": 1.0}, distractor_rate={"test": 1.0}
    )
    mentions = {s: {q.mention for q in data.queries.values() if q.split == s} for s in SPLITS}
    # Train: every query about a relation with a key entity echoes it; the rest stay plain.
    assert mentions == {"train": {"echo", "plain"}, "dev": {"plain"}, "test": {"distractor"}}
    keyed = {r.name for r in SPECS["medical"].relations if r.key}
    train = [q for q in data.queries.values() if q.split == "train"]
    assert all((q.mention == "echo") == (q.relation in keyed) for q in train)
    # Rates change the cue sentences only: pairs and questions stay as they were.
    default = labelled("medical")
    assert [(q.entity, q.relation) for q in data.queries.values()] == [
        (q.entity, q.relation) for q in default.queries.values()
    ]
    questions = [
        [q.text.rsplit(". ", 1)[-1] for q in d.queries.values()]
        for d in (data.dataset, default.dataset)
    ]
    assert questions[0] == questions[1]


# ----------------------------------------------------------------------------- templates
@pytest.mark.parametrize("domain", DOMAINS)
def test_templates_follow_the_writing_rules(domain: str) -> None:
    spec = SPECS[domain]
    assert len(spec.relations) == len(RELATIONS[domain]) == 7
    keys = {r.key for r in spec.relations} - {None}
    assert set(spec.contexts) == keys
    for rel in spec.relations:
        assert 2 <= len(rel.docs) <= 4 and 2 <= len(rel.queries) <= 4
        for template in (*rel.docs, *rel.queries):
            assert spec.anchor in slots_of(template), template
        for template in rel.docs:
            assert rel.key is None or rel.key in slots_of(template)
            assert not (keys - {rel.key}) & set(slots_of(template)), template
        assert not keys & {s for q in rel.queries for s in slots_of(q)}
    assert not keys & {s for t in spec.background for s in slots_of(t)}
    for key, sentences in spec.contexts.items():
        assert all(slots_of(t) == [key] for t in sentences)


def test_tokenizer_training_text_covers_the_vocabulary() -> None:
    texts = tokenizer_training_text()
    assert texts == tokenizer_training_text()
    size = sum(len(t.encode()) for t in texts)
    assert 100_000 < size < 400_000
    vocab = set(WORD.findall("\n".join(texts)))
    for spec in SPECS.values():
        templates = [*spec.background, *(t for r in spec.relations for t in (*r.docs, *r.queries))]
        templates += [t for c in spec.contexts.values() for t in c]
        literal = re.sub(r"\{\w+\}", " ", " ".join(templates))
        assert set(WORD.findall(literal)) <= vocab
    assert {w for words in nm.WORD_LISTS for w in words for w in WORD.findall(w)} <= vocab
