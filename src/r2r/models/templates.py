"""Reranker prompt templates and pair encoding with template-safe truncation.

A template is everything a backbone config owns about its prompt: the text before the
pair (``prefix``), the pair itself (``body`` with ``{instruction}``, ``{query}`` and
``{document}`` placeholders), the text after it (``suffix``), the two answer tokens and
how they become a score. `encode_pairs` tokenizes prefix, body and suffix as separate
pieces (as the official Qwen3-Reranker code does) and only ever drops query or document
tokens, so the instruction, the markers and the assistant turn survive any truncation.
"""

from __future__ import annotations

import string
import threading
import weakref
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch

Scoring = Literal["margin", "yes_logit"]
SCORINGS: tuple[Scoring, ...] = ("margin", "yes_logit")
FIELDS: frozenset[str] = frozenset({"instruction", "query", "document"})

# Token classes inside the body (see `_classify`).
_TEMPLATE, _QUERY, _DOCUMENT = 0, 1, 2


@dataclass(frozen=True)
class PromptTemplate:
    """How one backbone reads a (query, document) pair and answers yes or no.

    prefix: text before the body (system turn + opening of the user turn).
    body: format string with ``{query}`` and ``{document}`` exactly once each and
        ``{instruction}`` at most once; ``{{``/``}}`` escape literal braces.
    suffix: text after the body (closing of the user turn + opening of the answer).
    instruction: the task instruction used when `encode_pairs` gets none.
    yes_token, no_token: the answer strings; each must be ONE token of the tokenizer.
    scoring: "margin" scores z_yes - z_no, "yes_logit" scores the raw z_yes
        (bge-reranker-v2-gemma).
    add_bos: put the tokenizer's BOS id before the prefix (tokenizers that need it,
        e.g. Gemma; Qwen has no BOS).
    body_separator: if non-empty, the body format is split at this string and every
        piece and separator is tokenized on its own, then concatenated. FlagEmbedding's
        gemma reranker builds its input that way; empty means one body piece (Qwen3).
    """

    prefix: str
    body: str
    suffix: str
    instruction: str = ""
    yes_token: str = "yes"
    no_token: str = "no"
    scoring: Scoring = "margin"
    add_bos: bool = False
    body_separator: str = ""

    def __post_init__(self) -> None:
        if self.scoring not in SCORINGS:
            raise ValueError(f"PromptTemplate.scoring={self.scoring!r}; expected one of {SCORINGS}")
        for piece in self.pieces:
            _parse(piece)  # raises on unknown fields or bad braces
        names = [name for piece in self.pieces for _, name in _parse(piece) if name is not None]
        for name in ("query", "document"):
            if names.count(name) != 1:
                raise ValueError(
                    f"PromptTemplate.body={self.body!r} must contain {{{name}}} exactly once "
                    f"(found {names.count(name)})"
                )
        if names.count("instruction") > 1:
            raise ValueError(f"PromptTemplate.body={self.body!r} has {{instruction}} twice")
        if not self.yes_token or not self.no_token:
            raise ValueError("PromptTemplate.yes_token and no_token must be non-empty")

    @property
    def pieces(self) -> list[str]:
        """The body format strings tokenized separately (one unless body_separator is set)."""
        return self.body.split(self.body_separator) if self.body_separator else [self.body]


def _parse(fmt: str) -> list[tuple[str, str | None]]:
    """Split a body format into (literal text, field name or None) pairs."""
    out: list[tuple[str, str | None]] = []
    try:
        parsed = list(string.Formatter().parse(fmt))
    except ValueError as err:
        raise ValueError(f"PromptTemplate.body piece {fmt!r}: {err}") from err
    for literal, name, spec, conversion in parsed:
        if name is not None and (name not in FIELDS or spec or conversion):
            raise ValueError(
                f"PromptTemplate.body piece {fmt!r}: unknown placeholder {{{name}}}; "
                f"allowed: {sorted(FIELDS)}"
            )
        out.append((literal, name))
    return out


def _render_piece(fmt: str, values: dict[str, str]) -> tuple[str, dict[str, tuple[int, int]]]:
    """Fill one body piece; returns the text and the char span of each filled field."""
    parts: list[str] = []
    spans: dict[str, tuple[int, int]] = {}
    pos = 0
    for literal, name in _parse(fmt):
        parts.append(literal)
        pos += len(literal)
        if name is not None:
            parts.append(values[name])
            spans[name] = (pos, pos + len(values[name]))
            pos += len(values[name])
    return "".join(parts), spans


# The official Qwen3-Reranker prompt (model card of Qwen/Qwen3-Reranker-0.6B): scores are
# near-random with any other wording, so every character here is load-bearing.
QWEN3_SYSTEM = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".'
)
QWEN3_RERANKER = PromptTemplate(
    prefix=f"<|im_start|>system\n{QWEN3_SYSTEM}<|im_end|>\n<|im_start|>user\n",
    body="<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}",
    suffix="<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
    instruction="Given a web search query, retrieve relevant passages that answer the query",
    yes_token="yes",
    no_token="no",
    scoring="margin",
)

# The same prompt for ChatML models without <think> tokens (SmolLM2): the assistant turn
# opens and the next token is the answer.
CHATML_RERANKER = PromptTemplate(
    prefix=QWEN3_RERANKER.prefix,
    body=QWEN3_RERANKER.body,
    suffix="<|im_end|>\n<|im_start|>assistant\n",
    instruction=QWEN3_RERANKER.instruction,
)

# BAAI/bge-reranker-v2-gemma, as its model card's `get_inputs` (FlagEmbedding's LLM
# reranker) builds it: [bos] + tok("A: {query}") + tok("\n") + tok("B: {passage}")
# + tok("\n") + tok(prompt), each piece tokenized on its own, scored by the raw logit of
# "Yes" at the last position. Reproduced exactly when nothing is truncated. Not
# reproduced: its length rule (query <= 3/4 of max_length, then max_length for the pair
# with the prompt appended on top); r2r's rule (query budget, then the document, template
# never cut, total <= max_length) applies to every backbone.
BGE_GEMMA_PROMPT = (
    "Given a query A and a passage B, determine whether the passage contains an answer to "
    "the query by providing a prediction of either 'Yes' or 'No'."
)
BGE_RERANKER_V2_GEMMA = PromptTemplate(
    prefix="",
    body="A: {query}\nB: {document}\n{instruction}",
    suffix="",
    instruction=BGE_GEMMA_PROMPT,
    yes_token="Yes",
    no_token="No",
    scoring="yes_logit",
    add_bos=True,
    body_separator="\n",
)

TEMPLATES: dict[str, PromptTemplate] = {
    "qwen3_reranker": QWEN3_RERANKER,
    "chatml_reranker": CHATML_RERANKER,
    "bge_reranker_v2_gemma": BGE_RERANKER_V2_GEMMA,
}


def named_template(name: str, **overrides: Any) -> PromptTemplate:
    """A shipped template by name, with fields replaced (a Hydra `_target_`)."""
    if name not in TEMPLATES:
        raise ValueError(f"unknown template {name!r}; known: {sorted(TEMPLATES)}")
    fields = {**TEMPLATES[name].__dict__, **overrides}
    return PromptTemplate(**fields)


def render(
    template: PromptTemplate, query: str, document: str, instruction: str | None = None
) -> str:
    """The full prompt string (BOS excluded), for tests and debugging."""
    values = {
        "instruction": template.instruction if instruction is None else instruction,
        "query": query,
        "document": document,
    }
    body = template.body_separator.join(
        _render_piece(piece, values)[0] for piece in template.pieces
    )
    return template.prefix + body + template.suffix


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def _classify(
    offsets: np.ndarray, spans: dict[str, tuple[int, int]]
) -> np.ndarray:  # offsets (n, 2) -> classes (n,)
    """Query / document / template class of each token from its char offsets.

    A token is a query (document) token only if its chars lie inside the query
    (document) span; a token that straddles a boundary belongs to the template, so
    dropping query/document tokens never removes template characters.
    """
    classes = np.full(len(offsets), _TEMPLATE, dtype=np.int64)
    if len(offsets) == 0:
        return classes
    start, end = offsets[:, 0], offsets[:, 1]
    nonempty = end > start
    for name, cls in (("query", _QUERY), ("document", _DOCUMENT)):
        if name in spans:
            lo, hi = spans[name]
            classes[nonempty & (start >= lo) & (end <= hi)] = cls
    return classes


def template_length(
    tokenizer: Any, template: PromptTemplate, instruction: str | None = None
) -> int:
    """Tokens the template takes with an empty query and document.

    Approximate for real pairs (a token or so per field edge): text around an empty field
    may merge (" \n"), and with real text a token straddling a field edge (": what")
    counts as template. `encode_pairs` always uses each pair's exact count.
    """
    enc = encode_pairs(
        tokenizer, template, [""], [""], max_length=1 << 30, max_query_length=0,
        instruction=instruction,
    )  # fmt: skip
    return int(enc["attention_mask"].sum())


def encode_pairs(
    tokenizer: Any,
    template: PromptTemplate,
    queries: Sequence[str],
    documents: Sequence[str],
    *,
    max_length: int,
    max_query_length: int,
    instruction: str | None = None,
) -> dict[str, torch.Tensor]:
    """Tokenize (query, document) pairs into the template, right-padded.

    Returns ``input_ids`` and ``attention_mask``, LongTensor (B, L), L = longest row
    (<= max_length). The query is cut to at most ``max_query_length`` tokens, then the
    document to fit ``max_length``; prefix, instruction, markers and suffix are never
    cut. Without truncation the ids equal tokenizing prefix, body and suffix as three
    pieces. Padding is on the right (real tokens keep positions 0..n-1); the pad id is the
    tokenizer's pad token, else its EOS, else 0 — masked out either way.
    """
    rows = encode_rows(
        tokenizer,
        template,
        queries,
        documents,
        max_length=max_length,
        max_query_length=max_query_length,
        instruction=instruction,
    )
    return pad_encoded(tokenizer, rows)


def encode_rows(
    tokenizer: Any,
    template: PromptTemplate,
    queries: Sequence[str],
    documents: Sequence[str],
    *,
    max_length: int,
    max_query_length: int,
    instruction: str | None = None,
) -> list[np.ndarray]:
    """`encode_pairs`' rows before padding: each pair's token ids (int64, real length)."""
    if len(queries) != len(documents):
        raise ValueError(f"{len(queries)} queries but {len(documents)} documents")
    if max_query_length < 0:
        raise ValueError(f"max_query_length={max_query_length} must be >= 0")
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"encode_pairs needs a fast tokenizer (char offsets); got {type(tokenizer).__name__}"
        )
    instruction = template.instruction if instruction is None else instruction
    head = _ids(tokenizer, template.prefix)
    if template.add_bos:
        if tokenizer.bos_token_id is None:
            raise ValueError("template.add_bos=True but the tokenizer has no BOS token")
        head = [tokenizer.bos_token_id, *head]
    tail = _ids(tokenizer, template.suffix)
    sep = _ids(tokenizer, template.body_separator)

    # Per row, a list of (ids, classes) segments in order: pieces with separators between.
    n = len(queries)
    rows: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(n)]
    sep_seg = (np.asarray(sep, dtype=np.int64), np.full(len(sep), _TEMPLATE, dtype=np.int64))
    for k, piece in enumerate(template.pieces):
        texts, spans = [], []
        for q, d in zip(queries, documents, strict=True):
            text, span = _render_piece(
                piece, {"instruction": instruction, "query": q, "document": d}
            )
            texts.append(text)
            spans.append(span)
        # One batched call per piece (fast tokenizers parallelise lists).
        enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True) if n else None
        for i in range(n):
            ids = np.asarray(enc["input_ids"][i], dtype=np.int64)
            offsets = np.asarray(enc["offset_mapping"][i], dtype=np.int64).reshape(-1, 2)
            if k > 0:
                rows[i].append(sep_seg)
            rows[i].append((ids, _classify(offsets, spans[i])))

    input_ids: list[np.ndarray] = []
    for i in range(n):
        ids = np.concatenate([seg[0] for seg in rows[i]])
        classes = np.concatenate([seg[1] for seg in rows[i]])
        fixed = len(head) + len(tail) + int((classes == _TEMPLATE).sum())
        n_query, n_doc = int((classes == _QUERY).sum()), int((classes == _DOCUMENT).sum())
        if fixed + min(n_doc, 1) > max_length:
            raise ValueError(
                f"max_length={max_length} cannot hold the template ({fixed} tokens for pair "
                f"{i}) plus one document token; raise max_length or shorten the template"
            )
        # The query may not take the slot of the document's first token.
        keep_query = min(n_query, max_query_length, max_length - fixed - min(n_doc, 1))
        keep_doc = min(n_doc, max_length - fixed - keep_query)
        # Keep the first tokens of each field: cumulative counts within the class.
        keep = (
            (classes == _TEMPLATE)
            | ((classes == _QUERY) & (np.cumsum(classes == _QUERY) <= keep_query))
            | ((classes == _DOCUMENT) & (np.cumsum(classes == _DOCUMENT) <= keep_doc))
        )
        input_ids.append(
            np.concatenate([np.asarray(head, np.int64), ids[keep], np.asarray(tail, np.int64)])
        )

    return input_ids


def pad_encoded(tokenizer: Any, input_ids: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
    """Rows of token ids -> right-padded ``input_ids`` and ``attention_mask`` (B, L)."""
    n = len(input_ids)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    width = max((len(r) for r in input_ids), default=0)
    out_ids = np.full((n, width), pad_id, dtype=np.int64)
    mask = np.zeros((n, width), dtype=np.int64)
    for i, row in enumerate(input_ids):
        out_ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return {"input_ids": torch.from_numpy(out_ids), "attention_mask": torch.from_numpy(mask)}


@dataclass(frozen=True)
class PairEncoder:
    """(query, document) texts -> padded model inputs with a backbone's template
    (`encode_pairs` with the prompt lengths bound: the `inputs` config node).

    Encoded rows are remembered per tokenizer (`RowCache`, shared by every encoder of that
    tokenizer, least recently used dropped first): training revisits its groups every
    epoch, and evaluation scores the same lists under several adapters, so a pair is
    tokenized once. The rows are the same either way."""

    tokenizer: Any
    template: PromptTemplate
    max_length: int
    max_query_length: int
    instruction: str | None  # None: the template's own

    def __call__(self, queries: Sequence[str], documents: Sequence[str]) -> dict[str, torch.Tensor]:
        if len(queries) != len(documents):
            raise ValueError(f"{len(queries)} queries but {len(documents)} documents")
        cache = RowCache.of(self.tokenizer)
        settings = (self.template, self.max_length, self.max_query_length, self.instruction)
        keys = [(settings, q, d) for q, d in zip(queries, documents, strict=True)]
        rows = [cache.get(key) for key in keys]
        if missing := sorted({i for i, row in enumerate(rows) if row is None}):
            new = encode_rows(
                self.tokenizer,
                self.template,
                [queries[i] for i in missing],
                [documents[i] for i in missing],
                max_length=self.max_length,
                max_query_length=self.max_query_length,
                instruction=self.instruction,
            )
            for i, row in zip(missing, new, strict=True):
                rows[i] = row
                cache.put(keys[i], row)
        return pad_encoded(self.tokenizer, rows)


class RowCache:
    """Encoded rows by (encoder settings, query, document), for one tokenizer; the least
    recently used go once the rows hold more than `max_tokens` tokens (64 MiB of ids at
    the default). Rows are read-only arrays: a caller cannot change a remembered row."""

    MAX_TOKENS = 1 << 23
    _by_tokenizer: ClassVar[weakref.WeakKeyDictionary[Any, RowCache]] = weakref.WeakKeyDictionary()

    def __init__(self, max_tokens: int = MAX_TOKENS) -> None:
        self.max_tokens = max_tokens
        self.tokens = 0
        self.lock = threading.Lock()
        self.rows: OrderedDict[Hashable, np.ndarray] = OrderedDict()

    @classmethod
    def of(cls, tokenizer: Any) -> RowCache:
        """The tokenizer's cache (made on first use; gone with the tokenizer)."""
        cache = cls._by_tokenizer.get(tokenizer)
        if cache is None:
            cache = cls._by_tokenizer[tokenizer] = cls()
        return cache

    def get(self, key: Hashable) -> np.ndarray | None:
        with self.lock:  # threads may share a tokenizer (a server's, a user's)
            row = self.rows.get(key)
            if row is not None:
                self.rows.move_to_end(key)
            return row

    def put(self, key: Hashable, row: np.ndarray) -> None:
        row.flags.writeable = False
        with self.lock:
            if key in self.rows:
                return
            self.rows[key] = row
            self.tokens += len(row)
            while self.tokens > self.max_tokens and self.rows:
                self.tokens -= len(self.rows.popitem(last=False)[1])
