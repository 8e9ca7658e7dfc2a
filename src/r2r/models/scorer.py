"""The yes/no scorer: one number per (query, document) row from the answer-token logits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from r2r.models.templates import SCORINGS, PairEncoder, PromptTemplate, Scoring
from r2r.progress import Reporter

if TYPE_CHECKING:
    from r2r.models.backbones import Backbone


def yes_no_ids(tokenizer: Any, template: PromptTemplate) -> tuple[int, int]:
    """Token ids of the template's answer strings; each must be exactly one token."""
    out = []
    for field in ("yes_token", "no_token"):
        text = getattr(template, field)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(
                f"template.{field}={text!r} is {len(ids)} tokens {ids} for "
                f"{type(tokenizer).__name__}; the scorer needs a single token"
            )
        out.append(int(ids[0]))
    return out[0], out[1]


def last_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token per row, (B, L) -> (B,); any padding side."""
    length = attention_mask.shape[1]
    # argmax returns the first max: flip so it finds the LAST 1 of each row.
    return length - 1 - attention_mask.flip(1).long().argmax(dim=1)


class RerankerScorer(nn.Module):
    """Score = z_yes - z_no ("margin") or z_yes ("yes_logit") at the last real token.

    Runs only the decoder body (LoRA layers of a peft-wrapped model are inside it) and
    multiplies the last real hidden state by the two answer rows of the LM head, so the
    full vocabulary is never projected. Position ids come from the attention mask, so a
    row scores the same under left or right padding and whatever else is in the batch.
    """

    def __init__(
        self, model: nn.Module, *, yes_id: int, no_id: int, scoring: Scoring = "margin"
    ) -> None:
        super().__init__()
        if scoring not in SCORINGS:
            raise ValueError(f"scoring={scoring!r}; expected one of {SCORINGS}")
        head = model.get_output_embeddings()
        if head is None or getattr(head, "weight", None) is None:
            raise ValueError(f"{type(model).__name__} has no LM head with a weight matrix")
        if hasattr(head, "lora_A"):
            # A LoRA on the head would be skipped by reading its base rows below.
            raise ValueError("LoRA on the LM head is not supported by RerankerScorer")
        self.model = model
        self.yes_id, self.no_id, self.scoring = int(yes_id), int(no_id), scoring
        config = model.config
        # Gemma-2-style models squash logits; applied here as the full LM head would.
        self.softcap: float | None = getattr(config, "final_logit_softcapping", None)

    @classmethod
    def from_backbone(cls, backbone: Backbone, model: nn.Module | None = None) -> RerankerScorer:
        """A scorer over ``model`` (default: the backbone's own) with its template's answers."""
        yes_id, no_id = yes_no_ids(backbone.tokenizer, backbone.template)
        return cls(
            backbone.model if model is None else model,
            yes_id=yes_id,
            no_id=no_id,
            scoring=backbone.template.scoring,
        )

    def last_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Final-norm hidden state at the last real token, (B, L) -> (B, H)."""
        mask = attention_mask.long()
        # Real tokens get positions 0..n-1 whatever the padding; pads get a dummy 0.
        position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)
        # HF decoder bodies (Llama, Qwen, Mistral, Gemma) end with the final norm.
        hidden = self.model.get_decoder()(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=position_ids,
            use_cache=False,
        ).last_hidden_state  # (B, L, H)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return hidden[rows, last_positions(mask)]  # (B, H)

    def answer_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits of the yes and no tokens, (B, H) -> (B, 2), in float32."""
        head = self.model.get_output_embeddings()
        idx = torch.tensor([self.yes_id, self.no_id], device=hidden.device)
        weight = head.weight[idx]  # (2, H): two rows, never the whole vocabulary
        logits = hidden.float() @ weight.float().T  # (B, 2)
        if getattr(head, "bias", None) is not None:
            logits = logits + head.bias[idx].float()
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) ids and mask -> (B,) float32 scores."""
        logits = self.answer_logits(self.last_hidden(input_ids, attention_mask))
        if self.scoring == "yes_logit":
            return logits[:, 0]
        return logits[:, 0] - logits[:, 1]


def score_pairs(
    scorer: RerankerScorer,
    encoder: PairEncoder,
    queries: Sequence[str],
    documents: Sequence[str],
    *,
    batch_size: int,
    what: str = "score",
) -> list[float]:
    """Scores of (query, document) pairs, in order, in batches on the scorer's device: the
    one scoring path of evaluation and of the deployed system. `what` names the work in
    progress lines (`r2r.progress`)."""
    if len(queries) != len(documents):
        raise ValueError(f"{len(queries)} queries but {len(documents)} documents")
    device = next(scorer.parameters()).device
    scores: list[float] = []
    with torch.no_grad(), Reporter(what, len(queries), "pairs") as progress:
        for start in range(0, len(queries), batch_size):
            batch = encoder(
                queries[start : start + batch_size], documents[start : start + batch_size]
            )
            ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
            scores += scorer(ids, mask).float().cpu().tolist()
            progress.advance(len(ids))
    return scores
