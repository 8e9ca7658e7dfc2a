"""How much EAG would abstract: entity density and query-positive entity overlap.

python -m r2r.data.masking.coverage --data synthetic --seed 0 --domains legal medical finance
python -m r2r.data.masking.coverage --data beir --folder data/converted/tatqa --domain finance
python -m r2r.data.masking.coverage --data pubmedqa --shared ../shared/data --json cov.json
python -m r2r.data.masking.coverage --data synthetic --domains legal mining.group_size=4 mining.hard_negatives=2

For each dataset, the training groups are mined with the `mining` settings of the run config
(conf/, composed as run.py does; with --data synthetic its `data=synthetic` sizes too; Hydra
overrides after the options change them), and the table shows, per entity type, entities per
100 word tokens (counted over the texts as the groups show them: a passage in several groups
counts each time) and the share of groups whose query and positive share an entity of that
type (the surface cue entity abstraction hides).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from r2r.data.masking.recognizers import RULE_DOMAINS, EntitySpan, Recognizer, normalise
from r2r.data.masking.strategies import EntityMasking, group_texts, word_spans
from r2r.types import RankingGroup, RetrievalDataset

__all__ = ["coverage", "main"]


def _spans(groups: Sequence[RankingGroup], recognizer_or_masker: Recognizer | EntityMasking):
    for group in groups:
        if isinstance(recognizer_or_masker, EntityMasking):
            yield group, recognizer_or_masker.group_spans(group)
        elif callable(recognizer_or_masker):
            yield group, [recognizer_or_masker(t) if t else [] for t in group_texts(group)]
        else:
            raise TypeError(
                f"coverage: expected a Recognizer or an EntityMasking, got {recognizer_or_masker!r}"
            )


def coverage(
    groups: Sequence[RankingGroup], recognizer_or_masker: Recognizer | EntityMasking
) -> dict[str, Any]:
    """Entity statistics of training groups.

    Returns {"groups", "tokens" (word tokens), "entities" (mentions), "entities_per_100",
    "masked_token_rate" (share of word tokens inside an entity), "shared_entity_share" (share
    of groups whose query and positive, title included, share an entity), "by_type": {type:
    {"entities", "per_100", "shared_share"}}}. An EntityMasking is measured with its
    group-level propagation; a bare Recognizer text by text.
    """
    tokens = masked = 0
    mentions: Counter[str] = Counter()
    shared_any = 0
    shared_by_type: Counter[str] = Counter()
    n_groups = 0
    for group, spans in _spans(groups, recognizer_or_masker):
        n_groups += 1
        for text, text_spans in zip(group_texts(group), spans, strict=True):
            words = word_spans(text)
            tokens += len(words)
            masked += sum(any(s.start < e and b < s.end for s in text_spans) for b, e in words)
            mentions.update(s.type for s in text_spans)
        # group_texts order: query, then (title, text) of each passage; the positive is first.
        query = _keys(spans[0])
        positive = _keys([*spans[1], *spans[2]]) if len(spans) > 2 else set()
        shared = query & positive
        shared_any += bool(shared)
        shared_by_type.update({kind for _, kind in shared})
    per_100 = 100 / tokens if tokens else 0.0
    share = 1 / n_groups if n_groups else 0.0
    return {
        "groups": n_groups,
        "tokens": tokens,
        "entities": sum(mentions.values()),
        "entities_per_100": sum(mentions.values()) * per_100,
        "masked_token_rate": masked / tokens if tokens else 0.0,
        "shared_entity_share": shared_any * share,
        "by_type": {
            kind: {
                "entities": mentions[kind],
                "per_100": mentions[kind] * per_100,
                "shared_share": shared_by_type[kind] * share,
            }
            for kind in sorted(mentions)
        },
    }


def _keys(spans: Sequence[EntitySpan]) -> set[tuple[str, str]]:
    return {(normalise(s.text), s.type) for s in spans}


# ----------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m r2r.data.masking.coverage",
        description="Entity coverage of training groups under the offline rule recogniser.",
        epilog="Exit status: 0 on success, 2 on bad arguments or bad data.",
    )
    parser.add_argument(
        "--data", required=True, choices=["synthetic", "beir", "pubmedqa", "aila2019", "tatqa"]
    )
    parser.add_argument(
        "--seed", type=int, help="synthetic / split seed (default: the config's `seed`)"
    )
    parser.add_argument(
        "--domains", nargs="+", default=["legal", "medical", "finance"], help="synthetic domains"
    )
    parser.add_argument("--folder", type=Path, help="BEIR folder (with --data beir)")
    parser.add_argument(
        "--domain", choices=RULE_DOMAINS, help="domain of the BEIR folder (with --data beir)"
    )
    parser.add_argument(
        "--shared", type=Path, default=Path("../shared/data"), help="raw shared data root"
    )
    parser.add_argument("--split", default="train", choices=["train", "dev", "test"])
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument(
        "--conf", type=Path, default=Path("conf"), help="the Hydra config folder (default: conf)"
    )
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides of that config (e.g. mining.top_k=10)"
    )
    return parser


def _config(args: argparse.Namespace) -> DictConfig:
    """The run config this CLI shares its settings with (they have no defaults in code)."""
    from hydra import compose, initialize_config_dir

    if not (args.conf / "config.yaml").is_file():
        raise ValueError(f"{args.conf}: no config.yaml here (pass --conf CONFIG_FOLDER)")
    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if args.data == "synthetic":
        overrides.append("data=synthetic")
    with initialize_config_dir(config_dir=str(args.conf.resolve()), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def _datasets(args: argparse.Namespace, cfg: DictConfig) -> list[RetrievalDataset]:
    if args.data == "synthetic":
        from hydra.utils import instantiate

        if unknown := [d for d in args.domains if d not in cfg.data.sources]:
            raise ValueError(
                f"--domains {unknown}: the synthetic data has {list(cfg.data.sources)}"
            )
        return [instantiate(cfg.data.sources[d]) for d in args.domains]
    if args.data == "beir":
        if args.folder is None or args.domain is None:
            raise ValueError("--data beir needs --folder and --domain")
        from r2r.data.io import read_beir

        return [read_beir(args.folder, domain=args.domain)]
    from r2r.data.sources import aila, pubmedqa, tatqa

    module = {"aila2019": aila, "pubmedqa": pubmedqa, "tatqa": tatqa}[args.data]
    return [module.convert(args.shared / module.RAW_DIR, seed=cfg.seed)]


def table(name: str, figures: dict[str, Any]):
    from rich.table import Table

    out = Table(
        title=f"{name}: {figures['groups']} groups, {figures['tokens']:,} word tokens",
        caption="shared = share of groups whose query and positive share an entity of the type",
    )
    out.add_column("type")
    out.add_column("entities", justify="right")
    out.add_column("per 100 tokens", justify="right")
    out.add_column("shared", justify="right")
    for kind, row in sorted(figures["by_type"].items(), key=lambda kv: -kv[1]["entities"]):
        out.add_row(
            kind, f"{row['entities']:,}", f"{row['per_100']:.2f}", f"{row['shared_share']:.1%}"
        )
    out.add_section()
    out.add_row(
        "all",
        f"{figures['entities']:,}",
        f"{figures['entities_per_100']:.2f}",
        f"{figures['shared_entity_share']:.1%}",
    )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from hydra.errors import HydraException
    from hydra.utils import instantiate
    from rich.console import Console

    from r2r.data.errors import DataError
    from r2r.data.mining import BM25Miner
    from r2r.files import write_json_atomic

    parser = build_parser()
    args = parser.parse_args(argv)
    # argparse hands overrides after `--domains a b` to --domains: they are the ones with "=".
    args.overrides += [d for d in args.domains if "=" in d]
    args.domains = [d for d in args.domains if "=" not in d]
    console = Console()
    try:
        cfg = _config(args)
        miner = BM25Miner(instantiate(cfg.mining))
        datasets = _datasets(args, cfg)
    except (DataError, ValueError, OSError, HydraException) as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    results: dict[str, Any] = {}
    for dataset in datasets:
        groups = miner.training_groups(dataset, args.split)
        figures = coverage(groups, EntityMasking())
        figures["masked_token_rate"] = round(figures["masked_token_rate"], 6)
        results[dataset.name] = {"domain": dataset.domain, "split": args.split, **figures}
        console.print(table(f"{dataset.name} ({dataset.domain}, {args.split})", figures))
        console.print(f"masked word tokens: {figures['masked_token_rate']:.1%}\n")
    if args.json is not None:
        write_json_atomic(args.json, results)
        console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
