from __future__ import annotations

import dataclasses

import pytest
import torch

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
    scorer = RerankerScorer.from_backbone(backbone)
    expected = reference_scores(backbone.model, enc, scorer.yes_id, scorer.no_id)
    scores = scorer(**enc)
    assert scores.shape == (3,) and scores.dtype == torch.float32
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=0)
    # Random weights still separate the pairs: the check compares distinct numbers.
    assert scores.std() > 1e-3


@torch.no_grad()
def test_score_does_not_depend_on_the_rest_of_the_batch(tiny_qwen, pairs):
    queries, documents = pairs
    scorer = RerankerScorer.from_backbone(tiny_qwen)
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
    scorer = RerankerScorer(tiny_mistral.model, yes_id=yes_id, no_id=no_id, scoring="yes_logit")
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
    scorer = RerankerScorer(model, yes_id=yes_id, no_id=no_id)
    enc = encode_pairs(tok, QWEN3_RERANKER, *pairs, max_length=128, max_query_length=16)
    scorer(**enc).sum().backward()
    grad = model.get_output_embeddings().weight.grad
    # Only the two answer rows of the head receive gradient.
    assert set(grad.abs().sum(1).nonzero().flatten().tolist()) == {yes_id, no_id}


def test_bad_scoring_raises(tiny_qwen):
    with pytest.raises(ValueError, match="scoring='prob'"):
        RerankerScorer(tiny_qwen.model, yes_id=1, no_id=2, scoring="prob")
