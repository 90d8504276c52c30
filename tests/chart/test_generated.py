"""Generated files are up to date: the chart's trainer options, its README, the plain manifests in k8s/."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.chartlib import CHART, helm_bin
from tests.tooling import REPO, missing

sys.path.insert(0, str(REPO / "scripts"))
import gen_chart_readme


def run_script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_chart_trainer_values_schema_and_option_list_match_trainer_config() -> None:
    proc = run_script("gen_chart_values.py", "--check")
    assert proc.returncode == 0, proc.stderr


def test_chart_readme_is_generated_from_current_values() -> None:
    proc = run_script("gen_chart_readme.py", "--check")
    assert proc.returncode == 0, proc.stderr


def leaves(node: Any, prefix: str = "") -> list[str]:
    """Paths of values that are not maps with children (empty maps and lists count as leaves)."""
    if isinstance(node, dict) and node:
        return [p for k, v in node.items() for p in leaves(v, f"{prefix}{k}.")]
    return [prefix.rstrip(".")]


def test_every_value_is_documented_in_the_readme() -> None:
    text = (CHART / "values.yaml").read_text()
    documented = {d.path for d in gen_chart_readme.documented_values(text)}
    readme = (CHART / "README.md").read_text()
    undocumented = [
        p
        for p in leaves(yaml.safe_load(text))
        if not any(p == d or p.startswith(d + ".") for d in documented)
    ]
    assert undocumented == []
    assert all(f"| `{d}` |" in readme for d in documented)


def schema_paths(schema: dict[str, Any], root: dict[str, Any], prefix: str = "") -> set[str]:
    """Dotted paths of every property the schema names (through $ref), stopping at free-form maps."""
    if "$ref" in schema:
        schema = root["definitions"][schema["$ref"].rsplit("/", 1)[1]]
    paths: set[str] = set()
    for key, sub in schema.get("properties", {}).items():
        paths.add(prefix + key)
        paths |= schema_paths(sub, root, f"{prefix}{key}.")
    return paths


def value_paths(node: Any, prefix: str = "") -> set[str]:
    paths: set[str] = set()
    if isinstance(node, dict):
        for k, v in node.items():
            paths.add(prefix + k)
            paths |= value_paths(v, f"{prefix}{k}.")
    return paths


def test_schema_names_no_value_that_values_yaml_lacks() -> None:
    """helm lint rejects values the schema lacks; this catches the reverse, a schema key without a default.

    Free-form maps (resources, labels, schedulingPolicy, trainerFromSecret) may hold keys values.yaml
    leaves out, so only schema paths under a key that values.yaml sets to a non-empty map are compared.
    """
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    in_values = value_paths(values)
    optional = (
        "resources.",
        "metrics.pushgateway.resources.",
        "runPolicy.schedulingPolicy.",
        "trainerFromSecret.",
    )
    missing_defaults = sorted(
        p for p in schema_paths(schema, schema) - in_values if not p.startswith(optional)
    )
    assert missing_defaults == []


def test_k8s_manifests_equal_the_chart_rendering() -> None:
    proc = run_script("render_manifests.py", "--check", "--helm", helm_bin("helm4"))
    assert proc.returncode == 0, proc.stderr


def test_k8s_manifests_equal_the_helm3_rendering() -> None:
    proc = run_script("render_manifests.py", "--check", "--helm", helm_bin("helm3"))
    assert proc.returncode == 0, proc.stderr


def test_render_manifests_reports_a_hand_edit(tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    assert run_script("render_manifests.py", "--helm", helm_bin("helm4"), "--out", str(out)).returncode == 0
    job = out / "pytorchjob.yaml"
    job.write_text(job.read_text().replace("backoffLimit: 3", "backoffLimit: 30"))
    (out / "extra.yaml").write_text("kind: ConfigMap\n")
    proc = run_script("render_manifests.py", "--check", "--helm", helm_bin("helm4"), "--out", str(out))
    assert proc.returncode == 1
    assert "k8s/pytorchjob.yaml differs" in proc.stderr and "k8s/extra.yaml is not rendered" in proc.stderr


YAMLLINT_RULES = (
    "document-start: disable, truthy: {check-keys: false}, indentation: {indent-sequences: whatever}"
)


@pytest.mark.parametrize(
    ("files", "line_length"),
    [
        ([CHART / "values.yaml", CHART / "Chart.yaml", *sorted((CHART / "ci").glob("*.yaml"))], "{max: 120}"),
        # Rendered manifests embed the dashboard JSON, one long line per panel.
        (sorted((REPO / "k8s").rglob("*.yaml")), "disable"),
    ],
    ids=["chart-sources", "k8s-manifests"],
)
def test_yaml_files_pass_yamllint(files: list[Path], line_length: str) -> None:
    try:
        import yamllint  # noqa: F401
    except ImportError:
        missing("the Python package yamllint")
    assert files
    config = f"{{extends: default, rules: {{{YAMLLINT_RULES}, line-length: {line_length}}}}}"
    proc = subprocess.run(
        [sys.executable, "-m", "yamllint", "-s", "-d", config, *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("name", ["gen_chart_values.py", "gen_chart_readme.py", "render_manifests.py"])
def test_generator_scripts_leave_the_tree_unchanged_when_current(name: str) -> None:
    """Running a generator on an up-to-date tree writes nothing (it reports each file it writes)."""
    args = ("--helm", helm_bin("helm4")) if name == "render_manifests.py" else ()
    proc = run_script(name, "--check", *args)
    assert proc.returncode == 0 and proc.stdout == "", proc.stdout + proc.stderr


def test_values_generator_keeps_set_values_drops_removed_options_and_adds_new_ones() -> None:
    import gen_chart_values

    from trainer.config.values import option_specs

    specs = [s for s in option_specs() if s.name in ("use_lora", "lora_rank")]
    text = (
        "trainer:\n"
        f"{gen_chart_values.BEGIN}\n"
        "  # -- stale comment\n"
        "  use_lora: true\n"
        "  removed_option: 3\n"
        f"{gen_chart_values.END}\n"
    )
    out = gen_chart_values.render_values(text, specs)
    assert yaml.safe_load(out)["trainer"] == {"use_lora": True, "lora_rank": None}
    assert "stale comment" not in out
    assert "# -- (int) LoRA rank r. Env LORA_RANK; trainer default: `16`." in out


def test_schema_rejects_unknown_keys_at_every_level() -> None:
    """Every object the chart defines (one with `properties`) forbids keys it does not name."""
    schema = json.loads((CHART / "values.schema.json").read_text())

    def open_objects(node: Any, where: str) -> list[str]:
        if isinstance(node, list):
            return [p for i, n in enumerate(node) for p in open_objects(n, f"{where}[{i}]")]
        if not isinstance(node, dict):
            return []
        found = [where] if "properties" in node and node.get("additionalProperties") is not False else []
        return found + [p for k, v in node.items() for p in open_objects(v, f"{where}/{k}")]

    # core/v1 Container and EnvVar entries: test_core_schemas.py checks them strictly as rendered.
    assert sorted(open_objects(schema, "#")) == [
        "#/properties/extraContainers/items", "#/properties/extraEnv/items", "#/properties/initContainers/items"
    ]
