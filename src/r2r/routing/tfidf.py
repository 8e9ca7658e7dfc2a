"""TF-IDF + logistic regression: the lexical router baseline.

scikit-learn fits it; the fitted state is then kept as plain arrays (vocabulary, idf, coef,
intercept, classes) so that it saves as JSON + npz, never pickle, and predicts through one code
path before and after loading.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from r2r.files import atomic_path, write_json_atomic
from r2r.routing.base import QueryData, Router, TrainerFactory, register

VOCAB_FILE = "tfidf_vocab.json"
ARRAYS_FILE = "tfidf_weights.npz"


@register
class TfidfRouter(Router):
    """Word uni+bigram TF-IDF (sublinear tf, lowercased, accents stripped) -> multinomial
    logistic regression with L2 penalty `C`; `balanced`: classes weighted inversely to their
    share of the training queries (scikit-learn's class_weight="balanced").

    A domain with no training query keeps a column of zeros: the router never picks it
    (`fit` warns). Binary problems use sklearn's single logit: p(second class) = sigmoid(z).
    """

    kind = "tfidf"

    def __init__(
        self,
        domains: Sequence[str],
        *,
        C: float,
        ngram_max: int,
        min_df: int,
        max_features: int | None,
        max_iter: int,
        balanced: bool,
        seed: int,
    ) -> None:
        super().__init__(domains)
        if C <= 0:
            raise ValueError(f"C must be positive, got {C}")
        if ngram_max < 1:
            raise ValueError(f"ngram_max must be >= 1, got {ngram_max}")
        self.C = C
        self.ngram_max = ngram_max
        self.min_df = min_df
        self.max_features = max_features
        self.max_iter = max_iter
        self.balanced = balanced
        self.seed = seed
        self.vectorizer: TfidfVectorizer | None = None
        self.coef: np.ndarray | None = None  # (K, F); K = 1 for a binary problem
        self.intercept: np.ndarray | None = None  # (K,)
        self.classes: tuple[str, ...] = ()  # the domains seen in training, sklearn's order

    def settings(self) -> dict[str, Any]:
        return {
            "C": self.C,
            "ngram_max": self.ngram_max,
            "min_df": self.min_df,
            "max_features": self.max_features,
            "max_iter": self.max_iter,
            "balanced": self.balanced,
            "seed": self.seed,
        }

    def _new_vectorizer(self) -> TfidfVectorizer:
        return TfidfVectorizer(
            lowercase=True,
            strip_accents="unicode",
            ngram_range=(1, self.ngram_max),
            min_df=self.min_df,
            max_features=self.max_features,
            sublinear_tf=True,
        )

    def fit(self, data: QueryData, *, trainer: TrainerFactory | None = None) -> TfidfRouter:
        """Fit on `data`'s training queries (scikit-learn; `trainer` is not used)."""
        train = data.queries("train")
        texts, labels = train.texts, train.domains
        self.check_labels(texts, labels)
        seen = set(labels)
        if len(seen) < 2:
            raise ValueError(
                f"the tfidf router needs queries from at least 2 domains, got {sorted(seen)} "
                f"({len(labels)} queries)"
            )
        if absent := [d for d in self.domains if d not in seen]:
            warnings.warn(
                f"no training query for domains {absent}: the tfidf router will never route to "
                "them (probability 0)",
                stacklevel=2,
            )
        vectorizer = self._new_vectorizer()
        features = vectorizer.fit_transform(list(texts))  # (N, F) sparse
        classifier = LogisticRegression(
            C=self.C,
            max_iter=self.max_iter,
            class_weight="balanced" if self.balanced else None,
            random_state=self.seed,
        )
        classifier.fit(features, list(labels))
        self.vectorizer = vectorizer
        self.coef = classifier.coef_.astype(np.float64)
        self.intercept = classifier.intercept_.astype(np.float64)
        self.classes = tuple(str(c) for c in classifier.classes_)
        return self

    def predict_proba(self, texts, *, true_domains=None):
        if self.vectorizer is None or self.coef is None or self.intercept is None:
            raise RuntimeError("the tfidf router is not fitted: call fit() or load_router()")
        if isinstance(texts, str):
            raise TypeError("predict_proba takes a sequence of texts, not one string")
        out = torch.zeros(len(texts), len(self.domains))
        if not len(texts):
            return out
        logits = np.asarray(self.vectorizer.transform(list(texts)) @ self.coef.T)  # (N, K)
        logits = torch.from_numpy(logits + self.intercept)
        if len(self.classes) == 2:
            # sklearn's binary model has one logit z for classes[1]: [-z, z]/2 softmaxes to
            # [1 - sigmoid(z), sigmoid(z)].
            logits = torch.cat([-logits, logits], dim=1) / 2
        probs = torch.softmax(logits, dim=1).float()  # (N, C) in `classes` order
        columns = [self.domains.index(c) for c in self.classes]
        out[:, columns] = probs
        return out

    @property
    def n_params(self) -> int:
        if self.coef is None or self.intercept is None:
            return 0
        return self.coef.size + self.intercept.size

    def save_weights(self, folder: Path) -> None:
        if self.vectorizer is None or self.coef is None or self.intercept is None:
            raise RuntimeError("cannot save an unfitted tfidf router")
        vocabulary = self.vectorizer.vocabulary_
        terms = sorted(vocabulary, key=vocabulary.__getitem__)  # term of column j at j
        write_json_atomic(folder / VOCAB_FILE, {"classes": list(self.classes), "terms": terms})
        with atomic_path(folder / ARRAYS_FILE) as tmp, tmp.open("wb") as fh:
            np.savez(fh, idf=self.vectorizer.idf_, coef=self.coef, intercept=self.intercept)

    @classmethod
    def load(
        cls, folder: Path, domains: Sequence[str], settings: dict[str, Any], **deps: Any
    ) -> TfidfRouter:
        router = cls(domains, **settings)
        vocab_path, arrays_path = Path(folder) / VOCAB_FILE, Path(folder) / ARRAYS_FILE
        for path in (vocab_path, arrays_path):
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: not a fitted tfidf router's folder")
        meta = json.loads(vocab_path.read_text(encoding="utf-8"))
        with np.load(arrays_path, allow_pickle=False) as arrays:
            idf, coef, intercept = arrays["idf"], arrays["coef"], arrays["intercept"]
        terms, classes = meta["terms"], tuple(meta["classes"])
        if unknown := sorted(set(classes) - set(router.domains)):
            raise ValueError(f"{vocab_path}: classes {unknown} are not among domains {domains}")
        n_out = 1 if len(classes) == 2 else len(classes)
        if idf.shape != (len(terms),) or coef.shape != (n_out, len(terms)):
            raise ValueError(
                f"{arrays_path}: idf {idf.shape} / coef {coef.shape} do not fit "
                f"{len(terms)} terms and {len(classes)} classes from {vocab_path}"
            )
        if intercept.shape != (n_out,):
            raise ValueError(f"{arrays_path}: intercept {intercept.shape}, expected ({n_out},)")
        vectorizer = router._new_vectorizer()
        vectorizer.vocabulary_ = {term: j for j, term in enumerate(terms)}
        vectorizer.idf_ = idf
        router.vectorizer, router.coef, router.intercept = vectorizer, coef, intercept
        router.classes = classes
        return router
