"""How the chart's templates are laid out: pure helpers, one validation template, each rule written once.

A `fail` in a helper fires wherever the helper is included, in whichever template Helm happens to render
first; kept in one template that each job includes once, every check runs once, in one order, and a
reader finds all of them in one file (kuberay's validateConfig does the same).
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.chart.chartlib import CHART

TEMPLATES = CHART / "templates"
VALIDATION = TEMPLATES / "_validate.tpl"
JOB_TEMPLATES = {"pytorchjob.yaml", "trainjob.yaml"}
FAIL = re.compile(r"\{\{-?\s*fail\b")
INCLUDE_VALIDATE = re.compile(r'include\s+"higgs-audio-trainer\.validate"')


def template_texts() -> dict[str, str]:
    return {p.relative_to(TEMPLATES).as_posix(): p.read_text() for p in TEMPLATES.rglob("*") if p.is_file()}


def test_every_fail_is_in_the_validation_template() -> None:
    outside = {name: len(FAIL.findall(text)) for name, text in template_texts().items()
               if name != VALIDATION.name and FAIL.search(text)}
    assert not outside, f"fail outside {VALIDATION.name}: {outside}"
    assert FAIL.search(VALIDATION.read_text())


def test_each_job_template_includes_the_validation_once_and_nothing_else_does() -> None:
    counts = {name: len(INCLUDE_VALIDATE.findall(text)) for name, text in template_texts().items()}
    assert {name: n for name, n in counts.items() if n} == dict.fromkeys(JOB_TEMPLATES, 1)


def test_the_kind_default_and_the_dns_1035_pattern_are_written_once() -> None:
    texts = template_texts()
    kind_defaults = [name for name, text in texts.items() for _ in re.finditer(r'default\s+"PyTorchJob"', text)]
    assert kind_defaults == ["_names.tpl"]
    pattern = re.escape("^[a-z]([-a-z0-9]*[a-z0-9])?$")
    dns1035 = [name for name, text in texts.items() for _ in re.finditer(pattern, text)]
    assert dns1035 == [VALIDATION.name]


def test_the_helpers_are_split_by_purpose() -> None:
    """Each helper file defines only its kind of thing; no helper is defined twice."""
    defines: dict[str, list[str]] = {}
    for path in sorted(Path(TEMPLATES).glob("_*.tpl")):
        for name in re.findall(r'define\s+"([^"]+)"', path.read_text()):
            defines.setdefault(name, []).append(path.name)
    assert {n: f for n, f in defines.items() if len(f) > 1} == {}
    where = {name: files[0] for name, files in defines.items()}
    assert where["higgs-audio-trainer.jobName"] == where["higgs-audio-trainer.kind"] == "_names.tpl"
    assert where["higgs-audio-trainer.trainerOptions"] == where["higgs-audio-trainer.env"] == "_options.tpl"
    assert where["higgs-audio-trainer.podTemplate"] == where["higgs-audio-trainer.resources"] == "_pod.tpl"
    assert where["higgs-audio-trainer.validate"] == VALIDATION.name
