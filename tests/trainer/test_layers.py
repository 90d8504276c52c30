"""Imports inside the package point one way, from the layers that do more to the layers they build on.

The layers, lowest first: errors, the base (rank reports, file modes, ranks), config, data, encode,
model, then train and metrics side by side, then launch, then the commands and the CLI dispatch. A module
may import its own layer and the ones below; every import is read with `ast` (those inside functions too),
so a back-edge fails here whatever the reason it was written.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.tooling import REPO

PACKAGE = REPO / "trainer"
# layer -> rank; equal ranks (train, metrics) may not import each other.
LAYERS = {
    "errors": 0,
    "rank_reports": 1, "fsmode": 1, "dist": 1,
    "config": 2,
    "cluster": 2,
    "data": 3,
    "encode": 4,
    "model": 5, "quality": 5,
    "train": 6, "metrics": 6, "generate": 6, "recordings": 6,
    "launch": 7,
    "commands": 8, "__main__": 8,
}
FOUNDATION = ("errors",)  # imports nothing of the package at all


def layer_of(module: str) -> str:
    """`trainer.data.chatml` -> `data`; `trainer` itself is no layer."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import of the package in `source`, relative ones resolved."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "trainer"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(module.split(".")[: -node.level] + ([base] if base else []))
            if base.split(".")[0] != "trainer":
                continue
            if base == "trainer":  # `from trainer import dist, errors`: each name is a module
                found += [(node.lineno, f"trainer.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, base))
    return found


def back_edges(root: Path) -> list[str]:
    """Every import in the package under `root` that points up, or sideways between peer layers."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        here = layer_of(module)
        if not here:
            continue
        if here not in LAYERS:
            problems.append(f"{path.relative_to(root.parent)}: module outside every layer ({here}); add it to LAYERS")
            continue
        for line, target in imports_of(path.read_text(), module):
            there = layer_of(target)
            if not there or there == here:
                continue
            where = f"{path.relative_to(root.parent)}:{line} imports {target}"
            if here in FOUNDATION:
                problems.append(f"{where}: {here} is the foundation and imports nothing of the package")
            elif there not in LAYERS:
                problems.append(f"{where}: no such layer")
            elif LAYERS[there] >= LAYERS[here]:
                problems.append(f"{where}: {here} (layer {LAYERS[here]}) may not import {there} "
                                f"(layer {LAYERS[there]})")
    return problems


def test_the_package_imports_point_one_way_only() -> None:
    assert back_edges(PACKAGE) == []


def test_every_layer_says_in_its_init_what_it_is_for() -> None:
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc.splitlines()) == 1, f"{init}: a one-line docstring says what the layer holds"


def test_no_module_is_over_400_lines() -> None:
    long = {str(p.relative_to(REPO)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


@pytest.mark.parametrize(("planted", "into"), [
    ("from trainer.commands.train import main\n", "data/chatml.py"),  # data -> commands: up
    ("from trainer.metrics import series\n", "train/trainer.py"),  # train -> metrics: sideways
    ("import trainer.config.values\n", "errors.py"),  # the foundation imports nothing of ours
    ("from trainer.train import checkpoint\n", "encode/prepare.py"),  # inside a function counts too
])
def test_a_planted_back_edge_fails_the_check(tmp_path: Path, planted: str, into: str) -> None:
    import shutil

    copy = tmp_path / "trainer"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / into
    text = target.read_text()
    if "inside a function" in planted or into == "encode/prepare.py":
        text += "\n\ndef _planted() -> None:\n    " + planted
    else:
        text += "\n" + planted
    target.write_text(text)
    problems = back_edges(copy)
    assert len(problems) == 1 and into in problems[0], problems
