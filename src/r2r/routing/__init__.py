"""Routing queries to domain experts: routers, the routed system and its evaluation."""

from r2r.routing.base import (
    ROUTERS,
    Featurizer,
    NoRouter,
    OracleRouter,
    RandomRouter,
    Router,
    load_router,
    register,
)
from r2r.routing.tfidf import TfidfRouter  # registers "tfidf" for load_router

__all__ = [
    "ROUTERS",
    "Featurizer",
    "NoRouter",
    "OracleRouter",
    "RandomRouter",
    "Router",
    "TfidfRouter",
    "load_router",
    "register",
]
