from __future__ import annotations

import dataclasses

import pytest
import torch

from r2r.models.backbones import load_tiny
from r2r.models.scorer import RerankerScorer, last_positions, yes_no_ids
from r2r.models.templates import QWEN3_RERANKER, encode_pairs


def encode(backbone, queries, documents):
    return encode_pairs(
        backbone.tokenizer, backbone.template, queries, documents,
        max_length=256, max_query_length=32,
    )  # fmt: skip


def to_left_padding(enc: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Move each row's pads from the right to the left."""
    ids, mask = enc["input_ids"].clone(), enc["attention_mask"].clone()
    for i in range(ids.shape[0]):
        pad = int((mask[i] == 0).sum())
        ids[i] = ids[i].roll(pad)
        mask[i] = mask[i].roll(pad)
    return {"input_ids": ids, "attention_mask": mask}


def reference_scores(model, enc, yes_id, no_id) -> torch.Tensor:
    """The plain full-vocabulary LM forward, one row at a time without padding."""
    out = []
    for ids, mask in zip(enc["input_ids"], enc["attention_mask"], strict=True):
        real = ids[mask.bool()][None]  # (1, n)
        logits = model(input_ids=real).logits[0, -1]  # (V,)
        out.append(logits[yes_id] - logits[no_id])
    return torch.stack(out)


def test_yes_no_ids(tiny_qwen):
    tok = tiny_qwen.tokenizer
    yes_id, no_id = yes_no_ids(tok, QWEN3_RERANKER)
    assert tok.convert_ids_to_tokens([yes_id, no_id]) == ["yes", "no"]
    bad = dataclasses.replace(QWEN3_RERANKER, yes_token="yes indeed")
    with pytest.raises(ValueError, match=r"template.yes_token='yes indeed' is \d+ tokens"):
        yes_no_ids(tok, bad)


def test_last_positions_any_padding_side():
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 0, 0]])
    assert last_positions(mask).tolist() == [2, 4, 4, 2]


@pytest.mark.parametrize("arch", ["tiny_qwen", "tiny_mistral"])
@pytest.mark.parametrize("side", ["right", "left"])
@torch.no_grad()
def test_margin_equals_full_lm_forward(request, pairs, arch, side):
    backbone = request.getfixturevalue(arch)
    enc = encode(backbone, *pairs)
    if side == "left":
        enc = to_left_padding(enc)
    scorer = RerankerScorer.from_backbone(backbone, share_prefix=True, chunk_tokens=None)
    expected = reference_scores(backbone.model, enc, scorer.yes_id, scorer.no_id)
    scores = scorer(**enc)
    assert scores.shape == (3,) and scores.dtype == torch.float32
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=0)
    # Random weights still separate the pairs: the check compares distinct numbers.
    assert scores.std() > 1e-3


@torch.no_grad()
def test_score_does_not_depend_on_the_rest_of_the_batch(tiny_qwen, pairs):
    queries, documents = pairs
    scorer = RerankerScorer.from_backbone(tiny_qwen, share_prefix=True, chunk_tokens=None)
    batch = scorer(**encode(tiny_qwen, queries, documents))
    alone = torch.cat(
        [scorer(**encode(tiny_qwen, [q], [d])) for q, d in zip(queries, documents, strict=True)]
    )
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=0)
    left = scorer(**to_left_padding(encode(tiny_qwen, queries, documents)))
    torch.testing.assert_close(left, alone, atol=1e-5, rtol=0)


@torch.no_grad()
def test_yes_logit_mode_and_no_full_vocabulary_projection(tiny_mistral, pairs):
    yes_id, no_id = yes_no_ids(tiny_mistral.tokenizer, tiny_mistral.template)
    scorer = RerankerScorer(
        tiny_mistral.model,
        yes_id=yes_id,
        no_id=no_id,
        scoring="yes_logit",
        share_prefix=True,
        chunk_tokens=None,
    )
    enc = encode(tiny_mistral, *pairs)
    head = tiny_mistral.model.get_output_embeddings()
    calls = []
    hook = head.register_forward_hook(lambda *args: calls.append(1))
    try:
        scores = scorer(**enc)
    finally:
        hook.remove()
    assert calls == []  # the (B, L, V) logits are never computed
    expected = torch.stack(
        [
            tiny_mistral.model(input_ids=ids[m.bool()][None]).logits[0, -1, yes_id]
            for ids, m in zip(enc["input_ids"], enc["attention_mask"], strict=True)
        ]
    )
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=0)


def test_gradient_reaches_only_the_two_answer_rows_of_the_head(pairs):
    from r2r.models.tiny import build_tiny

    # Mistral: untied head, so its gradient is not mixed with the input embeddings'.
    model, tok = build_tiny("mistral", seed=1, hidden_size=32, num_heads=2, num_kv_heads=1)
    yes_id, no_id = yes_no_ids(tok, QWEN3_RERANKER)
    scorer = RerankerScorer(model, yes_id=yes_id, no_id=no_id, share_prefix=True, chunk_tokens=None)
    enc = encode_pairs(tok, QWEN3_RERANKER, *pairs, max_length=128, max_query_length=16)
    scorer(**enc).sum().backward()
    grad = model.get_output_embeddings().weight.grad
    # Only the two answer rows of the head receive gradient.
    assert set(grad.abs().sum(1).nonzero().flatten().tolist()) == {yes_id, no_id}


def test_bad_scoring_raises(tiny_qwen):
    with pytest.raises(ValueError, match="scoring='prob'"):
        RerankerScorer(
            tiny_qwen.model, yes_id=1, no_id=2, scoring="prob", share_prefix=True, chunk_tokens=None
        )


# ---------------------------------------------------------------- shared prompt prefixes
def grid(queries, documents):
    """Every query with every document: rows of one query in a group."""
    rows = [(q, d, g) for g, q in enumerate(queries) for d in documents]
    return [r[0] for r in rows], [r[1] for r in rows], torch.tensor([r[2] for r in rows])


@pytest.mark.parametrize("arch", ["tiny_qwen", "tiny_mistral"])
@pytest.mark.parametrize("chunk", [None, 1, 4])
@torch.no_grad()
def test_shared_prefixes_score_as_the_full_rows(request, pairs, arch, chunk):
    backbone = request.getfixturevalue(arch)
    scorer = RerankerScorer.from_backbone(backbone, share_prefix=True, chunk_tokens=None).eval()
    # The third document repeated: two rows of a group identical up to the last token.
    queries, documents, groups = grid(pairs[0], [*pairs[1], pairs[1][2]])
    enc = encode(backbone, queries, documents)
    full = scorer(enc["input_ids"], enc["attention_mask"])
    memo: dict = {}
    shared = scorer(enc["input_ids"], enc["attention_mask"], groups, chunk=chunk, memo=memo)
    assert (shared - full).abs().max().item() < 1e-5
    # The template's keys and values are kept for the next call, and give the same scores.
    assert len(memo) == 1
    (prefix,) = memo.values()
    common = int(prefix.next_position[0])
    assert torch.equal(enc["input_ids"][:, :common], enc["input_ids"][:1, :common].expand(12, -1))
    assert not torch.equal(enc["input_ids"][:, common], enc["input_ids"][:1, common].expand(12))
    again = scorer(enc["input_ids"], enc["attention_mask"], groups, chunk=chunk, memo=memo)
    assert torch.equal(again, shared)


@torch.no_grad()
def test_groups_change_speed_never_scores(tiny_qwen, pairs):
    """Rows grouped wrongly (different queries in one group, one query split) still score
    as the full rows: the shared lengths are the rows' longest common token prefixes."""
    scorer = RerankerScorer.from_backbone(tiny_qwen, share_prefix=True, chunk_tokens=None).eval()
    queries, documents, _ = grid(pairs[0], pairs[1])
    enc = encode(tiny_qwen, queries, documents)
    full = scorer(enc["input_ids"], enc["attention_mask"])
    for groups in ([0] * 9, list(range(9)), [0, 1, 0, 1, 0, 1, 2, 2, 2]):
        shared = scorer(enc["input_ids"], enc["attention_mask"], torch.tensor(groups), chunk=2)
        assert (shared - full).abs().max().item() < 1e-5


def test_shared_prefix_gradients_equal_the_full_rows(pairs):
    """Training through the cached prefixes: the LoRA gradients (on q/k/v/o, which the
    prefixes' keys and values depend on) equal those of the full rows."""
    from r2r.models.experts import add_lora

    backbone = load_tiny("qwen", template=QWEN3_RERANKER, seed=0)
    model = add_lora(backbone.model, r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])  # fmt: skip
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # B = 0 at the start would leave lora_A without a gradient
            torch.nn.init.normal_(p, std=0.1)
    scorer = RerankerScorer.from_backbone(backbone, model, share_prefix=True, chunk_tokens=None)
    queries, documents, groups = grid(pairs[0], pairs[1])
    enc = encode(backbone, queries, documents)
    grads = []
    for kwargs in ({}, {"groups": groups, "chunk": 4}):
        model.zero_grad()
        scores = scorer(enc["input_ids"], enc["attention_mask"], **kwargs).view(3, 3)
        torch.nn.functional.cross_entropy(scores, torch.tensor([0, 1, 2])).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert len(grads[0]) == 16  # A and B of 4 modules in 2 layers
    for name, grad in grads[0].items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-4, atol=1e-6)


@torch.no_grad()
def test_a_sliding_window_shorter_than_the_slots_scores_the_full_rows(
    tiny_qwen, pairs, monkeypatch
):
    scorer = RerankerScorer.from_backbone(tiny_qwen, share_prefix=True, chunk_tokens=None).eval()
    queries, documents, groups = grid(pairs[0], pairs[1])
    enc = encode(tiny_qwen, queries, documents)
    scorer.window = 2 * enc["input_ids"].shape[1] - 1
    monkeypatch.setattr(scorer, "shared_last_hidden", None)  # would raise if called
    full = RerankerScorer.from_backbone(tiny_qwen, share_prefix=True, chunk_tokens=None).eval()(
        enc["input_ids"], enc["attention_mask"]
    )
    got = scorer(enc["input_ids"], enc["attention_mask"], groups, chunk=4)
    assert (got - full).abs().max().item() < 1e-5


@torch.no_grad()
def test_score_pairs_returns_the_callers_order(tiny_qwen, pairs):
    """Pairs of interleaved queries, scored in windows and length-sorted batches, come back
    in the order given, each equal to scoring that pair alone."""
    from r2r.models.scorer import score_pairs
    from r2r.models.templates import PairEncoder

    scorer = RerankerScorer.from_backbone(tiny_qwen, share_prefix=True, chunk_tokens=None).eval()
    encoder = PairEncoder(tiny_qwen.tokenizer, tiny_qwen.template, 256, 32, None)
    queries, documents, _ = grid(pairs[0], pairs[1])
    order = [4, 0, 8, 2, 6, 1, 3, 7, 5]
    queries, documents = [queries[i] for i in order], [documents[i] for i in order]
    alone = [score_pairs(scorer, encoder, [q], [d], batch_size=1)[0] for q, d in zip(queries, documents, strict=True)]  # fmt: skip
    for batch_size, window in ((1, 1), (2, 1), (4, 8)):
        got = score_pairs(scorer, encoder, queries, documents, batch_size=batch_size, window=window)
        assert got == pytest.approx(alone, abs=1e-5)
