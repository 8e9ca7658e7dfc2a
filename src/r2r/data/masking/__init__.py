"""Entity Abstraction (EAG) masking: recognisers and seeded masking strategies.

Strategies (one config group): none | entity | predictive | random. Each is a pure function
of (group, seed) applied to training groups only; evaluation data is never masked.
"""

from __future__ import annotations

from r2r.data.masking.recognizers import (
    EntitySpan,
    Recognizer,
    RuleRecognizer,
    gliner_recognizer,
    spacy_recognizer,
)
from r2r.data.masking.strategies import (
    MASK,
    EntityMasking,
    Masker,
    MaskStats,
    NoMasking,
    PredictiveMasking,
    RandomMasking,
    group_seed,
    mask_groups,
)

__all__ = [
    "MASK",
    "EntityMasking",
    "EntitySpan",
    "MaskStats",
    "Masker",
    "NoMasking",
    "PredictiveMasking",
    "RandomMasking",
    "Recognizer",
    "RuleRecognizer",
    "gliner_recognizer",
    "group_seed",
    "mask_groups",
    "spacy_recognizer",
]
