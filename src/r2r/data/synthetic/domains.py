"""Per-domain relations, templates and entity builders of the synthetic benchmark.

Writing rules the templates follow (the tests check the first two):
- every document and query template names the anchor slot (the entity a query is about),
  so all of an entity's documents share its surface string with the query;
- a relation's `key` slot (a named entity only that relation's document states, e.g. the
  acquired company) appears in that relation's documents and nowhere else in the entity's
  documents; `contexts` are sentences naming a key entity that a query may open with;
- query wording paraphrases the document wording, and documents of one relation reuse a few
  words of other relations' queries, so the relation cannot be read off word overlap.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from r2r.data.synthetic import names as nm


@dataclass(frozen=True)
class Slot:
    value: str
    type: str | None  # entity type (None: plain filler such as a symptom or a count)


@dataclass(frozen=True)
class Relation:
    name: str
    docs: tuple[str, ...]
    queries: tuple[str, ...]
    key: str | None = None


@dataclass(frozen=True)
class DomainSpec:
    anchor: str
    entity_types: tuple[str, ...]
    relations: tuple[Relation, ...]
    background: tuple[str, ...]  # entity sentences added to documents of every relation
    contexts: Mapping[str, tuple[str, ...]]  # key slot -> opening sentences naming it
    make_entity: Callable[[nm.Allocator], dict[str, Slot]]
    make_fillers: Callable[[random.Random], dict[str, Slot]]


# ----------------------------------------------------------------------------- finance
def _finance_entity(alloc: nm.Allocator) -> dict[str, Slot]:
    name = alloc.unique(nm.company, "company")
    return {
        "company": Slot(name, "COMPANY"),
        "ticker": Slot(alloc.unique(lambda r: nm.ticker(name, r), "ticker"), "TICKER"),
        "city": Slot(alloc.rng.choice(nm.CITIES), "CITY"),
        "ceo": Slot(alloc.unique(nm.person, "person"), "PERSON"),
        "old_ceo": Slot(alloc.unique(nm.person, "person"), "PERSON"),
        "target": Slot(alloc.unique(nm.company, "company"), "COMPANY"),
        "lender": Slot(alloc.unique(nm.bank, "bank"), "COMPANY"),
    }


def _finance_fillers(rng: random.Random) -> dict[str, Slot]:
    eps = rng.uniform(0.5, 6.0)
    return {
        "money": Slot(nm.usd_large(rng), "MONEY"),
        "dps": Slot(nm.usd_per_share(rng), "MONEY"),
        "eps": Slot(f"${eps:.2f}", "MONEY"),
        "eps2": Slot(f"${eps + rng.uniform(0.1, 0.8):.2f}", "MONEY"),
        "pct": Slot(nm.percent(rng), "PERCENT"),
        "move": Slot(nm.percent(rng), "PERCENT"),
        "period": Slot(nm.fiscal_period(rng), "PERIOD"),
        "year": Slot(str(rng.randint(2024, 2034)), "DATE"),
        "date": Slot(nm.us_date(rng), "DATE"),
        "n": Slot(f"{rng.randint(2, 90) * 100:,}", None),
        "n_m": Slot(str(rng.randint(2, 60)), None),
        "tenure": Slot(nm.years(rng), None),
        "nth": Slot(rng.choice(nm.ORDINALS), None),
        "updown": Slot(rng.choice(("up", "down")), None),
    }


FINANCE = DomainSpec(
    anchor="company",
    entity_types=("COMPANY", "TICKER", "PERSON", "CITY", "MONEY", "PERCENT", "PERIOD", "DATE"),
    relations=(
        Relation(
            "revenue",
            docs=(
                "{company} reported total revenue of {money} for {period}, up {pct} from a year "
                "earlier, driven by higher volumes in its core business.",
                "For {period}, {company} posted net sales of {money}, an increase of {pct} over "
                "the prior period, according to its annual report.",
                "Net sales at {company} reached {money} in {period}, a gain of {pct} that "
                "management attributed to pricing.",
            ),
            queries=(
                "How much did {company} sell last year?",
                "What was the top line of {company}?",
                "How big is the turnover at {company}?",
            ),
        ),
        Relation(
            "dividend",
            docs=(
                "The board of {company} declared a quarterly dividend of {dps} per share, payable "
                "on {date} to holders of record.",
                "{company} raised its cash dividend to {dps} per share, its {nth} consecutive "
                "annual increase.",
                "{company} distributes {dps} per share every quarter, a payout ratio of about "
                "{pct} of earnings.",
            ),
            queries=(
                "What does {company} pay its shareholders?",
                "How much cash do owners of {company} stock receive each quarter?",
                "What is the payout to {company} investors?",
            ),
        ),
        Relation(
            "debt_maturity",
            docs=(
                "{company} has {money} of senior notes outstanding, arranged by {lender}, that "
                "mature in {year} and carry a coupon of {pct}.",
                "The {pct} unsecured notes issued by {company} through {lender}, totalling {money}, "
                "come due on {date}.",
                "{company} said its {money} term loan from {lender} matures in {year}; the company "
                "intends to refinance it before then.",
            ),
            queries=(
                "When does {company} have to repay its borrowings?",
                "What loans is {company} carrying and when are they due?",
                "How much does {company} owe its creditors?",
            ),
            key="lender",
        ),
        Relation(
            "acquisition",
            docs=(
                "{company} completed its acquisition of {target} for {money} in cash, adding about "
                "{n} employees.",
                "{company} agreed to buy {target}, a privately held rival, in a deal valued at "
                "{money} that is expected to close in {period}.",
                "Under the merger agreement, {target} becomes a wholly owned subsidiary of "
                "{company}; the purchase price was {money}.",
            ),
            queries=(
                "Which business did {company} take over?",
                "What firm has {company} purchased recently?",
                "Has {company} bought another company?",
            ),
            key="target",
        ),
        Relation(
            "ceo_change",
            docs=(
                "{company} appointed {ceo} as chief executive officer effective {date}, succeeding "
                "{old_ceo}, who is retiring after {tenure}.",
                "{old_ceo} stepped down as chief executive of {company}; the board named {ceo}, "
                "previously chief operating officer, to the role.",
                "{ceo} took over as CEO of {company} on {date} after {old_ceo} left to pursue "
                "other interests.",
            ),
            queries=(
                "Who leads {company} now?",
                "Who is the new boss at {company}?",
                "Did {company} change its top management?",
            ),
            key="ceo",
        ),
        Relation(
            "buyback",
            docs=(
                "{company} authorized a share repurchase program of up to {money}, under which it "
                "may buy back common stock through {year}.",
                "During {period}, {company} repurchased {n_m} million of its own shares for "
                "{money}.",
                "The board of {company} approved a new {money} buyback, replacing the program "
                "that expired in {period}.",
            ),
            queries=(
                "Is {company} reducing its share count?",
                "How many of its own shares has {company} bought?",
                "Is {company} retiring its stock?",
            ),
        ),
        Relation(
            "guidance",
            docs=(
                "{company} expects earnings per share between {eps} and {eps2} for {period}, "
                "according to its latest outlook.",
                "{company} raised its full-year forecast and now projects revenue growth of {pct} "
                "in {period}.",
                "Management at {company} cut its guidance for {period}, citing weaker demand in "
                "{city}.",
            ),
            queries=(
                "What does {company} predict for the coming year?",
                "What are the projections of {company} for next year?",
                "How does {company} see its future profits?",
            ),
        ),
    ),
    background=(
        "{company} is headquartered in {city} and its shares trade under the ticker {ticker}.",
        "Shares of {company} ({ticker}) closed {updown} {move} after the announcement.",
        "{company}, based in {city}, disclosed the figures in a regulatory filing on {date}.",
        "Analysts covering {ticker} said the update was broadly in line with expectations.",
    ),
    contexts={
        "lender": ("I work at {lender}.", "{lender} is my bank."),
        "target": ("I follow {target} closely.", "I used to work for {target}."),
        "ceo": ("I saw {ceo} on television.", "{ceo} gave an interview yesterday."),
    },
    make_entity=_finance_entity,
    make_fillers=_finance_fillers,
)


# ----------------------------------------------------------------------------- medical
def _medical_entity(alloc: nm.Allocator) -> dict[str, Slot]:
    rng = alloc.rng
    return {
        "drug": Slot(alloc.unique(nm.drug, "drug"), "DRUG"),
        "disease": Slot(alloc.unique(nm.disease, "disease"), "DISEASE"),
        "contra": Slot(alloc.unique(nm.disease, "disease"), "DISEASE"),
        "gene": Slot(alloc.unique(nm.gene, "gene"), "GENE"),
        "partner": Slot(alloc.unique(nm.drug, "drug"), "DRUG"),
        "investigator": Slot(alloc.unique(nm.person, "person"), "PERSON"),
        "form": Slot(rng.choice(nm.DRUG_FORMS), None),
        "approval_year": Slot(str(rng.randint(1995, 2023)), "DATE"),
    }


def _medical_fillers(rng: random.Random) -> dict[str, Slot]:
    s1, s2, s3 = rng.sample(nm.SYMPTOMS, 3)
    return {
        "dose": Slot(nm.dosage(rng), "DOSAGE"),
        "pct": Slot(nm.percent(rng), "PERCENT"),
        "n": Slot(str(rng.randint(40, 2400)), None),
        "weeks": Slot(str(rng.randint(2, 16)), None),
        "hours": Slot(str(rng.choice((6, 12, 24, 48))), None),
        "s1": Slot(s1, None),
        "s2": Slot(s2, None),
        "s3": Slot(s3, None),
    }


MEDICAL = DomainSpec(
    anchor="drug",
    entity_types=("DRUG", "DISEASE", "GENE", "DOSAGE", "PERSON", "PERCENT", "DATE"),
    relations=(
        Relation(
            "indication",
            docs=(
                "{drug} is approved for the treatment of adults with {disease} who have not "
                "responded to first-line therapy.",
                "Regulators cleared {drug} as a therapy for {disease} after a phase 3 trial showed "
                "a response rate of {pct}.",
                "{drug} is indicated for patients with moderate to severe {disease} and may be "
                "used alone or with other medicines.",
            ),
            queries=(
                "What is {drug} prescribed for?",
                "Which illness can be managed with {drug}?",
                "What condition do doctors use {drug} to treat?",
            ),
            key="disease",
        ),
        Relation(
            "side_effects",
            docs=(
                "The most common adverse reactions to {drug} were {s1}, {s2} and {s3}, reported "
                "in more than {pct} of patients.",
                "Patients taking {drug} frequently experience {s1} and {s2}; {s3} occurs less "
                "often and usually resolves without treatment.",
                "In clinical trials, {drug} caused {s1}, {s2} and occasionally {s3}.",
            ),
            queries=(
                "What unwanted reactions can {drug} cause?",
                "Will {drug} make me feel unwell?",
                "What problems might I notice after starting {drug}?",
            ),
        ),
        Relation(
            "dosage",
            docs=(
                "The recommended dose of {drug} is {dose}, taken with or without food.",
                "Adults should receive {drug} at {dose}; the dose may be reduced in elderly "
                "patients or those with kidney problems.",
                "{drug} is given by mouth at {dose} for {weeks} weeks, then adjusted according "
                "to the response.",
            ),
            queries=(
                "How much {drug} should I take?",
                "How often and in what amount is {drug} taken?",
                "What is the usual regimen for {drug}?",
            ),
        ),
        Relation(
            "contraindication",
            docs=(
                "{drug} must not be used in patients with {contra} because of the risk of serious "
                "complications.",
                "{drug} is contraindicated in {contra} and in people with known hypersensitivity "
                "to any of its ingredients.",
                "Do not prescribe {drug} to anyone with a history of {contra}; safer alternatives "
                "should be considered.",
            ),
            queries=(
                "Who should avoid {drug}?",
                "When is it unsafe to give {drug}?",
                "Are there patients who must never receive {drug}?",
            ),
            key="contra",
        ),
        Relation(
            "mechanism",
            docs=(
                "{drug} works by selectively inhibiting {gene}, which blocks the signalling that "
                "drives the disease.",
                "{drug} binds to the protein encoded by {gene} and reduces its activity by about "
                "{pct}.",
                "As an antagonist of {gene}, {drug} lowers downstream inflammatory signalling in "
                "the body.",
            ),
            queries=(
                "How does {drug} act in the body?",
                "What is the molecular target of {drug}?",
                "By what pathway does {drug} produce its effect?",
            ),
            key="gene",
        ),
        Relation(
            "interaction",
            docs=(
                "Taking {drug} together with {partner} raises blood levels of {drug} and should "
                "be avoided.",
                "{partner} may reduce the effectiveness of {drug}; doctors should monitor patients "
                "who use both.",
                "Co-administration of {drug} and {partner} increases the risk of bleeding and is "
                "not recommended.",
            ),
            queries=(
                "Can {drug} be combined with other medicines?",
                "Is it safe to mix {drug} with my other pills?",
                "Which medications clash with {drug}?",
            ),
            key="partner",
        ),
        Relation(
            "overdose",
            docs=(
                "An overdose of {drug} can cause {s1} and seizures; treatment is supportive and "
                "should start in hospital.",
                "After excessive intake of {drug}, patients should be observed for at least "
                "{hours} hours.",
                "Ingesting too much {drug} may lead to {s1}; there is no specific antidote.",
            ),
            queries=(
                "What happens if someone takes too many {drug} tablets?",
                "What should be done after swallowing an excess of {drug}?",
                "Is an accidental double dose of {drug} dangerous?",
            ),
        ),
    ),
    background=(
        "{drug} is supplied as {form} and was first approved in {approval_year}.",
        "The evidence comes from a study of {n} patients led by Dr. {investigator}.",
        "Prescribers should consult the full {drug} product information before use.",
        "{drug} has been on the market since {approval_year}.",
    ),
    contexts={
        "disease": ("I have {disease}.", "I was diagnosed with {disease} last year."),
        "contra": ("My father has {contra}.", "I have a history of {contra}."),
        "gene": ("My tumour carries a {gene} mutation.", "I read about {gene} online."),
        "partner": ("I already take {partner}.", "My doctor also prescribed {partner}."),
    },
    make_entity=_medical_entity,
    make_fillers=_medical_fillers,
)


# ----------------------------------------------------------------------------- legal
def _legal_entity(alloc: nm.Allocator) -> dict[str, Slot]:
    rng = alloc.rng
    appellant = alloc.unique(lambda r: nm.person(r, indian=True), "person")
    if rng.random() < 0.5:
        respondent = Slot(alloc.unique(lambda r: nm.person(r, indian=True), "person"), "PERSON")
    else:
        respondent = Slot(alloc.unique(nm.company, "company"), "COMPANY")
    return {
        "case": Slot(f"{appellant} v. {respondent.value}", "CASE"),
        "appellant": Slot(appellant, "PERSON"),
        "respondent": respondent,
        "judge": Slot(alloc.unique(lambda r: nm.person(r, indian=True), "person"), "PERSON"),
        "court": Slot(nm.high_court(rng), "COURT"),
        "lower_court": Slot(nm.trial_court(rng), "COURT"),
        "city": Slot(rng.choice(nm.CITIES_IN), "CITY"),
        "statute": Slot(alloc.unique(nm.penal_section, "statute"), "STATUTE"),
        "article": Slot(alloc.unique(nm.constitution_article, "article"), "STATUTE"),
    }


def _legal_fillers(rng: random.Random) -> dict[str, Slot]:
    return {
        "date": Slot(nm.uk_date(rng), "DATE"),
        "years": Slot(nm.years(rng), "DURATION"),
        "money": Slot(nm.rupees(rng), "MONEY"),
        "pct": Slot(nm.percent(rng), "PERCENT"),
        "lim": Slot(nm.limitation_article(rng), "STATUTE"),
        "n_days": Slot(str(rng.randint(15, 900)), None),
        "weekday": Slot(rng.choice(nm.WEEKDAYS), None),
    }


LEGAL = DomainSpec(
    anchor="case",
    entity_types=(
        "CASE",
        "PERSON",
        "COMPANY",
        "STATUTE",
        "COURT",
        "CITY",
        "DATE",
        "DURATION",
        "MONEY",
        "PERCENT",
    ),
    relations=(
        Relation(
            "sentence",
            docs=(
                "In {case}, {appellant} was convicted under {statute} and sentenced to {years} of "
                "rigorous imprisonment along with a fine of {money}.",
                "In {case}, the {lower_court} imposed a prison term of {years} on {appellant} for "
                "the offence under {statute}.",
                "Holding {appellant} guilty under {statute}, the trial court in {case} ordered "
                "imprisonment for {years}.",
            ),
            queries=(
                "What punishment did the accused receive in {case}?",
                "How long must the convict serve in {case}?",
                "What penalty was handed down in {case}?",
            ),
            key="statute",
        ),
        Relation(
            "jurisdiction",
            docs=(
                "The {court} held that it had territorial jurisdiction over {case} because the "
                "cause of action arose in {city}.",
                "Rejecting the objection raised by {respondent}, the {court} ruled that the "
                "dispute in {case} fell within its jurisdiction.",
                "In {case}, the question of forum was settled: the {lower_court} was found "
                "competent to try the matter.",
            ),
            queries=(
                "Which court had the power to hear {case}?",
                "Was {case} filed in the right forum?",
                "Where could {case} lawfully be tried?",
            ),
        ),
        Relation(
            "appeal_outcome",
            docs=(
                "The {court} dismissed the appeal in {case} on {date} and upheld the judgment of "
                "the {lower_court}.",
                "Allowing the appeal filed by {appellant}, the {court} set aside the order of the "
                "{lower_court} in {case}.",
                "On appeal, the {court} partly allowed {case}, reducing the relief granted by the "
                "{lower_court}.",
            ),
            queries=(
                "Did the higher court reverse the verdict in {case}?",
                "What was the result of the challenge to the ruling in {case}?",
                "Was the lower court decision in {case} upheld?",
            ),
        ),
        Relation(
            "bail",
            docs=(
                "{appellant} was released on bail in {case} on furnishing a personal bond of "
                "{money} with two sureties.",
                "The {court} rejected the bail application of {appellant} in {case}, citing the "
                "gravity of the offence.",
                "Granting bail in {case}, the judge directed {appellant} to report to the police "
                "station every {weekday}.",
            ),
            queries=(
                "Was the accused in {case} let out of custody before trial?",
                "Did the accused in {case} get released pending the hearing?",
                "Can the accused in {case} stay out of jail until the verdict?",
            ),
        ),
        Relation(
            "limitation",
            docs=(
                "The suit in {case} was dismissed as time-barred because it was filed beyond the "
                "period of {years} prescribed by {lim}.",
                "The {lower_court} condoned the delay of {n_days} days in {case}, holding that "
                "{appellant} had sufficient cause.",
                "Under {lim}, the claim of {appellant} in {case} had to be brought within {years} "
                "of {date}.",
            ),
            queries=(
                "Was {case} brought too late?",
                "What deadline applied to filing {case}?",
                "Had the time to sue expired in {case}?",
            ),
        ),
        Relation(
            "compensation",
            docs=(
                "The {court} ordered {respondent} to pay {money} as compensation to {appellant} "
                "in {case}.",
                "In {case}, damages of {money} were awarded to {appellant} for loss of income and "
                "mental agony.",
                "{respondent} was held liable in {case} and directed to pay {money} to "
                "{appellant} with interest at {pct}.",
            ),
            queries=(
                "How much money was the claimant given in {case}?",
                "What amount must the losing side pay in {case}?",
                "What financial relief was granted in {case}?",
            ),
        ),
        Relation(
            "constitutional_right",
            docs=(
                "The petitioner in {case} invoked {article}, arguing that the action of "
                "{respondent} violated the right to life and personal liberty.",
                "The {court} held in {case} that {article} had been infringed and issued a writ "
                "in favour of {appellant}.",
                "Relying on {article}, {appellant} challenged the order in {case} as arbitrary "
                "and discriminatory.",
            ),
            queries=(
                "Which fundamental right was at stake in {case}?",
                "What part of the Constitution was relied on in {case}?",
                "Did {case} raise a constitutional question?",
            ),
            key="article",
        ),
    ),
    background=(
        "Judgment in {case} was delivered by Justice {judge} on {date}.",
        "{case} arose from a dispute between {appellant} and {respondent} in {city}.",
        "The matter was argued before the {court} over several hearings.",
        "Counsel for {respondent} relied on earlier precedents of the {court}.",
    ),
    contexts={
        "statute": ("The charge was under {statute}.", "It is a case under {statute}."),
        "article": ("The petition cites {article}.", "I read that {article} was argued."),
    },
    make_entity=_legal_entity,
    make_fillers=_legal_fillers,
)

SPECS: dict[str, DomainSpec] = {"legal": LEGAL, "medical": MEDICAL, "finance": FINANCE}
