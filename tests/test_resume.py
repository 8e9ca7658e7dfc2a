"""Preemption: a rerun into the same output directory reuses the adapters already saved with
its config and resumes the one being trained from its last checkpoint, ending where an
uninterrupted run ends."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from r2r import pipeline
from r2r.lit_reranker import RerankerModule
from r2r.sweep import Interrupted
from tests.test_pipeline import compose_cfg

ONE_DOMAIN = ("debug=fast", "domain=legal", "logger=none", "routing.enabled=false")


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
    expected = weights(train(tmp_path / "whole", cache, "checkpoint.every_n_steps=0"))
    out = tmp_path / "resumed"
    checkpoint = out / "checkpoints" / "fine_tuned" / "legal" / "last.ckpt"
    caplog.set_level(logging.INFO, logger="r2r")

    stop_at(monkeypatch, 4)
    with pytest.raises(Interrupted):
        train(out, cache, "checkpoint.every_n_steps=3")
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["global_step"] == 3
    # The adapter, never the frozen base.
    assert saved["state_dict"] and all(".lora_" in k for k in saved["state_dict"])

    stop_at(monkeypatch, 5)
    with pytest.raises(Interrupted):
        train(out, cache, "checkpoint.every_n_steps=2")
    assert "stage fine_tuned: resuming the legal adapter from step 3" in caplog.messages
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 4

    monkeypatch.undo()
    folder = train(out, cache, "checkpoint.every_n_steps=2")
    assert "stage fine_tuned: resuming the legal adapter from step 4" in caplog.messages
    resumed = weights(folder)
    assert resumed.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=1e-6)
    assert not (out / "checkpoints").exists()  # removed once the adapter is saved
