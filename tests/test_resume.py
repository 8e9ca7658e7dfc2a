"""Preemption: a rerun into the same output directory reuses the adapters already saved with
its config and resumes the one being trained from its last checkpoint, ending where an
uninterrupted run ends."""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from r2r import pipeline
from r2r.checkpoints import RECORD, reusable
from r2r.lit_reranker import RerankerModule
from r2r.models.backbones import load_tiny
from r2r.models.experts import add_lora, save_adapter
from r2r.models.templates import QWEN3_RERANKER
from r2r.sweep import Interrupted
from tests.test_pipeline import compose_cfg

# LoRA dropout: training draws random numbers (which a resumed fit must draw alike).
ONE_DOMAIN = (
    "debug=fast",
    "domain=legal",
    "logger=none",
    "routing.enabled=false",
    "lora.dropout=0.1",
)


def train(out: Path, cache: Path, *overrides: str) -> Path:
    """The legal expert of a debug=fast job in `out` (6 steps, validation at 3 and 6)."""
    cfg = compose_cfg(out, cache, *ONE_DOMAIN, *overrides)
    adapters = pipeline.train_curriculum(pipeline.prepare(cfg, []))
    return adapters["fine_tuned"]["legal"]


def stop_at(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """SIGTERM, as `r2r.sweep.catch_signals` raises it, once training has done `step` steps
    (after that step's checkpoint, before its validation)."""

    def interrupt(module: RerankerModule, outputs, batch, batch_idx: int) -> None:
        if module.global_step == step:
            raise Interrupted(signal.SIGTERM)

    monkeypatch.setattr(RerankerModule, "on_train_batch_end", interrupt, raising=False)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "adapter_model.safetensors")


def test_an_interrupted_adapter_resumes_to_the_uninterrupted_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Stopped at step 4 (last checkpoint: step 3, saved after its validation), then at step
    5 (checkpoint: step 4, after its optimizer step), then run to the end: the same adapter
    as one run of 6 steps, with the best dev step chosen among all of them."""
    cache = tmp_path / "cache"
    # The lower dev score is step 3's: the weights kept are from before the interruptions.
    best = "best_adapter.mode=min"
    expected = weights(train(tmp_path / "whole", cache, best, "checkpoint.every_n_steps=0"))
    out = tmp_path / "resumed"
    checkpoint = out / "checkpoints" / "fine_tuned" / "legal" / "last.ckpt"
    caplog.set_level(logging.INFO, logger="r2r")

    stop_at(monkeypatch, 4)
    with pytest.raises(Interrupted):
        train(out, cache, best, "checkpoint.every_n_steps=3")
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["global_step"] == 3
    # The adapter, never the frozen base; optimizer, scheduler, the best dev step's weights,
    # the data position (4 batches an epoch) and the RNG states.
    assert saved["state_dict"] and all(".lora_" in k for k in saved["state_dict"])
    assert saved["optimizer_states"][0]["state"][0]["step"] == 3
    assert saved["lr_schedulers"][0]["last_epoch"] == 3
    assert saved["callbacks"]["BestAdapter"]["best_step"] == 3
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 0, "start": 3}]
    assert set(saved["callbacks"]["PeriodicCheckpoint"]["rng"]) >= {"torch", "numpy", "python"}

    stop_at(monkeypatch, 5)
    with pytest.raises(Interrupted):
        train(out, cache, best, "checkpoint.every_n_steps=2")
    assert "stage fine_tuned: resuming the legal adapter from step 3" in caplog.messages
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 4

    monkeypatch.undo()
    folder = train(out, cache, best, "checkpoint.every_n_steps=2")
    assert "stage fine_tuned: resuming the legal adapter from step 4" in caplog.messages
    resumed = weights(folder)
    assert resumed.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=1e-6)
    assert not (out / "checkpoints").exists()  # removed once the adapter is saved

    # Once more: the saved adapter is taken as it is.
    written = (folder / "adapter_model.safetensors").stat().st_mtime_ns
    assert train(out, cache, best) == folder
    assert f"stage fine_tuned: the legal adapter is already trained ({folder}), reused" in (
        caplog.messages
    )
    assert (folder / "adapter_model.safetensors").stat().st_mtime_ns == written


@pytest.mark.slow
def test_a_rerun_reuses_the_adapters_saved_before_the_interruption(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """EAG on one domain, stopped while the expert trains (its stage-1 adapter saved): the
    rerun takes that adapter as it is and ends with the uninterrupted run's metrics."""
    cache, out = tmp_path / "cache", tmp_path / "out"
    eag = (*ONE_DOMAIN, "curriculum=eag", "zero_shot=false")
    expected = pipeline.run(compose_cfg(tmp_path / "whole", cache, *eag))
    caplog.set_level(logging.INFO, logger="r2r")

    def interrupt(module: RerankerModule, outputs, batch, batch_idx: int) -> None:
        if module.log_prefix == "legal/" and module.global_step == 2:
            raise Interrupted(signal.SIGTERM)

    monkeypatch.setattr(RerankerModule, "on_train_batch_end", interrupt, raising=False)
    with pytest.raises(Interrupted):
        pipeline.run(compose_cfg(out, cache, *eag))
    stage1 = out / "stage1" / "adapter_model.safetensors"
    written = stage1.stat().st_mtime_ns
    assert not (out / "experts").exists() and not (out / "results.json").exists()

    monkeypatch.undo()
    metrics = pipeline.run(compose_cfg(out, cache, *eag))
    assert f"stage stage1: the all adapter is already trained ({out / 'stage1'}), reused" in (
        caplog.messages
    )
    assert "stage fine_tuned: training the legal adapter" in caplog.messages
    assert stage1.stat().st_mtime_ns == written  # not written again
    assert metrics == expected
    assert json.loads((out / "results.json").read_text())["metrics"] == expected


def test_an_adapter_of_another_config_is_not_reused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The record saved with an adapter names every key that decides its weights: a changed
    one (lora.r), or a changed initial adapter, means training again."""
    cfg = compose_cfg(tmp_path / "out", tmp_path / "cache", *ONE_DOMAIN)
    stage = pipeline.stages(cfg)["fine_tuned"]
    model = add_lora(load_tiny("qwen", template=QWEN3_RERANKER, seed=0).model, **cfg.lora)
    record = pipeline.adapter_record(cfg, "fine_tuned", stage, None)
    folder = save_adapter(model, tmp_path / "expert", records={RECORD: record})
    caplog.set_level(logging.INFO, logger="r2r")

    assert reusable(folder, record)
    other = compose_cfg(tmp_path / "out", tmp_path / "cache", *ONE_DOMAIN, "lora.r=8")
    assert not reusable(folder, pipeline.adapter_record(other, "fine_tuned", stage, None))
    assert caplog.messages[-1] == (
        f"{folder} was trained with another config (differs in lora.r): it is trained again"
    )
    started = pipeline.adapter_record(cfg, "fine_tuned", stage, folder)  # from an adapter
    assert not reusable(folder, started)
    assert caplog.messages[-1].endswith("(differs in init): it is trained again")
    (folder / RECORD).unlink()  # saved by an earlier r2r
    assert not reusable(folder, record)
    assert not reusable(tmp_path / "none", record)
