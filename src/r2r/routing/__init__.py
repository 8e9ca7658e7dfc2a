"""Routing queries to domain experts: routers, the routed system and its evaluation."""

from r2r.routing.base import (
    ROUTERS,
    Featurizer,
    NoRouter,
    OracleRouter,
    RandomRouter,
    Router,
    build_router,
    load_router,
    register,
)

# Imported to register their kinds with load_router.
from r2r.routing.feature_router import EmbeddingRouter, FeatureRouter, LatentSemanticRouter
from r2r.routing.tfidf import TfidfRouter

__all__ = [
    "ROUTERS",
    "EmbeddingRouter",
    "FeatureRouter",
    "Featurizer",
    "LatentSemanticRouter",
    "NoRouter",
    "OracleRouter",
    "RandomRouter",
    "Router",
    "TfidfRouter",
    "build_router",
    "load_router",
    "register",
]
