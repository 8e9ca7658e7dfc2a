"""LightningModule for reranker fine-tuning: loop wiring, logging and optimizers only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import Tensor

from r2r.evaluation import evaluate
from r2r.models.scorer import RerankerScorer
from r2r.types import PairRef, ScoredList


class RerankerModule(L.LightningModule):
    """Trains a scorer's trainable (LoRA) parameters on training examples; validates on the
    dev candidate lists.

    A batch holds the encoded (query, passage) rows, `labels` (and `teacher` scores when
    distilling) shaped as the loss takes them: (B, G) for groups and pairs, (N,) for
    pointwise rows (`group_size` None). Validation logs `{log_prefix}val/domain/metric@k`;
    `log_prefix` (`legal/`) keeps the curves of several adapters trained in one run (and
    one W&B run) apart.
    """

    def __init__(
        self,
        scorer: RerankerScorer,
        loss: Callable[..., Tensor],
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None,
        *,
        log_prefix: str,
    ) -> None:
        super().__init__()
        self.scorer = scorer
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.log_prefix = log_prefix
        self._scores: list[tuple[PairRef, float]] = []
        # Checkpoints hold the trainable weights only (`on_load_checkpoint` checks them).
        self.strict_loading = False

    def transfer_batch_to_device(
        self, batch: dict[str, Any], device: torch.device, idx: int
    ) -> Any:
        # Only tensors move; Lightning would walk (and reject) the frozen PairRef dataclasses.
        return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}

    def on_fit_start(self) -> None:
        # Backbones load frozen in eval mode; training runs in train mode, as any fine-tuning
        # loop does, so LoRA dropout (lora.dropout > 0) and the backbone config's own dropout
        # apply. Lightning switches to eval for validation and back.
        self.scorer.train()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        # Rows of one query compute their shared prompt prefix once (`batch["groups"]`).
        scores = self.scorer(batch["input_ids"], batch["attention_mask"], batch.get("groups"))
        if batch["group_size"] is not None:
            scores = scores.view(-1, batch["group_size"])  # (B, G)
        loss = self.loss(scores, batch["labels"], batch.get("teacher"))
        if not torch.isfinite(loss):  # a NaN would train on silently and poison every score
            raise NonFiniteLoss(loss.item(), self.global_step)
        self.log(f"{self.log_prefix}train/loss", loss, prog_bar=True, batch_size=scores.shape[0])
        return loss

    # ------------------------------------------------------------------ checkpoints
    def trainable(self) -> set[str]:
        return {name for name, p in self.named_parameters() if p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The adapter only: the frozen base is the backbone's, which every run loads anew.
        trainable = self.trainable()
        checkpoint["state_dict"] = {
            k: v for k, v in checkpoint["state_dict"].items() if k in trainable
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved, trainable = set(checkpoint["state_dict"]), self.trainable()
        if saved != trainable:
            raise ValueError(
                f"the checkpoint holds other trainable weights than this adapter's: "
                f"{len(saved - trainable)} unknown (e.g. {sorted(saved - trainable)[:2]}), "
                f"{len(trainable - saved)} missing (e.g. {sorted(trainable - saved)[:2]})"
            )

    # ------------------------------------------------------------------ validation
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        ids, mask, groups = batch["input_ids"], batch["attention_mask"], batch.get("groups")
        scores = self.scorer(ids, mask, groups).float().cpu().tolist()
        self._scores.extend(zip(batch["refs"], scores, strict=True))

    def on_validation_epoch_end(self) -> None:
        scored, self._scores = collect_lists(self._scores), []
        if not self.trainer.sanity_checking:
            metrics = evaluate(scored, "val")
            self.log_dict({self.log_prefix + k: v for k, v in metrics.items()}, batch_size=1)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the scorer has no trainable parameters (was LoRA added?)")
        optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


class NonFiniteLoss(FloatingPointError):
    """Training stopped at the first loss that is NaN or infinite; `where` (the stage and
    adapter) is filled in by the pipeline."""

    def __init__(self, value: float, step: int) -> None:
        self.value, self.step, self.where = value, step, ""
        super().__init__(value, step)

    def __str__(self) -> str:
        where = f"{self.where}, " if self.where else ""
        return (
            f"{where}step {self.step}: the training loss is {self.value}; lower the learning "
            "rate or check the loss settings (e.g. a temperature near 0)"
        )


def val_check_batches(val_check_interval: float, accumulate_grad_batches: int) -> float:
    """Lightning's `val_check_interval` for r2r's: an int counts optimizer steps in r2r's
    config but training batches in Lightning, which differ under gradient accumulation
    (`accumulate_grad_batches` batches per step); a float (a fraction of an epoch) is kept."""
    if isinstance(val_check_interval, int):
        return val_check_interval * accumulate_grad_batches
    return val_check_interval


def collect_lists(scores: list[tuple[PairRef, float]]) -> list[ScoredList]:
    """Scores of pairs, in any order, back into their candidate lists."""
    by_list: dict[int, tuple[PairRef, list[float]]] = {}
    for ref, score in scores:
        entry = by_list.setdefault(id(ref.candidates), (ref, [0.0] * len(ref.candidates.passages)))
        entry[1][ref.position] = score
    return [ScoredList(ref.candidates, tuple(s)) for ref, s in by_list.values()]


class BestAdapter(L.Callback):
    """Keeps the trainable (adapter) weights of the best validation score and restores them
    when fitting ends. Lightning's ModelCheckpoint would save the frozen base too; adapters
    are small, so a copy in memory is enough and the pipeline saves it in peft's format; the
    copy goes into r2r's periodic checkpoints (`state_dict`), so a resumed fit keeps the best
    of the steps before the interruption too. `monitor` is the key as RerankerModule names
    it before its `log_prefix`."""

    def __init__(self, monitor: str, mode: str) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.monitor = monitor
        self.mode = mode
        self.best: float | None = None
        self.best_step: int | None = None
        self._state: dict[str, Tensor] | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        key = getattr(pl_module, "log_prefix", "") + self.monitor
        value = trainer.callback_metrics.get(key)
        if value is None:
            raise KeyError(
                f"BestAdapter monitors {key!r}, which was not logged; "
                f"logged: {sorted(trainer.callback_metrics)}"
            )
        value = float(value)
        better = self.best is None or (
            value > self.best if self.mode == "max" else value < self.best
        )
        if better:
            self.best, self.best_step = value, trainer.global_step
            self._state = {
                name: p.detach().clone()
                for name, p in pl_module.named_parameters()
                if p.requires_grad
            }

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "weights": self._state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best, self.best_step = state_dict["best"], state_dict["best_step"]
        self._state = state_dict["weights"]

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._state is None:
            return
        params = dict(pl_module.named_parameters())
        with torch.no_grad():
            for name, value in self._state.items():
                params[name].copy_(value)
