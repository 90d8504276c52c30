"""The private parts of transformers' `Trainer` that our trainer relies on, checked against the installed release.

A private method can be renamed or change its parameters in any 5.x release, and `pip install` takes the
newest: this test reads our source (no second list to keep in step), finds every private `Trainer` method we
override and every private attribute we read that is not our own, and fails with a message naming each one
that the installed transformers no longer has, or no longer calls the way our override expects.
"""

from __future__ import annotations

import ast
import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import transformers

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = ROOT / "trainer"
# The modules that subclass `Trainer` or hold a trainer: where a private name of transformers could be read.
TRAINER_MODULES = [PACKAGE / "train" / name for name in ("trainer.py", "saving.py", "agreement.py", "nan_guard.py",
                                                          "signals.py", "fsdp.py", "token_batches.py")]


def _trainer_classes(tree: ast.Module) -> list[ast.ClassDef]:
    return [node for node in tree.body if isinstance(node, ast.ClassDef)
            and any(isinstance(b, ast.Name) and b.id == "Trainer" for b in node.bases)]


def _calls_super(method: ast.FunctionDef) -> bool:
    """Whether `method` calls `super().<its own name>`: what makes a private method an override."""
    for node in ast.walk(method):
        if (isinstance(node, ast.Attribute) and node.attr == method.name and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Name) and node.value.func.id == "super"):
            return True
    return False


def overrides() -> dict[str, ast.FunctionDef]:
    """Methods of our `Trainer` subclasses that exist in transformers' `Trainer` or call `super()` for
    themselves (a private one that does is an override, whether upstream still has it or not)."""
    found: dict[str, ast.FunctionDef] = {}
    for path in TRAINER_MODULES:
        for cls in _trainer_classes(ast.parse(path.read_text())):
            for node in cls.body:
                if (isinstance(node, ast.FunctionDef) and not node.name.startswith("__")
                        and (_calls_super(node) or hasattr(transformers.Trainer, node.name))):
                    found[node.name] = node
    return found


def _own_names() -> set[str]:
    """Every private name our package defines: functions, methods, module variables, `self._x = ...`."""
    names: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Attribute):
                names.add(node.target.attr)
    return names


def private_reads() -> set[str]:
    """Private attributes our trainer modules read that our package does not define: transformers' own."""
    own = _own_names()
    read: set[str] = set()
    for path in TRAINER_MODULES:
        tree = ast.parse(path.read_text())
        modules = {alias.asname or alias.name.split(".")[0] for node in ast.walk(tree)
                   if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load) and node.attr.startswith("_")
                    and not node.attr.startswith("__") and node.attr not in own
                    and not (isinstance(node.value, ast.Name) and node.value.id in modules)):  # os._exit: not ours
                read.add(node.attr)
    return read


def _parameters(method: ast.FunctionDef) -> list[tuple[str, bool]]:
    """(name, has a default) of each named parameter after `self`, positional and keyword-only."""
    args = method.args
    positional = args.posonlyargs + args.args
    defaults = [False] * (len(positional) - len(args.defaults)) + [True] * len(args.defaults)
    named = list(zip((a.arg for a in positional), defaults, strict=True))[1:]
    named += [(a.arg, d is not None) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)]
    return named


def problems(trainer_cls: type) -> list[str]:
    """What in our source no longer fits `trainer_cls` (transformers' `Trainer`, or a planted copy)."""
    found = []
    source = inspect.getsource(inspect.getmodule(trainer_cls))
    for name, method in sorted(overrides().items()):
        upstream = getattr(trainer_cls, name, None)
        if upstream is None:
            found.append(f"Trainer.{name} is gone from transformers {transformers.__version__}, and "
                         f"HiggsAudioTrainer overrides it (line {method.lineno}): nothing calls the override now")
            continue
        params = inspect.signature(upstream).parameters.values()
        theirs = [(p.name, p.default is not p.empty) for p in params
                  if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        ours = _parameters(method)
        takes_rest = method.args.vararg is not None or method.args.kwarg is not None
        if ours != theirs and not (takes_rest and all(p in theirs for p in ours)):
            found.append(f"Trainer.{name} takes {theirs} in transformers {transformers.__version__}; "
                         f"our override (line {method.lineno}) takes {ours}")
    for attr in sorted(private_reads()):
        if not hasattr(trainer_cls, attr) and f"self.{attr} =" not in source:
            found.append(f"Trainer.{attr} is read by our trainer but transformers {transformers.__version__} "
                         "no longer has it")
    return found


def test_every_private_trainer_name_we_use_exists_in_the_installed_transformers_with_our_signature() -> None:
    from trainer.train.trainer import PRIVATE_OVERRIDES

    private = {name for name in overrides() if name.startswith("_")}
    assert private == set(PRIVATE_OVERRIDES), "PRIVATE_OVERRIDES must give the reason for each private override"
    assert len(private) <= 3, f"at most three private Trainer methods may be overridden: {sorted(private)}"
    assert not problems(transformers.Trainer), "\n".join(problems(transformers.Trainer))


PLANTED = textwrap.dedent("""
    import importlib.util, sys
    spec = importlib.util.spec_from_file_location("transformers.trainer", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    sys.modules["transformers.trainer"] = module
    spec.loader.exec_module(module)
    import pytest
    sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", sys.argv[2]]))
""")


def test_a_renamed_private_method_upstream_fails_the_surface_test_with_its_name(tmp_path) -> None:
    """A copy of transformers' trainer module with one overridden method renamed, loaded in place of the
    installed one in a fresh interpreter: the test above must fail there, naming the method."""
    import transformers.trainer as installed

    original = Path(installed.__file__).read_text()
    assert original.count("def _get_train_sampler(") == 1
    planted = tmp_path / "trainer.py"
    planted.write_text(original.replace("def _get_train_sampler(", "def _get_train_sampler_v2("))
    test = f"{__file__}::test_every_private_trainer_name_we_use_exists_in_the_installed_transformers_with_our_signature"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", PLANTED, str(planted), test], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Trainer._get_train_sampler is gone from transformers" in result.stdout, result.stdout
