"""trainer=ddp on CPU (gloo, 2 processes) inside a Hydra multirun: each job runs as a single
run of its own (r2r.sweep.run_single) and trains as one process with twice the batch; each
rank scores its share of the test lists and rank 0 gathers them, then goes on alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file

from r2r.pipeline import run

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ["routing.enabled=false", "scheduler.num_warmup_steps=0", "domain=legal"]


def test_ddp_multirun_matches_one_process_with_the_global_batch(multirun, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    done = multirun(
        *SETTINGS,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "datamodule.train_batch_size=2",  # per process: 2 x 2 = the reference's 4
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stdout + done.stderr
    assert log.count("running this job in its own process (DDP)") == 1
    assert log.count("All distributed processes registered. Starting with 2 processes") == 1
    for rank in range(2):
        assert log.count(f"evaluation on cpu: rank {rank} of 2 scores 1 list in 2") == 1
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [(j / "results.json").exists() for j in jobs] == [True]
    # The job ran as `python run.py <overrides>` (a single run, r2r.sweep.run_single): the
    # README's main command, with its results table, CSV curves and Hydra config.
    assert "| fine_tuned | legal |" in done.stdout
    assert (jobs[0] / "csv" / "version_0" / "metrics.csv").is_file()
    assert (jobs[0] / ".hydra" / "config.yaml").is_file()
    # Rank 1 keeps its scratch copy only while the job runs.
    assert not [p for j in jobs for p in j.glob(".rank*")]

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                "debug=fast",
                *SETTINGS,
                f"paths.root={ROOT}",
                f"paths.output={tmp_path / 'one'}",
                f"paths.cache={tmp_path / 'cache'}",
            ],
        )
    assert cfg.datamodule.train_batch_size == 4
    single = run(cfg)
    ddp = json.loads((jobs[0] / "results.json").read_text())["metrics"]
    legal = {k for k in single if k.split("/")[1] == "legal"}
    # (bm25, zero_shot, fine_tuned, fused) x 2 splits x 8 metrics, and BM25's recall ceiling
    assert len(legal) == 4 * 2 * 8 + 2
    assert legal == {k for k in ddp if k.split("/")[1] == "legal"}
    # Stated tolerance: adapter weights within 1% of the largest LoRA weight, metrics within
    # 0.01 points. Only the order of the gradient sums differs; Adam's normalisation scales
    # that rounding up in its first steps.
    assert all(ddp[k] == pytest.approx(single[k], abs=0.01) for k in legal)
    name = "experts/legal/adapter_model.safetensors"
    ours, theirs = load_file(jobs[0] / name), load_file(tmp_path / "one" / name)
    assert sorted(ours) == sorted(theirs)
    # LoRA's B starts at zero: its size is what training moved.
    moved = max(theirs[k].abs().max().item() for k in theirs if "lora_B" in k)
    assert moved > 1e-3
    assert max((ours[k] - theirs[k]).abs().max().item() for k in ours) < 0.01 * moved
    # The test lists, scored half by each rank and gathered: every score lands on its own
    # (query, document). The bare backbone's are one process's up to float rounding (the
    # ranks batch other pairs together; measured 7e-7 on margins of about 2.5); the expert's
    # also differ as its weights do (above; measured 1.5e-6).
    for split in ("test", "test_seen"):
        for row, tolerance in (("zero_shot", 1e-5), ("fine_tuned", 1e-3)):
            ours, theirs = (
                trec_scores(folder / "runs" / f"{row}{'' if split == 'test' else '.' + split}.trec")
                for folder in (jobs[0], tmp_path / "one")
            )
            assert len(ours) == 6 * 10  # debug=fast: 6 queries x BM25's top 10
            assert ours.keys() == theirs.keys()
            assert max(abs(ours[k] - theirs[k]) for k in ours) <= tolerance, (row, split)


def trec_scores(path: Path) -> dict[tuple[str, str], float]:
    """(query, document) -> score of a TREC run file."""
    rows = (line.split() for line in path.read_text().splitlines())
    return {(qid, doc): float(score) for qid, _, doc, _, score, _ in rows}


def test_rank_zero_goes_on_alone_after_training() -> None:
    """After DDP training the other ranks have exited: rank 0 leaves the process group, so
    that nothing later (a router's metric sync, a trainer) waits for them (it did: routing
    after trainer=ddp crashed with `Connection closed by peer`)."""
    import torch.distributed as dist

    from r2r.pipeline import alone

    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:29533", rank=0, world_size=1)
    assert dist.is_initialized()
    alone()
    assert not dist.is_initialized()
    alone()  # nothing to leave: no error
