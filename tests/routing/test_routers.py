"""The rule-based routers (oracle, random, none) and the router save/load registry."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from r2r.data.datamodule import QuerySet
from r2r.routing import NoRouter, OracleRouter, RandomRouter, build_router, load_router

DOMAINS = ("legal", "medical", "finance")
TEXTS = ["bail for murder", "dosage of aspirin", "dividend of ACME", "appeal dismissed"]


def test_oracle_routes_to_the_true_domain() -> None:
    probs = OracleRouter(DOMAINS).predict_proba(
        TEXTS, true_domains=["legal", "medical", "finance", "legal"]
    )
    assert probs.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]]
    with pytest.raises(ValueError, match="needs true_domains"):
        OracleRouter(DOMAINS).predict_proba(TEXTS)
    with pytest.raises(ValueError, match=r"\['tax'\] are not among"):
        OracleRouter(DOMAINS).predict_proba(["q"], true_domains=["tax"])


def test_random_router_is_a_function_of_seed_and_text() -> None:
    router = RandomRouter(DOMAINS, seed=3)
    probs = router.predict_proba(TEXTS)
    assert probs.sum(dim=1).tolist() == [1.0] * 4
    # The same query gets the same expert in any batch and order.
    assert torch.equal(router.predict_proba(TEXTS[::-1]), probs.flip(0))
    assert torch.equal(router.predict_proba(TEXTS[1:2]), probs[1:2])
    # Over many queries every expert is used about a third of the time.
    many = router.predict_proba([f"query {i}" for i in range(3000)]).sum(dim=0)
    assert all(900 < n < 1100 for n in many.tolist())
    other = RandomRouter(DOMAINS, seed=4).predict_proba([f"query {i}" for i in range(50)])
    assert not torch.equal(other, router.predict_proba([f"query {i}" for i in range(50)]))


def test_none_router_leaves_every_query_to_the_bare_backbone() -> None:
    assert NoRouter(DOMAINS).predict_proba(TEXTS).tolist() == [[0.0] * 3] * 4
    assert NoRouter(DOMAINS).n_params == 0


@pytest.mark.parametrize("router", [OracleRouter(DOMAINS), RandomRouter(DOMAINS, seed=9)])
def test_save_and_load_round_trip(tmp_path: Path, router) -> None:
    folder = router.save(tmp_path / "router")
    back = load_router(folder)
    assert type(back) is type(router) and back.domains == DOMAINS
    truth = ["medical", "finance", "legal", "legal"]
    assert torch.equal(
        back.predict_proba(TEXTS, true_domains=truth),
        router.predict_proba(TEXTS, true_domains=truth),
    )


@pytest.mark.parametrize(
    ("name", "kind", "settings"),
    [("oracle", OracleRouter, {}), ("none", NoRouter, {}), ("random", RandomRouter, {"seed": 0})],
)
def test_build_router_from_the_shipped_configs(router_factory, name, kind, settings) -> None:
    # Deps the constructor does not take (no rule-based router reads a backbone) are dropped.
    router = build_router(router_factory(name), DOMAINS, backbone=object(), cache_dir="unused")
    assert type(router) is kind and router.kind == name and router.domains == DOMAINS
    assert router.settings() == settings
    assert router.fit(QuerySet.of(TEXTS, ["legal", "medical", "finance", "legal"])) is router


def test_bad_routers_and_folders(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="distinct domains"):
        RandomRouter(("legal", "legal"), seed=0)
    with pytest.raises(ValueError, match="2 queries but 1 domains"):
        QuerySet.of(["a", "b"], ["legal"])
    with pytest.raises(ValueError, match=r"labels \['tax'\] are not among"):
        OracleRouter(DOMAINS).fit(QuerySet.of(["a", "b"], ["legal", "tax"]))
    with pytest.raises(FileNotFoundError, match=r"no router\.json"):
        load_router(tmp_path)
    (tmp_path / "router.json").write_text('{"kind": "crystal_ball", "domains": ["legal"]}')
    with pytest.raises(ValueError, match="unknown router kind 'crystal_ball'"):
        load_router(tmp_path)
