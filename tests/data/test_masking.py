from __future__ import annotations

import copy
import functools
import math
import re

import pytest

from r2r.data.masking import (
    MASK,
    EntityMasking,
    NoMasking,
    PredictiveMasking,
    RandomMasking,
    RuleRecognizer,
    group_seed,
    mask_groups,
)
from r2r.data.masking.coverage import coverage
from r2r.data.masking.strategies import group_texts, placeholder_labels
from r2r.data.mining import BM25Miner, MiningSettings
from r2r.data.synthetic import generate_labelled
from r2r.types import DOMAINS, Passage, Query, RankingGroup

PLACEHOLDER = re.compile(r"\[([A-Z]+)_([A-Z]+)\]")
ANCHOR_TYPE = {"legal": "CASE", "medical": "DRUG", "finance": "COMPANY"}
# The settings these tests' numbers were taken with (a run's live in conf/).
SIZES = dict(
    n_entities=40, n_train_queries=160, n_dev_queries=30, n_test_queries=40, n_test_seen_queries=0
)
MINING = MiningSettings(
    top_k=20,
    depth={},
    include_positives=False,
    group_size=8,
    hard_negatives=4,
    hard_skip=0,
    hard_depth=30,
    seed=0,
)
PREDICTIVE = dict(rate=0.15, max_ngram=2, min_count=3)

GROUP = RankingGroup(
    domain="finance",
    query=Query("q1", "Did Zeekr Holdings (ZKR) buy Velora Group in fiscal 2019?"),
    passages=(
        Passage(
            "d1",
            "Zeekr  Holdings agreed to buy Velora Group for $1,452.4 million in fiscal 2019.",
            title="ZEEKR HOLDINGS",
        ),
        Passage(
            "d2",
            "Velora Group reported revenue of $8.1 billion, up 12% in Q3 2021.",
            "Velora Group",
        ),
        Passage("d3", "Analysts covering ZKR expect Zeekr Holdings to raise its dividend."),
    ),
)


@functools.cache
def train_groups(domain: str) -> tuple[RankingGroup, ...]:
    labelled = generate_labelled(domain, seed=0, **SIZES)
    return tuple(BM25Miner(MINING).training_groups(labelled.dataset, "train"))


# ----------------------------------------------------------------------------- entity
def test_entity_masking_exact_output() -> None:
    masked = EntityMasking()(GROUP, seed=0)
    assert masked.query == Query(
        "q1", "Did [COMPANY_K] ([TICKER_J]) buy [COMPANY_E] in [PERIOD_B]?"
    )
    assert masked.passages == (
        Passage(
            "d1",
            "[COMPANY_K] agreed to buy [COMPANY_E] for [MONEY_R] in [PERIOD_B].",
            "[COMPANY_K]",
        ),
        Passage(
            "d2",
            "[COMPANY_E] reported revenue of [MONEY_V], up [PERCENT_A] in [PERIOD_P].",
            "[COMPANY_E]",
        ),
        Passage("d3", "Analysts covering [TICKER_J] expect [COMPANY_K] to raise its dividend."),
    )
    assert masked.domain == GROUP.domain


def test_same_seed_same_output_different_seed_different_letters() -> None:
    masker = EntityMasking()
    assert masker(GROUP, seed=3) == masker(GROUP, seed=3)
    queries = {masker(GROUP, seed=s).query.text for s in range(5)}
    assert len(queries) == 5
    # Only the letters change with the seed, never the types or the text around them.
    assert {PLACEHOLDER.sub(r"[\1]", q) for q in queries} == {
        "Did [COMPANY] ([TICKER]) buy [COMPANY] in [PERIOD]?"
    }


def test_placeholder_labels_go_past_z() -> None:
    assert placeholder_labels(3) == [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    assert placeholder_labels(29)[25:] == ["Z", "AA", "AB", "AC"]
    names = [f"Name{i:02d} Holdings" for i in range(30)]
    group = RankingGroup("finance", Query("q", " and ".join(names)), (Passage("d", "x"),))
    letters = PLACEHOLDER.findall(EntityMasking()(group, seed=0).query.text)
    assert len(letters) == 30 and len(set(letters)) == 30
    assert {kind for kind, _ in letters} == {"COMPANY"}
    assert {label for _, label in letters} <= set(placeholder_labels(30))


@pytest.mark.parametrize("domain", DOMAINS)
def test_synthetic_groups_consistent_and_type_correct(domain: str) -> None:
    labelled = generate_labelled(domain, seed=0, **SIZES)
    masker = EntityMasking()
    for i, group in enumerate(train_groups(domain)[:40]):
        masked = masker(group, seed=i)
        anchor = " ".join(labelled.queries[group.query.id].entity.casefold().split())
        # Placeholders replace the recognised spans one for one, in order, with their type.
        placeholder_of: dict[str, set[str]] = {}  # normalised entity -> placeholders used
        entity_of: dict[str, set[str]] = {}  # placeholder -> normalised entities
        seen_in: list[set[str]] = []  # entities per text
        for masked_text, text_spans in zip(
            group_texts(masked), masker.group_spans(group), strict=True
        ):
            placeholders = PLACEHOLDER.findall(masked_text)
            assert len(placeholders) == len(text_spans)
            keys = set()
            for (kind, label), span in zip(placeholders, text_spans, strict=True):
                assert kind == span.type  # a COMPANY never becomes [DRUG_X]
                key = " ".join(span.text.casefold().split())
                keys.add(key)
                placeholder_of.setdefault(key, set()).add(f"[{kind}_{label}]")
                entity_of.setdefault(f"[{kind}_{label}]", set()).add(key)
            seen_in.append(keys)
        # Same entity -> same placeholder in every text; different entities -> different ones.
        assert all(len(v) == 1 for v in placeholder_of.values())
        assert all(len(v) == 1 for v in entity_of.values())
        # The anchor (case, drug, company) is masked in the query and the positive's text,
        # with its type, and its string survives nowhere.
        assert anchor in seen_in[0] and anchor in seen_in[2]
        assert placeholder_of[anchor].pop().startswith(f"[{ANCHOR_TYPE[domain]}_")
        assert all(anchor not in t.casefold() for t in group_texts(masked))


def test_entity_masking_with_an_explicit_recognizer() -> None:
    recognise = RuleRecognizer("general", gazetteer={"DRUG": ["Zolamab"], "DISEASE": ["gout"]})
    group = RankingGroup(
        "medical",
        Query("q", "Does Zolamab help gout?"),
        (Passage("a", "Zolamab treats gout."), Passage("b", "Gout is painful.")),
    )
    masked = EntityMasking(recognise)(group, seed=1)
    drug, disease = PLACEHOLDER.findall(masked.query.text)
    assert (drug[0], disease[0]) == ("DRUG", "DISEASE")
    assert masked.passages[0].text == f"[DRUG_{drug[1]}] treats [DISEASE_{disease[1]}]."
    # "Gout" echoes the recognised "gout" (a mixed-case name matches in any case).
    assert masked.passages[1].text == f"[DISEASE_{disease[1]}] is painful."


# ----------------------------------------------------------------------------- purity
def all_maskers() -> list:
    groups = list(train_groups("finance"))
    return [
        NoMasking(),
        EntityMasking(),
        PredictiveMasking(**PREDICTIVE).fit(groups),
        RandomMasking(rate=0.2, match=None),
        RandomMasking(rate=None, match=EntityMasking()).fit(groups),
    ]


@pytest.mark.parametrize("masker", all_maskers(), ids=lambda m: type(m).__name__)
def test_maskers_are_pure_functions_of_group_and_seed(masker) -> None:
    before = copy.deepcopy(GROUP)
    one, two = masker(GROUP, 11), masker(GROUP, 11)
    assert before == GROUP  # the input is untouched
    assert one == two
    assert one.domain == GROUP.domain and one.query.id == GROUP.query.id
    assert [p.id for p in one.passages] == [p.id for p in GROUP.passages]


def test_no_masking_is_the_identity() -> None:
    assert NoMasking().fit([GROUP])(GROUP, 0) is GROUP


def test_mask_groups_seeds_group_i_from_seed_and_i() -> None:
    assert group_seed(0, 0) == 18415504208189553012  # SHA-256 based: the same in any process
    masker = EntityMasking()
    groups = [GROUP, GROUP]
    out = mask_groups(groups, masker, seed=5)
    assert out == [masker(GROUP, group_seed(5, 0)), masker(GROUP, group_seed(5, 1))]
    assert out == mask_groups(groups, masker, seed=5)
    assert out != mask_groups(groups, masker, seed=6)


# ----------------------------------------------------------------------------- random
def test_random_masking_rate_and_determinism() -> None:
    masker = RandomMasking(rate=0.25, match=None)
    tokens = sum(len(re.findall(r"\w+", t)) for t in group_texts(GROUP))
    masked = masker(GROUP, seed=0)
    assert sum(t.count(MASK) for t in group_texts(masked)) == round(0.25 * tokens) == 13
    assert masker(GROUP, seed=0) == masked
    assert masker(GROUP, seed=1) != masked


@pytest.mark.parametrize("domain", DOMAINS)
def test_random_control_matches_the_entity_masking_rate(domain: str) -> None:
    groups = train_groups(domain)
    entity = EntityMasking()
    control = RandomMasking(rate=None, match=entity).fit(groups)
    stats = [entity.mask_stats(g, 0) for g in groups]
    entity_rate = sum(s.masked_tokens for s in stats) / sum(s.total_tokens for s in stats)
    assert control.rate == pytest.approx(entity_rate)
    masked = mask_groups(groups, control, seed=0)
    n_masked = sum(t.count(MASK) for g in masked for t in group_texts(g))
    n_tokens = sum(s.total_tokens for s in stats)
    assert abs(n_masked / n_tokens - entity_rate) < 0.01


def test_random_masking_bad_arguments() -> None:
    with pytest.raises(ValueError, match="exactly one of rate= and match="):
        RandomMasking(rate=None, match=None)
    with pytest.raises(ValueError, match="exactly one of rate= and match="):
        RandomMasking(rate=0.1, match=EntityMasking())
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\]"):
        RandomMasking(rate=1.5, match=None)
    with pytest.raises(RuntimeError, match="call fit"):
        RandomMasking(rate=None, match=EntityMasking())(GROUP, 0)


# ----------------------------------------------------------------------------- predictive
def cue_groups(n: int = 12, negatives: int = 3) -> list[RankingGroup]:
    # "zork" is in every query and its positive only; every other word is unique to one text.
    return [
        RankingGroup(
            "finance",
            Query(f"q{i}", f"zork qa{i} qb{i}"),
            (
                Passage(f"p{i}", f"pa{i} zork pb{i} pc{i}"),
                *(Passage(f"n{i}_{j}", f"na{i}x{j} nb{i}x{j} nc{i}x{j}") for j in range(negatives)),
            ),
        )
        for i in range(n)
    ]


def test_predictive_masking_finds_the_planted_cue() -> None:
    groups = cue_groups()
    masker = PredictiveMasking(**(PREDICTIVE | {"rate": 0.1})).fit(groups)
    # a = 12 of 12 positive pairs share it, b = 0 of 36 negative pairs.
    expected = math.log(12.5 / 0.5) - math.log(0.5 / 36.5)
    assert masker.top() == [("zork", pytest.approx(expected))]
    masked = masker(groups[0], seed=0)
    assert masked.query.text == f"{MASK} qa0 qb0"
    assert masked.passages[0].text == f"pa0 {MASK} pb0 pc0"
    assert masked.passages[1] == groups[0].passages[1]


def test_predictive_masking_needs_fit() -> None:
    with pytest.raises(RuntimeError, match=r"call fit\(train_groups\) before masking"):
        PredictiveMasking(**PREDICTIVE)(GROUP, 0)
    with pytest.raises(ValueError, match="no training groups"):
        PredictiveMasking(**PREDICTIVE).fit([])


# ----------------------------------------------------------------------------- coverage
def test_coverage_on_a_toy_group() -> None:
    figures = coverage([GROUP], EntityMasking())
    assert {k: v for k, v in figures.items() if k != "by_type"} == {
        "groups": 1,
        "tokens": 52,
        "entities": 16,
        "entities_per_100": pytest.approx(1600 / 52),
        "masked_token_rate": pytest.approx(32 / 52),
        "shared_entity_share": 1.0,
    }
    assert figures["by_type"] == {
        "COMPANY": {"entities": 8, "per_100": pytest.approx(800 / 52), "shared_share": 1.0},
        "MONEY": {"entities": 2, "per_100": pytest.approx(200 / 52), "shared_share": 0.0},
        "PERCENT": {"entities": 1, "per_100": pytest.approx(100 / 52), "shared_share": 0.0},
        "PERIOD": {"entities": 3, "per_100": pytest.approx(300 / 52), "shared_share": 1.0},
        "TICKER": {"entities": 2, "per_100": pytest.approx(200 / 52), "shared_share": 0.0},
    }


def test_coverage_with_a_bare_recognizer_counts_text_by_text() -> None:
    # Without group propagation the all-caps title and the lone "ZKR" count only where the
    # rules fire in their own text.
    figures = coverage([GROUP], RuleRecognizer("finance"))
    assert figures["entities"] == 15
    assert figures["by_type"]["TICKER"]["entities"] == 2
    with pytest.raises(TypeError, match="expected a Recognizer or an EntityMasking"):
        coverage([GROUP], object())  # type: ignore[arg-type]
