"""Options declared once: the kind and choices come from the annotation, messages name options through `label`.

The declarations here are the test's own small dataclasses, so what the annotation should give is written out by
hand, not read back from the code under test.
"""

from __future__ import annotations

import ast
import typing
from dataclasses import dataclass
from typing import Literal

import pytest

from tests.tooling import REPO
from trainer.config.data import DataFormat
from trainer.config.declare import PathStr, Tristate, opt
from trainer.config.values import SPECS, label, option_specs, parse_value
from trainer.errors import ConfigError


@dataclass
class _Sample:
    flag: bool = opt(False, "A boolean.")
    count: int = opt(3, "A count.", minimum=0)
    ratio: float = opt(0.5, "A ratio.")
    name: str | None = opt(None, "Some text.")
    where: PathStr | None = opt(None, "A path.")
    mixed: Tristate = opt("auto", "Auto, true or false.")
    mode: Literal["fast", "slow"] = opt("fast", "A choice.")
    names: list[str] = opt(["a"], "Free names.")
    parts: list[Literal["head", "tail"]] = opt([], "Names from a set.")


def test_the_kind_and_choices_come_from_the_annotation() -> None:
    got = {s.name: (s.kind, s.choices) for s in option_specs({"sample": _Sample})}
    assert got == {
        "flag": ("bool", None), "count": ("int", None), "ratio": ("float", None), "name": ("str", None),
        "where": ("path", None), "mixed": ("tristate", None), "mode": ("choice", ("fast", "slow")),
        "names": ("list", None), "parts": ("list", ("head", "tail")),
    }


def test_a_literal_option_accepts_its_values_and_refuses_others() -> None:
    spec = {s.name: s for s in option_specs({"sample": _Sample})}["mode"]
    assert parse_value(spec, "slow", "--mode") == "slow"
    with pytest.raises(ConfigError, match=r"^--mode: expected one of fast, slow, got 'medium'$"):
        parse_value(spec, "medium", "--mode")


def test_a_default_outside_its_literal_fails_at_declaration() -> None:
    @dataclass
    class Bad:
        mode: Literal["fast", "slow"] = opt("medium", "A choice whose default is not one of them.")

    with pytest.raises(TypeError, match=r"bad\.mode: the default of --mode: expected one of fast, slow"):
        option_specs({"bad": Bad})


def test_a_default_of_the_wrong_type_fails_at_declaration() -> None:
    @dataclass
    class Bad:
        steps: int = opt(2.5, "An integer option with a float default.")

    with pytest.raises(TypeError, match=r"bad\.steps"):
        option_specs({"bad": Bad})


def test_an_annotation_the_parser_cannot_read_fails_at_declaration() -> None:
    @dataclass
    class Bad:
        table: dict[str, str] = opt(None, "No option kind reads a mapping.")

    with pytest.raises(TypeError, match="no option kind"):
        option_specs({"bad": Bad})


def test_the_data_formats_the_reader_knows_are_the_choices_of_data_format() -> None:
    """The reader's table and the option's choices are one declaration: a format added to one is in both."""
    from trainer.data.formats import FORMATS

    assert FORMATS == typing.get_args(DataFormat) == SPECS["data_format"].choices
    assert FORMATS[0] == "auto"


def test_the_schedules_offered_are_schedules_transformers_knows() -> None:
    """Checked against transformers' own list, which the declaration does not read."""
    from transformers import SchedulerType

    assert set(SPECS["lr_scheduler_type"].choices or ()) <= {s.value for s in SchedulerType}


def test_the_job_kinds_offered_are_the_kinds_the_cluster_client_addresses() -> None:
    from trainer.cluster.client import KINDS

    assert set(SPECS["job_kind"].choices or ()) == set(KINDS)


def test_a_label_is_the_flag_and_the_env_var() -> None:
    assert label("max_steps") == "--max_steps / MAX_STEPS"
    assert label("adapter_path") == "--adapter_path / ADAPTER_PATH"


def test_a_label_of_no_option_fails() -> None:
    with pytest.raises(KeyError, match="no option named 'max_step'"):
        label("max_step")


# dist sits below the config layer (tests/trainer/test_layers.py) and cannot read the option table.
HAND_TYPED_ALLOWED = {"trainer/dist.py"}


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, text) of every string constant that is not a docstring, f-string parts included."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def test_no_message_types_an_option_label_by_hand() -> None:
    import re

    pattern = re.compile(r"--([a-z0-9_]+) / ([A-Z0-9_]+)")
    found = []
    for path in sorted((REPO / "trainer").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel in HAND_TYPED_ALLOWED:
            continue
        for line, text in _strings(ast.parse(path.read_text())):
            found += [f"{rel}:{line}: {m.group(0)}" for m in pattern.finditer(text)]
    assert found == [], "use trainer.config.values.label(name):\n" + "\n".join(found)


def test_every_label_in_the_package_names_an_option() -> None:
    """`label("x")` fails only when its message is raised; this finds a stale name before any user does."""
    stale = []
    for path in sorted((REPO / "trainer").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "label"
                    and node.args and isinstance(node.args[0], ast.Constant)
                    and node.args[0].value not in SPECS):
                stale.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.args[0].value!r}")
    assert stale == []
