"""Why not use X instead of r2r: scoring and LoRA-training throughput of one decoder reranker.

    python benchmarks/rerank_speed.py --backbone tiny_qwen --lists 4 --repeats 1    # smoke
    python benchmarks/rerank_speed.py --backbone smollm2 --lists 30 --bf16 --train
    python benchmarks/rerank_speed.py --backbone smollm2 --device cuda --lists 200 --batch 64 --bf16 --train

The same weights score the same (query, document) pairs, in one process, with:
  r2r          `r2r.models.scorer.score_pairs` (the one scoring path of evaluation and serving)
  r2r-bf16     the same function on a bfloat16 copy of the model (`--bf16`)
  st           sentence-transformers' CrossEncoder on the causal LM (a LogitScore head,
               r2r's prompt as its chat template), built from the same weights
  flag         FlagEmbedding's FlagLLMReranker (its own prompt: speed only), where it imports
  plain        AutoModelForCausalLM's full forward on r2r's encoded batches in list order,
               score = logits[last real token, yes] - logits[..., no]: the reference scores
each at `--batch` and at batch 1, timed from texts to scores (tokenization included)
`--repeats` times in an order that rotates every repeat (the median is reported), after one
warm-up run that also counts the tokens each system runs. Pairs are the BM25 top-10 lists of PubMedQA (smollm2,
data=pubmedqa domain=medical, as `experiment=smollm2_pubmedqa` builds them) or of the
synthetic benchmark (tiny_qwen), flattened in list order. `--train` times one step of r2r's
scorer + InfoNCE against a plain peft loop (left padding, logits_to_keep=1) on the same LoRA
and the same groups.

Useful GFLOP/s counts the work a pair needs on its own: 2 x (non-embedding parameters) x
(its real tokens) plus causal attention, over the wall time; "% peak" is its share of a matmul
peak this script measures at the model's shapes on the same device and thread count. A system
that computes shared prompt prefixes once (r2r) does less than that work, so its share can pass
100%; "exec % peak" counts the token slots it did run (padding included). "pad %" is the share
of run slots that are padding, "slots/useful" run slots per real pair token.

On the CPU a default smollm2 run (300 pairs, 8 systems x 4 runs, batch 1 included) takes an
hour or more at one thread; --lists, --limit and --no-batch1 size it. Writes
benchmarks/results/rerank-speed-<backbone>-<device>.json (`r2r.files.write_json_atomic`).
"""

from __future__ import annotations

import argparse
import os
import sys


def pinned_threads(argv: list[str]) -> int:
    """`--threads` from the command line, read before torch is imported: OpenMP and MKL size
    their pools from the environment once, at import."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--threads", type=int, default=1)
    return early.parse_known_args(argv)[0].threads


THREADS = pinned_threads(sys.argv[1:])
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
    # RAYON: the fast tokenizers' batch encoding pool.
    os.environ[_var] = str(THREADS)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false" if THREADS == 1 else "true")

import copy  # noqa: E402
import ctypes  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402
from torch import nn  # noqa: E402
from transformers.utils import logging as transformers_logging  # noqa: E402

from r2r.config import register_resolvers  # noqa: E402
from r2r.devices import resolve_device  # noqa: E402
from r2r.export import chat_template, savable  # noqa: E402
from r2r.files import write_json_atomic  # noqa: E402
from r2r.models.backbones import Backbone  # noqa: E402
from r2r.models.experts import add_lora  # noqa: E402
from r2r.models.scorer import RerankerScorer, score_pairs, yes_no_ids  # noqa: E402
from r2r.models.templates import PairEncoder  # noqa: E402
from r2r.pipeline import Job, prepare  # noqa: E402
from r2r.types import CandidateList  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# The r2r setup each backbone is benchmarked on (Hydra overrides of conf/config.yaml).
SETUPS = {
    "smollm2": ["experiment=smollm2_pubmedqa", "mining.top_k=10"],
    "tiny_qwen": ["experiment=tiny_synthetic", "domain=medical", "mining.top_k=10"],
}
FLOPS_FORMULA = (
    "useful FLOPs = sum over pairs of 2 * P * n + 4 * layers * heads * head_dim * n * (n + 1) / 2; "
    "P = decoder parameters without the embedding and LM head, n = the pair's real tokens as "
    "r2r's encoder makes them (each counted once, whatever a system runs); the attention term "
    "is QK^T and AV under the causal mask"
)


# ---------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class Pairs:
    """The flattened (query, document) pairs, with the list each came from."""

    queries: list[str]
    documents: list[str]
    lists: list[int]  # (N,) index of the pair's candidate list

    def __len__(self) -> int:
        return len(self.queries)


def setup(backbone: str, split: str, extra: Sequence[str]) -> tuple[DictConfig, Job]:
    """The composed config and the prepared job (backbone, data module), as `run.py` would
    build them for this backbone's setup."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                f"paths.root={ROOT}",
                f"paths.output={tempfile.mkdtemp(prefix='rerank-speed-')}",
                "progress.interval_s=null",  # no progress lines inside timed calls
                *SETUPS[backbone],
                *extra,
            ],
        )
    job = prepare(cfg, [])
    if not job.data.candidate_lists(split):
        raise SystemExit(f"no {split} candidate lists for {backbone} ({SETUPS[backbone]})")
    return cfg, job


def flatten(lists: Sequence[CandidateList], limit: int | None) -> Pairs:
    """Every list's (query, passage) pairs in list order, cut to `limit` pairs."""
    rows = [(c.query.text, p.content, i) for i, c in enumerate(lists) for p in c.passages]
    rows = rows[:limit] if limit else rows
    return Pairs([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])


def real_lengths(encoder: PairEncoder, pairs: Pairs, chunk: int = 64) -> list[int]:
    """Tokens of each pair as r2r's encoder makes them (template included, padding not)."""
    lengths: list[int] = []
    for at in range(0, len(pairs), chunk):
        mask = encoder(pairs.queries[at : at + chunk], pairs.documents[at : at + chunk])
        lengths += mask["attention_mask"].sum(dim=1).tolist()
    return lengths


# ---------------------------------------------------------------------------- arithmetic
@dataclass(frozen=True)
class Shape:
    """What the FLOP count needs of a decoder."""

    parameters: int  # without the embedding and LM head
    layers: int
    attention_width: int  # query heads x head dim
    hidden: int
    intermediate: int

    @classmethod
    def of(cls, model: nn.Module) -> Shape:
        config = model.config
        decoder = model.get_decoder()
        skip = {id(p) for p in decoder.get_input_embeddings().parameters()}
        parameters = sum(p.numel() for p in decoder.parameters() if id(p) not in skip)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // (
            config.num_attention_heads
        )
        return cls(
            parameters=parameters,
            layers=config.num_hidden_layers,
            attention_width=config.num_attention_heads * head_dim,
            hidden=config.hidden_size,
            intermediate=config.intermediate_size,
        )

    def useful_flops(self, lengths: Sequence[int]) -> float:
        dense = 2 * self.parameters * sum(lengths)
        attention = sum(4 * self.layers * self.attention_width * n * (n + 1) / 2 for n in lengths)
        return float(dense + attention)


def matmul_peak(
    shape: tuple[int, int, int], dtype: torch.dtype, device: torch.device, seconds: float = 1.0
) -> float:
    """FLOP/s of the best of repeated (M x K) @ (K x N) products, `seconds` of them."""
    m, k, n = shape
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=generator).to(device, dtype)
    b = torch.randn(k, n, generator=generator).to(device, dtype)
    best = float("inf")
    spent = 0.0
    with torch.no_grad():
        a @ b  # warm-up (kernel selection, page faults)
        while spent < seconds:
            synchronize(device)
            start = time.perf_counter()
            a @ b
            synchronize(device)
            took = time.perf_counter() - start
            best, spent = min(best, took), spent + took
    return 2 * m * k * n / best


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # CUDA runs asynchronously: wait for the last kernel


class TokenCounter:
    """Token slots a decoder runs (input_ids.numel() over its calls) and the real ones among
    them (the mask's columns for those ids): padding and prefix reuse, seen from outside."""

    def __init__(self, decoder: nn.Module) -> None:
        self.decoder = decoder
        self.slots = 0
        self.real = 0

    def _count(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            return
        mask = kwargs.get("attention_mask")
        self.slots += ids.numel()
        if isinstance(mask, torch.Tensor) and mask.dim() == 2:
            self.real += int(mask[:, -ids.shape[1] :].sum())  # past (cached) columns come first
        else:
            self.real += ids.numel()

    def __enter__(self) -> TokenCounter:
        self.handle = self.decoder.register_forward_pre_hook(self._count, with_kwargs=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


# ---------------------------------------------------------------------------- systems
@dataclass
class System:
    """One way to score all the pairs; `score` returns the scores in pair order."""

    name: str
    batch: int
    score: Callable[[], list[float]]
    decoder: nn.Module  # whose forward calls are counted
    note: str = ""
    comparable: bool = True  # scores on r2r's prompt (else: speed only)
    seconds: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    slots: int | None = None
    real: int | None = None
    cuda_extra_mib: float | None = None


def plain_scores(
    model: nn.Module,
    encoder: PairEncoder,
    answer: tuple[int, int, str],
    pairs: Pairs,
    batch: int,
    device: torch.device,
) -> list[float]:
    """What a user writes with transformers alone: r2r's encoded rows (right-padded, list
    order), the full forward with every position's logits over the whole vocabulary."""
    yes, no, scoring = answer
    scores: list[float] = []
    with torch.no_grad():
        for at in range(0, len(pairs), batch):
            rows = encoder(pairs.queries[at : at + batch], pairs.documents[at : at + batch])
            ids, mask = rows["input_ids"].to(device), rows["attention_mask"].to(device)
            logits = model(input_ids=ids, attention_mask=mask).logits  # (B, L, V)
            last = logits[torch.arange(len(ids), device=device), mask.sum(dim=1) - 1]  # (B, V)
            margin = last[:, yes] if scoring == "yes_logit" else last[:, yes] - last[:, no]
            scores += margin.float().cpu().tolist()
    return scores


def save_backbone(backbone: Backbone, folder: Path, template: str | None) -> Path:
    """The backbone's weights and tokenizer as a transformers folder (with a chat template)."""
    savable(backbone.model).save_pretrained(folder)
    tokenizer = copy.deepcopy(backbone.tokenizer)
    if template is not None:
        tokenizer.chat_template = template
    tokenizer.save_pretrained(folder)
    return folder


def cross_encoder(
    folder: Path, encoder: PairEncoder, answer: tuple[int, int, str], device: torch.device
) -> Any:
    """sentence-transformers' CrossEncoder on the saved folder: a causal LM is loaded as
    Transformer("text-generation", left padding, logits_to_keep=1) + LogitScore(yes, no);
    r2r's prompt comes in as the folder's chat template, max_length as r2r's. Its truncation
    (the rendered prompt cut on the right, then the template's suffix restored) keeps the
    same tokens as r2r's whenever the query fits max_query_length."""
    try:
        from sentence_transformers import CrossEncoder
    except ImportError as error:
        raise SystemExit(
            f"the st row needs sentence-transformers ({error}): pip install "
            "'sentence-transformers>=6.3' (with torch pinned, e.g. -c a file holding torch==X)"
        ) from error

    model = CrossEncoder(
        str(folder),
        max_length=encoder.max_length,
        activation_fn=nn.Identity(),  # raw margins, as r2r's scores (the default is a sigmoid)
        local_files_only=True,
        device=str(device),
        model_kwargs={"dtype": torch.float32},
    )
    yes, no, scoring = answer
    head = model[-1]
    # The LogitScore head takes "yes"/"no" by token *string*; r2r tokenizes the template's
    # answer texts. Reset them to r2r's ids so both read the same two logits.
    head.true_token_id, head.false_token_id = yes, (None if scoring == "yes_logit" else no)
    return model


def token_mismatches(st: Any, encoder: PairEncoder, pairs: Pairs, chunk: int = 64) -> int:
    """Pairs whose CrossEncoder input ids differ from r2r's encoder's real tokens."""
    differ = 0
    for at in range(0, len(pairs), chunk):
        queries, documents = pairs.queries[at : at + chunk], pairs.documents[at : at + chunk]
        theirs = st.preprocess(list(zip(queries, documents, strict=True)))  # left-padded
        ours = encoder(queries, documents)  # right-padded
        for i in range(len(queries)):
            a = theirs["input_ids"][i][theirs["attention_mask"][i].bool()].cpu()
            b = ours["input_ids"][i][ours["attention_mask"][i].bool()]
            differ += not torch.equal(a, b)
    return differ


def flag_reranker(
    folder: Path, encoder: PairEncoder, batch: int, device: torch.device
) -> tuple[Any, str]:
    """FlagEmbedding's FlagLLMReranker on the saved folder, or (None, why not)."""
    try:
        from FlagEmbedding import FlagLLMReranker
    except Exception as error:  # any failure to import is the finding
        first = str(error).splitlines()[0] if str(error) else ""
        return None, f"FlagEmbedding does not import here: {type(error).__name__}: {first}"
    reranker = FlagLLMReranker(
        str(folder),
        use_fp16=False,
        devices=str(device),
        batch_size=batch,
        max_length=encoder.max_length,
        query_max_length=encoder.max_query_length,
        normalize=False,
    )
    return reranker, ""


@torch.no_grad()
def list_order_scores(
    scorer: RerankerScorer, encoder: PairEncoder, pairs: Pairs, batch: int, device: torch.device
) -> list[float]:
    """r2r's scoring path before shared prefixes and length order (r2r 0.1 `score_pairs`):
    batches of `batch` pairs in list order, each row run whole."""
    scores: list[float] = []
    for at in range(0, len(pairs), batch):
        enc = encoder(pairs.queries[at : at + batch], pairs.documents[at : at + batch])
        ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        logits = scorer.answer_logits(scorer.last_hidden(ids, mask))  # (B, 2): yes, no
        margin = logits[:, 0] if scorer.scoring == "yes_logit" else logits[:, 0] - logits[:, 1]
        scores += margin.tolist()
    return scores


def build_systems(
    args: argparse.Namespace,
    backbone: Backbone,
    encoder: PairEncoder,
    pairs: Pairs,
    device: torch.device,
    folder: Path,
    options: dict[str, Any],
) -> tuple[list[System], list[dict[str, str]], dict[str, nn.Module], dict[str, Any]]:
    """Every system at `--batch` and batch 1, the skipped ones with their reason, the
    models (for their dtype) and how the CrossEncoder was built."""
    yes, no = yes_no_ids(backbone.tokenizer, backbone.template)
    answer = (yes, no, backbone.template.scoring)
    model = backbone.model.to(device)
    models: dict[str, nn.Module] = {"r2r": model, "r2r-list-order": model, "plain": model}
    scorers = {"r2r": RerankerScorer.from_backbone(backbone, model, **options).eval()}
    if args.bf16:
        half = copy.deepcopy(model).to(torch.bfloat16)
        models["r2r-bf16"] = half
        scorers["r2r-bf16"] = RerankerScorer.from_backbone(backbone, half, **options).eval()
    template = chat_template(backbone.template, encoder.instruction)
    st = cross_encoder(save_backbone(backbone, folder / "st", template), encoder, answer, device)
    models["st"] = st.model
    st_facts = {
        "modules": repr(st),
        "chat_template": template,
        "max_length": encoder.max_length,
        "pairs_with_other_tokens_than_r2r": token_mismatches(st, encoder, pairs),
    }
    batches = [args.batch, 1] if args.batch1 and args.batch != 1 else [args.batch]
    pair_list = list(zip(pairs.queries, pairs.documents, strict=True))
    systems: list[System] = []
    skipped: list[dict[str, str]] = []
    for batch in batches:
        for name, scorer in scorers.items():
            systems.append(
                System(
                    name,
                    batch,
                    lambda s=scorer, b=batch: score_pairs(
                        s, encoder, pairs.queries, pairs.documents, batch_size=b
                    ),
                    scorer.model.get_decoder(),
                    note="r2r.models.scorer.score_pairs",
                )
            )
        systems.append(
            System(
                "r2r-list-order",
                batch,
                lambda b=batch: list_order_scores(scorers["r2r"], encoder, pairs, b, device),
                scorers["r2r"].model.get_decoder(),
                note="r2r's scorer as it scored before prefix sharing: list order, one pass",
            )
        )
        systems.append(
            System(
                "st",
                batch,
                lambda b=batch: st.predict(
                    pair_list, batch_size=b, show_progress_bar=False
                ).tolist(),
                st.model.get_decoder(),
                note="sentence-transformers CrossEncoder, LogitScore head, r2r's chat template",
            )
        )
        systems.append(
            System(
                "plain",
                batch,
                lambda b=batch: plain_scores(model, encoder, answer, pairs, b, device),
                model.get_decoder(),
                note="AutoModelForCausalLM full forward, list order, right padding",
            )
        )
    if args.flag:
        flag, why = flag_reranker(
            save_backbone(backbone, folder / "flag", None), encoder, args.batch, device
        )
        if flag is None:
            skipped.append({"system": "flag", "reason": why})
        else:
            models["flag"] = flag.model
            for batch in batches:
                systems.append(
                    System(
                        "flag",
                        batch,
                        lambda b=batch: [
                            float(s) for s in flag.compute_score(pair_list, batch_size=b)
                        ],
                        flag.model.get_decoder(),
                        note="FlagLLMReranker with its own prompt and 'Yes' token: speed only",
                        comparable=False,
                    )
                )
    return systems, skipped, models, st_facts


def run_once(system: System, device: torch.device) -> tuple[float, list[float]]:
    synchronize(device)
    start = time.perf_counter()
    scores = system.score()
    synchronize(device)
    return time.perf_counter() - start, scores


def measure(systems: list[System], repeats: int, device: torch.device) -> None:
    """A counted warm-up of each system (its scores, token slots, CUDA memory above what was
    allocated before it), then `repeats` timed runs in an order that rotates every repeat."""
    for system in systems:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        with TokenCounter(system.decoder) as counter:
            _, system.scores = run_once(system, device)
        system.slots, system.real = counter.slots, counter.real
        if device.type == "cuda":
            system.cuda_extra_mib = (torch.cuda.max_memory_allocated(device) - before) / 2**20
    for repeat in range(repeats):
        shift = repeat % len(systems)
        for system in systems[shift:] + systems[:shift]:
            seconds, _ = run_once(system, device)
            system.seconds.append(seconds)


def agreement(scores: Sequence[float], reference: Sequence[float], lists: Sequence[int]) -> dict:
    """max |score - reference| and Spearman's rho per candidate list (lists of 3+ pairs)."""
    a, b = np.asarray(scores, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    rhos = []
    for i in sorted(set(lists)):
        rows = [j for j, li in enumerate(lists) if li == i]
        if len(rows) >= 3:
            rho = spearmanr(a[rows], b[rows]).statistic
            if np.isfinite(rho):
                rhos.append(float(rho))
    return {
        "max_abs_diff": float(np.abs(a - b).max()),
        "spearman_min": min(rhos) if rhos else None,
        "spearman_mean": statistics.fmean(rhos) if rhos else None,
        "lists_compared": len(rhos),
        "spearman_per_list": rhos,
    }


# ---------------------------------------------------------------------------- training
def training_groups(
    lists: Sequence[CandidateList], groups: int, size: int
) -> tuple[list[str], list[str]]:
    """`groups` groups of `size` (query, passage) rows, one per candidate list: the list's
    first judged-relevant passage, then its first `size - 1` others in list order. Lists
    without a positive or with fewer than `size` passages are passed over; the ones left are
    used again when fewer than `groups` remain."""
    found = []
    for c in lists:
        positives = [p for p in c.passages if c.relevance.get(p.id, 0) > 0]
        if positives and len(c.passages) >= size:
            others = [p for p in c.passages if p.id != positives[0].id][: size - 1]
            found.append((c.query.text, [positives[0], *others]))
    if not found:
        raise SystemExit(f"--train: no candidate list has a positive and {size} passages")
    chosen = [found[i % len(found)] for i in range(groups)]
    queries = [q for q, passages in chosen for _ in passages]
    documents = [p.content for _, passages in chosen for p in passages]
    return queries, documents


def left_padded(ids: torch.Tensor, mask: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, ...]:
    """Right-padded rows (B, L) -> the same rows left-padded, as a user pads for
    logits_to_keep=1 (the last position must be each row's last real token)."""
    lengths = mask.sum(dim=1)
    out_ids, out_mask = torch.full_like(ids, pad_id), torch.zeros_like(mask)
    for i, n in enumerate(lengths.tolist()):
        out_ids[i, ids.shape[1] - n :] = ids[i, :n]
        out_mask[i, ids.shape[1] - n :] = 1
    return out_ids, out_mask


def rss_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def rss_peak_reset() -> int | None:
    """Reset the process's peak resident memory (VmHWM) to its current size and return that
    size in KiB; None where Linux's /proc/self/clear_refs is not available. Freed heap goes
    back to the OS first (glibc malloc_trim), so an earlier system's freed memory does not
    hide the next one's peak."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        return rss_kib("VmRSS")
    except (OSError, KeyError):
        return None


def train_benchmark(
    args: argparse.Namespace,
    cfg: DictConfig,
    backbone: Backbone,
    encoder: PairEncoder,
    lists: Sequence[CandidateList],
    device: torch.device,
) -> dict[str, Any]:
    """One optimizer step of r2r's scorer + the configured loss against a plain peft loop,
    the same LoRA (same seed), groups, loss and optimizer; the first losses must agree."""
    size, count = args.group_size, args.groups
    queries, documents = training_groups(lists, count, size)
    rows = encoder(queries, documents)  # (count * size, L), right-padded
    ids, mask = rows["input_ids"].to(device), rows["attention_mask"].to(device)
    left_ids, left_mask = left_padded(ids, mask, backbone.tokenizer.pad_token_id or 0)
    labels = torch.zeros(count, size, device=device)
    labels[:, 0] = 1.0  # the positive first, as InfoNCE takes it
    loss_fn = instantiate(cfg.loss)
    lora = OmegaConf.to_container(cfg.lora, resolve=True)
    yes, no = yes_no_ids(backbone.tokenizer, backbone.template)

    def lora_copy() -> nn.Module:
        torch.manual_seed(0)  # the same LoRA A init for both (B = 0)
        # add_lora injects into the model in place: each system trains its own copy.
        return add_lora(copy.deepcopy(backbone.model), **lora).to(device).train()

    r2r_model = lora_copy()
    scorer = RerankerScorer.from_backbone(backbone, r2r_model, **cfg.scorer).train()
    group_ids = torch.arange(count * size, device=device) // size
    plain_model = lora_copy()
    optimizers = {
        name: instantiate(cfg.optimizer)([p for p in m.parameters() if p.requires_grad])
        for name, m in (("r2r", r2r_model), ("plain", plain_model))
    }

    def r2r_step() -> float:
        scores = scorer(ids, mask, group_ids).view(count, size)
        return step("r2r", loss_fn(scores, labels))

    def plain_step() -> float:
        logits = plain_model(input_ids=left_ids, attention_mask=left_mask, logits_to_keep=1).logits
        last = logits[:, -1].float()  # (B, V): the last position only
        margin = (
            last[:, yes] if backbone.template.scoring == "yes_logit" else last[:, yes] - last[:, no]
        )
        return step("plain", loss_fn(margin.view(count, size), labels))

    def step(name: str, loss: torch.Tensor) -> float:
        loss.backward()
        optimizers[name].step()
        optimizers[name].zero_grad(set_to_none=True)
        return float(loss.detach())

    steps = {"r2r": r2r_step, "plain": plain_step}
    decoders = {"r2r": r2r_model.get_decoder(), "plain": plain_model.get_decoder()}
    first: dict[str, float] = {}
    slots: dict[str, tuple[int, int]] = {}
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    extra_mib: dict[str, float | None] = {name: None for name in steps}
    cpu_mib: dict[str, float | None] = {name: None for name in steps}
    for name, fn in steps.items():  # warm-up step: the untrained LoRA's loss, peak memory
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        rss = rss_peak_reset()
        with TokenCounter(decoders[name]) as counter:
            first[name] = fn()
        slots[name] = (counter.slots, counter.real)
        if rss is not None:
            cpu_mib[name] = (rss_kib("VmHWM") - rss) / 1024
        if device.type == "cuda":
            extra_mib[name] = (torch.cuda.max_memory_allocated(device) - before) / 2**20
    names = list(steps)
    for repeat in range(args.repeats):
        for name in names[repeat % 2 :] + names[: repeat % 2]:
            synchronize(device)
            start = time.perf_counter()
            for _ in range(args.train_steps):
                steps[name]()
            synchronize(device)
            seconds[name].append((time.perf_counter() - start) / args.train_steps)
    out: dict[str, Any] = {
        "groups": count,
        "group_size": size,
        "rows_shape": list(ids.shape),
        "real_tokens": int(mask.sum()),
        "lora": lora,
        "loss": OmegaConf.to_container(cfg.loss, resolve=True),
        "optimizer": OmegaConf.to_container(cfg.optimizer, resolve=True),
        "steps_per_repeat": args.train_steps,
        "scorer": OmegaConf.to_container(cfg.scorer, resolve=True),
        "first_loss": first,
        "first_loss_abs_diff": abs(first["r2r"] - first["plain"]),
        "systems": {},
    }
    for name in steps:
        median = statistics.median(seconds[name])
        out["systems"][name] = {
            "seconds_per_step": seconds[name],
            "steps_per_s": 1 / median,
            "pairs_per_s": count * size / median,
            "cuda_extra_peak_mib": extra_mib[name],
            # The process's peak resident memory above its size before the first step
            # (Linux VmHWM, reset before each system's step; None elsewhere).
            "rss_extra_peak_mib": cpu_mib[name],
            "token_slots": slots[name][0],
            "padding_share": 1 - slots[name][1] / slots[name][0],
        }
    out["r2r_speedup_vs_plain"] = (
        out["systems"]["r2r"]["steps_per_s"] / out["systems"]["plain"]["steps_per_s"]
    )
    return out


def routed_benchmark(
    args: argparse.Namespace,
    cfg: DictConfig,
    backbone: Backbone,
    lists: Sequence[CandidateList],
    device: torch.device,
) -> dict[str, Any]:
    """`RoutedReranker.rerank` of 20 candidates per query (two lists' passages) under the
    configured LSR and three LoRA experts, against the router's own share: its
    `predict_proba` of the query alone (the frozen backbone's forward and the head), timed
    on the same queries. The experts are fresh adapters (B = 0): they cost what trained
    ones cost."""
    from r2r.data.datamodule import QuerySet
    from r2r.models.experts import ExpertBank, save_adapter
    from r2r.routing.base import build_router
    from r2r.routing.system import RoutedReranker

    domains = ["legal", "medical", "finance"]
    lora = OmegaConf.to_container(cfg.lora, resolve=True)
    items = [
        (lists[i].query.text, [p.content for p in lists[i].passages + lists[i + 1].passages][:20])
        for i in range(0, len(lists) - 1, 2)
    ][: args.routed_queries]
    with tempfile.TemporaryDirectory(prefix="rerank-routed-") as tmp:
        for d in domains:
            expert = add_lora(copy.deepcopy(backbone.model), **lora)
            save_adapter(expert, Path(tmp) / d)
        bank = ExpertBank(
            backbone,
            {d: Path(tmp) / d for d in domains},
            inputs=OmegaConf.to_container(cfg.inputs, resolve=True),
            batch_size=args.batch,
            scorer=OmegaConf.to_container(cfg.scorer, resolve=True),
            device=device,
        )
        router = build_router(
            instantiate(cfg.routers.lsr), domains, backbone=backbone, model=bank.model
        )
        texts = [c.query.text for c in lists]
        router.fit(QuerySet.of(texts, [domains[i % 3] for i in range(len(texts))]))
        system = RoutedReranker(bank, router, threshold=0.0)
        total, routing = [], []
        system.rerank(*items[0])  # warm-up
        for query, documents in items:
            synchronize(device)
            start = time.perf_counter()
            router.predict_proba([query])
            synchronize(device)
            middle = time.perf_counter()
            system.rerank(query, documents)
            synchronize(device)
            routing.append(middle - start)
            total.append(time.perf_counter() - middle)
        bank.close()
    return {
        "queries": len(items),
        "candidates": [len(d) for _, d in items],
        "router": OmegaConf.to_container(cfg.routers.lsr, resolve=True),
        "rerank_seconds": total,
        "routing_seconds": routing,
        "routing_share": sum(routing) / sum(total),
    }


# ---------------------------------------------------------------------------- report
def version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def summarize(
    systems: list[System],
    models: dict[str, nn.Module],
    lengths: list[int],
    shape: Shape,
    peaks: dict[str, float],
    pairs: Pairs,
) -> list[dict[str, Any]]:
    flops = shape.useful_flops(lengths)
    useful = sum(lengths)
    plain = {s.batch: s for s in systems if s.name == "plain"}
    r2r = {s.batch: s for s in systems if s.name == "r2r"}
    rows = []
    for s in systems:
        seconds = statistics.median(s.seconds)
        dtype = next(models[s.name].parameters()).dtype
        peak = peaks["bfloat16" if dtype == torch.bfloat16 else "float32"]
        row: dict[str, Any] = {
            "system": s.name,
            "batch": s.batch,
            "note": s.note,
            "dtype": str(dtype).removeprefix("torch."),
            "seconds": s.seconds,
            "pairs_per_s": len(pairs) / seconds,
            "vs_r2r": statistics.median(r2r[s.batch].seconds) / seconds,
            "useful_gflops_per_s": flops / seconds / 1e9,
            "share_of_matmul_peak": flops / seconds / peak,
            # What the hardware ran: dense FLOPs of every token slot, padding included,
            # shared prefixes once (attention left out).
            "executed_gflops_per_s": 2 * shape.parameters * s.slots / seconds / 1e9,
            "executed_share_of_matmul_peak": 2 * shape.parameters * s.slots / seconds / peak,
            "token_slots": s.slots,
            "real_token_slots": s.real,
            "padding_share": 1 - s.real / s.slots if s.slots else None,
            "slots_per_useful_token": s.slots / useful if s.slots else None,
            "cuda_extra_peak_mib": s.cuda_extra_mib,
        }
        if s.comparable:
            row["vs_plain"] = agreement(s.scores, plain[s.batch].scores, pairs.lists)
        if s.name == "st":
            row["vs_r2r_scores"] = agreement(s.scores, r2r[s.batch].scores, pairs.lists)
        if s.name == "r2r-bf16":
            row["vs_r2r_fp32_scores"] = agreement(s.scores, r2r[s.batch].scores, pairs.lists)
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    def num(value: float | None, fmt: str) -> str:
        return "—" if value is None else format(value, fmt)

    lines = [
        "| system | batch | pairs/s | × r2r | useful GFLOP/s | % peak | exec % peak | pad % "
        "| slots/useful | max abs Δ vs plain | ρ min vs plain |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        vs = r.get("vs_plain") or {}
        pad = None if r["padding_share"] is None else 100 * r["padding_share"]
        lines.append(
            f"| {r['system']} | {r['batch']} | {r['pairs_per_s']:.2f} | {r['vs_r2r']:.2f} "
            f"| {r['useful_gflops_per_s']:.1f} | {100 * r['share_of_matmul_peak']:.1f} "
            f"| {100 * r['executed_share_of_matmul_peak']:.1f} "
            f"| {num(pad, '.1f')} | {num(r['slots_per_useful_token'], '.2f')} "
            f"| {num(vs.get('max_abs_diff'), '.1e')} | {num(vs.get('spearman_min'), '.4f')} |"
        )
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--backbone", choices=sorted(SETUPS), default="smollm2",
                   help="smollm2: the real 135M on PubMedQA; tiny_qwen: random 2-layer, synthetic data (smoke runs)")  # fmt: skip
    p.add_argument("--split", default="test", help="candidate lists of this split (test, dev)")
    p.add_argument(
        "--lists", type=int, default=30, help="candidate lists to flatten (BM25 top-10 each)"
    )
    p.add_argument(
        "--limit", type=int, default=None, help="at most this many pairs (after --lists)"
    )
    p.add_argument(
        "--batch", type=int, default=16, help="pairs per batch (every system also runs at 1)"
    )
    p.add_argument("--batch1", action=argparse.BooleanOptionalAction, default=True,
                   help="also run every system at batch 1")  # fmt: skip
    p.add_argument("--repeats", type=int, default=3, help="timed runs per system (median reported)")
    p.add_argument("--threads", type=int, default=1, help="torch/OpenMP/MKL/tokenizer threads")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--bf16", action="store_true", help="add r2r on a bfloat16 copy of the model")
    p.add_argument("--flag", action=argparse.BooleanOptionalAction, default=True,
                   help="try FlagEmbedding's FlagLLMReranker (skipped with the reason where it does not import)")  # fmt: skip
    p.add_argument(
        "--routed",
        action="store_true",
        help="also time RoutedReranker.rerank of 20 candidates and the router's share of it",
    )
    p.add_argument(
        "--routed-queries", type=int, default=5, help="--routed: queries timed (20 candidates each)"
    )
    p.add_argument(
        "--train", action="store_true", help="also time LoRA training steps: r2r vs plain peft"
    )
    p.add_argument("--groups", type=int, default=8, help="--train: groups per step")
    p.add_argument(
        "--group-size", type=int, default=8, help="--train: passages per group (positive first)"
    )
    p.add_argument("--train-steps", type=int, default=2, help="--train: steps per timed repeat")
    p.add_argument(
        "--peak-seconds", type=float, default=1.0, help="time spent measuring each matmul peak"
    )
    p.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides of the setup")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results",
                   help="folder of the JSON result")  # fmt: skip
    return p


def peak_mib(system: dict[str, Any]) -> str:
    """A training system's extra peak memory for the summary line."""
    mib = system["cuda_extra_peak_mib"] or system["rss_extra_peak_mib"]
    return "?" if mib is None else f"{mib:.0f} MiB"


def main() -> None:
    args = parser().parse_args()
    torch.set_num_threads(args.threads)
    transformers_logging.disable_progress_bar()  # saving / loading the copies' weights
    device = resolve_device(args.device)
    cfg, job = setup(args.backbone, args.split, args.override)
    backbone, encoder = job.backbone, job.data.encoder
    lists = job.data.candidate_lists(args.split)[: args.lists]
    pairs = flatten(lists, args.limit)
    lengths = real_lengths(encoder, pairs)
    shape = Shape.of(backbone.model)
    # The peak is measured on a product of the model's own size: one batch of average pairs
    # through an MLP projection (hidden -> intermediate).
    rows_of_batch = max(1, round(args.batch * statistics.fmean(lengths)))
    product = (rows_of_batch, shape.hidden, shape.intermediate)
    peaks = {"float32": matmul_peak(product, torch.float32, device, args.peak_seconds)}
    if args.bf16:
        peaks["bfloat16"] = matmul_peak(product, torch.bfloat16, device, args.peak_seconds)
    with tempfile.TemporaryDirectory(prefix="rerank-speed-") as tmp:
        systems, skipped, models, st_facts = build_systems(
            args, backbone, encoder, pairs, device, Path(tmp), dict(cfg.scorer)
        )
        measure(systems, args.repeats, device)
    rows = summarize(systems, models, lengths, shape, peaks, pairs)
    print(table(rows))
    for s in skipped:
        print(f"skipped {s['system']}: {s['reason']}")
    result: dict[str, Any] = {
        "backbone": args.backbone,
        "setup_overrides": [*SETUPS[args.backbone], *args.override],
        "split": args.split,
        "lists": len(lists),
        "pairs": len(pairs),
        "mean_pair_tokens": statistics.fmean(lengths),
        "max_pair_tokens": max(lengths),
        "useful_tokens": sum(lengths),
        "inputs": {"max_length": encoder.max_length, "max_query_length": encoder.max_query_length},
        "repeats": args.repeats,
        "order": "systems rotate by one position every repeat; the median is reported",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "versions": {
            p: version(p)
            for p in ("torch", "transformers", "peft", "sentence-transformers", "FlagEmbedding")
        },
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "flops_formula": FLOPS_FORMULA,
        "decoder": shape.__dict__,
        "matmul_peak": {
            dtype: {"shape_mkn": list(product), "gflops_per_s": value / 1e9}
            for dtype, value in peaks.items()
        },
        "memory_note": (
            "cuda_extra_peak_mib: torch.cuda.max_memory_allocated during the system's first "
            "run minus what was allocated before it (weights of every system stay resident); "
            "null on the CPU, where the process-wide RSS cannot be split between systems"
        ),
        "systems": rows,
        "skipped": skipped,
        "st_cross_encoder": st_facts,
    }
    if args.train:
        result["train"] = train_benchmark(args, cfg, backbone, encoder, lists, device)
        t = result["train"]
        print(
            f"\ntrain ({t['groups']} groups x {t['group_size']}, rows {t['rows_shape']}): "
            + ", ".join(
                f"{name} {s['steps_per_s']:.3f} steps/s ({s['pairs_per_s']:.1f} pairs/s, "
                f"peak +{peak_mib(s)})"
                for name, s in t["systems"].items()
            )
            + f"; r2r/plain {t['r2r_speedup_vs_plain']:.2f}; |Δ first loss| {t['first_loss_abs_diff']:.1e}"
        )
    if args.routed:
        every = job.data.candidate_lists(args.split)
        result["routed"] = routed_benchmark(args, cfg, job.backbone, every, device)
        r = result["routed"]
        print(
            f"\nrouted reranking of {max(r['candidates'])} candidates, {r['queries']} queries: "
            f"{statistics.median(r['rerank_seconds']):.2f} s per query, of which routing "
            f"{100 * r['routing_share']:.1f}%"
        )
    path = args.out / f"rerank-speed-{args.backbone}-{device.type}.json"
    write_json_atomic(path, result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
