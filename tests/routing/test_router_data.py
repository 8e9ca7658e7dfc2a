"""What routers learn from besides the training queries: pseudo-queries from each domain's
training documents, a class-balanced loss, and the hand-written probe questions."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.nn import functional as F

from r2r.errors import DataError
from r2r.routing.heads import balanced_weights
from r2r.routing.lit_router import RouterModule
from r2r.routing.probes import HOLDOUT_FILE, PROBES_FILE, load_probes
from r2r.routing.pseudo import document_spans, pseudo_queries
from r2r.types import Passage, Query, RetrievalDataset


def dataset(domain: str, docs: dict[str, tuple[str, str]], test_positive: str) -> RetrievalDataset:
    """`docs`: id -> (title, text); one training and one test query, the test query judged
    relevant to `test_positive` only."""
    return RetrievalDataset(
        name=domain,
        domain=domain,
        corpus={i: Passage(i, text, title) for i, (title, text) in docs.items()},
        queries={"q1": Query("q1", "train query"), "q2": Query("q2", "test query")},
        qrels={"train": {"q1": {"d1": 1}}, "test": {"q2": {test_positive: 1, "d1": 0}}},
    )


LEGAL = dataset(
    "legal",
    {
        "d2": ("Punishment for theft", "Whoever commits theft shall be punished. See s. 378."),
        "d1": (
            "",
            "The accused may apply for bail before the Sessions Court in every case.\n"
            "Section 437 | 1973 | 2 |\nBail is granted on conditions set by the court.",
        ),
        "d3": ("Held out", "This statute answers the test query and is never read."),
    },
    test_positive="d3",
)
MEDICAL = dataset(
    "medical",
    {"d1": ("", "Aspirin lowers the risk of stroke? Yes, in adults over fifty years of age.")},
    test_positive="d9",
)


def test_spans_are_titles_and_sentences_of_training_documents_cut_to_max_words() -> None:
    # Corpus order (by id); d3 is a test positive; "See s. 378." and the table row have
    # fewer than 4 words of letters; the long sentence is cut to 8 words.
    assert document_spans(LEGAL, max_words=8, min_words=4) == [
        "The accused may apply for bail before the",
        "Bail is granted on conditions set by the",
        "Whoever commits theft shall be punished.",
    ]
    assert document_spans(LEGAL, max_words=8, min_words=3) == [
        "The accused may apply for bail before the",
        "Bail is granted on conditions set by the",
        "Punishment for theft",
        "Whoever commits theft shall be punished.",
    ]


def test_pseudo_queries_sample_per_domain_with_the_seed() -> None:
    every = pseudo_queries(
        {"legal": LEGAL, "medical": MEDICAL},
        per_domain=10,
        max_words=6,
        min_words=3,
        forms=["{span}"],
        seed=0,
    )
    assert every.texts == (
        "The accused may apply for bail",
        "Bail is granted on conditions set",
        "Punishment for theft",
        "Whoever commits theft shall be punished.",
        "Aspirin lowers the risk of stroke?",
        "Yes, in adults over fifty years",
    )
    assert every.domains == ("legal",) * 4 + ("medical",) * 2
    two = pseudo_queries(
        {"legal": LEGAL}, per_domain=2, max_words=6, min_words=3, forms=["{span}"], seed=0
    )
    assert two.texts == ("The accused may apply for bail", "Bail is granted on conditions set")
    again = pseudo_queries(
        {"legal": LEGAL}, per_domain=2, max_words=6, min_words=3, forms=["{span}"], seed=0
    )
    other = pseudo_queries(
        {"legal": LEGAL}, per_domain=2, max_words=6, min_words=3, forms=["{span}"], seed=1
    )
    assert again == two and other != two
    none = pseudo_queries(
        {"legal": LEGAL}, per_domain=0, max_words=6, min_words=3, forms=["{span}"], seed=0
    )
    assert none.texts == () and none.domains == ()
    with pytest.raises(ValueError, match="min_words=7 <= max_words=6"):
        pseudo_queries(
            {"legal": LEGAL}, per_domain=1, max_words=6, min_words=7, forms=["{span}"], seed=0
        )


@pytest.mark.filterwarnings("ignore:You are trying to")
def test_balanced_weights_equalise_the_classes() -> None:
    labels = torch.tensor([0, 0, 0, 1])
    # 4 labels over the 2 present classes: 4 / (2 * 3) and 4 / (2 * 1); class 2 is absent.
    torch.testing.assert_close(balanced_weights(labels, 3), torch.tensor([2 / 3, 2.0, 0.0]))
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [3.0, 0.0, 1.0]])
    module = RouterModule(
        torch.nn.Identity(),
        3,
        lr=0.1,
        weight_decay=0.0,
        log_prefix="",
        class_weights=balanced_weights(labels, 3),
    )
    loss = module.training_step((logits, labels), 0)
    # Weighted mean: sum_i w[y_i] * CE_i / sum_i w[y_i].
    per_row = F.cross_entropy(logits, labels, reduction="none")
    w = torch.tensor([2 / 3, 2 / 3, 2 / 3, 2.0])
    torch.testing.assert_close(loss, (w * per_row).sum() / w.sum())
    plain = RouterModule(torch.nn.Identity(), 3, lr=0.1, weight_decay=0.0, log_prefix="")
    torch.testing.assert_close(plain.training_step((logits, labels), 0), per_row.mean())


def test_shipped_probes_hold_at_least_twelve_distinct_questions_per_domain() -> None:
    probes = load_probes()
    counts = Counter(probes.domains)
    assert counts == {"legal": 15, "medical": 15, "finance": 15}
    assert len(set(probes.texts)) == len(probes.texts)
    assert probes.texts[0] == "Is bail available for this offence?"
    assert all("\n" not in t and len(t.split()) <= 14 for t in probes.texts)  # one short line
    assert load_probes(PROBES_FILE) == probes


def test_the_held_out_probes_are_other_questions_of_the_same_domains() -> None:
    holdout, first = load_probes(HOLDOUT_FILE), load_probes()
    assert Counter(holdout.domains) == {"legal": 15, "medical": 15, "finance": 15}
    assert len(set(holdout.texts)) == 45
    assert not set(holdout.texts) & set(first.texts)
    assert holdout.texts[0] == "Who can grant anticipatory bail?"
    assert all("\n" not in t and len(t.split()) <= 16 for t in holdout.texts)


def test_a_bad_probe_line_names_file_line_and_field(tmp_path) -> None:
    path = tmp_path / "probes.jsonl"
    path.write_text('{"domain": "legal", "text": "Is bail available?"}\n\n{"domain": "legal"}\n')
    with pytest.raises(DataError, match=rf"{path}:3 field 'text': must be a non-empty string"):
        load_probes(path)
    path.write_text("{not json\n")
    with pytest.raises(DataError, match=rf"{path}:1: malformed JSON"):
        load_probes(path)


def test_pseudo_queries_take_the_question_forms_drawn_with_the_seed() -> None:
    """The same spans, each put into one of the forms (the same forms in every domain)."""
    forms = ["What about {span}?", "Is it true that {span}?"]
    asked = pseudo_queries(
        {"legal": LEGAL}, per_domain=2, max_words=6, min_words=3, forms=forms, seed=0
    )
    plain = ("The accused may apply for bail", "Bail is granted on conditions set")
    assert len(asked.texts) == 2
    assert all(
        text in {form.format(span=span) for form in forms}
        for text, span in zip(asked.texts, plain, strict=True)
    )
    with pytest.raises(ValueError, match=r"must be format strings holding \{span\}"):
        pseudo_queries(
            {"legal": LEGAL}, per_domain=2, max_words=6, min_words=3, forms=["x"], seed=0
        )
