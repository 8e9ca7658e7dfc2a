"""Take a saved routed system out of r2r: every expert merged into its base as a plain
Hugging Face model folder that sentence-transformers' `CrossEncoder` loads as it is (the
causal LM with a `LogitScore` head on r2r's yes/no tokens, r2r's exact prompt as its chat
template, raw margins as scores), and the router with the routing table as plain files.

    python -m r2r.export outputs/<date>/<time>/system exported/
    r2r export outputs/<date>/<time>/system exported/

    from sentence_transformers import CrossEncoder
    CrossEncoder("exported/experts/legal").predict([(query, document), ...])  # r2r's scores

The output folder holds `experts/<name>/` (one merged model each), `routing/` (the system's
`system.json`, `router/` with its safetensors head and JSON settings, `fusion.json` where the
system has one) and a `README.md` model card. It must not exist yet: it is written beside
itself and renamed into place when complete, so an interrupted export leaves nothing behind.
Needs sentence-transformers (`pip install -e '.[export]'`).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from torch import nn

from r2r.errors import DataError
from r2r.models.backbones import Backbone
from r2r.models.scorer import yes_no_ids
from r2r.models.templates import PromptTemplate, render
from r2r.routing.system import build_backbone, expert_names


def chat_template(template: PromptTemplate, instruction: str | None) -> str:
    """r2r's prompt as a Jinja chat template over sentence-transformers' pair messages (one
    message of role "query", one of role "document"); the literal text goes in as Jinja
    string literals (JSON's escapes are Jinja's), so no template option eats a newline."""
    query, document = "\x00QUERY\x00", "\x00DOCUMENT\x00"
    before, rest = render(template, query, document, instruction).split(query)
    between, after = rest.split(document)

    def field(role: str) -> str:
        return (
            '{{ messages | selectattr("role", "eq", "' + role + '") '
            '| map(attribute="content") | first }}'
        )

    literal = [json.dumps(text) for text in (before, between, after)]
    return f"{{{{ {literal[0]} }}}}{field('query')}{{{{ {literal[1]} }}}}{field('document')}{{{{ {literal[2]} }}}}"


def savable(model: nn.Module) -> nn.Module:
    """`model`, or a copy that save_pretrained accepts: a GGUF checkpoint loads dequantized
    (plain parameters) but stays marked as quantized, which save_pretrained refuses."""
    method = getattr(getattr(model, "hf_quantizer", None), "quantization_config", None)
    if not str(getattr(method, "quant_method", "")).lower().endswith("gguf"):
        return model
    model = copy.deepcopy(model)
    model.hf_quantizer = None
    del model.config.quantization_config
    return model


def export_expert(
    backbone: Backbone, adapter: Path, folder: Path, *, inputs: dict[str, Any]
) -> None:
    """One expert merged into a copy of the base, saved as a CrossEncoder folder."""
    from sentence_transformers import CrossEncoder

    merged = PeftModel.from_pretrained(copy.deepcopy(backbone.model), adapter).merge_and_unload()
    savable(merged).save_pretrained(folder)
    tokenizer = copy.deepcopy(backbone.tokenizer)
    tokenizer.chat_template = chat_template(backbone.template, inputs.get("instruction"))
    tokenizer.save_pretrained(folder)
    model = CrossEncoder(
        str(folder),
        max_length=int(inputs["max_length"]),
        activation_fn=nn.Identity(),  # raw margins, as r2r scores (its default: a sigmoid)
        local_files_only=True,
        device="cpu",
        model_kwargs={"dtype": next(backbone.model.parameters()).dtype},
    )
    yes, no = yes_no_ids(backbone.tokenizer, backbone.template)
    head = model[-1]
    # LogitScore looks its tokens up by string; r2r's are the template's answer tokens.
    head.true_token_id = yes
    head.false_token_id = None if backbone.template.scoring == "yes_logit" else no
    model.save_pretrained(str(folder))


def model_card(meta: dict[str, Any], experts: Sequence[str]) -> str:
    backbone = meta.get("backbone", {})
    name = backbone.get("name_or_path") or backbone.get("_target_", "?")
    rows = "\n".join(f"| `{e}` | `experts/{e}/` |" for e in experts)
    return f"""# r2r routed reranker (exported)

Exported by `r2r export` from an r2r routed system: one LoRA expert per domain, each merged
into its base model ({name}), and the router that picks an expert per query.

| expert | folder |
|---|---|
{rows}

Each expert is a sentence-transformers `CrossEncoder` (a causal LM with a `LogitScore` head:
score = logit(yes) - logit(no) at the last token, r2r's prompt as the chat template):

```python
from sentence_transformers import CrossEncoder

model = CrossEncoder("experts/{experts[0]}")
scores = model.predict([("the query", "a document"), ("the query", "another document")])
```

The scores equal r2r's when the query fits r2r's `max_query_length`
({meta.get("inputs", {}).get("max_query_length")} tokens; prompts of at most
{meta.get("inputs", {}).get("max_length")} tokens). `routing/` holds the router (`router/`: its
head as safetensors and its settings as JSON; the LSR reads the base model's hidden state of
the query), `system.json` (experts, prompt lengths, routing threshold) and `fusion.json` (the
experts' first-stage fusion weights) where the system had one; `RoutedReranker.load` in r2r
reads the same files.
"""


def export(system: Path, out: Path) -> Path:
    """Write `out` (which must not exist) from the saved system folder `system`."""
    path = system / "system.json"
    if not path.is_file():
        raise DataError("no system.json here (not a saved r2r system)", file=system)
    if out.exists():
        raise DataError("already exists; r2r export writes a new folder only", file=out)
    meta = json.loads(path.read_text(encoding="utf-8"))
    experts = expert_names(meta.get("experts"), path)
    backbone = build_backbone(meta.get("backbone"), path)
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name in experts:
            export_expert(
                backbone, system / "experts" / name, staged / "experts" / name,
                inputs=meta["inputs"],
            )  # fmt: skip
        routing = staged / "routing"
        routing.mkdir()
        shutil.copy2(path, routing / "system.json")
        shutil.copytree(system / "router", routing / "router")
        if (system / "fusion.json").is_file():
            shutil.copy2(system / "fusion.json", routing / "fusion.json")
        (staged / "README.md").write_text(model_card(meta, experts), encoding="utf-8")
        os.rename(staged, out)  # fails, leaving `out` alone, if it appeared meanwhile
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)  # only what this export wrote
        raise
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m r2r.export",
        description=(
            "Export a saved r2r system: each expert merged into its base as a Hugging Face "
            "folder that sentence-transformers' CrossEncoder loads (r2r's scores), plus the "
            "router and routing table as plain files and a model card."
        ),
    )
    p.add_argument("system", type=Path, help="a saved system folder (outputs/.../system)")
    p.add_argument("out", type=Path, help="the folder to write (must not exist)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        print(
            "error: r2r export needs sentence-transformers: pip install -e '.[export]'",
            file=sys.stderr,
        )
        return 2
    try:
        with torch.no_grad():
            out = export(args.system, args.out)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"exported {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
