"""Routing accuracy per domain of the trained routers, without training any expert.

Builds the routers the pipeline builds (`routers`, `build_router`) on the domains of a
config, fits each on the training queries and pseudo-queries (`routing.pseudo_queries`,
`routing.balanced`; no dev queries, to save the backbone's time), and prints the accuracy
per true domain on every test query and on the probe questions (`routing.probes`), plus
each `routing.fallback` row. Arguments after `--` are variants (a string of overrides
each) compared in one process: each text's features are computed once, kept in memory
and in `paths.cache`/features/memo-<key>.pt.

    HF_HUB_OFFLINE=1 python benchmarks/router_accuracy.py backbone=smollm2 data=real -- \
        "routing.pseudo_queries.per_domain=0 routing.balanced=false" ""
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import warnings
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from r2r.config import register_resolvers
from r2r.data.datamodule import QuerySet
from r2r.routing import build_router
from r2r.routing.evaluation import accuracy_by_domain
from r2r.routing.probes import load_probes
from r2r.routing.pseudo import pseudo_queries
from r2r.routing.system import route
from r2r.types import LabelledQueries

ROOT = Path(__file__).resolve().parents[1]
TRAINED = ("lsr", "embedding_mlp", "tfidf")


class Memo:
    """A featurizer that computes each distinct text once (across routers and variants)."""

    def __init__(self, featurizer, folder: Path) -> None:
        self.featurizer, self.key, self.dim = featurizer, featurizer.key, featurizer.dim
        digest = hashlib.sha256(self.key.encode()).hexdigest()[:16]
        self.path = folder / f"memo-{digest}.pt"
        self.known = torch.load(self.path) if self.path.is_file() else {}

    def __call__(self, texts):
        if missing := sorted({t for t in texts if t not in self.known}):
            self.known |= dict(zip(missing, self.featurizer(missing), strict=True))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(self.known, self.path)
        return torch.stack([self.known[t] for t in texts]) if texts else torch.zeros(0, self.dim)


def compose_cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(
            config_name="config",
            overrides=[
                f"paths.root={ROOT}",
                f"paths.output={ROOT / 'benchmarks' / 'results'}",
                *overrides,
            ],
        )


def main(common: list[str], variants: list[str]) -> dict:
    register_resolvers()
    cfg = compose_cfg(common)
    backbone = instantiate(cfg.backbone)
    names = [d for d in cfg.domain.names if d in cfg.data.sources]
    datasets = {d: instantiate(cfg.data.sources[d]) for d in names}

    def split(name: str) -> LabelledQueries:
        found = [(q.text, d) for d in names for q in datasets[d].split_queries(name)]
        return LabelledQueries(tuple(t for t, _ in found), tuple(d for _, d in found))

    train, test = split("train"), split("test")
    probes = load_probes(cfg.routing.probes)
    kept = [(t, d) for t, d in zip(probes.texts, probes.domains, strict=True) if d in names]
    probes = LabelledQueries(tuple(t for t, _ in kept), tuple(d for _, d in kept))
    cols = [*names, "all"]
    print(f"train {len(train.texts)}; test {len(test.texts)}; probes {len(probes.texts)}")
    print(
        "| variant | router | "
        + " | ".join([f"test {c}" for c in cols] + [f"probe {c}" for c in cols])
    )
    print("|---|---|" + "---:|" * (2 * len(cols)), flush=True)
    memos: dict[str, Memo] = {}
    rows = {}
    for variant in variants or [""]:
        cfg = compose_cfg([*common, *variant.split()])
        pseudo = pseudo_queries(datasets, **cfg.routing.pseudo_queries)
        data = QuerySet(
            LabelledQueries(train.texts + pseudo.texts, train.domains + pseudo.domains),
            seed=cfg.seed,
        )
        for name in [r for r in TRAINED if r in cfg.routers]:
            router = build_router(
                instantiate(cfg.routers[name]), names, backbone=backbone, model=backbone.model
            )
            folder = Path(cfg.paths.cache) / "features"
            if featurizer := getattr(router, "featurizer", None):  # tfidf has none
                router.featurizer = memos.setdefault(featurizer.key, Memo(featurizer, folder))
            started = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                router.fit(data)
            fit_s = time.perf_counter() - started
            thresholds = {name: 0.0}
            if name in (cfg.routing.fallback or {}):
                thresholds[f"{name}@{cfg.routing.fallback[name]:g}"] = cfg.routing.fallback[name]
            test_probs = router.predict_proba(test.texts)
            probe_probs = router.predict_proba(probes.texts)
            for row, threshold in thresholds.items():
                picks = [e for e, _ in route(test_probs, router.domains, threshold)]
                probe_picks = [e for e, _ in route(probe_probs, router.domains, threshold)]
                r = rows[f"{variant or 'default'} | {row}"] = {
                    "test": accuracy_by_domain(picks, test.domains),
                    "probe": accuracy_by_domain(probe_picks, probes.domains),
                    "fit_s": round(fit_s, 1),
                    "pseudo_queries": len(pseudo.texts),
                }
                cells = [f"{r['test'][c]:.1f}" for c in cols] + [
                    f"{r['probe'][c]:.1f}" for c in cols
                ]
                print(f"| {variant or 'default'} | {row} | " + " | ".join(cells) + " |", flush=True)
    return rows


if __name__ == "__main__":
    args = sys.argv[1:]
    cut = args.index("--") if "--" in args else len(args)
    results = main(args[:cut], args[cut + 1 :])
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"router_accuracy-{stamp}.json").write_text(json.dumps(results, indent=1))
