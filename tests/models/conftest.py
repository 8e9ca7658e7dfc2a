"""Shared tiny backbone: built once per session; tests must not wrap or mutate its model."""

from __future__ import annotations

import pytest

from r2r.models.backbones import Backbone, load_tiny
from r2r.models.templates import QWEN3_RERANKER

QUERIES = ["what is the statute of limitations", "side effects of a drug?", "q3 revenue"]
DOCUMENTS = [
    "The statute of limitations for contract claims is six years from the breach.",
    "Common side effects include nausea.",
    "Revenue for the third fiscal quarter rose 12 percent to 4.1 billion dollars, driven by "
    "cloud sales and a one-off licensing gain in the legal services segment.",
]


@pytest.fixture
def pairs() -> tuple[list[str], list[str]]:
    """Three (query, document) pairs of different lengths."""
    return list(QUERIES), list(DOCUMENTS)


@pytest.fixture(scope="session")
def tiny_qwen() -> Backbone:
    return load_tiny("qwen", template=QWEN3_RERANKER, seed=0)


@pytest.fixture(scope="session")
def tiny_mistral() -> Backbone:
    return load_tiny("mistral", template=QWEN3_RERANKER, seed=0)
