"""Scoring and training throughput (pairs/s) of a backbone at a fixed prompt length.

    python benchmarks/score_throughput.py --backbone tiny_qwen --length 256 --batch 16
    python benchmarks/score_throughput.py --backbone smollm2 --length 256 --batch 8 --repeats 2
    python benchmarks/score_throughput.py --backbone tiny_qwen --device cuda --batch 64

Prints the figures and writes them to
benchmarks/results/throughput-<backbone>-<length>[-<device type>].json (no suffix: the CPU).
The model keeps its own dtype on any device.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from r2r.devices import resolve_device
from r2r.files import write_json_atomic
from r2r.models.backbones import Backbone, load_gguf_smollm2, load_tiny
from r2r.models.experts import add_lora
from r2r.models.scorer import RerankerScorer
from r2r.models.templates import CHATML_RERANKER, QWEN3_RERANKER, encode_pairs

# The experts' LoRA and loss as the shipped config trains them (the paper's r=32, alpha=64
# on q/k/v/o; InfoNCE).
CONF = Path(__file__).resolve().parents[1] / "conf"

LOADERS = {
    "tiny_qwen": lambda: load_tiny("qwen", template=QWEN3_RERANKER, seed=0),
    "tiny_mistral": lambda: load_tiny("mistral", template=QWEN3_RERANKER, seed=0),
    "smollm2": lambda: load_gguf_smollm2(template=CHATML_RERANKER, dtype="float32"),
}


def batch_of(backbone: Backbone, length: int, batch: int) -> dict[str, torch.Tensor]:
    # Long enough documents that every row is cut to exactly `length` tokens.
    document = " ".join(["the court held that the appeal was dismissed with costs"] * 200)
    return encode_pairs(
        backbone.tokenizer,
        backbone.template,
        ["what did the court decide on the appeal?"] * batch,
        [document] * batch,
        max_length=length,
        max_query_length=32,
    )


def timed(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    synchronize(device)  # CUDA runs asynchronously: wait for the last kernel
    return (time.perf_counter() - start) / repeats


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", choices=sorted(LOADERS), default="tiny_qwen")
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    device = resolve_device(args.device)
    backbone = LOADERS[args.backbone]()
    inputs = batch_of(backbone, args.length, args.batch)
    assert inputs["input_ids"].shape == (args.batch, args.length)
    inputs = {k: v.to(device) for k, v in inputs.items()}
    model = add_lora(
        backbone.model, **OmegaConf.to_container(OmegaConf.load(CONF / "config.yaml").lora)
    ).to(device)
    scorer = RerankerScorer.from_backbone(backbone, model, share_prefix=True, chunk_tokens=None)

    def score() -> None:
        with torch.no_grad():
            scorer(**inputs)

    loss_fn = instantiate(OmegaConf.load(CONF / "loss" / "infonce.yaml"))
    labels = torch.zeros(1, args.batch, device=device)  # the batch is one group, its positive first
    labels[:, 0] = 1.0

    def train_step() -> None:
        loss = loss_fn(scorer(**inputs).view(-1, args.batch), labels)
        loss.backward()

    score_s = timed(score, args.repeats, device)
    train_s = timed(train_step, args.repeats, device)
    figures = {
        "backbone": args.backbone,
        "length": args.length,
        "batch": args.batch,
        "repeats": args.repeats,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "score_pairs_per_s": round(args.batch / score_s, 2),
        "train_pairs_per_s": round(args.batch / train_s, 2),
    }
    print(json.dumps(figures, indent=2))
    suffix = "" if device.type == "cpu" else f"-{device.type}"
    write_json_atomic(args.out / f"throughput-{args.backbone}-{args.length}{suffix}.json", figures)


if __name__ == "__main__":
    main()
