from __future__ import annotations

import functools
import re
import sys

import pytest

from r2r.data.masking.recognizers import (
    EntitySpan,
    RuleRecognizer,
    gliner_recognizer,
    resolve_overlaps,
    spacy_recognizer,
)
from r2r.data.synthetic import ENTITY_TYPES, LabelledDataset, generate_labelled
from r2r.types import DOMAINS


def found(domain: str, text: str) -> list[tuple[str, str]]:
    spans = RuleRecognizer(domain)(text)
    for s in spans:
        assert text[s.start : s.end] == s.text
    return [(s.text, s.type) for s in spans]


# ----------------------------------------------------------------------------- fixtures
def test_legal_fixture() -> None:
    text = (
        "In Meera Desai v. Rohan Rao, the accused was convicted under Section 302 of the Indian "
        "Penal Code and s. 438 CrPC by the High Court of Kerala on 25 June 2011; Article 21 was "
        "cited before the Supreme Court. Justice Anil Menon fined Rhoora Holdings Rs 1,20,000 "
        "and ordered four years in Pune. State of Kerala vs Sunil Sinha arose under the Arms Act."
    )
    assert found("legal", text) == [
        ("Meera Desai v. Rohan Rao", "CASE"),
        ("Section 302 of the Indian Penal Code", "STATUTE"),
        ("s. 438 CrPC", "STATUTE"),
        ("High Court of Kerala", "COURT"),
        ("25 June 2011", "DATE"),
        ("Article 21", "STATUTE"),
        ("Supreme Court", "COURT"),
        ("Anil Menon", "PERSON"),
        ("Rhoora Holdings", "COMPANY"),
        ("Rs 1,20,000", "MONEY"),
        ("four years", "DURATION"),
        ("Pune", "CITY"),
        ("State of Kerala vs Sunil Sinha", "CASE"),
        ("Arms Act", "STATUTE"),
    ]


def test_legal_case_parties_echo_in_the_same_text() -> None:
    text = "Jaya Patil v. Sylora Ltd arose from a dispute between Jaya Patil and Sylora Ltd."
    assert found("legal", text) == [
        ("Jaya Patil v. Sylora Ltd", "CASE"),
        ("Jaya Patil", "PERSON"),
        ("Sylora Ltd", "COMPANY"),
    ]


def test_medical_fixture() -> None:
    text = (
        "Calexanib 250 mg twice daily was compared with metformin and 10 mg/kg of Teravapril in "
        "1476 patients with chronic renal fibrosis, Brennan disease or hepatitis; tumours carried "
        "BRCA1 or EGFR mutations. Dr. Jonas Duarte reported it in 1998. The disease was mild."
    )
    assert found("medical", text) == [
        ("Calexanib", "DRUG"),
        ("250 mg twice daily", "DOSAGE"),
        ("metformin", "DRUG"),
        ("10 mg/kg", "DOSAGE"),
        ("Teravapril", "DRUG"),
        ("1476", "NUMBER"),
        ("chronic renal fibrosis", "DISEASE"),
        ("Brennan disease", "DISEASE"),
        ("hepatitis", "DISEASE"),
        ("BRCA1", "GENE"),
        ("EGFR", "GENE"),
        ("Jonas Duarte", "PERSON"),
        ("1998", "DATE"),
    ]


def test_finance_fixture() -> None:
    text = (
        "Shares of Kesar Partners (KSR) rose 9.44% after Zeekr Inc. (NASDAQ: ZKR) reported "
        "$1,452.4 million for fiscal 2019, $8.1 billion in FY2020, €3m in Q3 2021 and more in "
        "the first quarter of 2020, on October 12, 2026. Analysts covering HLXX agree; KSR fell. "
        "Felix Moretti is based in Toronto. Net Profit After Tax (NPAT) was flat."
    )
    assert found("finance", text) == [
        ("Kesar Partners", "COMPANY"),
        ("KSR", "TICKER"),
        ("9.44%", "PERCENT"),
        ("Zeekr Inc", "COMPANY"),
        ("ZKR", "TICKER"),
        ("$1,452.4 million", "MONEY"),
        ("fiscal 2019", "PERIOD"),
        ("$8.1 billion", "MONEY"),
        ("FY2020", "PERIOD"),
        ("€3m", "MONEY"),
        ("Q3 2021", "PERIOD"),
        ("the first quarter of 2020", "PERIOD"),
        ("October 12, 2026", "DATE"),
        ("HLXX", "TICKER"),
        ("KSR", "TICKER"),
        ("Felix Moretti", "PERSON"),
        ("Toronto", "CITY"),
    ]


def test_general_rules_and_non_entities() -> None:
    # Confidence intervals are not dates; a count of patients is not a year.
    assert found("general", "Risk fell 1.5-54 in 2000 patients on 12/10/2026 (12 percent).") == [
        ("1.5", "NUMBER"),
        ("54", "NUMBER"),
        ("2000", "NUMBER"),
        ("12/10/2026", "DATE"),
        ("12 percent", "PERCENT"),
    ]


# ----------------------------------------------------------------------------- precision
# False positives seen on real legal / medical / finance text, rewritten as short phrases,
# next to the true positives each fix must keep.
REGRESSIONS = {
    "numeric-date-before-full-stop": (
        "legal",
        "Clause 4 was amended w.e.f. 3-8-1991. It applied from 7.2.1990, onwards.",
        [("Clause 4", "STATUTE"), ("3-8-1991", "DATE"), ("7.2.1990", "DATE")],
    ),
    "generic-central-or-state-act": (
        "legal",
        "Nothing in any Central Act or a State Act, nor the Arms Act, 1959, applies.",
        [("Arms Act, 1959", "STATUTE")],
    ),
    "numbered-act-and-constitution-amendment-whole": (
        "legal",
        "As amended by Kerala Act 7 of 1990 and the Constitution (Ninth Amendment) Act, 1960; "
        "this Constitution governs.",
        [
            ("Kerala Act 7 of 1990", "STATUTE"),
            ("Constitution (Ninth Amendment) Act, 1960", "STATUTE"),
            ("Constitution", "STATUTE"),
        ],
    ),
    "lacs-and-witness-labels": (
        "legal",
        "They demanded Rs.3 lacs and later Rs. 40,000. PW-2 and A-1 deposed.",
        [("Rs.3 lacs", "MONEY"), ("Rs. 40,000", "MONEY")],
    ),
    "questionnaires-viruses-levels-not-genes": (
        "medical",
        "Mood (PHQ-9), SF-36, HIV-1 and CI95% were scored; F-2 and L-1 were spared.",
        [],
    ),
    "study-arms-and-code-pieces-not-genes": (
        "medical",
        "Arms LA1 and LB2 had TT4 and 5-HT2 data; CA19-9 and GP5+ primers were used.",
        [("9", "NUMBER")],  # the digit after "CA19-" stays a number
    ),
    "genes-kept": (
        "medical",
        "IL-6, CD4 and CD8 cells, BRCA1/2 carriers, COX-2 and KCNQ1 were studied.",
        [
            ("IL-6", "GENE"),
            ("CD4", "GENE"),
            ("CD8", "GENE"),
            ("BRCA1", "GENE"),
            ("2", "NUMBER"),
            ("COX-2", "GENE"),
            ("KCNQ1", "GENE"),
        ],
    ),
    "measurements-not-dosages": (
        "medical",
        "Blood loss was 250 mL, birth weight 3100 g, a score of 2.75 units and 0.5 mg/0.2 ml drops.",
        [
            ("250", "NUMBER"),
            ("3100", "NUMBER"),
            ("2.75", "NUMBER"),
            ("0.5", "NUMBER"),
            ("0.2", "NUMBER"),
        ],
    ),
    "dosages-kept": (
        "medical",
        "Each got a 2 g sachet, 20 mL/kg fluid, 1000 units of toxin and 5 mg daily.",
        [
            ("2 g", "DOSAGE"),
            ("20 mL/kg", "DOSAGE"),
            ("1000 units", "DOSAGE"),
            ("5 mg daily", "DOSAGE"),
        ],
    ),
    "hormone-physiology-not-drugs": (
        "medical",
        "Insulin resistance and somatostatin receptor levels rose, unlike histidine; insulin "
        "therapy and metformin helped.",
        [("insulin", "DRUG"), ("metformin", "DRUG")],
    ),
    "generic-qualifier-not-disease": (
        "medical",
        "Patients with advanced disease or benign lesions, and advanced rectal cancer, were seen.",
        [("advanced rectal cancer", "DISEASE")],
    ),
    "number-glued-to-a-word": (
        "medical",
        "A 14-fold rise, a 2-methoxy group.",
        [("14", "NUMBER")],
    ),
    "institutions-and-vessels-not-persons": (
        "general",
        "Staff at Grace Memorial Hospital, the tanker Oscar Spirit and the Victoria Jobs Tax "
        "Credit; Mr. Okafor and Dr. Maya Costa agreed.",
        [("Okafor", "PERSON"), ("Maya Costa", "PERSON")],
    ),
    "acronyms-not-tickers": (
        "finance",
        "The Bureau of Mines and Safety (BMS) fined Zeekr Technology Services Inc. (ZTS); "
        "Velora Shipping (VLS) did not.",
        [
            ("Zeekr Technology Services Inc", "COMPANY"),
            ("Velora Shipping", "COMPANY"),
            ("VLS", "TICKER"),
        ],
    ),
    "segments-not-companies": (
        "finance",
        "Application Software | Data Center Group | Velora Shipping",
        [("Velora Shipping", "COMPANY")],
    ),
    "year-end-and-compound-durations": (
        "finance",
        "At 2019 year end, within forty-eight hours and 2-5 years.",
        [
            ("2019", "DATE"),
            ("forty-eight hours", "DURATION"),
            ("2", "NUMBER"),
            ("5 years", "DURATION"),
        ],
    ),
    "table-units-and-negatives": (
        "finance",
        "2019 | 2018 / £000 | £000 / Net | $(1,221) | $1.2 million | (3)% | 4.5%",
        [
            ("2019", "DATE"),
            ("2018", "DATE"),
            ("$(1,221)", "MONEY"),
            ("$1.2 million", "MONEY"),
            ("(3)%", "PERCENT"),
            ("4.5%", "PERCENT"),
        ],
    ),
}


@pytest.mark.parametrize(
    ("domain", "text", "expected"), REGRESSIONS.values(), ids=list(REGRESSIONS)
)
def test_real_text_false_positives_stay_fixed(
    domain: str, text: str, expected: list[tuple[str, str]]
) -> None:
    assert found(domain, text) == expected


def test_user_gazetteer_adds_exact_matches_and_wins_ties() -> None:
    recognise = RuleRecognizer("finance", gazetteer={"COMPANY": ["Zeekr"], "CITY": ["2019"]})
    assert [(s.text, s.type) for s in recognise("Zeekr grew in 2019.")] == [
        ("Zeekr", "COMPANY"),
        ("2019", "CITY"),
    ]


def test_resolve_overlaps_longest_then_earliest_then_priority() -> None:
    spans = [
        EntitySpan(0, 4, "NUMBER", "2019"),
        EntitySpan(0, 4, "DATE", "2019"),  # same extent: DATE outranks NUMBER
        EntitySpan(3, 10, "PERSON", "x"),
        EntitySpan(2, 9, "COMPANY", "y"),  # as long as PERSON, starts earlier: wins
        EntitySpan(12, 20, "CITY", "z"),
    ]
    assert resolve_overlaps(spans) == [
        EntitySpan(2, 9, "COMPANY", "y"),
        EntitySpan(12, 20, "CITY", "z"),
    ]
    assert resolve_overlaps(spans[:2]) == [EntitySpan(0, 4, "DATE", "2019")]


def test_unknown_domain_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown domain 'sports'.*legal"):
        RuleRecognizer("sports")


# ----------------------------------------------------------------------------- recall
@functools.cache
def labelled(domain: str) -> LabelledDataset:
    return generate_labelled(
        domain,
        seed=0,
        n_entities=40,
        n_train_queries=160,
        n_dev_queries=30,
        n_test_queries=40,
        n_test_seen_queries=0,
    )


def recall(domain: str) -> dict[str, float]:
    """Per type: share of the synthetic gazetteer's strings that the rules (given no
    gazetteer) recognise exactly, with the right type, at one occurrence at least."""
    data = labelled(domain).dataset
    texts = [p.text for p in data.corpus.values()] + [q.text for q in data.queries.values()]
    recognise = RuleRecognizer(domain)
    spans = [{(s.start, s.end, s.type) for s in recognise(t)} for t in texts]
    out = {}
    for kind, strings in labelled(domain).gazetteer.items():
        hits = 0
        for value in strings:
            pattern = re.compile(rf"(?<!\w){re.escape(value)}(?!\w)")
            hits += any(
                (m.start(), m.end(), kind) in found
                for text, found in zip(texts, spans, strict=True)
                for m in pattern.finditer(text)
            )
        out[kind] = hits / len(strings)
    return out


@pytest.mark.parametrize("domain", DOMAINS)
def test_recall_on_the_synthetic_gazetteer_without_passing_it(domain: str) -> None:
    # Measured at seed 0: every entity string of every type is found (the built-in name
    # lists contain the generator's real first names and cities; see recognizers.py).
    assert recall(domain) == dict.fromkeys(ENTITY_TYPES[domain], 1.0)


# ----------------------------------------------------------------------------- adapters
def test_spacy_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "spacy", None)  # makes `import spacy` raise ImportError
    with pytest.raises(ImportError, match=r"spacy_recognizer needs spaCy: `pip install spacy`"):
        spacy_recognizer("en_core_web_sm")


def test_gliner_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gliner", None)
    with pytest.raises(ImportError, match=r"needs the `gliner` package"):
        gliner_recognizer("/models/gliner", ["company"])
