from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest
import torch

from r2r.data.datamodule import QuerySet
from r2r.routing import build_router, load_router
from r2r.routing.tfidf import ARRAYS_FILE, VOCAB_FILE, TfidfRouter

# Three domains with disjoint vocabularies; `domains` is deliberately not in sorted order.
DOMAINS = ("medical", "legal", "finance")
CORPUS = {
    "medical": [
        "patient fever diagnosis",
        "doctor prescribed antibiotics for infection",
        "symptoms of chronic asthma",
        "blood pressure medication dosage",
        "surgery recovery time for knee",
        "vaccine side effects in children",
        "diabetes insulin treatment",
        "nurse checks patient symptoms",
        "hospital admission for pneumonia",
        "doctor diagnosis of migraine",
    ],
    "legal": [
        "contract breach lawsuit",
        "court ruling on appeal",
        "attorney drafts the contract",
        "judge dismissed the lawsuit",
        "plaintiff files an appeal",
        "tenant rights under lease law",
        "copyright infringement court case",
        "statute of limitations for fraud claims",
        "defendant pleads before the judge",
        "attorney reviews lease terms",
    ],
    "finance": [
        "stock market dividend yield",
        "mortgage interest rate refinance",
        "portfolio bond allocation",
        "inflation hurts savings account returns",
        "quarterly earnings beat stock forecasts",
        "retirement fund investment fees",
        "credit card interest charges",
        "tax deduction on mortgage interest",
        "bond yield and inflation outlook",
        "savings account dividend payout",
    ],
}
TEXTS = [t for d in DOMAINS for t in CORPUS[d]]
LABELS = [d for d in DOMAINS for _ in CORPUS[d]]


@pytest.fixture(scope="module")
def tfidf(router_factory) -> Callable[..., TfidfRouter]:
    """An unfitted router over `domains` with the shipped settings, `overrides` replacing them."""
    return lambda domains=DOMAINS, **overrides: build_router(
        router_factory("tfidf", **overrides), domains
    )


@pytest.fixture(scope="module")
def router(tfidf) -> TfidfRouter:
    return tfidf().fit(QuerySet.of(TEXTS, LABELS))


def test_learns_train_set_and_routes_unseen_texts(router: TfidfRouter) -> None:
    train = router.predict_proba(TEXTS)
    assert train.shape == (30, 3) and train.dtype == torch.float32
    assert [DOMAINS[i] for i in train.argmax(1)] == LABELS
    unseen = ["the judge and the attorney", "patient needs a doctor", "stock dividend"]
    assert [DOMAINS[i] for i in router.predict_proba(unseen).argmax(1)] == [
        "legal",
        "medical",
        "finance",
    ]


def test_columns_follow_domains_not_sorted_order(router: TfidfRouter, tfidf) -> None:
    assert router.classes == ("finance", "legal", "medical")  # sklearn sorts its classes
    probs = router.predict_proba(CORPUS["medical"][:1] + CORPUS["legal"][:1])
    assert probs.argmax(1).tolist() == [0, 1]  # medical is column 0, legal column 1
    # The same model over sorted domains gives the same numbers, columns permuted.
    sorted_router = tfidf(sorted(DOMAINS)).fit(QuerySet.of(TEXTS, LABELS))
    torch.testing.assert_close(
        sorted_router.predict_proba(TEXTS)[:, [2, 1, 0]], router.predict_proba(TEXTS)
    )


def test_rows_sum_to_one_and_match_sklearn(router: TfidfRouter) -> None:
    texts = [*TEXTS, "", "words never seen anywhere"]
    probs = router.predict_proba(texts)
    torch.testing.assert_close(probs.sum(1), torch.ones(len(texts)))
    # Our own softmax reproduces sklearn's predict_proba (classes order -> domains order).
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(
        C=router.C, max_iter=router.max_iter, class_weight="balanced", random_state=router.seed
    )
    clf.fit(router.vectorizer.transform(TEXTS), LABELS)
    expected = clf.predict_proba(router.vectorizer.transform(texts))[:, [2, 1, 0]]
    np.testing.assert_allclose(probs.numpy(), expected, atol=1e-6)
    assert router.predict_proba([]).shape == (0, 3)


def test_n_params_is_vocab_times_domains_plus_bias(router: TfidfRouter, tfidf) -> None:
    vocab_size = len(router.vectorizer.vocabulary_)
    assert vocab_size == 193  # distinct uni+bigrams of the corpus (1-letter tokens dropped)
    assert router.n_params == vocab_size * 3 + 3
    assert tfidf().n_params == 0


def test_save_load_round_trip_is_identical(router: TfidfRouter, tmp_path) -> None:
    router.save(tmp_path / "r")
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == sorted(
        ["router.json", VOCAB_FILE, ARRAYS_FILE]
    )
    meta = json.loads((tmp_path / "r" / "router.json").read_text())
    assert meta == {
        "kind": "tfidf",
        "domains": list(DOMAINS),
        "settings": {
            "C": 10.0,
            "ngram_max": 2,
            "min_df": 1,
            "max_features": None,
            "max_iter": 2000,
            "balanced": True,
            "seed": 0,
        },
    }
    loaded = load_router(tmp_path / "r")
    assert isinstance(loaded, TfidfRouter) and loaded.domains == DOMAINS
    texts = [*TEXTS, "an unseen court doctor mortgage"]
    torch.testing.assert_close(
        loaded.predict_proba(texts), router.predict_proba(texts), rtol=0, atol=1e-6
    )
    assert loaded.n_params == router.n_params


def test_load_reports_missing_and_inconsistent_files(router: TfidfRouter, tmp_path) -> None:
    router.save(tmp_path / "r")
    (tmp_path / "r" / ARRAYS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=ARRAYS_FILE):
        load_router(tmp_path / "r")
    router.save(tmp_path / "r")
    vocab = json.loads((tmp_path / "r" / VOCAB_FILE).read_text())
    vocab["terms"] = vocab["terms"][:-1]
    (tmp_path / "r" / VOCAB_FILE).write_text(json.dumps(vocab))
    with pytest.raises(ValueError, match="do not fit 192 terms"):
        load_router(tmp_path / "r")


def test_binary_problem_routes_and_round_trips(tmp_path, tfidf) -> None:
    texts = CORPUS["legal"] + CORPUS["finance"]
    labels = ["legal"] * 10 + ["finance"] * 10
    router = tfidf(("legal", "finance")).fit(QuerySet.of(texts, labels))
    assert router.coef.shape[0] == 1  # sklearn's single binary logit
    probs = router.predict_proba(texts)
    assert probs.argmax(1).tolist() == [0] * 10 + [1] * 10
    torch.testing.assert_close(probs.sum(1), torch.ones(20))
    loaded = load_router(router.save(tmp_path / "bin"))
    torch.testing.assert_close(loaded.predict_proba(texts), probs, rtol=0, atol=1e-6)


def test_domain_absent_from_training_warns_and_gets_zero(tmp_path, tfidf) -> None:
    texts = CORPUS["legal"] + CORPUS["finance"]
    labels = ["legal"] * 10 + ["finance"] * 10
    with pytest.warns(UserWarning, match=r"no training query for domains \['medical'\]"):
        router = tfidf().fit(QuerySet.of(texts, labels))
    probs = router.predict_proba([*texts, "patient fever diagnosis"])
    assert probs[:, 0].tolist() == [0.0] * 21
    torch.testing.assert_close(probs.sum(1), torch.ones(21))
    loaded = load_router(router.save(tmp_path / "r"))
    torch.testing.assert_close(loaded.predict_proba(texts), probs[:20], rtol=0, atol=1e-6)


def test_bad_inputs_raise_clear_errors(router: TfidfRouter, tfidf) -> None:
    with pytest.raises(ValueError, match=r"at least 2 domains, got \['legal'\]"):
        tfidf().fit(QuerySet.of(CORPUS["legal"], ["legal"] * 10))
    with pytest.raises(ValueError, match=r"labels \['sports'\] are not among"):
        tfidf().fit(QuerySet.of(TEXTS[:2], ["legal", "sports"]))
    with pytest.raises(ValueError, match="3 queries but 2 domains"):
        QuerySet.of(TEXTS[:3], LABELS[:2])
    with pytest.raises(RuntimeError, match="not fitted"):
        tfidf().predict_proba(["x"])
    with pytest.raises(TypeError, match="not one string"):
        router.predict_proba("patient fever")
    with pytest.raises(ValueError, match="C must be positive"):
        tfidf(C=0)
