"""Multiruns: each job its own W&B run (offline), finished jobs skipped on a re-run, a failed
job recorded while the rest of the sweep goes on."""

from __future__ import annotations

import csv
import json
import shutil
import struct
from pathlib import Path

import nbformat
import papermill
import pytest
from omegaconf import OmegaConf
from wandb.proto import wandb_internal_pb2

from r2r.pipeline import run as run_job
from r2r.report import main as report
from r2r.sweep import (
    FAILED,
    SweepSummary,
    clear_failure,
    differences,
    finished_metrics,
    record_failure,
)
from r2r.tracking import results_rows

ROOT = Path(__file__).resolve().parents[1]


def test_differences_lists_dotted_keys() -> None:
    a = {"seed": 0, "lora": {"r": 32, "alpha": 64}, "domains": ["legal"]}
    b = {"seed": 0, "lora": {"r": 16, "alpha": 64}, "domains": ["legal", "medical"], "x": 1}
    assert differences(a, b) == ["domains", "lora.r", "x"]
    assert differences(a, a) == []


def test_finished_metrics_only_for_the_same_config(tmp_path: Path) -> None:
    config = {"seed": 0, "paths": {"output": "a"}, "skip_finished": True, "lora": {"r": 32}}
    assert finished_metrics(tmp_path, config) is None
    saved = {"metrics": {"fine_tuned/all/ndcg@10": 30.0}, "config": config}
    (tmp_path / "results.json").write_text(json.dumps(saved))
    # Where the run lives and whether it skips may differ; the experiment may not.
    moved = {**config, "paths": {"output": "b"}, "skip_finished": False}
    assert finished_metrics(tmp_path, moved) == {"fine_tuned/all/ndcg@10": 30.0}
    with pytest.raises(ValueError, match=r"results\.json comes from another config .*lora\.r"):
        finished_metrics(tmp_path, {**config, "lora": {"r": 16}})


def test_a_truncated_results_file_makes_its_job_run_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = {"seed": 0}
    whole = json.dumps({"metrics": {"fine_tuned/all/ndcg@10": 30.0}, "config": config})
    for cut in (whole[: len(whole) // 2], "", '{"config": {"seed": 0}}'):
        (tmp_path / "results.json").write_text(cut)
        assert finished_metrics(tmp_path, config) is None
    assert (
        caplog.messages
        == [f"{tmp_path / 'results.json'} is not a complete results file: the job runs again"] * 3
    )


def test_record_failure_keeps_the_error_and_traceback(tmp_path: Path) -> None:
    try:
        raise KeyError("no such domain")
    except KeyError as error:
        record_failure(tmp_path / "job", error)
    failure = json.loads((tmp_path / "job" / FAILED).read_text())
    assert failure["error"] == "KeyError: 'no such domain'"
    assert failure["traceback"].startswith("Traceback (most recent call last):")
    assert "test_record_failure_keeps_the_error_and_traceback" in failure["traceback"]
    clear_failure(tmp_path / "job")
    assert not (tmp_path / "job" / FAILED).exists()


def test_results_rows_one_row_per_stage_split_domain() -> None:
    metrics = {
        "bm25/all/ndcg@10": 50.0,
        "bm25/all/mrr@10": 40.0,
        "fine_tuned:test_seen/legal/ndcg@10": 30.0,
    }
    columns, rows = results_rows(metrics)
    assert columns == ["stage", "split", "domain", "ndcg@10", "mrr@10"]
    assert rows == [
        ["bm25", "test", "all", 50.0, 40.0],
        ["fine_tuned", "test_seen", "legal", 30.0, None],
    ]


def wandb_records(path: Path) -> list[wandb_internal_pb2.Record]:
    """The records of an offline W&B run file (`run-<id>.wandb`): a 7-byte `:W&B` header,
    then LevelDB-log framing (32 KiB blocks; each chunk has a 7-byte header of checksum,
    length and type FULL=1, FIRST=2, MIDDLE=3, LAST=4)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, chunks, pos, block = [], b"", 7, 32768
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or (length == 0 and kind == 0):  # block padding
            pos += left
            continue
        chunks += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            records.append(record)
            chunks = b""
    return records


def shared_jobs(sweep: Path) -> list[Path]:
    """The shared sweep's job folders: (direct, eag) x (deploy lsr, deploy nonexistent)."""
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    common = "debug=fast,domain.names=[legal,medical],logger=wandb"
    assert [p.name for p in jobs] == [
        f"{i}_curriculum={c},{common},routing.deploy={d},~routers.embedding_mlp=null"
        for i, (c, d) in enumerate(
            [("direct", "lsr"), ("direct", "nonexistent"), ("eag", "lsr"), ("eag", "nonexistent")]
        )
    ]
    return jobs


def test_each_multirun_job_is_its_own_wandb_run_and_a_rerun_skips_them(shared_sweep) -> None:
    first = shared_sweep.done
    assert first.returncode == 1, first.stderr[-3000:]  # two jobs fail on purpose
    sweep = shared_sweep.sweep
    jobs = shared_jobs(sweep)[0::2]  # the jobs that deploy lsr
    ids = []
    for job, curriculum in zip(jobs, ["direct", "eag"], strict=True):
        files = list((job / "wandb").glob("offline-run-*/run-*.wandb"))
        assert len(files) == 1, files
        records = wandb_records(files[0])
        run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
        ids.append(run.run_id)
        assert (run.display_name, run.run_group) == (job.name.split("_", 1)[1], str(sweep))
        keys = {
            # W&B stores a slash-separated key as its parts.
            item.key or "/".join(item.nested_key)
            for r in records
            if r.WhichOneof("record_type") == "history"
            for item in r.history.item
        }
        assert {
            "fine_tuned/legal/ndcg@10",
            "fine_tuned/medical/ndcg@10",
            "fine_tuned/all/ndcg@10",
            "zero_shot/all/mrr@10",
            "bm25/all/ndcg@10",
            "legal/train/loss",  # each adapter's curves under its own name
            "legal/val/legal/ndcg@10",
            "medical/train/loss",
            "router/lsr/train/loss",  # the LSR's head, trained by the run's trainer
            "router/lsr/val/accuracy",  # ...validated on the dev queries
            "results/_type",  # the results table
            "routing/_type",  # Table 2
            "forgetting/_type",  # Table 3
        } <= keys
        assert ("stage1/train/loss" in keys) == (curriculum == "eag")
        assert "fine_tuned/finance/ndcg@10" not in keys
        config = {
            (item.key or "/".join(item.nested_key)): json.loads(item.value_json)
            for r in records
            if r.WhichOneof("record_type") == "config"
            for item in r.config.update
        }
        assert config["domain"] == {"names": ["legal", "medical"]} and config["seed"] == 0
        exits = [r.exit.exit_code for r in records if r.WhichOneof("record_type") == "exit"]
        assert exits == [0]  # finished by the job itself
    assert len(set(ids)) == 2

    # Run again, a finished job is skipped before it starts a W&B run (the same `run` a
    # re-launched sweep calls, on the job's own resolved config).
    for job in jobs:
        saved = json.loads((job / "results.json").read_text())
        assert run_job(OmegaConf.create(saved["config"])) == saved["metrics"]
    # A job refused before any work starts no W&B run either.
    assert [len(list((j / "wandb").glob("offline-run-*"))) for j in shared_jobs(sweep)] == [
        1,
        0,
        1,
        0,
    ]


def test_the_report_has_a_column_for_the_swept_setting(shared_sweep, tmp_path: Path) -> None:
    # The report reads what was swept (results.json's `job` record): a column per setting.
    assert report([str(shared_sweep.sweep), "--out", str(tmp_path), "--no-plots"]) == 0
    assert (tmp_path / "table1.md").read_text().startswith("| curriculum | split |")


def test_a_failed_job_is_recorded_and_the_sweep_goes_on(shared_sweep) -> None:
    done = shared_sweep.done
    log = done.stdout + done.stderr
    assert done.returncode == 1
    direct, direct_failed, eag, eag_failed = shared_jobs(shared_sweep.sweep)
    for failed in (direct_failed, eag_failed):
        error = json.loads((failed / FAILED).read_text())["error"]
        assert error.startswith("ValueError: routing.deploy='nonexistent' is not in routers")
        assert not (failed / "results.json").exists()
    for finished in (direct, eag):
        assert (finished / "results.json").exists() and not (finished / FAILED).exists()
    assert "2 jobs finished, 2 failed" in log
    assert log.rstrip().endswith(f"2 of 4 jobs failed: {direct_failed.name}, {eag_failed.name}")


def test_the_sweep_summary_finds_nested_jobs_and_counts_unfinished_ones(tmp_path: Path) -> None:
    """A path-valued override nests a job's directory; a job that left neither results nor a
    failure (killed) counts as not finished; either makes the sweep fail."""
    done = tmp_path / "0_backbone.name_or_path=" / "models" / "qwen"  # `=/models/qwen`
    failed = tmp_path / "1_domain=legal"
    killed = tmp_path / "2_domain=medical"
    for job in (done, failed, killed):
        (job / ".hydra").mkdir(parents=True)
    (done / "results.json").write_text(json.dumps({"metrics": {}}))
    record_failure(failed, ValueError("bad"))
    (tmp_path / "multirun.yaml").write_text("")
    (done / "wandb").mkdir()  # folders inside a job are not jobs
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    with pytest.raises(SystemExit, match=r"^2 of 3 jobs failed: 1_domain=legal, 2_domain=medical$"):
        SweepSummary(assemble=False).on_multirun_end(config)
    shutil.rmtree(killed)  # only the finished job and the failed one
    with pytest.raises(SystemExit, match=r"^1 of 2 jobs failed: 1_domain=legal$"):
        SweepSummary(assemble=False).on_multirun_end(config)
    clear_failure(failed)
    (failed / "results.json").write_text(json.dumps({"metrics": {}}))
    SweepSummary(assemble=False).on_multirun_end(config)  # everything finished: no exit


# notebooks/analysis.ipynb runs (papermill) on the report of the shared sweep (in this file,
# which alone uses that fixture: pytest-xdist runs a file's tests in one worker).
def test_analysis_notebook_on_a_small_sweep(shared_sweep, tmp_path: Path) -> None:
    # Two of its four jobs fail on purpose (test_sweep.py); the report lists them.
    assert shared_sweep.done.returncode == 1, shared_sweep.done.stderr[-3000:]
    assert report([str(shared_sweep.sweep), "--out", str(tmp_path / "report"), "--no-plots"]) == 0

    executed = tmp_path / "analysis.ipynb"
    papermill.execute_notebook(
        str(ROOT / "notebooks" / "analysis.ipynb"),
        str(executed),
        parameters={"report_dir": str(tmp_path / "report")},
        kernel_name="python3",
        progress_bar=False,
        cwd=str(tmp_path),
    )
    figures = sorted(p.name for p in (tmp_path / "report" / "notebook_figures").iterdir())
    assert figures == ["bars.png", "forgetting_0.png", "forgetting_1.png"]
    # The EAG-minus-direct cell shows the difference of the two runs' fine-tuned rows.
    with open(tmp_path / "report" / "table1.csv") as f:
        ndcg = {
            r["curriculum"]: float(r["ndcg@10"])
            for r in csv.DictReader(f)
            if (r["split"], r["domain"], r["stage"]) == ("test", "all", "fine-tuned")
        }
    gain = ndcg["eag"] - ndcg["direct"]
    cells = nbformat.read(executed, as_version=4).cells
    shown = next(c for c in cells if c.cell_type == "code" and c.source.startswith("gains = "))
    text = shown.outputs[0]["data"]["text/plain"]
    # (shown to one decimal: within half a unit of the last place)
    assert float(text.splitlines()[-1].split()[-1]) == pytest.approx(gain, abs=0.05 + 1e-9)
