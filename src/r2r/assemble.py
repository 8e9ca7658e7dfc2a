"""Assemble a sweep's one-domain experts into routed systems: the mission command's Tables 2
and 3.

    python -m r2r.assemble SWEEP_DIR

`python run.py -m backbone=qwen,mistral domain=legal,medical,finance` trains one expert per
job. Jobs whose configs differ only in their domain (and in where they ran) form a group;
each group of two or more domains becomes one more job, `SWEEP_DIR/assembled/<n>_<settings>/`,
that reuses their experts (`experts_from`, nothing is trained): every expert scored on every
domain (forgetting, Table 3), every router fitted and compared on the pooled test lists
(Table 2), and `system/` saved for `python -m r2r.rerank`. `r2r.report` reads it like any
other job. A Hydra multirun runs this at its end (`r2r.sweep.SweepSummary`).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from r2r.files import write_json_atomic
from r2r.report import config_settings
from r2r.sweep import ASSEMBLED, RESULTS
from r2r.types import DOMAINS

log = logging.getLogger(__name__)
# What may differ between the jobs of one group: the domain, how a job logged and whether it
# scored the bare backbone (where a job ran is no setting: `config_settings` leaves it out).
FREE = ("domain", "logger", "zero_shot")


def _settings(config: dict[str, Any]) -> str:
    """A job's settings but the free ones, as one comparable string."""
    settings = config_settings(config)
    return json.dumps({k: v for k, v in settings.items() if k.split(".")[0] not in FREE})


def groups(sweep: Path) -> list[dict[str, Path]]:
    """Groups of one-domain jobs that differ only in their domain: domain -> job folder,
    two domains or more each (the first job of a domain, by folder name, is kept)."""
    found: dict[str, dict[str, Path]] = {}
    for path in sorted(sweep.rglob(RESULTS)):
        if ASSEMBLED in path.relative_to(sweep).parts:
            continue
        config = json.loads(path.read_text(encoding="utf-8"))["config"]
        if len(config["domain"]["names"]) == 1:
            group = found.setdefault(_settings(config), {})
            group.setdefault(config["domain"]["names"][0], path.parent)
    return [g for g in found.values() if len(g) >= 2]


def assemble(sweep: Path) -> list[Path]:
    """Run one routed job per group of `sweep` (skipped when its results exist); their
    folders."""
    from r2r.pipeline import last_stage, run

    done = []
    for index, group in enumerate(groups(sweep)):
        domains = [d for d in DOMAINS if d in group] + sorted(set(group) - set(DOMAINS))
        first = json.loads((group[domains[0]] / RESULTS).read_text(encoding="utf-8"))
        name = f"{index}_" + (",".join(named_by(first["job"]["overrides"])) or "all")
        out = sweep / ASSEMBLED / name
        sources = out / ".experts_from"
        for domain in domains:  # experts_from reads <dir>/experts/<domain>
            link = sources / "experts" / domain
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to((group[domain] / "experts" / domain).resolve())
        cfg = OmegaConf.create(first["config"])
        stage = last_stage(cfg)
        cfg.curriculum = {stage: {**cfg.curriculum[stage], "reuse": str(sources), "init": None}}
        cfg.domain.names = domains
        cfg.experts_from = str(sources)
        cfg.paths.output = str(out)
        cfg.trainer.default_root_dir = str(out)
        cfg.logger = {}
        cfg.zero_shot = True
        cfg.routing.enabled = True
        log.info("assembling %s from %s", out, {d: str(group[d]) for d in domains})
        run(cfg)
        record(out, first["job"], domains)
        done.append(out)
    return done


def named_by(overrides: Sequence[str]) -> list[str]:
    """The overrides that name an assembled job: not the domain, nor where things live."""
    where = ("domain", "paths.", "skip_finished", "sweep", "experts_from", "hydra.")
    return [o.replace("/", "_") for o in overrides if not o.lstrip("+~").startswith(where)]


def record(out: Path, job: dict[str, Any], domains: Sequence[str]) -> None:
    """The assembled job's `job` record: its group's choices, the domain the union."""
    results = json.loads((out / RESULTS).read_text(encoding="utf-8"))
    union = "+".join(domains)
    results["job"] = {
        "choices": {**job["choices"], "domain": union},
        "overrides": [o for o in job["overrides"] if not o.startswith("domain")]
        + [f"domain={union}"],
    }
    write_json_atomic(out / RESULTS, results)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Route a sweep's one-domain experts: one routed job per group of jobs "
        "that differ only in their domain (Tables 2 and 3, system/)."
    )
    parser.add_argument("sweep", type=Path, help="a multirun directory (hydra.sweep.dir)")
    args = parser.parse_args(argv)
    if not args.sweep.is_dir():
        parser.error(f"{args.sweep}: no such directory")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    done = assemble(args.sweep)
    if not done:
        print(f"{args.sweep}: no two jobs differ only in their domain; nothing to assemble")
    for folder in done:
        print(f"assembled: {folder} (routing.md, system/)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
