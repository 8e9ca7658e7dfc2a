from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from r2r.models.templates import (
    BGE_RERANKER_V2_GEMMA,
    CHATML_RERANKER,
    QWEN3_RERANKER,
    PairEncoder,
    PromptTemplate,
    RowCache,
    _classify,
    encode_pairs,
    named_template,
    render,
    template_length,
)


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# --- the shipped templates -------------------------------------------------------------


def test_qwen3_template_is_the_official_prompt():
    # Typed out from the Qwen3-Reranker model card's example code, character for character.
    official = (
        "<|im_start|>system\nJudge whether the Document meets the requirements based on the "
        'Query and the Instruct provided. Note that the answer can only be "yes" or "no".'
        "<|im_end|>\n<|im_start|>user\n"
        "<Instruct>: Given a web search query, retrieve relevant passages that answer the query"
        "\n<Query>: what is rope?\n<Document>: RoPE rotates q and k."
        "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    assert render(QWEN3_RERANKER, "what is rope?", "RoPE rotates q and k.") == official
    assert (QWEN3_RERANKER.yes_token, QWEN3_RERANKER.no_token) == ("yes", "no")
    assert QWEN3_RERANKER.scoring == "margin"


def test_chatml_template_differs_only_by_the_think_block():
    assert CHATML_RERANKER.prefix == QWEN3_RERANKER.prefix
    assert CHATML_RERANKER.body == QWEN3_RERANKER.body
    assert CHATML_RERANKER.suffix == "<|im_end|>\n<|im_start|>assistant\n"


def test_bge_gemma_template_renders_the_model_card_prompt():
    text = render(BGE_RERANKER_V2_GEMMA, "what is panda?", "The giant panda is a bear.")
    assert text == (
        "A: what is panda?\nB: The giant panda is a bear.\nGiven a query A and a passage B, "
        "determine whether the passage contains an answer to the query by providing a "
        "prediction of either 'Yes' or 'No'."
    )
    assert BGE_RERANKER_V2_GEMMA.scoring == "yes_logit"
    assert BGE_RERANKER_V2_GEMMA.yes_token == "Yes"
    assert BGE_RERANKER_V2_GEMMA.add_bos


def test_render_instruction_override_and_literal_braces_in_text():
    text = render(QWEN3_RERANKER, "{x}", "a {document} b", instruction="Find law")
    assert "<Instruct>: Find law\n<Query>: {x}\n<Document>: a {document} b<|im_end|>" in text


def test_named_template_with_overrides():
    t = named_template("qwen3_reranker", instruction="Find statutes")
    assert t == dataclasses.replace(QWEN3_RERANKER, instruction="Find statutes")
    with pytest.raises(ValueError, match="unknown template 'nope'"):
        named_template("nope")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("<Query>: {query}", r"\{document\} exactly once \(found 0\)"),
        ("{query} {document} {query}", r"\{query\} exactly once \(found 2\)"),
        ("{query} {document} {title}", r"unknown placeholder \{title\}"),
        ("{query} {document} {", "Single '{'"),
    ],
)
def test_bad_body_is_rejected(body, message):
    with pytest.raises(ValueError, match=message):
        PromptTemplate(prefix="", body=body, suffix="")


def test_bad_scoring_is_rejected():
    with pytest.raises(ValueError, match="scoring='logit'"):
        PromptTemplate(prefix="", body="{query}{document}", suffix="", scoring="logit")


# --- token classification ----------------------------------------------------------------


def test_classify_straddling_tokens_belong_to_the_template():
    # text: "Q: abc D: xyz"; query span (3, 6), document span (9, 12)
    offsets = np.array([[0, 2], [2, 4], [4, 6], [6, 9], [9, 11], [11, 13], [13, 13]])
    classes = _classify(offsets, {"query": (3, 6), "document": (9, 12)})
    # [0,2) template; [2,4) straddles ' a' -> template; [4,6) query; [6,9) template;
    # [9,11) document; [11,13) runs past the document -> template; empty -> template.
    assert classes.tolist() == [0, 0, 1, 0, 2, 0, 0]


# --- encode_pairs --------------------------------------------------------------------------


@pytest.mark.parametrize("template", [QWEN3_RERANKER, CHATML_RERANKER])
def test_untruncated_ids_equal_three_piece_tokenization(tiny_qwen, pairs, template):
    tok = tiny_qwen.tokenizer
    queries, documents = pairs
    enc = encode_pairs(tok, template, queries, documents, max_length=4096, max_query_length=512)
    assert enc["input_ids"].dtype == torch.long and enc["attention_mask"].dtype == torch.long
    for i, (q, d) in enumerate(zip(queries, documents, strict=True)):
        body = template.body.format(instruction=template.instruction, query=q, document=d)
        expected = ids(tok, template.prefix) + ids(tok, body) + ids(tok, template.suffix)
        n = int(enc["attention_mask"][i].sum())
        assert enc["input_ids"][i, :n].tolist() == expected
        # Right padding: ones then zeros, pad id after the real tokens.
        assert enc["attention_mask"][i].tolist() == [1] * n + [0] * (enc["input_ids"].shape[1] - n)
        assert (enc["input_ids"][i, n:] == tok.pad_token_id).all()
    assert enc["input_ids"].shape[1] == int(enc["attention_mask"].sum(1).max())


def test_instruction_argument_replaces_the_template_instruction(tiny_qwen):
    tok = tiny_qwen.tokenizer
    enc = encode_pairs(
        tok, QWEN3_RERANKER, ["q"], ["d"], max_length=512, max_query_length=64,
        instruction="Find the statute",
    )  # fmt: skip
    assert tok.decode(enc["input_ids"][0]) == render(QWEN3_RERANKER, "q", "d", "Find the statute")


def _field(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0]


def _kinds(tok, t: PromptTemplate, query: str, document: str) -> tuple[list[int], list[str], int]:
    """Untruncated body ids, each token's kind (q/d/t) and the template token count.

    Written independently of encode_pairs: a token is a query (document) token when its
    chars lie inside the query (document).
    """
    body = t.body.format(instruction=t.instruction, query=query, document=document)
    full = tok(body, add_special_tokens=False, return_offsets_mapping=True)
    q0, d0 = body.index(query), body.rindex(document)
    kinds = [
        "q" if q0 <= s and e <= q0 + len(query) else "d" if d0 <= s else "t"
        for s, e in full["offset_mapping"]
    ]
    n_fixed = kinds.count("t") + len(ids(tok, t.prefix)) + len(ids(tok, t.suffix))
    return full["input_ids"], kinds, n_fixed


def test_truncation_cuts_query_then_document_never_the_template(tiny_qwen):
    tok = tiny_qwen.tokenizer
    t = QWEN3_RERANKER
    query = " ".join(["statute appeal court"] * 20)
    document = " ".join(["the patient took a drug dose"] * 100)
    body_ids, kinds, n_fixed = _kinds(tok, t, query, document)
    max_length, max_query_length = n_fixed + 40, 10
    enc = encode_pairs(
        tok, t, [query, "short"], [document, "tiny doc"],
        max_length=max_length, max_query_length=max_query_length,
    )  # fmt: skip
    row = enc["input_ids"][0].tolist()
    assert enc["attention_mask"][0].sum() == max_length  # the document filled the rest
    # Exact ids: the untruncated body minus the query tokens after the 10th and the
    # document tokens that do not fit.
    budget = {"t": len(kinds), "q": max_query_length, "d": max_length - n_fixed - max_query_length}
    kept = []
    for token, kind in zip(body_ids, kinds, strict=True):
        if budget[kind] > 0:
            kept.append(token)
            budget[kind] -= 1
    assert row == ids(tok, t.prefix) + kept + ids(tok, t.suffix)
    text = tok.decode(row)
    assert text.startswith(t.prefix + f"<Instruct>: {t.instruction}\n<Query>:")
    assert text.endswith(t.suffix)
    kept_query = _field(text, "<Query>:", "\n<Document>:")
    kept_doc = _field(text, "<Document>:", t.suffix)
    # Each kept field is a strict prefix of the original (the leading space belongs to ": ").
    assert (" " + query).startswith(kept_query) and len(kept_query) < len(query)
    assert (" " + document).startswith(kept_doc) and len(kept_doc) < len(document)
    # The short pair is not truncated at all.
    short = encode_pairs(tok, t, ["short"], ["tiny doc"], max_length=4096, max_query_length=512)
    n = int(short["attention_mask"].sum())
    assert enc["input_ids"][1, :n].tolist() == short["input_ids"][0, :n].tolist()


def test_query_budget_zero_drops_the_query(tiny_qwen):
    tok = tiny_qwen.tokenizer
    enc = encode_pairs(
        tok, QWEN3_RERANKER, ["secret words"], ["doc"], max_length=512, max_query_length=0
    )
    text = tok.decode(enc["input_ids"][0])
    # Only a token straddling ": " and the first word can survive (it holds template chars).
    kept = _field(text, "<Query>:", "\n<Document>:")
    assert " secret words".startswith(kept) and "words" not in kept
    assert text.endswith(render(QWEN3_RERANKER, "", "doc").split("<Query>: ")[1])


def test_tight_max_length_keeps_one_document_token(tiny_qwen):
    tok = tiny_qwen.tokenizer
    query, document = "many query words here", "document words"
    _, kinds, n_fixed = _kinds(tok, QWEN3_RERANKER, query, document)
    enc = encode_pairs(
        tok, QWEN3_RERANKER, [query], [document], max_length=n_fixed + 1, max_query_length=100
    )
    assert enc["attention_mask"].sum() == n_fixed + 1
    # The query gave up all its own tokens so that the document keeps its first one.
    row = enc["input_ids"][0].tolist()
    full = encode_pairs(
        tok, QWEN3_RERANKER, [query], [document], max_length=512, max_query_length=100
    )
    full_row = full["input_ids"][0].tolist()
    n_head = len(ids(tok, QWEN3_RERANKER.prefix))
    dropped = [
        n_head + j for j, k in enumerate(kinds) if k == "q" or (k == "d" and kinds[:j].count("d"))
    ]
    assert row == [x for j, x in enumerate(full_row) if j not in dropped]


def test_max_length_below_template_raises(tiny_qwen):
    fixed = template_length(tiny_qwen.tokenizer, QWEN3_RERANKER)
    with pytest.raises(ValueError, match=f"max_length={fixed} cannot hold the template"):
        encode_pairs(
            tiny_qwen.tokenizer, QWEN3_RERANKER, ["q"], ["d"],
            max_length=fixed, max_query_length=8,
        )  # fmt: skip


def test_bad_inputs_raise(tiny_qwen):
    tok = tiny_qwen.tokenizer
    with pytest.raises(ValueError, match="2 queries but 1 documents"):
        encode_pairs(tok, QWEN3_RERANKER, ["a", "b"], ["c"], max_length=64, max_query_length=8)
    with pytest.raises(ValueError, match="max_query_length=-1"):
        encode_pairs(tok, QWEN3_RERANKER, ["a"], ["c"], max_length=64, max_query_length=-1)
    with pytest.raises(ValueError, match="BOS"):
        encode_pairs(tok, BGE_RERANKER_V2_GEMMA, ["a"], ["c"], max_length=64, max_query_length=8)


def test_empty_batch(tiny_qwen):
    enc = encode_pairs(
        tiny_qwen.tokenizer, QWEN3_RERANKER, [], [], max_length=64, max_query_length=8
    )
    assert enc["input_ids"].shape == (0, 0)


def test_body_separator_tokenizes_pieces_like_flagembedding(tiny_qwen):
    # bge-reranker-v2-gemma's get_inputs: [bos] + A-part + sep + B-part + sep + prompt.
    tok = tiny_qwen.tokenizer
    bos = tok.convert_tokens_to_ids("<|im_start|>")
    # The tiny tokenizer has no BOS; a copy that borrows <|im_start|> as one.
    tok_bos = tok.__class__(tokenizer_object=tok.backend_tokenizer, bos_token="<|im_start|>")
    q, d = "what is panda?", "The giant panda is a bear species."
    enc = encode_pairs(
        tok_bos, BGE_RERANKER_V2_GEMMA, [q], [d], max_length=512, max_query_length=64
    )
    sep = ids(tok, "\n")
    expected = (
        [bos, *ids(tok, f"A: {q}"), *sep, *ids(tok, f"B: {d}"), *sep, *ids(tok, BGE_RERANKER_V2_GEMMA.instruction)]
    )  # fmt: skip
    assert enc["input_ids"][0].tolist() == expected


def test_the_pair_encoder_tokenizes_a_pair_once_and_returns_the_same_rows(tiny_qwen) -> None:
    """A second call for pairs it has seen does not call the tokenizer; its output equals
    `encode_pairs` exactly, for any mix of seen and new pairs and other settings."""
    calls = []

    class Counting:  # the tiny tokenizer, counting the texts it is asked to tokenize
        def __init__(self, inner) -> None:
            self.inner = inner

        def __call__(self, texts, **kwargs):
            calls.append(1 if isinstance(texts, str) else len(texts))
            return self.inner(texts, **kwargs)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    tok = Counting(tiny_qwen.tokenizer)
    t = tiny_qwen.template
    queries, docs = ["bail", "aspirin dose", "bail"], ["court", "75 mg daily", "the appeal"]
    encode = PairEncoder(tok, t, max_length=112, max_query_length=3, instruction=None)
    first = encode(queries, docs)
    assert sum(calls) > 0
    calls.clear()
    again = encode(queries[::-1], docs[::-1])
    assert calls == []  # every pair seen: no tokenizer call
    want = encode_pairs(tiny_qwen.tokenizer, t, queries[::-1], docs[::-1], max_length=112,
                        max_query_length=3)  # fmt: skip
    assert torch.equal(again["input_ids"], want["input_ids"])
    assert torch.equal(again["attention_mask"], want["attention_mask"])
    assert torch.equal(first["input_ids"][0], again["input_ids"][2])
    # One new pair among seen ones: only its texts are tokenized.
    mixed = encode(["bail", "dividend"], ["court", "paid in May"])
    assert sum(calls) == len(t.pieces) + 2  # head and tail pieces, then the new pair's pieces
    want = encode_pairs(tiny_qwen.tokenizer, t, ["bail", "dividend"], ["court", "paid in May"],
                        max_length=112, max_query_length=3)  # fmt: skip
    assert torch.equal(mixed["input_ids"], want["input_ids"])
    # Other settings are other rows, not the cached ones.
    longer = PairEncoder(tok, t, max_length=256, max_query_length=32, instruction=None)
    got = longer(queries, docs)["input_ids"]
    want = encode_pairs(tiny_qwen.tokenizer, t, queries, docs, max_length=256, max_query_length=32)
    assert torch.equal(got, want["input_ids"])


def test_the_row_cache_drops_the_least_recently_used_past_its_token_budget() -> None:
    cache = RowCache(max_tokens=5)
    cache.put("a", np.arange(2))
    cache.put("b", np.arange(2))
    assert cache.get("a") is not None  # now "b" is the least recently used
    cache.put("c", np.arange(2))  # 6 tokens > 5: "b" goes
    assert (cache.get("b"), cache.tokens, list(cache.rows)) == (None, 4, ["a", "c"])
    with pytest.raises(ValueError, match="read-only"):
        cache.get("a")[0] = 7
