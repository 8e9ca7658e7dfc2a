"""Entity recognisers for Entity Abstraction (EAG): offline rules and gazetteers per domain.

`RuleRecognizer(domain)` needs no model and no network: regular expressions for the entity
shapes of each domain (case names, statute references and courts; drugs, diseases, genes and
dosages; companies, tickers, money and fiscal periods) plus small gazetteers (first names,
cities, common drugs and diseases; the word lists live in gazetteers.py), and rules shared
by all domains (dates, numbers, percentages, durations, person names). spaCy and GLiNER
adapters are offered for users who have those installed; they are imported lazily so r2r
never depends on them.

Every recogniser returns sorted, non-overlapping `EntitySpan`s. Overlapping candidates are
resolved by: longest span first, then earlier start, then `TYPE_PRIORITY` (user gazetteer
matches beat rule matches of the same extent).

The built-in name lists (gazetteers.py) include the first names and cities the synthetic
benchmark draws from, so recall on the synthetic corpus is an upper bound for real text
(tests/data/test_recognizers.py measures it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from r2r.data.masking.gazetteers import (
    ACRONYMS,
    CITIES,
    COMMON_DISEASES,
    COMMON_DRUGS,
    CORPORATE_FORMS,
    COUNT_NOUNS,
    ENDOGENOUS,
    FIRST_NAMES,
    FUNCTION_WORDS,
    GENERIC_ACT_WORDS,
    GENERIC_DISEASE_MODIFIERS,
    GENES,
    NOT_COMPANY_WORDS,
    NOT_DISEASE_WORDS,
    NOT_DRUGS,
    NOT_GENE_PREFIXES,
    NOT_PERSON_WORDS,
    PHYSIOLOGY_NOUNS,
    SHORT_GENE_PREFIXES,
    STARTERS,
)

__all__ = [
    "RULE_DOMAINS",
    "TYPE_PRIORITY",
    "EntitySpan",
    "Recognizer",
    "RuleRecognizer",
    "gliner_recognizer",
    "literal_spans",
    "normalise",
    "resolve_overlaps",
    "spacy_recognizer",
]


@dataclass(frozen=True)
class EntitySpan:
    start: int  # character offsets into the text; end exclusive
    end: int
    type: str  # UPPER_SNAKE, e.g. COMPANY, DRUG, STATUTE
    text: str


class Recognizer(Protocol):
    def __call__(self, text: str) -> list[EntitySpan]: ...  # sorted, non-overlapping


# Ties between spans of the same extent: the more specific type wins (a year inside a
# "fiscal 2019" never matters, but "2019" alone is a DATE rather than a NUMBER).
TYPE_PRIORITY: tuple[str, ...] = (
    "CASE", "STATUTE", "COURT", "COMPANY", "TICKER", "DRUG", "DISEASE", "GENE", "DOSAGE",
    "MONEY", "PERCENT", "PERIOD", "DURATION", "PERSON", "CITY", "DATE", "NUMBER",
)  # fmt: skip
RULE_DOMAINS: tuple[str, ...] = ("legal", "medical", "finance", "general")


def normalise(text: str) -> str:
    """The identity of an entity string: casefolded, whitespace collapsed."""
    return " ".join(text.casefold().split())


def _type_rank(kind: str) -> int:
    return TYPE_PRIORITY.index(kind) if kind in TYPE_PRIORITY else len(TYPE_PRIORITY)


def resolve_overlaps(
    spans: Iterable[EntitySpan], *, tiers: Mapping[EntitySpan, int] | None = None
) -> list[EntitySpan]:
    """Keep a non-overlapping subset: longest first, then earlier start, then (lower tier,
    default 0) then type priority. Returned sorted by start."""
    tiers = tiers or {}
    ordered = sorted(
        set(spans),
        key=lambda s: (s.start - s.end, s.start, tiers.get(s, 0), _type_rank(s.type), s.type),
    )
    taken: list[EntitySpan] = []
    for span in ordered:
        if span.end > span.start and all(span.end <= t.start or span.start >= t.end for t in taken):
            taken.append(span)
    return sorted(taken, key=lambda s: s.start)


def _literal_pattern(strings: Iterable[str], *, ignore_case: bool) -> re.Pattern[str] | None:
    # Longest alternatives first so "Kesar Partners Ltd" beats "Kesar Partners"; any run of
    # whitespace matches a space, since texts wrap lines differently.
    alts = sorted({s.strip() for s in strings if s.strip()}, key=lambda s: (-len(s), s))
    if not alts:
        return None
    body = "|".join(re.escape(a).replace(r"\ ", r"\s+") for a in alts)
    return re.compile(rf"(?<!\w)(?:{body})(?!\w)", re.IGNORECASE if ignore_case else 0)


def literal_spans(
    text: str, strings: Mapping[str, str], *, ignore_case: bool = False
) -> list[EntitySpan]:
    """Every word-bounded occurrence in `text` of the keys of `strings` (string -> type), as
    candidate spans (they may overlap; resolve them with `resolve_overlaps`)."""
    pattern = _literal_pattern(strings, ignore_case=ignore_case)
    if pattern is None:
        return []
    by_norm = {normalise(s): t for s, t in strings.items()}
    return [
        EntitySpan(m.start(), m.end(), by_norm[normalise(m.group())], m.group())
        for m in pattern.finditer(text)
        if normalise(m.group()) in by_norm
    ]


# ----------------------------------------------------------------------------- patterns
_WS = r"[^\S\n]+"  # spaces and tabs, never a line break (a title never runs into its text)
_OWS = r"[^\S\n]*"
# A capitalised word: an initial ("M."), an abbreviation that a name continues after ("Pvt.
# Ltd"), or a word with inner dots only ("Cr.P.C"), so a sentence's full stop ends the name.
_CAP = (
    r"(?:[A-Z]\.|(?:Pvt|Co|Corp|Jr|Sr|Bros|St)\.(?=[^\S\n]+[A-Z])|"
    r"[A-Z][A-Za-z0-9&'’-]*(?:\.[A-Za-z]+)*)"
)
_START = r"(?<![\w.'’-])"  # a name never starts inside a word
_CAPSEQ = rf"{_START}{_CAP}(?:{_WS}(?:(?:of|&|de|da|van|von|del){_WS})?{_CAP})*"
_NAMEWORD = r"[A-Z][a-z]+(?:[-'’][A-Z]?[a-z]+)*"
_MONTH = (
    r"(?:January|February|March|April|May|June|July|August|September|October|November|"
    r"December|Jan\.?|Feb\.?|Mar\.?|Apr\.?|Jun\.?|Jul\.?|Aug\.?|Sept?\.?|Oct\.?|Nov\.?|Dec\.?)"
)
_YEAR = r"(?:1[89]\d\d|20\d\d)"
_COUNT_NOUNS = "|".join(COUNT_NOUNS)
_AMOUNT = r"\d+(?:,\d{2,3})*(?:\.\d+)?"
_NUMWORD = (
    r"(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|"
    r"fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|hundred)"
)
_SCALE = r"(?:million|billion|trillion|thousand|crores?|lakhs?|lacs?|bn|mn|m|k)"
_COMPANY_SUFFIX = (
    r"(?:Inc|Incorporated|Corp|Corporation|Co|Company|Holdings|Holding|Ltd|Limited|Group|plc|"
    r"PLC|LLC|LLP|LP|AG|SA|S\.A|NV|N\.V|GmbH|SE|Bank|Bancorp|Capital|Trust|Securities|Partners|"
    r"Industries|Motors|Biotech|Energy|Logistics|Systems|Foods|Networks|Textiles|Pharma|"
    r"Pharmaceuticals|Minerals|Retail|Software|Shipping|Cement|Telecom|Chemicals|Technologies|"
    r"Airlines|Airways|Insurance|Enterprises|Resources|Labs|Laboratories|"
    r"Therapeutics|Semiconductor|Semiconductors|Electronics|Brands|Entertainment|"
    r"Communications|Healthcare|Petroleum|Steel|Mining|Automotive|Realty|Properties|Ventures|"
    r"Investments|Associates)"
)
_COMPANY = (
    rf"{_START}(?:{_CAP}(?:,?{_WS})(?:&{_WS})?){{1,4}}{_COMPANY_SUFFIX}\.?(?![\w-])"
    rf"(?:{_WS}of{_WS}{_NAMEWORD})?"
)
_DRUG_SUFFIX = (
    r"(?:mab|nib|pril|ril|sartan|statin|olol|gliptin|glitazone|zole|cillin|mycin|micin|cycline|"
    r"oxacin|vir|tide|parin|xaban|gatran|dipine|afil|lukast|semide|thiazide|triptan|profen|"
    r"setron|dronate|formin|azepam|azolam|tidine|platin|rubicin|taxel|tecan|caine|sone|olone)"
)
_DISEASE_MOD = (
    r"(?:chronic|acute|subacute|progressive|recurrent|relapsing|remitting|idiopathic|hereditary|"
    r"familial|congenital|juvenile|refractory|metastatic|advanced|primary|secondary|malignant|"
    r"benign|invasive|diffuse|focal|systemic|autoimmune|inflammatory|infectious|viral|bacterial|"
    r"fungal|type{_WS}(?:1|2|I|II)|non-small[- ]cell|small[- ]cell|kidney|liver|lung|heart|breast|"
    r"prostate|colon|bladder|skin|bone|brain|blood|bowel|ovarian|cervical|coronary|artery|"
    r"[a-z]+(?:al|ic|ac|ary|ar|oid|ous|eal))"
).replace("{_WS}", _WS)
_DISEASE_NEEDS_MOD = (
    r"(?:diseases?|syndromes?|disorders?|cancers?|failure|insufficiency|infections?|deficiency|"
    r"inflammation|injury|tumou?rs?|lesions?|infarction|arrest|fibrillation|ha?emorrhage|"
    r"thrombosis|embolism|ulcers?|palsy|dysfunction)"
)
_DISEASE_HEAD = (
    rf"(?:{_DISEASE_NEEDS_MOD}|fibrosis|sclerosis|stenosis|neuropathy|dystrophy|carcinoma|"
    r"ischa?emia|hypertension|hypotension|diabetes|asthma|sarcoma|lymphoma|leuka?emia|melanoma|"
    r"[a-z]{3,}(?:itis|osis|a?emia|oma|pathy|trophy|plasia))"
)
_FREQ = (
    rf"(?:(?:once|twice|three{_WS}times|four{_WS}times){_WS}(?:daily|weekly|a{_WS}day|a{_WS}week)|"
    rf"every{_WS}\d+{_WS}hours|daily|weekly|per{_WS}day|a{_WS}day|b\.?i\.?d\.?|t\.?i\.?d\.?|"
    r"q\.?i\.?d\.?|q\.?d\.?|o\.?d\.?)"
)
_STATUTE_ABBR = (
    r"(?:IPC|I\.P\.C\.?|CrPC|Cr\.?P\.?C\.?|CPC|C\.P\.C\.?|Cr\.P\.C|NI{_WS}Act|IT{_WS}Act|"
    r"NDPS{_WS}Act)"
).replace("{_WS}", _WS)
_ACT_HEAD = r"(?:Act|Code|Rules|Regulations|Ordinance|Sanhita)"
_ACT = (
    rf"{_START}(?:{_CAP}{_WS}(?:(?:of|for|and|on|the|to|in|&){_WS})*)+{_ACT_HEAD}(?![\w-])"
    rf"(?:,?{_WS}(?:\d{{1,3}}{_WS}of{_WS})?{_YEAR}\b)?"  # "Arms Act, 1959", "Punjab Act 22 of 1983"
)
_GENERIC_ACT_WORDS = f"(?:{'|'.join(GENERIC_ACT_WORDS)})"
_GENERIC_ACT = rf"(?:{_GENERIC_ACT_WORDS}{_WS}(?:(?:or|and){_WS})?)+{_ACT_HEAD}"
_SECTION_NUM = r"\d+[A-Z]?(?:\(\w{1,4}\))*"
_SECTION_NUMS = rf"{_SECTION_NUM}(?:(?:{_OWS},{_OWS}|{_WS}(?:and|or|to|&){_WS}|/){_SECTION_NUM})*"
_SECTION = (
    r"\b(?:Sections?|Secs?\.|[Ss]s?\.|u/s\.?|Articles?|Arts?\.|Rules?|Order|Clause|Regulation|"
    r"Schedule|Chapter)"
)
# Abbreviated titles may take a full stop; "Justice" never does ("... the Judge. It ...").
_HONORIFIC = (
    rf"(?:\b(?:Dr|Mr|Mrs|Ms|Mx|Prof|Shri|Smt)\.?|\b(?:Sir|Dame|Justice|Kumari)|"
    rf"Hon'ble(?:{_WS}Mr\.?)?(?:{_WS}Justice)?)"
)
_TRIM_TYPES = frozenset({"CASE", "COMPANY", "COURT", "STATUTE", "PERSON", "DISEASE", "CITY"})


@dataclass(frozen=True)
class _Rule:
    type: str
    pattern: re.Pattern[str]
    # (text, start, end) -> False rejects the (trimmed) candidate text[start:end]
    check: Callable[[str, int, int], bool] | None = None


def _rule(
    kind: str,
    pattern: str,
    check: Callable[[str, int, int], bool] | None = None,
    *,
    flags: int = 0,
) -> _Rule:
    return _Rule(kind, re.compile(pattern, flags), check)


def _span_check(ok: Callable[[str], bool]) -> Callable[[str, int, int], bool]:
    return lambda text, start, end: ok(text[start:end])


def _next_word(text: str, end: int) -> str:
    m = re.match(r"[^\S\n]+([\w'’-]+)", text[end:])
    return m.group(1) if m else ""


@_span_check
def _company_ok(text: str) -> bool:
    # "Group" or "The Company" alone (after trimming) is a reference, not a name.
    words = text.split()
    return len(words) > 1 and words[0].casefold() not in NOT_COMPANY_WORDS


def _drug_ok(text: str, start: int, end: int) -> bool:
    low = text[start:end].casefold()
    if low in ENDOGENOUS and _next_word(text, end).casefold() in PHYSIOLOGY_NOUNS:
        return False
    return low not in NOT_DRUGS and not low.endswith(("peptide", "nucleotide"))


@_span_check
def _disease_ok(text: str) -> bool:
    words = text.split()
    if words[-1].casefold() in NOT_DISEASE_WORDS:
        return False
    # "disease", "syndrome", "cancer" alone (after trimming "the", "severe", ...) or after
    # generic qualifiers only ("advanced disease", "benign lesions") name nothing.
    if re.fullmatch(_DISEASE_NEEDS_MOD, words[-1].casefold()) is None:
        return True
    return any(w.casefold() not in GENERIC_DISEASE_MODIFIERS for w in words[:-1])


@_span_check
def _dosage_ok(text: str) -> bool:
    # Volumes, grams and decimal "units" are mostly measurements (blood loss 100 mL, birth
    # weight 2025 g, a score of 3.60 units); they are doses when per kg or per day.
    m = re.match(rf"({_AMOUNT}){_OWS}([^\s/]+)", text)
    assert m is not None  # the DOSAGE pattern starts with an amount and a unit
    amount, unit = m.group(1), m.group(2)
    if text[m.end() :].strip():  # a "/kg" or a frequency follows
        return True
    if unit in ("mL", "ml"):
        return False
    if unit == "units":
        return "." not in amount
    return unit != "g" or float(amount.replace(",", "")) < 100


@_span_check
def _multiword(text: str) -> bool:
    # "Court", "Code" or "Act" alone (after trimming "The") names no particular one.
    return len(text.split()) > 1


@_span_check
def _act_ok(text: str) -> bool:
    return len(text.split()) > 1 and re.fullmatch(_GENERIC_ACT, text) is None


@_span_check
def _ticker_ok(text: str) -> bool:
    return text not in ACRONYMS


def _parenthesised_ticker_ok(text: str, start: int, end: int) -> bool:
    # "Net Profit After Tax (NPAT)" defines an acronym: its letters are the preceding words'
    # initials, with or without "of"/"and" ("Bureau of Industry and Security (BIS)") and
    # before a corporate form ("... Technology Solutions Inc. (CBTS)"). "Kesar Partners (KSR)"
    # is a ticker.
    symbol = text[start:end]
    words = re.findall(r"[A-Za-z]+", text[max(0, start - 120) : start])
    content = [w for w in words if w not in FUNCTION_WORDS]
    while content and content[-1] in CORPORATE_FORMS:
        content.pop()
    n = len(symbol)
    spelled = {"".join(w[0] for w in ws[-n:]).upper() for ws in (words, content)}
    return symbol not in ACRONYMS and symbol not in spelled


def _gene_ok(text: str, start: int, end: int) -> bool:
    symbol = text[start:end]
    m = re.match(r"[A-Z]+", symbol)
    assert m is not None  # the GENE pattern starts with a capital
    prefix = m.group()
    if prefix in NOT_GENE_PREFIXES:
        return False
    if re.fullmatch(r"[A-Z]{2}\d", symbol) and prefix not in SHORT_GENE_PREFIXES:
        return False
    # "stage III-2", "grade I-2": roman numerals, not genes.
    return re.fullmatch(r"[IVX]+-\d+", symbol) is None


def _person_ok(text: str, start: int, end: int) -> bool:
    words = text[start:end].split()
    if words[0] in STARTERS or words[-1] in NOT_PERSON_WORDS:
        return False
    return _next_word(text, end) not in NOT_PERSON_WORDS


def _common_rules() -> list[_Rule]:
    first = "|".join(sorted(FIRST_NAMES, key=len, reverse=True))
    cities = "|".join(
        re.escape(c).replace(r"\ ", _WS) for c in sorted(CITIES, key=len, reverse=True)
    )
    return [
        _rule("DATE", rf"\b{_MONTH}{_WS}\d{{1,2}}(?:st|nd|rd|th)?(?:,{_WS}|{_WS}){_YEAR}\b"),
        _rule("DATE", rf"\b\d{{1,2}}(?:st|nd|rd|th)?{_WS}(?:of{_WS})?{_MONTH},?{_WS}{_YEAR}\b"),
        _rule("DATE", rf"\b{_MONTH},?{_WS}{_YEAR}\b"),
        _rule(
            "DATE",
            rf"\b(?:January|February|March|April|June|July|August|September|October|November|December){_WS}\d{{1,2}}(?:st|nd|rd|th)?\b",
        ),
        # Numeric dates use one separator twice ("12/10/2026"); "1.5-54" is an interval.
        # A sentence's full stop may follow a four-digit year ("w.e.f. 14-11-1994.").
        _rule(
            "DATE",
            r"(?<![\d.,])\d{1,2}([/.-])\d{1,2}\1(?:\d{4}(?!\d|[.,]\d)|\d{2}(?![\d.,]))",
        ),
        _rule("DATE", r"\b(?:19|20)\d\d-\d\d-\d\d\b"),
        # A bare year, unless it counts something ("2000 patients").
        _rule("DATE", rf"(?<![\w$€£₹.,]){_YEAR}(?![\w%]|[.,]\d|{_WS}(?:{_COUNT_NOUNS})\b)"),
        # Not the digits of a code ("PHQ-9", "5-HT2"), which a hyphen glues to letters.
        _rule(
            "NUMBER",
            rf"(?<![\w.,$€£₹])(?<![A-Za-z]-){_AMOUNT}(?![\w%]|[.,]\d|-(?!fold\b)[A-Za-z])",
        ),
        _rule("PERCENT", rf"(?<![\w.]){_AMOUNT}{_OWS}(?:%|percent\b|per{_WS}cent\b)"),
        _rule("PERCENT", rf"(?<![\w.])\({_AMOUNT}\){_OWS}%"),  # a negative one in a table
        # "£000" heads a table column of thousands; it is no amount. "$(1,221)" is a negative one.
        _rule(
            "MONEY",
            rf"(?:\b(?:US|A|C|HK|S|NZ))?[$€£¥₹]{_OWS}(?!\(?000(?![\d.,]))"
            rf"(?:\({_AMOUNT}\)|{_AMOUNT}(?:{_OWS}{_SCALE}\b)?)",
        ),
        _rule(
            "MONEY",
            rf"\b(?:Rs\.?|INR|USD|EUR|GBP|JPY|CHF|CAD|AUD){_OWS}{_AMOUNT}(?:{_WS}{_SCALE}\b)?",
        ),
        _rule(
            "MONEY", rf"(?<![\w.]){_AMOUNT}(?:{_WS}{_SCALE})?{_WS}(?:dollars|euros|rupees|pounds)\b"
        ),
        _rule(
            "DURATION",
            # "forty-eight hours" whole; "2019 year end" is a year.
            rf"(?<![\w.])(?!{_YEAR}(?:-|{_WS})year\b)(?:\d+|(?:{_NUMWORD}-)?{_NUMWORD})(?:-|{_WS})"
            r"(?:days?|weeks?|months?|years?|hours?|minutes?)\b",
            flags=re.IGNORECASE,
        ),
        _rule(
            "PERSON",
            rf"{_HONORIFIC}{_WS}(?P<e>(?:[A-Z]\.{_OWS})*{_NAMEWORD}(?:{_WS}(?:[A-Z]\.{_OWS})*{_NAMEWORD}){{0,2}})",
            _person_ok,
        ),
        _rule("PERSON", rf"\b(?:{first})(?:{_WS}[A-Z]\.)?{_WS}{_NAMEWORD}\b", _person_ok),
        _rule("CITY", rf"\b(?:{cities})\b"),
        _rule(
            "CITY",
            rf"\b(?:based|headquartered|located){_WS}in{_WS}(?P<e>{_NAMEWORD}(?:{_WS}{_NAMEWORD})?)",
        ),
    ]


def _legal_rules() -> list[_Rule]:
    return [
        _rule("CASE", rf"{_CAPSEQ}{_WS}(?:v\.?|vs\.?|versus|V\.|Vs\.?){_WS}{_CAPSEQ}"),
        _rule(
            "STATUTE",
            rf"{_SECTION}{_WS}{_SECTION_NUMS}(?:{_WS}(?:of{_WS})?(?:the{_WS})?(?:{_ACT}|{_STATUTE_ABBR}|Constitution(?:{_WS}of{_WS}India)?))?",
        ),
        _rule("STATUTE", _ACT, _act_ok),
        _rule(
            "STATUTE",
            rf"\bConstitution(?:{_WS}of{_WS}India\b|{_WS}\([\w-]+(?:{_WS}[\w-]+)?{_WS}"
            rf"Amendment\){_WS}Act(?:,?{_WS}{_YEAR}(?!\d))?|\b)",
        ),
        _rule("STATUTE", rf"\b{_STATUTE_ABBR}(?![\w])"),
        _rule(
            "COURT",
            rf"{_START}(?:{_CAP}{_WS}){{0,3}}(?:Court|Tribunal|Commission|Bench)\b"
            rf"(?:{_WS}of{_WS}(?:Judicature{_WS}(?:at|for){_WS})?{_NAMEWORD}(?:{_WS}{_NAMEWORD})?)?",
            _multiword,
        ),
        _rule("COMPANY", _COMPANY, _company_ok),
    ]


def _medical_rules() -> list[_Rule]:
    drugs = "|".join(sorted(COMMON_DRUGS, key=len, reverse=True))
    return [
        _rule("DRUG", rf"\b[A-Za-z][a-z]+{_DRUG_SUFFIX}\b", _drug_ok),
        _rule("DRUG", rf"\b(?:{drugs})\b", _drug_ok, flags=re.IGNORECASE),
        _rule(
            "DISEASE",
            rf"\b(?:{_DISEASE_MOD}{_WS}){{0,3}}{_DISEASE_HEAD}\b",
            _disease_ok,
            flags=re.IGNORECASE,
        ),
        _rule(
            "DISEASE",
            rf"{_START}(?:{_NAMEWORD}(?:'s)?{_WS}){{1,2}}(?:disease|syndrome|disorder)\b",
            _disease_ok,
        ),
        _rule(
            "DISEASE",
            rf"(?<![\w-])(?:{'|'.join(re.escape(d) for d in sorted(COMMON_DISEASES, key=len, reverse=True))})(?![\w-])",
            flags=re.IGNORECASE,
        ),
        # Not a piece of "5-HT2", "CA72-4", "GP5+" or "CI95%".
        _rule(
            "GENE",
            r"(?<!\w)(?<!\d-)(?:[A-Z]{2,6}\d{1,3}[A-Z]?|[A-Z]{2,4}-[A-Z]?\d{1,2})(?![\w+%]|-\d)",
            _gene_ok,
        ),
        _rule(
            "GENE",
            rf"(?<![\w-])(?:{'|'.join(re.escape(g) for g in sorted(GENES, key=len, reverse=True))})(?![\w-])",
        ),
        _rule(
            "DOSAGE",
            rf"(?<![\w./]){_AMOUNT}{_OWS}(?:mg|mcg|µg|μg|ug|g|mL|ml|IU|units|mmol|mEq)"
            rf"(?:/(?:kg|m2|m²|day|d|dose|h))?(?:{_WS}{_FREQ})?(?![\w/])",
            _dosage_ok,
        ),
    ]


def _finance_rules() -> list[_Rule]:
    exchange = r"(?:NASDAQ|Nasdaq|NYSE(?: American)?|AMEX|LSE|TSX|ASX|HKEX|NSE|BSE|OTC)"
    q = rf"(?:the{_WS})?(?:first|second|third|fourth|1st|2nd|3rd|4th|last|final)"
    return [
        _rule("COMPANY", _COMPANY, _company_ok),
        _rule("TICKER", rf"\b{exchange}{_OWS}:{_OWS}(?P<e>[A-Z]{{1,5}}(?:\.[A-Z])?)\b"),
        _rule(
            "TICKER",
            rf"\b(?:ticker|symbol|covering)(?:{_WS}symbol)?{_WS}\"?(?P<e>[A-Z]{{2,5}})\b",
            _ticker_ok,
        ),
        _rule("TICKER", rf"[A-Z][\w.&'’-]*{_WS}\((?P<e>[A-Z]{{2,5}})\)", _parenthesised_ticker_ok),
        _rule(
            "PERIOD",
            rf"\b{q}{_WS}(?:fiscal{_WS})?(?:quarter|half){_WS}of{_WS}(?:fiscal{_WS}(?:year{_WS})?)?{_YEAR}\b",
            flags=re.IGNORECASE,
        ),
        _rule(
            "PERIOD", rf"\b(?:fiscal|financial){_WS}(?:year{_WS})?{_YEAR}\b", flags=re.IGNORECASE
        ),
        _rule("PERIOD", rf"\bFY{_OWS}'?(?:{_YEAR}|\d\d)\b"),
        _rule("PERIOD", rf"\b(?:Q[1-4]|H[12])(?:{_OWS}(?:FY{_OWS})?'?(?:{_YEAR}|\d\d))?\b"),
    ]


_DOMAIN_RULES: dict[str, Callable[[], list[_Rule]]] = {
    "legal": _legal_rules,
    "medical": _medical_rules,
    "finance": _finance_rules,
    "general": list,
}
_RULE_CACHE: dict[str, tuple[_Rule, ...]] = {}


def _rules_for(domain: str) -> tuple[_Rule, ...]:
    if domain not in _RULE_CACHE:
        _RULE_CACHE[domain] = (*_DOMAIN_RULES[domain](), *_common_rules())
    return _RULE_CACHE[domain]


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    """Drop sentence starters and dangling connectors at the front, punctuation at the end."""
    while True:
        m = re.match(r"(\S+)\s+", text[start:end])
        if m is None:
            break
        word = m.group(1)
        if word.rstrip(".") in STARTERS or word in ("of", "the", "and", "&", "for", "a", "an"):
            start += m.end()
            continue
        break
    while end > start and text[end - 1] in ".,;:'’\"":
        end -= 1
    return start, end


class RuleRecognizer:
    """Offline rule + gazetteer recogniser for one domain (legal | medical | finance |
    general: the shared rules only). `gazetteer` (type -> strings) adds exact, case-sensitive
    matches that beat rule matches of the same extent."""

    def __init__(
        self, domain: str, *, gazetteer: Mapping[str, Iterable[str]] | None = None
    ) -> None:
        if domain not in _DOMAIN_RULES:
            raise ValueError(
                f"RuleRecognizer: unknown domain {domain!r}; expected one of {list(RULE_DOMAINS)}"
            )
        self.domain = domain
        self.rules = _rules_for(domain)
        self.gazetteer: dict[str, str] = {}
        for kind, strings in (gazetteer or {}).items():
            for s in strings:
                self.gazetteer.setdefault(s, kind)

    def __repr__(self) -> str:
        return f"RuleRecognizer({self.domain!r}, gazetteer={len(self.gazetteer)} strings)"

    def candidates(self, text: str) -> list[EntitySpan]:
        found: list[EntitySpan] = []
        for rule in self.rules:
            for m in rule.pattern.finditer(text):
                group = "e" if "e" in rule.pattern.groupindex else 0
                start, end = m.span(group)
                if rule.type in _TRIM_TYPES:
                    start, end = _trim(text, start, end)
                if end <= start or (rule.check is not None and not rule.check(text, start, end)):
                    continue
                found.append(EntitySpan(start, end, rule.type, text[start:end]))
        return found

    def __call__(self, text: str) -> list[EntitySpan]:
        tiers: dict[EntitySpan, int] = {}
        spans = self.candidates(text)
        for s in spans:
            tiers[s] = 1
        for s in literal_spans(text, self.gazetteer):
            tiers[s] = 0  # the user's gazetteer beats rules on equal extent
            spans.append(s)
        resolved = resolve_overlaps(spans, tiers=tiers)
        # A ticker or a case's party named once is the same entity wherever the text repeats
        # it, even where no rule context ("ticker", "(...)", "v.") surrounds it.
        extra = self._echoes(resolved)
        if not extra:
            return resolved
        more = literal_spans(text, extra)
        for s in more:
            tiers.setdefault(s, 2)
        return resolve_overlaps([*resolved, *more], tiers=tiers)

    def _echoes(self, spans: Sequence[EntitySpan]) -> dict[str, str]:
        extra: dict[str, str] = {}
        for s in spans:
            if s.type == "TICKER":
                extra[s.text] = "TICKER"
            elif s.type == "CASE":
                for party in re.split(rf"{_WS}(?:v\.?|vs\.?|versus|V\.|Vs\.?){_WS}", s.text):
                    if re.fullmatch(_COMPANY, party):
                        extra[party] = "COMPANY"
                    elif re.fullmatch(rf"{_NAMEWORD}(?:{_WS}{_NAMEWORD}){{1,2}}", party):
                        extra[party] = "PERSON"
        return extra


# ----------------------------------------------------------------------------- adapters
def spacy_recognizer(model: str) -> Recognizer:
    """A spaCy NER pipeline (an installed package name or a local path) as a Recognizer;
    spaCy labels are mapped to r2r types where they coincide (ORG -> COMPANY, GPE -> CITY)."""
    try:
        import spacy
    except ImportError as err:
        raise ImportError(
            "spacy_recognizer needs spaCy: `pip install spacy` and a model "
            "(e.g. `python -m spacy download en_core_web_sm`); or use RuleRecognizer"
        ) from err
    try:
        nlp = spacy.load(model)
    except OSError as err:
        raise OSError(
            f"spacy_recognizer: cannot load spaCy model {model!r}; install it "
            f"(`python -m spacy download {model}`) or pass a local model path"
        ) from err
    labels = {"ORG": "COMPANY", "GPE": "CITY", "MONEY": "MONEY", "PERCENT": "PERCENT"}

    def recognise(text: str) -> list[EntitySpan]:
        doc = nlp(text)
        spans = [
            EntitySpan(e.start_char, e.end_char, labels.get(e.label_, e.label_.upper()), e.text)
            for e in doc.ents
        ]
        return resolve_overlaps(spans)

    return recognise


def gliner_recognizer(path: str, labels: Sequence[str], threshold: float = 0.5) -> Recognizer:
    """A GLiNER model from a local folder; `labels` are the entity types to ask for (their
    UPPER_SNAKE form is the span type). Never downloads: `path` must be a local directory."""
    try:
        from gliner import GLiNER
    except ImportError as err:
        raise ImportError(
            "gliner_recognizer needs the `gliner` package (`pip install gliner`); "
            "or use RuleRecognizer"
        ) from err
    from pathlib import Path

    if not Path(path).is_dir():
        raise OSError(f"gliner_recognizer: {path!r} is not a local model folder")
    model = GLiNER.from_pretrained(path, local_files_only=True)

    def recognise(text: str) -> list[EntitySpan]:
        found = model.predict_entities(text, list(labels), threshold=threshold)
        spans = [
            EntitySpan(
                e["start"],
                e["end"],
                re.sub(r"\W+", "_", e["label"]).upper(),
                text[e["start"] : e["end"]],
            )
            for e in found
        ]
        return resolve_overlaps(spans)

    return recognise
