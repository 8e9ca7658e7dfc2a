"""What makes a Hydra multirun restartable and honest about failures.

- A job whose directory already holds `results.json` from the same config is skipped, so
  re-running a sweep (same `hydra.sweep.dir`) runs only the jobs that are missing.
- Every job records what was swept (`job_record`: its Hydra choices and overrides) in its
  results.json, so that a report names its runs by what varies between them.
- A job that raises leaves `failed.json` (the error and its traceback) in its directory and
  the sweep goes on; `SweepSummary`, a Hydra callback, lists the finished and the failed
  jobs at the end and then fails the multirun (exit status 1) if any job failed.
- SIGTERM or SIGINT (a cluster's preemption, Ctrl+C) interrupts the job (`Interrupted`: its
  failed.json says so), the sweep's other jobs are not started, the summary is written and
  the process exits with 128 + the signal's number (143, 130), never 0.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from r2r.files import write_json_atomic

log = logging.getLogger(__name__)
RESULTS = "results.json"
# Where r2r.assemble puts the routed jobs it adds to a sweep (not jobs the sweep launched).
ASSEMBLED = "assembled"
FAILED = "failed.json"
# Keys that may differ between two runs of one job: where it runs, how it is resumed and
# how often it logs progress or saves checkpoints.
IGNORED = ("paths", "skip_finished", "progress", "checkpoint")


class Interrupted(BaseException):
    """The run was stopped by a signal (not an error of the job: not an `Exception`, so
    nothing on the way catches it as one); `code` is the exit status it ends with."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.code = 128 + signum
        self.where = ""
        super().__init__(signal.Signals(signum).name)

    def __str__(self) -> str:
        return f"interrupted by {signal.Signals(self.signum).name}" + (
            f" at {self.where}" if self.where else ""
        )


# The signal that interrupted this process's sweep; later jobs of the sweep do not start.
interrupted: Interrupted | None = None


def catch_signals() -> None:
    """SIGTERM and SIGINT raise `Interrupted` in the main thread. Lightning's own SIGTERM
    handler (during fit) calls this one after it, and re-raises what it raises."""

    def stop(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)


def differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested config dicts."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return [
            d
            for key in sorted(set(a) | set(b), key=str)
            for d in differences(a.get(key), b.get(key), f"{prefix}{key}.")
        ]
    return [] if a == b else [prefix.rstrip(".")]


def job_record() -> dict[str, Any]:
    """What this job chose: `{"choices": {group: option}, "overrides": ["key=value", ...]}`,
    Hydra's config-group choices (without `hydra/...` groups and unset ones) and the job's
    command-line (and sweep) overrides; both empty outside a Hydra run (a composed config)."""
    if not HydraConfig.initialized():
        return {"choices": {}, "overrides": []}
    hydra = HydraConfig.get()
    choices = {
        group: option
        for group, option in hydra.runtime.choices.items()
        if option is not None and not group.startswith("hydra/")
    }
    return {"choices": choices, "overrides": list(hydra.overrides.task)}


def finished_metrics(out: Path, config: Mapping[str, Any]) -> dict[str, float] | None:
    """The metrics of a finished run of this same config in `out`, None if there is none.

    Raises if `out` holds the results of another config: skipping would report them as
    this job's."""
    path = out / RESULTS
    if not path.exists():
        return None
    results = read_results(path)
    if results is None:
        log.warning("%s is not a complete results file: the job runs again", path)
        return None
    ours = {k: v for k, v in config.items() if k not in IGNORED}
    theirs = {k: v for k, v in results.get("config", {}).items() if k not in IGNORED}
    changed = differences(ours, theirs)
    if changed:
        raise ValueError(
            f"{path} comes from another config (differs in {', '.join(changed[:5])}); "
            "use another output directory, or skip_finished=false to overwrite it"
        )
    return results["metrics"]


def read_results(path: Path) -> dict[str, Any] | None:
    """A job's results.json, or None when it is not a complete one (cut short by a crash or
    a full disk: not JSON, or without its metrics)."""
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(results, dict) or not isinstance(results.get("metrics"), dict):
        return None
    return results


def record_failure(out: Path, error: BaseException) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        out / FAILED,
        {
            "error": f"{type(error).__name__}: {error}",
            "traceback": "".join(traceback.format_exception(error)),
        },
    )
    log.error("job failed, details in %s", out / FAILED, exc_info=error)


def clear_failure(out: Path) -> None:
    (out / FAILED).unlink(missing_ok=True)


# The child process of `run_single` is a single run; this keeps it in the sweep's W&B group.
GROUP_ENV = "R2R_SWEEP_GROUP"


def run_single(
    script: Path, overrides: Sequence[str], output: Path, group: str | None
) -> dict[str, float]:
    """Run `script` with this job's `overrides` as a single run into `output` (the job's
    directory) in a child process; its metrics, or RuntimeError if it failed."""
    command = [
        sys.executable,
        str(script),
        *overrides,
        f'hydra.run.dir="{output}"',  # quoted: job directory names hold `=` and `,`
        "hydra.output_subdir=null",  # the sweep already wrote this job's .hydra/
    ]
    env = dict(os.environ, **({GROUP_ENV: group} if group else {}))
    log.info("running this job in its own process (DDP): %s", " ".join(command[1:]))
    done = subprocess.run(command, env=env, check=False)
    if done.returncode != 0:
        error = RuntimeError(f"the job's process exited with status {done.returncode}")
        if not (output / FAILED).exists():  # the child died before it could say why
            record_failure(output, error)
        raise error
    return json.loads((output / RESULTS).read_text(encoding="utf-8"))["metrics"]


def sweep_jobs(sweep: Path) -> list[Path]:
    """Every job directory of a sweep, however deep (an override holding a path nests it):
    the folders Hydra wrote a `.hydra/` into, and any other holding a result or a failure."""
    if not sweep.is_dir():
        return []
    marks = [*sweep.rglob(".hydra"), *sweep.rglob(RESULTS), *sweep.rglob(FAILED)]
    jobs = {m.parent for m in marks if m.parent != sweep}
    return sorted(j for j in jobs if ASSEMBLED not in j.relative_to(sweep).parts)


class SweepSummary(Callback):
    """At the end of a multirun: assembles the one-domain experts of jobs that differ only in
    their domain into routed jobs (`assemble`, r2r.assemble), then logs which jobs finished,
    which failed and which did not finish (interrupted: neither results nor a failure
    record), and exits with status 1 if any job did not finish or an assembly failed (Hydra
    turns a callback's exceptions into warnings)."""

    def __init__(self, *, assemble: bool) -> None:
        self.assemble = assemble

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(config.hydra.sweep.dir)
        problem = self._assemble(sweep) if self.assemble and not interrupted else None
        jobs = sweep_jobs(sweep)
        failed = [p for p in jobs if (p / FAILED).exists()]
        done = [p for p in jobs if read_results(p / RESULTS) is not None and p not in failed]
        lost = [p for p in jobs if p not in done and p not in failed]
        log.info(
            "sweep %s: %d jobs finished, %d failed%s",
            sweep,
            len(done),
            len(failed),
            f", {len(lost)} did not finish" if lost else "",
        )
        for path in failed:
            error = json.loads((path / FAILED).read_text(encoding="utf-8"))["error"]
            log.error("failed: %s: %s", path.relative_to(sweep), error)
        for path in lost:
            log.error("did not finish: %s", path.relative_to(sweep))
        if interrupted:
            log.error("the sweep was %s; re-run the command to run what is missing", interrupted)
            raise SystemExit(interrupted.code)
        if failed or lost or problem:
            names = ", ".join(str(p.relative_to(sweep)) for p in failed + lost)
            raise SystemExit(
                f"{len(failed) + len(lost)} of {len(jobs)} jobs failed: {names}"
                if failed or lost
                else f"assembling the experts failed: {problem}"
            )

    @staticmethod
    def _assemble(sweep: Path) -> str | None:
        """Routed jobs from the sweep's one-domain experts; the error, if one failed (its
        folder also keeps a failed.json)."""
        from r2r.assemble import assemble

        try:
            for folder in assemble(sweep):
                log.info("assembled: %s (routing.md, system/)", folder.relative_to(sweep))
        except Exception as error:
            log.error("assembling the experts failed", exc_info=error)
            return f"{type(error).__name__}: {error}"
        return None
