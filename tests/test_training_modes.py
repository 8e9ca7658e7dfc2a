"""Each training mode end to end on the tiny default, and the pairings that cannot train."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from hydra.utils import instantiate

from r2r.data.mining import BM25Miner
from r2r.pipeline import run


def losses(out: Path, prefix: str) -> list[float]:
    rows = csv.DictReader((out / "csv" / "version_0" / "metrics.csv").open())
    return [float(r[f"{prefix}train/loss"]) for r in rows if r.get(f"{prefix}train/loss")]


@pytest.mark.parametrize(("mode", "loss"), [("pointwise", "bce"), ("pairwise", "ranknet")])
def test_a_training_mode_trains_with_its_own_loss(make_cfg, mode: str, loss: str) -> None:
    cfg = make_cfg("debug=fast", "domain=legal", f"training={mode}", "logger=csv")
    assert cfg.loss._target_ == f"r2r.losses.{loss}"  # the mode's default loss
    metrics = run(cfg)
    out = Path(cfg.paths.output)
    assert len(losses(out, "legal/")) == 6  # one per step (debug=fast: 6 steps)
    assert 0.0 <= metrics["fine_tuned/legal/ndcg@10"] <= 100.0
    saved = json.loads((out / "results.json").read_text())["config"]["training"]
    assert saved == {"_target_": "r2r.data.examples.Training", "mode": mode, "teacher": None}


def write_teacher(cfg, path: Path) -> Path:
    """BM25 as the teacher: its scores of the top 20 per training query, as a TREC run."""
    dataset = instantiate(cfg.data.sources.legal)
    miner = BM25Miner(instantiate(cfg.mining, top_k=20), cache_dir=None)
    lines = [
        f"legal/{c.query.id} Q0 {p.id} {i} {score} bm25"
        for c in miner.candidate_lists(dataset, "train")
        for i, (p, score) in enumerate(zip(c.passages, c.first_stage_scores, strict=True), 1)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_teacher_run_file_trains_the_distillation_losses(make_cfg, tmp_path: Path) -> None:
    base = ("debug=fast", "domain=legal", "logger=csv")
    teacher = write_teacher(make_cfg(*base), tmp_path / "teacher.trec")
    cfg = make_cfg(*base, "loss=distill_kl", f"training.teacher={{legal: {teacher}}}")
    run(cfg)
    curve = losses(Path(cfg.paths.output), "legal/")
    assert len(curve) == 6 and all(value >= 0.0 for value in curve)


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        (["training=pointwise", "loss=infonce"], "loss infonce cannot train on rows"),
        (["loss=distill_mse"], "set training.teacher"),
    ],
)
def test_pairings_that_cannot_train_fail_before_any_work(make_cfg, overrides, error) -> None:
    cfg = make_cfg("debug=fast", *overrides)
    with pytest.raises(ValueError, match=error):
        run(cfg)
    assert [p.name for p in Path(cfg.paths.output).iterdir()] == ["failed.json"]
