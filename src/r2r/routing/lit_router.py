"""LightningModule for router heads: cross-entropy on (features, domain id) batches."""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score


class RouterModule(L.LightningModule):
    """Trains `head` ((B, dim) features -> (B, n_classes) logits) with cross-entropy,
    weighted per class by `class_weights` ((n_classes,); None: unweighted).

    Batches are (features (B, dim) float32, label ids (B,) long). Logs
    `{log_prefix}train/loss` and, when validating, `{log_prefix}val/accuracy` (micro: the
    share of queries routed right) and `{log_prefix}val/macro_f1`.
    """

    def __init__(
        self,
        head: nn.Module,
        n_classes: int,
        *,
        lr: float,
        weight_decay: float,
        log_prefix: str,
        class_weights: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.head = head
        # A buffer: it moves to the trainer's device with the head.
        self.register_buffer("class_weights", class_weights, persistent=False)
        self.lr, self.weight_decay, self.log_prefix = lr, weight_decay, log_prefix
        self.val_accuracy = MulticlassAccuracy(num_classes=n_classes, average="micro")
        self.val_macro_f1 = MulticlassF1Score(num_classes=n_classes, average="macro")

    def forward(self, features: Tensor) -> Tensor:
        return self.head(features)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        features, labels = batch
        loss = F.cross_entropy(self.head(features), labels, weight=self.class_weights)
        self.log(
            f"{self.log_prefix}train/loss",
            loss,
            on_step=False,
            on_epoch=True,
            batch_size=len(labels),
        )
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        features, labels = batch
        predicted = self.head(features).argmax(dim=1)
        self.val_accuracy.update(predicted, labels)
        self.val_macro_f1.update(predicted, labels)
        # Metric objects: Lightning computes them over the whole epoch, then resets them.
        self.log(
            f"{self.log_prefix}val/accuracy",
            self.val_accuracy,
            on_epoch=True,
            batch_size=len(labels),
        )
        self.log(
            f"{self.log_prefix}val/macro_f1",
            self.val_macro_f1,
            on_epoch=True,
            batch_size=len(labels),
        )

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.head.parameters(), lr=self.lr, weight_decay=self.weight_decay)
