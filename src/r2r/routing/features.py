"""Query features for routers: the frozen backbone's hidden state, and a disk cache for them.

The Latent Semantic Router (METHOD.md section 5) reads the query ALONE through the frozen
backbone with every LoRA expert switched off: the features describe the query as the base
model sees it, so they are the same whichever expert was attached or trained since.
"""

from __future__ import annotations

import hashlib
import json
import logging
import string
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from r2r.files import atomic_path
from r2r.models.scorer import last_positions
from r2r.progress import Reporter
from r2r.routing.base import Featurizer

if TYPE_CHECKING:
    from r2r.models.backbones import Backbone

log = logging.getLogger(__name__)

Pooling = Literal["last", "mean"]
POOLINGS: tuple[Pooling, ...] = ("last", "mean")

# No chat markers, so it suits any backbone. It ends in a fixed word and colon: with "last"
# pooling every query is read at the same kind of position, one that has just summed up the
# query to say what it is about, rather than at whatever word the query happens to end with.
DEFAULT_QUERY_TEMPLATE = "Query: {query}\nTopic:"


class LatentFeaturizer:
    """Queries -> (N, dim) float32 CPU hidden states of a frozen decoder (a `Featurizer`).

    Each query is formatted with `template` (exactly one ``{query}`` field) and run through
    the decoder body with all adapters off, in eval mode and without gradients; the model's
    training flags, requires_grad flags and adapter switches are restored afterwards.

    layer: index into HF's ``hidden_states`` (0 = embeddings, -1 = last = after the final
        norm; the ones in between are the un-normed residual stream).
    pooling: "last" = the last real token; "mean" = the mean over real tokens (template
        tokens included).
    max_length: query tokens kept, the first ones; the template around the query is never cut.
    add_bos: put the tokenizer's BOS first (tokenizers that need it, e.g. Gemma).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        name: str,
        layer: int = -1,
        pooling: Pooling = "last",
        template: str = DEFAULT_QUERY_TEMPLATE,
        max_length: int = 128,
        batch_size: int = 32,
        add_bos: bool = False,
    ) -> None:
        n_states = model.config.num_hidden_layers + 1
        if not -n_states <= layer < n_states:
            raise ValueError(
                f"layer={layer} is out of range for {name!r}: it has {n_states} hidden states "
                f"(0 = embeddings ... {n_states - 1} = last), so layer must be in "
                f"[{-n_states}, {n_states - 1}]"
            )
        if pooling not in POOLINGS:
            raise ValueError(f"pooling={pooling!r}; expected one of {POOLINGS}")
        if max_length < 1 or batch_size < 1:
            raise ValueError(f"max_length={max_length} and batch_size={batch_size} must be >= 1")
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(
                f"LatentFeaturizer needs a fast tokenizer (char offsets); got "
                f"{type(tokenizer).__name__}"
            )
        if add_bos and tokenizer.bos_token_id is None:
            raise ValueError("add_bos=True but the tokenizer has no BOS token")
        self.prefix, self.suffix = split_query_template(template)
        self.model, self.tokenizer = model, tokenizer
        self.name, self.template = name, template
        self.layer = layer % n_states  # one index per hidden state: -1 and n_states-1 agree
        self.pooling: Pooling = pooling
        self.max_length, self.batch_size, self.add_bos = max_length, batch_size, add_bos
        self.dim: int = model.config.hidden_size
        self.key: str = json.dumps(
            {
                "featurizer": "latent",
                "backbone": name,
                # The name alone would let two tiny backbones of different seeds (or two
                # revisions of one hub id) share cached features.
                "weights": weights_fingerprint(model),
                "layer": self.layer,
                "pooling": pooling,
                "template": template,
                "max_length": max_length,
                "add_bos": add_bos,
            },
            sort_keys=True,
        )

    @classmethod
    def from_backbone(
        cls, backbone: Backbone, model: nn.Module | None = None, **kw: Any
    ) -> LatentFeaturizer:
        """Features of `model` (default: the backbone's own; experts may be attached to it)."""
        kw.setdefault("add_bos", backbone.template.add_bos)
        return cls(
            backbone.model if model is None else model, backbone.tokenizer, name=backbone.name, **kw
        )

    def encode(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Format and tokenize, right-padded: ``input_ids`` and ``attention_mask``, (N, L)."""
        rendered = [self.prefix + t + self.suffix for t in texts]
        enc = self.tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)
        head = [self.tokenizer.bos_token_id] if self.add_bos else []
        rows: list[list[int]] = []
        for i, text in enumerate(texts):
            lo, hi = len(self.prefix), len(self.prefix) + len(text)
            ids, kept, n_query = enc["input_ids"][i], list(head), 0
            for token, (start, end) in zip(ids, enc["offset_mapping"][i], strict=True):
                # Tokens touching the query's chars count against max_length ("Ġword" holds
                # the template's space); only those wholly inside it are ever cut, so no
                # template text is lost.
                if end > start and start < hi and end > lo:
                    n_query += 1
                    if n_query > self.max_length and start >= lo and end <= hi:
                        continue
                kept.append(token)
            if not kept:
                raise ValueError(f"query {i} ({text!r}) is empty under template {self.template!r}")
            rows.append(kept)
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        width = max((len(r) for r in rows), default=0)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        return {"input_ids": input_ids, "attention_mask": mask}

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        if isinstance(texts, str):
            raise TypeError("LatentFeaturizer takes a sequence of texts, not one string")
        out = torch.zeros(len(texts), self.dim)
        if not len(texts):
            return out
        device = next(self.model.parameters()).device
        with (
            untouched(self.model),
            adapters_off(self.model),
            torch.no_grad(),
            Reporter(f"features {self.name}", len(texts), "queries") as progress,
        ):
            self.model.eval()
            decoder = self.model.get_decoder()
            for start in range(0, len(texts), self.batch_size):
                enc = self.encode(texts[start : start + self.batch_size])
                mask = enc["attention_mask"].to(device)
                # Real tokens get positions 0..n-1 whatever the padding (as RerankerScorer).
                position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)
                hidden = decoder(
                    input_ids=enc["input_ids"].to(device),
                    attention_mask=mask,
                    position_ids=position_ids,
                    use_cache=False,
                    output_hidden_states=True,
                ).hidden_states[self.layer]  # (B, L, H)
                # float32 before pooling: a bf16 mean over many tokens loses digits.
                out[start : start + len(mask)] = pool(hidden.float(), mask, self.pooling).cpu()
                progress.advance(len(mask))
        return out


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """(B, L, H) hidden states and (B, L) mask -> (B, H): last real token or mean of real ones."""
    if pooling == "last":
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last_positions(mask)]
    if pooling == "mean":
        weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
    raise ValueError(f"pooling={pooling!r}; expected one of {POOLINGS}")


def split_query_template(template: str) -> tuple[str, str]:
    """The literal text before and after the template's single ``{query}`` field."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise ValueError(f"query template {template!r}: {err}") from None
    fields = [(name, spec, conv) for _, name, spec, conv in parsed if name is not None]
    if fields != [("query", "", None)]:
        raise ValueError(
            f"query template {template!r} must hold exactly one plain {{query}} field and no "
            f"other (found {[name for name, _, _ in fields]}); write literal braces as {{{{ }}}}"
        )
    # Literals up to and including the one that precedes the field go before it.
    index = next(i for i, (_, name, _, _) in enumerate(parsed) if name is not None)
    before = [literal for literal, *_ in parsed[: index + 1]]
    after = [literal for literal, *_ in parsed[index + 1 :]]
    return "".join(before), "".join(after)


def weights_fingerprint(model: nn.Module) -> str:
    """A short digest of the first values of every base (non-LoRA) parameter tensor: cheap
    even for a GPU model, and different for different weights in practice."""
    sha = hashlib.sha256()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" not in name:  # adapters are off while featurizing; their weights don't count
                sha.update(str(param.dtype).encode())
                sha.update(param.detach().flatten()[:16].float().cpu().numpy().tobytes())
    return sha.hexdigest()[:16]


@contextmanager
def untouched(model: nn.Module) -> Iterator[None]:
    """Restore every module's training flag and every parameter's requires_grad on exit
    (peft re-enabling adapters makes the active one trainable again)."""
    modes = {module: module.training for module in model.modules()}
    grads = {param: param.requires_grad for param in model.parameters()}
    try:
        yield
    finally:
        for module, training in modes.items():
            module.training = training
        for param, requires_grad in grads.items():
            param.requires_grad_(requires_grad)


@contextmanager
def adapters_off(model: nn.Module) -> Iterator[None]:
    """Run `model` as its frozen base: every peft LoRA layer in it (a PeftModel's, or those
    `add_lora` injected into a plain model) switched off for the duration by its own flag,
    restored after. peft's `disable_adapter()` does the same and also toggles every adapter
    weight's requires_grad, which on a 135M model with three experts took 35 ms: more than
    routing a short query costs; features are computed without gradients anyway."""
    layers = [
        m for m in model.modules() if isinstance(m, BaseTunerLayer) and not m.disable_adapters
    ]
    try:
        for layer in layers:
            layer._disable_adapters = True
        yield
    finally:
        for layer in layers:
            layer._disable_adapters = False


class FeatureCache:
    """Features computed once per (featurizer, query list) and kept in `folder`.

    A file is named by the digest of the featurizer's `key` and the texts in order, so any
    change of model, layer, pooling, template or query set is a different file.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path(self, featurizer: Featurizer, texts: Sequence[str]) -> Path:
        digest = hashlib.sha256(
            json.dumps([featurizer.key, list(texts)], ensure_ascii=False).encode("utf-8")
        ).hexdigest()
        return self.folder / f"{digest[:32]}.safetensors"

    def get(self, featurizer: Featurizer, texts: Sequence[str]) -> torch.Tensor:
        """(N, dim) float32 features of `texts`, read from disk or computed and stored.

        A file that cannot be read or holds features of another shape or dtype (a run
        killed mid-write by an older r2r, a full disk) is recomputed and replaced, with a
        warning naming it.
        """
        path = self.path(featurizer, texts)
        if path.is_file():
            expected = (len(texts), featurizer.dim)
            try:
                features = load_file(path).get("features")
            except (OSError, SafetensorError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            else:
                if features is None:
                    reason = "no 'features' tensor"
                elif features.dtype != torch.float32 or tuple(features.shape) != expected:
                    reason = (
                        f"features {features.dtype} {tuple(features.shape)}, expected "
                        f"torch.float32 {expected}"
                    )
                else:
                    return features
            log.warning("%s: unreadable cache file (%s); recomputing", path, reason)
        features = featurizer(texts).float().contiguous()
        with atomic_path(path) as tmp:
            save_file({"features": features}, str(tmp), metadata={"key": featurizer.key})
        return features
