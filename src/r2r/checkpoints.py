"""What lets a rerun of an interrupted job resume it: adapters saved with a record of what
they were trained from, and periodic checkpoints of the adapter being trained.

A record is a plain dict (the pipeline picks the config keys that decide an adapter's
weights). An adapter folder saved with the same record as this run's is reused; one saved
with another is trained again. A checkpoint holds what a Lightning fit needs to go on as if
it had never stopped: the adapter (never the frozen base, `RerankerModule`), optimizer,
scheduler, loop progress (the step), callbacks (`BestAdapter`'s best weights), the data
position (`ResumableLoader`), and here the RNG states and the record.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states

from r2r.files import marked
from r2r.sweep import differences

log = logging.getLogger(__name__)

RECORD = "r2r_adapter.json"  # in an adapter folder: what the adapter was trained from
_KEY = "r2r_adapter"  # the record's key in a checkpoint


def canonical(record: Mapping[str, Any]) -> dict[str, Any]:
    """`record` as it reads back from JSON (tuples as lists), so that records compare."""
    return json.loads(json.dumps(record, sort_keys=True))


def reusable(folder: Path, record: Mapping[str, Any]) -> bool:
    """Whether `folder` holds an adapter r2r saved with this same `record`; says why not
    when it holds one saved with another."""
    if marked(folder) != "expert":
        return False
    try:
        saved = json.loads((folder / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.info("%s has no record of how it was trained: it is trained again", folder)
        return False
    if changed := differences(canonical(record), saved):
        log.info(
            "%s was trained with another config (differs in %s): it is trained again",
            folder,
            ", ".join(changed[:5]),
        )
        return False
    return True


class PeriodicCheckpoint(L.Callback):
    """Every `every_n_steps` optimizer steps (0: never), the fit's checkpoint in
    `folder/name/last.ckpt`, written whole (a temporary file moved into place) by rank 0.

    A step that validates is saved after its validation (and `BestAdapter`'s choice), so
    that a resumed fit neither repeats nor skips it; other steps after their optimizer step.
    A resumed fit gets the saved RNG states back as it starts training.
    """

    def __init__(
        self, folder: Path, name: str, *, every_n_steps: int, record: Mapping[str, Any]
    ) -> None:
        if every_n_steps < 0:
            raise ValueError(f"every_n_steps must be 0 (never) or more, got {every_n_steps}")
        self.folder = Path(folder)
        self.path = self.folder / name / "last.ckpt"
        self.every_n_steps = every_n_steps
        self.record = canonical(record)
        self._saved_step: int | None = None
        self._rng: dict[str, Any] | None = None

    def resumable_step(self) -> int | None:
        """The step of a checkpoint in `path` saved with this record; a checkpoint of another
        record (or an unreadable one) is removed, and training starts afresh."""
        if not self.path.is_file():
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
            if saved[_KEY] == self.record:
                return int(saved["global_step"])
            reason = f"differs in {', '.join(differences(self.record, saved[_KEY])[:5])}"
        except Exception as error:  # a file cut short, or not r2r's: never worth a failure
            reason = f"unreadable: {type(error).__name__}"
        log.warning("%s is a checkpoint of another config (%s): removed", self.path, reason)
        self.remove()
        return None

    def remove(self) -> None:
        """The checkpoint, and the folders it leaves empty up to `folder`."""
        self.path.unlink(missing_ok=True)
        self.path.with_name(f".{self.path.name}.partial").unlink(missing_ok=True)
        for parent in self.path.parents:
            if (
                not parent.is_relative_to(self.folder)
                or not parent.is_dir()
                or any(parent.iterdir())
            ):
                break
            parent.rmdir()

    # ------------------------------------------------------------------ Lightning
    def state_dict(self) -> dict[str, Any]:
        states = _collect_rng_states()
        if "numpy" in states:  # as a tensor: Lightning loads checkpoints `weights_only`
            kind, keys, *rest = states["numpy"]
            states["numpy"] = (kind, torch.from_numpy(keys.copy()), *rest)
        return {"rng": states}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._rng = dict(state_dict["rng"])
        if "numpy" in self._rng:
            kind, keys, *rest = self._rng["numpy"]
            self._rng["numpy"] = (kind, keys.numpy(), *rest)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[_KEY] = self.record

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._rng is not None:
            _set_rng_states(self._rng)
            self._rng = None

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loop = trainer.fit_loop
        # Lightning's own test for a validation right after this batch.
        if self._due(trainer) and not loop.epoch_loop._should_check_val_fx(loop._data_fetcher):
            self._save(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and self._due(trainer):
            self._save(trainer)

    def _due(self, trainer: L.Trainer) -> bool:
        # Not at the last step: the pipeline saves the adapter right after it.
        step = trainer.global_step
        every = self.every_n_steps
        return bool(every) and step % every == 0 and 0 < step < trainer.max_steps

    def _save(self, trainer: L.Trainer) -> None:
        if self._saved_step == trainer.global_step:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.partial")
        trainer.save_checkpoint(partial)  # every rank takes part; rank 0 writes
        if trainer.is_global_zero:
            os.replace(partial, self.path)
        self._saved_step = trainer.global_step
