"""Experiment loggers around one job: given the resolved config at the start, the final
metrics and results table at the end, then closed.

Closing matters in a Hydra multirun: W&B keeps one active run per process, and a job that
leaves its run open makes the next job's logger attach to it, so every job of a sweep
would land in the first job's run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lightning.pytorch.loggers import Logger, WandbLogger

from r2r.routing.evaluation import routing_rows


def start(loggers: Sequence[Logger], config: Mapping[str, Any]) -> None:
    for logger in loggers:
        logger.log_hyperparams(dict(config))


def results_rows(metrics: Mapping[str, float]) -> tuple[list[str], list[list[Any]]]:
    """The flat metric dict as a table: one row per (stage, split, domain), one column per
    metric@k, in the order the keys first appear."""
    columns: list[str] = []
    rows: dict[tuple[str, str, str], dict[str, float]] = {}
    for key, value in metrics.items():
        stage_split, domain, metric = key.split("/")
        stage, _, split = stage_split.partition(":")
        rows.setdefault((stage, split or "test", domain), {})[metric] = value
        if metric not in columns:
            columns.append(metric)
    data = [[*row, *(values.get(c) for c in columns)] for row, values in rows.items()]
    return ["stage", "split", "domain", *columns], data


def forgetting_rows(table: Mapping[str, Mapping[str, float]]) -> tuple[list[str], list[list]]:
    """routing.json's forgetting table (Table 3: the bare backbone and each expert on each
    test domain) as one row per (model, domain), one column per metric@k."""
    columns: list[str] = []
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for model, values in table.items():
        for key, value in values.items():
            domain, metric = key.split("/")
            rows.setdefault((model, domain), {})[metric] = value
            if metric not in columns:
                columns.append(metric)
    data = [[*row, *(values.get(c) for c in columns)] for row, values in rows.items()]
    return ["model", "domain", *columns], data


def routing_tables(summary: Mapping[str, Any]) -> dict[str, tuple[list[str], list[list]]]:
    """routing.json (empty when the job did not route) as W&B tables: `routing` (Table 2,
    one row per router) and `forgetting` (Table 3)."""
    if not summary:
        return {}
    return {
        "routing": routing_rows(summary),
        "forgetting": forgetting_rows(summary["forgetting"]),
    }


def log_results(
    loggers: Sequence[Logger],
    metrics: Mapping[str, float],
    tables: Mapping[str, tuple[list[str], list[list[Any]]]] | None = None,
) -> None:
    """Final metrics to every logger; W&B also gets the results table (Table 1's rows) and
    any further `tables` (name -> (columns, rows)): those of `routing_tables`."""
    for logger in loggers:
        logger.log_metrics(dict(metrics))
        if isinstance(logger, WandbLogger):
            for key, (columns, data) in {
                "results": results_rows(metrics),
                **(tables or {}),
            }.items():
                logger.log_table(key, columns=columns, data=data)
        logger.save()


def finish(loggers: Sequence[Logger], status: str) -> None:
    """Close every logger; `status` is "success" or "failed" (a W&B run then exits with 1)."""
    for logger in loggers:
        logger.finalize(status)
        if isinstance(logger, WandbLogger):
            import wandb

            # Lightning's finalize leaves the W&B run open (see the module docstring).
            if wandb.run is not None:
                wandb.finish(exit_code=0 if status == "success" else 1)
