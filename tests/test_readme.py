"""The docs' generated blocks match the code, every link in them resolves, and the README's two commands
are the scripts CI runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tooling import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "examples" / "demo_data" / "README.md",
        REPO / "charts" / "higgs-audio-trainer" / "README.md"]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def test_readme_option_and_exit_code_tables_are_current() -> None:
    proc = subprocess.run([sys.executable, "scripts/update_readme.py", "--check"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_docs_document_every_env_var() -> None:
    from trainer.config.values import option_specs

    text = (REPO / "docs" / "options.md").read_text()
    from trainer.config.cli import CONFIG_ENV

    missing = [s.env for s in option_specs() if f"`{s.env}`" not in text]
    missing += [CONFIG_ENV] if f"`{CONFIG_ENV}`" not in text else []
    assert not missing


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "scripts/test.sh   #" in readme and "scripts/demo.sh   #" in readme
    assert "exec bash scripts/test.sh" in ci


def slug(heading: str) -> str:
    """The anchor a Markdown renderer gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text))


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.+)$", text, re.M)}


def broken_links(path: Path) -> list[str]:
    """Every relative link of `path` whose file, or whose #anchor in that file, does not exist."""
    broken = []
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:: not ours to check offline
            continue
        file, _, anchor = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and (resolved.suffix != ".md" or anchor not in anchors(resolved)):
            broken.append(f"{target}: no heading #{anchor} in {os.path.relpath(resolved, path.parent)}")
    return broken


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(REPO)) for d in DOCS])
def test_every_relative_link_resolves(doc: Path) -> None:
    assert broken_links(doc) == []


def test_the_link_check_finds_a_missing_file_and_a_missing_heading(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# A heading: with `code`\n")
    doc = tmp_path / "doc.md"
    doc.write_text("[ok](other.md#a-heading-with-code) [file](gone.md) [anchor](other.md#nope) [web](https://x.y)\n")
    assert broken_links(doc) == ["gone.md: no such file", "other.md#nope: no heading #nope in other.md"]


def test_the_readme_fits_on_a_few_screens_and_points_at_every_doc() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    missing = [d.name for d in sorted((REPO / "docs").glob("*.md")) if f"(docs/{d.name})" not in readme]
    assert missing == []


def test_readme_docs_and_demo_name_the_command_the_same_way() -> None:
    """The docs write `higgs-audio-trainer` after `source .venv/bin/activate`; a `.venv/bin/` spelling in the
    docs or in the commands the demo prints would leave a reader with two ways to run it."""
    readme = (REPO / "README.md").read_text()
    assert "source .venv/bin/activate" in readme
    printed = [line for line in (REPO / "scripts" / "demo.sh").read_text().splitlines()
               if line.lstrip().startswith("echo") and "higgs-audio-trainer" in line]
    assert printed and any("source .venv/bin/activate" in line for line in
                           (REPO / "scripts" / "demo.sh").read_text().splitlines() if line.startswith("echo"))
    spelled = [f"{path.name}: {line.strip()}" for path in DOCS for line in path.read_text().splitlines()
               if ".venv/bin/higgs-audio-trainer" in line]
    spelled += [f"demo.sh: {line.strip()}" for line in printed if ".venv/bin/higgs-audio-trainer" in line]
    assert spelled == []
