"""Training progress as log lines (`r2r.progress.Reporter`) from a Lightning callback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

from r2r.progress import Reporter, rate_text


class TrainingProgress(L.Callback):
    """Logs, at a steady interval, the training of `what` (an adapter: `fine_tuned legal`):
    optimizer steps done/total, steps/s and ETA, the metrics the module logs with
    ``prog_bar=True`` (the train loss) and pairs/s; and the batches of each validation run,
    which pause training. Silent in a terminal, where Lightning's own bar is drawn; the
    pipeline turns that bar off elsewhere.

    A plain callback, not a Lightning `ProgressBar`: those replace the trainer's bar and are
    refused under ``enable_progress_bar=False``, which a config may set for the terminal.
    Pairs are the rows of a batch's ``input_ids``, times the number of processes (each rank
    takes its share of every global batch); rank 0 logs.
    """

    def __init__(
        self,
        what: str,
        *,
        interval_s: float | None = None,
        interactive: bool | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.what = what
        self.options: dict[str, Any] = {
            "interval_s": interval_s,
            "interactive": interactive,
            "clock": clock,
        }
        self.pairs = 0
        self._train: Reporter | None = None
        self._val: Reporter | None = None

    @rank_zero_only
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total = trainer.estimated_stepping_batches
        total = int(total) if total != float("inf") else None
        self._train, self.pairs = Reporter(f"train {self.what}", total, "steps", **self.options), 0

    @rank_zero_only
    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if isinstance(batch, dict) and "input_ids" in batch:
            self.pairs += len(batch["input_ids"]) * trainer.world_size
        reporter = self._train
        reporter.advance(trainer.global_step - reporter.done, note=lambda: self.note(trainer))

    @rank_zero_only
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._train.close(note=lambda: self.note(trainer))

    def note(self, trainer: L.Trainer) -> str:
        """The progress-bar metrics and the pairs/s since training started."""
        shown = [f"{k} {float(v):.4g}" for k, v in trainer.progress_bar_metrics.items()]
        elapsed = self._train.elapsed
        rate = rate_text(self.pairs / elapsed) if elapsed > 0 else "?"
        return ", ".join([*shown, f"{rate} pairs/s"])

    @rank_zero_only
    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            total = int(sum(trainer.num_val_batches))
            self._val = Reporter(f"validate {self.what}", total, "batches", **self.options)

    @rank_zero_only
    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._val is not None:
            self._val.advance()

    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._val is not None:
            self._val.close()
            self._val = None
