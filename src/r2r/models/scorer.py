"""The yes/no scorer: one number per (query, document) row from the answer-token logits."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers import DynamicCache

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
        self,
        model: nn.Module,
        *,
        yes_id: int,
        no_id: int,
        scoring: Scoring = "margin",
        share_prefix: bool,
        chunk_tokens: int | None,
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
        # Rows given with `groups` compute their shared token prefixes once (`forward`).
        self.share_prefix = share_prefix
        # Padded tokens per forward pass at most (rows ordered by length; None: no limit).
        self.chunk_tokens = chunk_tokens
        # A sliding window counts cache slots, which padded prefixes put further apart than
        # tokens: such models share prefixes only where every slot is within the window.
        self.window: int | None = getattr(config, "sliding_window", None)

    @classmethod
    def from_backbone(
        cls,
        backbone: Backbone,
        model: nn.Module | None = None,
        *,
        share_prefix: bool,
        chunk_tokens: int | None,
    ) -> RerankerScorer:
        """A scorer over ``model`` (default: the backbone's own) with its template's answers
        (the options: see `__init__` and the `scorer` config node)."""
        yes_id, no_id = yes_no_ids(backbone.tokenizer, backbone.template)
        return cls(
            backbone.model if model is None else model,
            yes_id=yes_id,
            no_id=no_id,
            scoring=backbone.template.scoring,
            share_prefix=share_prefix,
            chunk_tokens=chunk_tokens,
        )

    def last_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Final-norm hidden state at the last real token, (B, L) -> (B, H)."""
        hidden, _ = self.extend(None, None, input_ids, attention_mask.bool(), cache=False)
        rows = torch.arange(len(hidden), device=hidden.device)
        return hidden[rows, last_positions(attention_mask)]  # (B, H)

    def sorted_last_hidden(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, chunk: int | None
    ) -> torch.Tensor:
        """`last_hidden` of right-padded rows in chunks ordered by length (`chunks`), each
        cut to its own longest row."""
        lengths = attention_mask.sum(dim=1)
        order = torch.argsort(lengths, stable=True)
        parts = chunks(lengths[order].tolist(), chunk, self.chunk_tokens)
        if len(parts) == 1:
            return self.last_hidden(input_ids, attention_mask)
        found = []
        for part in parts:
            rows = order[part]
            width = int(lengths[rows].max())
            found.append(self.last_hidden(input_ids[rows, :width], attention_mask[rows, :width]))
        return torch.cat(found)[torch.argsort(order)]

    def extend(
        self,
        prefix: PrefixKV | None,
        rows: torch.Tensor | None,
        input_ids: torch.Tensor,
        mask: torch.Tensor,
        *,
        cache: bool = True,
    ) -> tuple[torch.Tensor, PrefixKV | None]:
        """Run right-padded token rows (m, S) (`mask` bool) after the cached prefixes
        `prefix[rows]` (none: from position 0): their final-norm hidden states (m, S, H),
        and (with `cache`) the keys and values of prefix + rows for the next extension."""
        if prefix is None:
            full = mask
            start = torch.zeros(len(input_ids), dtype=torch.long, device=input_ids.device)
            past = DynamicCache() if cache else None
        else:
            full = torch.cat([prefix.mask[rows], mask], dim=1)
            start = prefix.next_position[rows]
            past = DynamicCache(ddp_cache_data=prefix.select(rows))
        # Real tokens continue their prefix's positions whatever the padding; pads get a dummy.
        position_ids = start[:, None] + (mask.long().cumsum(dim=1) - 1).clamp(min=0)
        decoder = self.model.get_decoder()
        out = decoder(
            input_ids=input_ids,
            attention_mask=full.long(),
            position_ids=position_ids,
            use_cache=past is not None,
            **({cache_argument(decoder): past} if past is not None else {}),
        )
        if not cache:
            return out.last_hidden_state, None
        # Keys and values of pad slots are masked in every later step; zeroed, so that a pad
        # that saw no real token (NaN under some attention kernels) cannot leak through.
        keep = full[:, None, :, None]
        layers = [
            (layer.keys.masked_fill(~keep, 0), layer.values.masked_fill(~keep, 0))
            for layer in past.layers
        ]
        return out.last_hidden_state, PrefixKV(layers, full, start + mask.sum(dim=1))

    def shared_last_hidden(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        groups: torch.Tensor,
        *,
        chunk: int | None = None,
        memo: dict | None = None,
    ) -> torch.Tensor:
        """`last_hidden` computing each shared token prefix once (B, L) -> (B, H).

        The prefix that every row shares (the template up to the query) runs once, the rest
        of each group's shared prefix (its query) once per group, and each row's remaining
        tokens after them, from the cached keys and values. `groups` (B,) marks rows that may
        share more than the common prefix (one query's candidates); the shared lengths are
        the rows' longest common token prefixes, so grouping affects speed, never scores.
        The rows' remaining tokens run in chunks ordered by length (`chunks`).
        `memo` (a dict the caller keeps while the weights stay the same) keeps the common
        prefix's keys and values between calls.
        """
        mask = attention_mask.bool()
        lengths = mask.sum(dim=1)
        _, group_of = torch.unique(groups, return_inverse=True)  # (B,) in 0..G-1
        members = [torch.nonzero(group_of == g).flatten() for g in range(int(group_of.max()) + 1)]
        common = shared_length(input_ids, lengths)
        root = None
        if common:
            key = tuple(input_ids[0, :common].tolist())
            root = memo.get(key) if memo is not None else None
            if root is None:
                ones = torch.ones((1, common), dtype=torch.bool, device=mask.device)
                _, root = self.extend(None, None, input_ids[:1, :common], ones)
                if memo is not None:
                    memo.clear()  # one template per scoring call: keep only the newest
                    memo[key] = root
        # Each group's own shared tokens after the common prefix (its query).
        shared = [max(common, shared_length(input_ids[m], lengths[m])) for m in members]
        heads = [input_ids[m[0], common:n] for m, n in zip(members, shared, strict=True)]
        if any(len(h) for h in heads):
            ids, head_mask = pad_rows(heads)
            origin = torch.zeros(len(heads), dtype=torch.long, device=mask.device)
            _, prefix = self.extend(root, origin if root is not None else None, ids, head_mask)
        elif root is not None:
            prefix = root.repeat(len(heads))
        else:
            prefix = None
        # Each row's tokens after its group's shared prefix, shortest first.
        start = torch.tensor(shared, device=mask.device)[group_of]  # (B,)
        tails = [input_ids[r, int(start[r]) : int(lengths[r])] for r in range(len(input_ids))]
        order = sorted(range(len(tails)), key=lambda r: len(tails[r]))
        found = []
        for part in chunks([len(tails[r]) for r in order], chunk, self.chunk_tokens):
            part = order[part]
            ids, tail_mask = pad_rows([tails[r] for r in part])
            rows = group_of[part] if prefix is not None else None
            out, _ = self.extend(prefix, rows, ids, tail_mask, cache=False)
            last = tail_mask.sum(dim=1) - 1
            found.append(out[torch.arange(len(part), device=mask.device), last])  # (m, H)
        # Back to the rows' own order.
        place = torch.empty(len(order), dtype=torch.long, device=mask.device)
        place[torch.tensor(order, device=mask.device)] = torch.arange(
            len(order), device=mask.device
        )
        hidden = torch.cat(found)[place]
        return hidden

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

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        groups: torch.Tensor | None = None,
        *,
        chunk: int | None = None,
        memo: dict | None = None,
    ) -> torch.Tensor:
        """(B, L) ids and mask -> (B,) float32 scores.

        With `groups` (B,) (rows of one query share an id; rows right-padded, as
        `encode_pairs` makes them), shared prefixes are computed once
        (`shared_last_hidden`); rows run in chunks ordered by length of at most `chunk`
        rows and `chunk_tokens` padded tokens (`chunks`). `memo`: see `shared_last_hidden`.
        """
        slots = 2 * input_ids.shape[1]  # at most: the padded prefixes and the longest tail
        if groups is None or not self.share_prefix or (self.window and slots > self.window):
            hidden = self.sorted_last_hidden(input_ids, attention_mask, chunk=chunk)
        else:
            hidden = self.shared_last_hidden(
                input_ids, attention_mask, groups, chunk=chunk, memo=memo
            )
        logits = self.answer_logits(hidden)
        if self.scoring == "yes_logit":
            return logits[:, 0]
        return logits[:, 0] - logits[:, 1]


@dataclass(frozen=True)
class PrefixKV:
    """Cached keys and values of a batch of token prefixes, right-padded: per layer a
    (keys, values) pair, each (n, kv_heads, T, head_dim); `mask` (n, T) marks real slots,
    `next_position` (n,) is the position of each prefix's next token."""

    layers: list[tuple[torch.Tensor, torch.Tensor]]
    mask: torch.Tensor
    next_position: torch.Tensor

    def select(self, rows: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each layer's keys and values for prefix rows `rows` (m,), as a new cache's data."""
        return [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in self.layers]

    def repeat(self, n: int) -> PrefixKV:
        """A one-row prefix as `n` rows."""
        rows = torch.zeros(n, dtype=torch.long, device=self.mask.device)
        return PrefixKV(self.select(rows), self.mask[rows], self.next_position[rows])


def cache_argument(decoder: nn.Module) -> str:
    """The decoder's keyword for a KV cache: `cache` from transformers 5.24 (which
    deprecates `past_key_values`), `past_key_values` before."""
    return (
        "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"
    )


def shared_length(input_ids: torch.Tensor, lengths: torch.Tensor) -> int:
    """Length of the longest token prefix all rows share, leaving each row at least its
    last token (whose hidden state is the score)."""
    same = (input_ids == input_ids[:1]).all(dim=0).long()  # (L,)
    return min(int(same.cumprod(dim=0).sum()), int(lengths.min()) - 1)


def chunks(lengths: Sequence[int], rows: int | None, tokens: int | None) -> list[slice]:
    """Consecutive runs of rows of ascending `lengths`, each of at most `rows` rows and
    `tokens` padded tokens (rows x its longest; a longer row runs alone); None: no limit."""
    parts, start = [], 0
    for end in range(1, len(lengths) + 1):
        n = end - start
        if (rows is not None and n > rows) or (
            tokens is not None and n * lengths[end - 1] > tokens and n > 1
        ):
            parts.append(slice(start, end - 1))
            start = end - 1
    if start < len(lengths):
        parts.append(slice(start, len(lengths)))
    return parts


def pad_rows(rows: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D token rows -> right-padded ids (m, S) (pad id 0, masked) and bool mask (m, S)."""
    width = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long, device=rows[0].device)
    mask = torch.zeros((len(rows), width), dtype=torch.bool, device=rows[0].device)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = True
    return ids, mask


def query_groups(queries: Sequence[str]) -> torch.Tensor:
    """(N,) ids, equal for the rows of one query text: the rows whose prompt prefix the
    scorer computes once (`RerankerScorer.forward`)."""
    number: dict[str, int] = {}
    return torch.tensor([number.setdefault(q, len(number)) for q in queries], dtype=torch.long)


def score_pairs(
    scorer: RerankerScorer,
    encoder: PairEncoder,
    queries: Sequence[str],
    documents: Sequence[str],
    *,
    batch_size: int,
    what: str = "score",
    window: int = 8,
) -> list[float]:
    """Scores of (query, document) pairs, in the caller's order, on the scorer's device: the
    one scoring path of evaluation and of the deployed system. `what` names the work in
    progress lines (`r2r.progress`).

    The pairs of one query are scored together, so that their shared prompt prefix is
    computed once (`RerankerScorer.shared_last_hidden`), a window of about `window` batches
    at a time; inside a window the rows run in batches of `batch_size` ordered by length,
    so little of a batch is padding.
    """
    if len(queries) != len(documents):
        raise ValueError(f"{len(queries)} queries but {len(documents)} documents")
    device = next(scorer.parameters()).device
    group = query_groups(queries).tolist()
    order = sorted(range(len(queries)), key=group.__getitem__)  # a query's pairs together
    scores = [0.0] * len(queries)
    memo: dict = {}  # the template's keys and values, computed once for the whole call
    with torch.no_grad(), Reporter(what, len(queries), "pairs") as progress:
        at = 0
        while at < len(order):
            end = min(at + batch_size * window, len(order))
            while end < len(order) and group[order[end]] == group[order[end - 1]]:
                end += 1  # a window ends between two queries
            rows = order[at:end]
            batch = encoder([queries[i] for i in rows], [documents[i] for i in rows])
            found = scorer(
                batch["input_ids"].to(device),
                batch["attention_mask"].to(device),
                torch.tensor([group[i] for i in rows], device=device),
                chunk=batch_size,
                memo=memo,
            )
            for i, score in zip(rows, found.float().cpu().tolist(), strict=True):
                scores[i] = score
            progress.advance(len(rows))
            at = end
    return scores
