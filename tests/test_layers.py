"""Layers import downwards only (STYLE: the model layer sits below data, training and routing).

Read from the source with `ast`, imports inside functions and `TYPE_CHECKING` blocks
included: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
MODELS = sorted((SRC / "r2r" / "models").rglob("*.py"))
SYSTEM = SRC / "r2r" / "routing" / "system.py"
# What the model layer must not reach, directly or through another r2r module.
BELOW_MODELS = ("r2r.data", "r2r.pipeline", "r2r.routing", "lightning", "pytorch_lightning")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module `path` imports; `from a import b` counts as both `a` and `a.b`."""
    package = (
        module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    )
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                anchor = package.rsplit(".", node.level - 1)[0]
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def source_of(module: str) -> Path | None:
    """The file of an r2r module, or None for other packages and for names (`a.b` where b is a
    function or class of module `a`)."""
    path = SRC.joinpath(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def reached(path: Path) -> dict[str, list[str]]:
    """Every module `path` imports, directly or through r2r modules (their packages'
    `__init__` included, as Python runs them): module -> the chain of r2r modules to it."""
    chains: dict[str, list[str]] = {}
    seen, todo = {path}, [(path, [module_name(path)])]
    while todo:
        file, chain = todo.pop()
        for name in sorted(imports(file)):
            chains.setdefault(name, chain)
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # `import a.b.c` runs a/__init__, a/b/__init__, ...
                source = source_of(".".join(parts[:i]))
                if source is not None and source not in seen:
                    seen.add(source)
                    todo.append((source, [*chain, ".".join(parts[:i])]))
    return chains


def under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(f"{p}.") for p in prefixes)


def test_the_models_folder_is_found() -> None:
    assert {p.name for p in MODELS} >= {"__init__.py", "backbones.py", "tiny.py"}


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.name)
def test_the_model_layer_reaches_no_data_pipeline_routing_or_lightning(path: Path) -> None:
    # Where the chain first enters a forbidden module; what that module imports is noise.
    leaks = {
        name: " -> ".join(chain)
        for name, chain in reached(path).items()
        if under(name, BELOW_MODELS) and not any(under(c, BELOW_MODELS) for c in chain)
    }
    assert leaks == {}, f"{path.relative_to(SRC)} imports (module: via) {leaks}"


def data_imports(path: Path) -> set[str]:
    return {name for name in imports(path) if under(name, ("r2r.data",))}


def test_the_routed_system_imports_nothing_from_the_data_layer() -> None:
    assert data_imports(SYSTEM) == set()
