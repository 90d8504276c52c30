"""The package's docstrings keep to one style (Google, as TRL writes it), and an `Args:` section cannot drift.

ruff's pydocstyle rules (pyproject.toml) check the layout and that public names carry a docstring; they do not
check that the names under `Args:` are the function's parameters, nor the `name (`type`):` entry form. This test
reads every module of `trainer/` with `ast` and checks both, and that no other argument style (reST `:param`,
numpy `Parameters` with a dashed underline) is in use.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "trainer"
# `name (`type`):`, `name (`type`, *optional*):` or `name (`type`, *optional*, defaults to `x`):`, then the
# description indented on the lines below.
ENTRY = re.compile(
    r"^(?P<name>\*{0,2}\w+) \(`[^`]+`(?: or `[^`]+`)*(?:, \*optional\*(?:, defaults to `[^`]+`)?)?\):$"
)
OTHER_STYLES = re.compile(r"^\s*(:param\b|:type\b|:returns?:|Parameters\n\s*-{3,}|Arguments:$)", re.MULTILINE)


def parameters(func: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    a = func.args
    names = {p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)}
    names |= {f"*{a.vararg.arg}"} if a.vararg else set()
    names |= {f"**{a.kwarg.arg}"} if a.kwarg else set()
    return names - {"self", "cls"}


def args_section(doc: str) -> list[str] | None:
    """The lines of the `Args:` section (dedented by the section's own indent), or None without one."""
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "Args:":
            base = len(line) - len(line.lstrip())
            body = []
            for nxt in lines[i + 1:]:
                if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= base:
                    break
                body.append(nxt[base:])
            return body
    return None


def problems(source: str, where: str) -> list[str]:
    """Every way the `Args:` sections and argument styles of `source` break the convention."""
    found = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Module):
            continue
        doc = ast.get_docstring(node, clean=True)
        if not doc:
            continue
        name = getattr(node, "name", "<module>")
        line = getattr(node, "lineno", 1)
        if OTHER_STYLES.search(doc):
            found.append(f"{where}:{line} {name}: arguments in another style than `Args:`")
        body = args_section(doc)
        if body is None:
            continue
        if isinstance(node, ast.ClassDef):
            # A class's arguments are its `__init__`'s, or a dataclass's annotated fields.
            init = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
            fields = {n.target.id for n in node.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
            signature = parameters(init) if init is not None else fields
        elif isinstance(node, ast.Module):
            found.append(f"{where}:{line}: an `Args:` section in a module docstring")
            continue
        else:
            signature = parameters(node)
        entries = [text for text in body if text.strip() and not text.startswith(" " * 8)]
        if not entries:
            found.append(f"{where}:{line} {name}: an empty `Args:` section")
        for text in entries:
            m = ENTRY.match(text.strip())
            if m is None or not text.startswith("    ") or text.startswith("     "):
                found.append(f"{where}:{line} {name}: `{text.strip()}` is not a `name (`type`):` entry")
            elif m["name"] not in signature:
                found.append(f"{where}:{line} {name}: `Args:` names `{m['name']}`, which is not a parameter "
                             f"(the signature has {sorted(signature)})")
    return found


def test_args_sections_name_the_signatures_parameters_in_the_google_form():
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 50, "the package was not found"
    found = [p for path in modules for p in problems(path.read_text(), str(path.relative_to(PACKAGE.parent)))]
    assert not found, "\n".join(found)


def test_a_stale_argument_name_is_reported():
    # The drift the test is for: a parameter renamed in the signature and not in its docstring.
    source = '''
def scale(values, factor):
    """Multiply every value, so callers need no loop.

    Args:
        values (`list[float]`):
            The numbers.
        ratio (`float`):
            What each is multiplied by.
    """
'''
    assert problems(source, "m.py") == [
        "m.py:2 scale: `Args:` names `ratio`, which is not a parameter (the signature has ['factor', 'values'])"
    ]


def test_other_argument_styles_and_loose_entries_are_reported():
    source = '''
def a(x):
    """Why a exists.

    :param x: the input.
    """

def b(x):
    """Why b exists.

    Args:
        x: the input, without its type.
    """

class C:
    """Why C exists.

    Args:
        size (`int`):
            How many.
    """

    def __init__(self, size: int) -> None:
        self.size = size
'''
    assert problems(source, "m.py") == [
        "m.py:2 a: arguments in another style than `Args:`",
        "m.py:8 b: `x: the input, without its type.` is not a `name (`type`):` entry",
    ]
