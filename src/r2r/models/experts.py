"""Domain experts: LoRA adapters on the frozen backbone, saved and loaded adapter-only.

An expert folder is exactly peft's format (adapter_config.json +
adapter_model.safetensors), so `peft.PeftModel.from_pretrained(base, folder)` reads it
without r2r. The frozen base is never written.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from r2r.devices import gather, resolve_device, shard
from r2r.files import atomic_path
from r2r.models.scorer import RerankerScorer, score_pairs
from r2r.models.templates import PairEncoder
from r2r.types import CandidateList, ScoredList

if TYPE_CHECKING:
    from r2r.models.backbones import Backbone

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def add_lora(
    model: nn.Module,
    *,
    r: int,
    alpha: int,
    dropout: float,
    target_modules: Sequence[str],
    adapter_name: str = "default",
) -> PeftModel:
    """Wrap ``model`` with a fresh trainable LoRA (B = 0, so scores start unchanged).

    peft injects the LoRA layers into ``model`` in place; only they require grad.
    If ``model`` is already a PeftModel the adapter is added next to the existing ones.
    """
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(target_modules),
        task_type="CAUSAL_LM",
    )
    if isinstance(model, PeftModel):
        model.add_adapter(adapter_name, config)
        return model
    return get_peft_model(model, config, adapter_name=adapter_name)


def save_adapter(
    model: PeftModel,
    folder: str | Path,
    *,
    adapter_name: str = "default",
    records: Mapping[str, Any] | None = None,
) -> Path:
    """Write one adapter (config + weights, no base weights) to ``folder``, atomically, with
    `records` (file name -> JSON content) beside its files.

    Staged beside ``folder`` and moved into place whole (`atomic_path`), so a crash never
    leaves a half-written expert where a loader would find it, nor one without its records.
    """
    folder = Path(folder)
    if adapter_name not in model.peft_config:
        raise ValueError(f"no adapter {adapter_name!r}; have {sorted(model.peft_config)}")
    with (
        atomic_path(folder, kind="expert") as staged,
        tempfile.TemporaryDirectory(dir=folder.parent) as tmp,
    ):
        model.save_pretrained(
            tmp,
            selected_adapters=[adapter_name],
            # "auto" may probe the hub for the base model's vocab; r2r never trains embeddings.
            save_embedding_layers=False,
        )
        # peft nests every adapter but "default" in a subfolder named after it.
        saved = Path(tmp) if adapter_name == "default" else Path(tmp) / adapter_name
        staged.mkdir()
        for name in ADAPTER_FILES:  # peft's README model card is left behind on purpose
            if not (saved / name).is_file():
                raise RuntimeError(f"peft did not write {name} for adapter {adapter_name!r}")
            (saved / name).rename(staged / name)
        _sort_target_modules(staged / "adapter_config.json")
        for name, content in (records or {}).items():
            (staged / name).write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")
    return folder


def _sort_target_modules(config_file: Path) -> None:
    """peft keeps ``target_modules`` as a set and writes it in hash order, which differs
    between processes; sorted, the same adapter saves to the same bytes every time."""
    config = json.loads(config_file.read_text())
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def load_adapter(
    base_model: nn.Module,
    folder: str | Path,
    *,
    adapter_name: str = "default",
    trainable: bool = False,
) -> PeftModel:
    """Attach the adapter saved in ``folder`` to ``base_model`` and make it active.

    A plain model is wrapped (its layers are modified in place); a PeftModel gets the
    adapter added beside its others, so one base can hold every domain's expert.
    """
    folder = Path(folder)
    missing = [name for name in ADAPTER_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not an r2r/peft adapter folder: missing {missing}")
    if isinstance(base_model, PeftModel):
        base_model.load_adapter(str(folder), adapter_name=adapter_name, is_trainable=trainable)
        base_model.set_adapter(adapter_name)
        # set_adapter makes the active adapter trainable; undo that for inference loads.
        for name, param in base_model.named_parameters():
            if f".{adapter_name}." in name:
                param.requires_grad_(trainable)
        model = base_model
    else:
        model = PeftModel.from_pretrained(
            base_model, str(folder), adapter_name=adapter_name, is_trainable=trainable
        )
    if not trainable:
        model.eval()
    return model


def start_expert(
    base_model: nn.Module, *, init_from: str | Path | None = None, **lora: object
) -> PeftModel:
    """A trainable expert on `base_model`: a fresh LoRA (`add_lora(**lora)`), or, for EAG
    stage 2, a trainable copy of the stage-1 adapter saved in `init_from`."""
    if init_from is None:
        return add_lora(base_model, **lora)
    return load_adapter(base_model, init_from, trainable=True)


class ExpertBank:
    """One frozen backbone with every named adapter loaded beside the others, scoring
    (query, document) pairs under one of them or under none (the bare backbone).

    Built whole from its parts and not changed afterwards; the routed system and the
    evaluation of every stage score through `score` / `score_lists`. The bank borrows the
    backbone's model: it moves it to `device` ("cpu", "cuda", "cuda:N" or "auto", see
    `resolve_device`) in its own dtype, and `close` hands it back bare, where it was.
    """

    def __init__(
        self,
        backbone: Backbone,
        adapters: Mapping[str, str | Path],
        *,
        inputs: Mapping[str, Any],
        batch_size: int,
        scorer: Mapping[str, Any],
        device: str | torch.device = "cpu",
    ) -> None:
        self.backbone = backbone
        self.adapters = {name: Path(folder) for name, folder in adapters.items()}
        self.device = resolve_device(device)
        model = backbone.model
        self.home = next(model.parameters()).device
        for name, folder in self.adapters.items():
            model = load_adapter(model, folder, adapter_name=name)
        self.model = model.to(self.device)
        self.inputs = dict(inputs)
        self.batch_size = batch_size
        self.encoder = PairEncoder(backbone.tokenizer, backbone.template, **self.inputs)
        # RerankerScorer's options (share_prefix, chunk_tokens: the `scorer` config node).
        self.scorer_options = dict(scorer)
        self.scorer = RerankerScorer.from_backbone(backbone, model, **self.scorer_options).eval()

    @property
    def names(self) -> list[str]:
        return list(self.adapters)

    @contextmanager
    def active(self, name: str | None) -> Iterator[None]:
        """Score under adapter `name` alone, or the bare backbone for None."""
        if name is None:
            if isinstance(self.model, PeftModel):
                with self.model.disable_adapter():
                    yield
            else:
                yield
            return
        if name not in self.adapters:
            raise KeyError(f"no expert {name!r}; have {self.names}")
        self.model.set_adapter(name)
        yield

    def score(
        self, name: str | None, queries: Sequence[str], documents: Sequence[str]
    ) -> list[float]:
        """Scores of (query, document) pairs under adapter `name` (None: bare backbone)."""
        with self.active(name):
            what = f"score {name or 'backbone'}"
            return score_pairs(
                self.scorer, self.encoder, queries, documents, batch_size=self.batch_size, what=what
            )

    def score_lists(
        self, name: str | None, lists: Sequence[CandidateList], *, sharded: bool = False
    ) -> list[ScoredList]:
        """Every candidate list scored under adapter `name`.

        sharded: under torch.distributed (DDP), this rank scores only its share of `lists`
        and every rank gets all the scores back; collective, so every rank must call it
        alike. Outside a process group it is the same as unsharded.
        """
        mine = shard(lists) if sharded else list(lists)
        flat = self.score(
            name,
            [c.query.text for c in mine for _ in c.passages],
            [p.content for c in mine for p in c.passages],
        )
        scores, at = [], 0
        for c in mine:
            scores.append(tuple(flat[at : at + len(c.passages)]))
            at += len(c.passages)
        if sharded:  # only the floats travel between ranks, not the lists' texts
            scores = gather(scores)
        return [ScoredList(c, s) for c, s in zip(lists, scores, strict=True)]

    def close(self) -> None:
        """Take every adapter out of the backbone and move it back where the bank found it
        (bare, as training expects it); the bank is done."""
        if isinstance(self.model, PeftModel):
            self.model.unload()
        self.backbone.model.to(self.home)
        self.adapters = {}
