"""Word lists and compositional builders for the synthetic benchmark's entity strings.

Names are built from syllables and word lists so a few hundred distinct entities exist per
type; `Allocator` hands out each named string once per world, which is what keeps the
train/dev/test entity pools disjoint.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

FIRST_NAMES_IN = (
    "Aarav", "Anil", "Arjun", "Deepa", "Farah", "Gaurav", "Harish", "Indira", "Kavita", "Lakshmi",
    "Manoj", "Meera", "Nikhil", "Pooja", "Rajesh", "Ramesh", "Rohan", "Sanjay", "Savitri", "Sunil",
    "Tanvi", "Uday", "Vikram", "Yamini", "Zubin", "Bhavna", "Chetan", "Devika", "Ishaan", "Jaya",
)  # fmt: skip
LAST_NAMES_IN = (
    "Agarwal", "Bhatt", "Chauhan", "Desai", "Gill", "Iyer", "Joshi", "Kapoor", "Khanna", "Kulkarni",
    "Menon", "Mehta", "Nair", "Pandey", "Patil", "Rao", "Reddy", "Saxena", "Sethi", "Shetty",
    "Sinha", "Thakur", "Trivedi", "Varma", "Yadav", "Bose", "Dutta", "Ghosh", "Mishra", "Pillai",
)  # fmt: skip
FIRST_NAMES = (
    "Alice", "Andrea", "Boris", "Carmen", "Daniel", "Elena", "Felix", "Grace", "Hiro", "Ingrid",
    "Jonas", "Karin", "Lucas", "Maya", "Nadia", "Oscar", "Paula", "Rafael", "Sofia", "Tomas",
    "Ursula", "Victor", "Wendy", "Yusuf", "Zara", "Marco", "Leila", "Henrik", "Chloe", "Mateo",
)  # fmt: skip
LAST_NAMES = (
    "Albrecht", "Brennan", "Castillo", "Duarte", "Eriksen", "Fischer", "Garrido", "Hartmann",
    "Ibarra", "Jansen", "Kowalski", "Lindqvist", "Moreau", "Novak", "Okafor", "Petrov", "Quinlan",
    "Rossi", "Sandoval", "Tanaka", "Ulrich", "Vasquez", "Whitfield", "Xu", "Yilmaz", "Zeller",
    "Barros", "Costa", "Haddad", "Moretti",
)  # fmt: skip

# Company and drug names: onset + ending syllables, so BPE sees recurring pieces while the
# whole names stay distinct.
NAME_ONSETS = (
    "Zee", "Vel", "Ort", "Kal", "Bry", "Nov", "Quar", "Tel", "Mar", "Sol", "Ast", "Cor", "Lum",
    "Pax", "Ver", "Hal", "Dra", "Fen", "Gal", "Jor", "Kes", "Lyr", "Mon", "Nex", "Pyr", "Rho",
    "Syl", "Tor", "Vor", "Wex", "Xan", "Zan",
)  # fmt: skip
NAME_ENDINGS = ("kr", "ora", "ix", "ent", "ara", "on", "is", "ium", "ex", "ova", "ar", "yn")
COMPANY_SECTORS = (
    "Motors", "Biotech", "Energy", "Logistics", "Systems", "Foods", "Networks", "Textiles",
    "Pharma", "Minerals", "Retail", "Software", "Shipping", "Cement", "Telecom", "Chemicals",
)  # fmt: skip
COMPANY_FORMS = ("Holdings", "Group", "Corporation", "Industries", "Partners", "Ltd")
BANK_FORMS = ("Bank", "Capital", "Trust", "Securities")

DRUG_ONSETS = (
    "Zol", "Vel", "Tra", "Mir", "Cal", "Dor", "Fen", "Lum", "Pra", "Sel", "Ter", "Xal", "Bex",
    "Cor", "Nal", "Ori", "Quin", "Rav", "Sim", "Tol", "Ver", "Zan", "Ada", "Eli", "Ibr",
)  # fmt: skip
DRUG_MIDDLES = ("a", "i", "o", "e", "ava", "ime", "ope", "exa", "")
DRUG_SUFFIXES = (
    "ril", "mab", "nib", "pril", "statin", "zole", "vir", "sartan", "tide", "parin", "olol",
    "cillin", "xaban", "gliptin",
)  # fmt: skip

DISEASE_ADJECTIVES = (
    "chronic", "acute", "progressive", "recurrent", "idiopathic", "hereditary", "juvenile",
    "refractory",
)  # fmt: skip
DISEASE_ORGANS = (
    "renal", "hepatic", "pulmonary", "cardiac", "cerebral", "gastric", "dermal", "retinal",
    "pancreatic", "thyroid", "vascular", "bronchial",
)  # fmt: skip
DISEASE_CONDITIONS = (
    "fibrosis", "insufficiency", "inflammation", "neuropathy", "sclerosis", "dystrophy",
    "carcinoma", "stenosis", "ischemia", "hypertension",
)  # fmt: skip
DISEASE_EPONYM_FORMS = ("syndrome", "disease")
GENE_LETTERS = "ABCDEFGHKLMNPRSTVWXZ"
SYMPTOMS = (
    "nausea", "headache", "dizziness", "fatigue", "rash", "insomnia", "dry mouth", "constipation",
    "diarrhoea", "blurred vision", "joint pain", "muscle cramps", "palpitations", "weight gain",
    "hair loss", "abdominal pain",
)  # fmt: skip
FREQUENCIES = ("once daily", "twice daily", "three times daily", "every 12 hours", "once weekly")
DOSE_MG = (5, 10, 20, 25, 40, 50, 100, 150, 200, 250, 400, 500, 750, 1000)
DRUG_FORMS = ("tablets", "capsules", "an injection", "an oral solution", "a patch")

PENAL_CODES = (
    "Indian Penal Code", "Arms Act", "Prevention of Corruption Act", "Information Technology Act",
    "Negotiable Instruments Act", "NDPS Act",
)  # fmt: skip
STATES_IN = (
    "Maharashtra", "Karnataka", "Kerala", "Gujarat", "Punjab", "Rajasthan", "Bihar", "Odisha",
    "Assam", "Haryana", "Telangana", "Madhya Pradesh",
)  # fmt: skip
CITIES_IN = (
    "Pune", "Nagpur", "Mysuru", "Kochi", "Surat", "Ludhiana", "Jaipur", "Patna", "Cuttack",
    "Guwahati", "Gurugram", "Indore", "Nashik", "Madurai", "Varanasi",
)  # fmt: skip
CITIES = (
    "Chicago", "Toronto", "London", "Frankfurt", "Singapore", "Sydney", "Zurich", "Dublin",
    "Austin", "Denver", "Oslo", "Seoul", "Madrid", "Boston", "Atlanta", "Rotterdam",
)  # fmt: skip
MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)  # fmt: skip
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
NUMBER_WORDS = (
    "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve", "fourteen",
)  # fmt: skip
ORDINALS = ("third", "fifth", "seventh", "tenth", "twelfth", "fifteenth", "twentieth")
QUARTER_NAMES = ("first", "second", "third", "fourth")

WORD_LISTS: tuple[tuple[str, ...], ...] = (
    FIRST_NAMES_IN, LAST_NAMES_IN, FIRST_NAMES, LAST_NAMES, NAME_ONSETS, NAME_ENDINGS,
    COMPANY_SECTORS, COMPANY_FORMS, BANK_FORMS, DRUG_ONSETS, DRUG_MIDDLES, DRUG_SUFFIXES,
    DISEASE_ADJECTIVES, DISEASE_ORGANS, DISEASE_CONDITIONS, DISEASE_EPONYM_FORMS, SYMPTOMS,
    FREQUENCIES, DRUG_FORMS, PENAL_CODES, STATES_IN, CITIES_IN, CITIES, MONTHS, WEEKDAYS,
    NUMBER_WORDS, ORDINALS, QUARTER_NAMES,
)  # fmt: skip


class Allocator:
    """Hands out named entity strings, each at most once per world.

    A new string is also refused when it contains, or is contained in, an earlier one at word
    boundaries ("Ravi Shah" vs "Ravi Shah Textiles"), so finding one entity's string in a text
    can never mean finding another's.
    """

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self._used: set[str] = set()
        self._padded: list[str] = []

    def unique(self, build: Callable[[random.Random], str], what: str) -> str:
        for _ in range(1000):
            value = build(self.rng)
            padded = f" {value} "
            if value in self._used or any(padded in p or p in padded for p in self._padded):
                continue
            self._used.add(value)
            self._padded.append(padded)
            return value
        raise ValueError(f"synthetic: ran out of distinct {what} names; lower n_entities")


def person(rng: random.Random, *, indian: bool = False) -> str:
    firsts, lasts = (FIRST_NAMES_IN, LAST_NAMES_IN) if indian else (FIRST_NAMES, LAST_NAMES)
    return f"{rng.choice(firsts)} {rng.choice(lasts)}"


def name_root(rng: random.Random) -> str:
    return rng.choice(NAME_ONSETS) + rng.choice(NAME_ENDINGS)


def company(rng: random.Random) -> str:
    tail = rng.choice(COMPANY_SECTORS if rng.random() < 0.5 else COMPANY_FORMS)
    return f"{name_root(rng)} {tail}"


def bank(rng: random.Random) -> str:
    return f"{name_root(rng)} {rng.choice(BANK_FORMS)}"


def ticker(name: str, rng: random.Random) -> str:
    # Like real tickers: the name's initial and next two consonants, sometimes a fourth
    # letter; the allocator retries on a collision, drawing a new fourth letter.
    letters = re.sub(r"[^A-Z]", "", name.upper())
    base = letters[0] + re.sub(r"[AEIOU]", "", letters[1:])[:2]
    return base + "".join(rng.choice(GENE_LETTERS) for _ in range(rng.randint(0, 1)))


def drug(rng: random.Random) -> str:
    return (rng.choice(DRUG_ONSETS) + rng.choice(DRUG_MIDDLES) + rng.choice(DRUG_SUFFIXES)).title()


def disease(rng: random.Random) -> str:
    if rng.random() < 0.25:
        return f"{rng.choice(LAST_NAMES)} {rng.choice(DISEASE_EPONYM_FORMS)}"
    organ, condition = rng.choice(DISEASE_ORGANS), rng.choice(DISEASE_CONDITIONS)
    return f"{rng.choice(DISEASE_ADJECTIVES)} {organ} {condition}"


def gene(rng: random.Random) -> str:
    letters = "".join(rng.choice(GENE_LETTERS) for _ in range(rng.randint(3, 4)))
    return f"{letters}{rng.randint(1, 19)}"


def penal_section(rng: random.Random) -> str:
    code = rng.choice(PENAL_CODES)
    top = 511 if code == "Indian Penal Code" else 90
    return f"Section {rng.randint(1, top)} of the {code}"


def constitution_article(rng: random.Random) -> str:
    return f"Article {rng.randint(12, 395)} of the Constitution"


def limitation_article(rng: random.Random) -> str:
    return f"Article {rng.randint(1, 137)} of the Limitation Act"


def high_court(rng: random.Random) -> str:
    return "Supreme Court" if rng.random() < 0.3 else f"High Court of {rng.choice(STATES_IN)}"


def trial_court(rng: random.Random) -> str:
    kind = rng.choice(("District Court", "Sessions Court", "Civil Court"))
    return f"{kind} of {rng.choice(CITIES_IN)}"


def dosage(rng: random.Random) -> str:
    unit = "mg/kg" if rng.random() < 0.15 else "mg"
    return f"{rng.choice(DOSE_MG)} {unit} {rng.choice(FREQUENCIES)}"


def usd_large(rng: random.Random) -> str:
    if rng.random() < 0.3:
        return f"${rng.randint(11, 99) / 10:.1f} billion"
    return f"${rng.randint(1200, 99999) / 10:,.1f} million"


def usd_per_share(rng: random.Random, low: float = 0.05, high: float = 4.0) -> str:
    return f"${rng.uniform(low, high):.2f}"


def rupees(rng: random.Random) -> str:
    # Indian digit grouping (2,50,000), as Indian judgments write amounts.
    digits = str(rng.randint(2, 400) * 5000)
    head, tail = digits[:-3], digits[-3:]
    groups = []
    while len(head) > 2:
        head, groups = head[:-2], [head[-2:], *groups]
    return "Rs " + ",".join([g for g in (head, *groups) if g] + [tail])


def percent(rng: random.Random) -> str:
    return f"{rng.randint(2, 60)}%" if rng.random() < 0.5 else f"{rng.uniform(1, 15):.2f}%"


def fiscal_period(rng: random.Random) -> str:
    year = rng.randint(2015, 2024)
    roll = rng.random()
    if roll < 0.4:
        return f"fiscal {year}"
    if roll < 0.8:
        return f"Q{rng.randint(1, 4)} {year}"
    return f"the {rng.choice(QUARTER_NAMES)} quarter of {year}"


def us_date(rng: random.Random, first: int = 2015, last: int = 2030) -> str:
    return f"{rng.choice(MONTHS)} {rng.randint(1, 28)}, {rng.randint(first, last)}"


def uk_date(rng: random.Random) -> str:
    return f"{rng.randint(1, 28)} {rng.choice(MONTHS)} {rng.randint(2001, 2023)}"


def years(rng: random.Random) -> str:
    return f"{rng.choice(NUMBER_WORDS)} years"
