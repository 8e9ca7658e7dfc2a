"""The training curriculum as data: named stages, each training (or reusing) adapters.

`curriculum=direct` is one stage, `fine_tuned`: an expert per domain from the bare backbone
(PT + S2). `curriculum=eag` adds `stage1` before it: one adapter on the union of the
domains' masked training data, from which each expert starts (PT + S1 + S2). Any other
curriculum is another YAML file of stages, not code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

JOINT = "all"  # the unit name of a stage that trains one adapter on every domain


@dataclass(frozen=True)
class Stage:
    """One stage of the curriculum.

    adapters: `joint` (one adapter on the union of the domains) or `each` (one per domain).
    masked: train on data abstracted by the `masking` strategy (EAG stage 1).
    init: the earlier stage whose adapter each new one starts from (its own domain's, or the
        joint one), None for a fresh LoRA.
    max_steps, monitor: optimizer steps; the dev metric whose best value's weights are kept.
    trainer: `trainer` keys replaced for this stage only (None: none).
    test: score the stage's adapters on the evaluation lists (a row of the results).
    folder: where its adapters are saved in the run directory (`<folder>/` for a joint
        adapter, `<folder>/<domain>/` for each).
    reuse: a finished run's directory to copy this stage's adapters from instead of
        training them (`experts_from`).
    """

    adapters: Literal["joint", "each"]
    masked: bool
    init: str | None
    max_steps: int
    monitor: str
    trainer: Mapping[str, Any] | None
    test: bool
    folder: str
    reuse: str | None

    def __post_init__(self) -> None:
        if self.adapters not in ("joint", "each"):
            raise ValueError(f"adapters={self.adapters!r}; expected 'joint' or 'each'")

    def units(self, domains: list[str]) -> list[str]:
        """What it trains an adapter for: every domain, or the joint unit."""
        return list(domains) if self.adapters == "each" else [JOINT]

    def path(self, root: Path, unit: str) -> Path:
        return root / self.folder if unit == JOINT else root / self.folder / unit


def in_order(stages: Mapping[str, Stage]) -> list[tuple[str, Stage]]:
    """The stages in training order: each after the stage it starts from, otherwise as
    listed; the last one must train one adapter per domain (the experts)."""
    done: list[tuple[str, Stage]] = []
    waiting = dict(stages)
    while waiting:
        ready = [n for n, s in waiting.items() if s.init is None or s.init in dict(done)]
        if not ready:
            raise ValueError(f"curriculum stages {sorted(waiting)} start from unknown stages")
        done.append((ready[0], waiting.pop(ready[0])))
    if not done or done[-1][1].adapters != "each":
        raise ValueError("the curriculum's last stage must train one adapter per domain")
    return done
