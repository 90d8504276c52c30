"""Render k8s/, the plain manifests for users without Helm, from the chart.

The chart is the only source: k8s/ is `helm template` of it with ci/plain-manifests-values.yaml (the
defaults plus a Pushgateway and the alert rules), one file per object, named after its kind as in the
chart's templates/. Objects of APIs that only the Prometheus Operator serves go to
k8s/prometheus-operator/, so `kubectl apply -f k8s/` works on a cluster without it. k8s/trainer-v2/ is
the same rendering with `kind=TrainJob`, for clusters with Kubeflow Trainer v2: every object but the
Prometheus Operator's, which are the same under both kinds. A test runs this script with --check and
fails when k8s/ has drifted from the chart.

Usage: python scripts/render_manifests.py [--check] [--helm PATH]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "higgs-audio-trainer"
VALUES = CHART / "ci" / "plain-manifests-values.yaml"
OUT = REPO / "k8s"
RELEASE = "higgs-audio-trainer"
OPERATOR_APIS = ("monitoring.coreos.com/",)
HEADER = (
    "# Rendered by scripts/render_manifests.py from charts/higgs-audio-trainer with\n"
    "# charts/higgs-audio-trainer/ci/plain-manifests-values.yaml{extra}; do not edit: change the chart and re-run.\n"
)
# Folder -> extra `helm template` arguments of each variant.
VARIANTS = {Path(): (), Path("trainer-v2"): ("--set", "kind=TrainJob")}


def find_helm(explicit: str | None) -> str:
    """The helm binary: --helm, $HELM, the Helm 4 of scripts/ci/install_k8s_tools.sh, or helm on PATH."""
    for candidate in (explicit, os.environ.get("HELM"), str(REPO / ".cache" / "tools" / "bin" / "helm4")):
        if candidate and Path(candidate).is_file():
            return candidate
    found = shutil.which("helm")
    if not found:
        raise SystemExit("helm not found: run scripts/ci/install_k8s_tools.sh or pass --helm")
    return found


def render(helm: str) -> dict[Path, str]:
    """Relative path -> file text of every manifest, of every variant."""
    files: dict[Path, str] = {}
    for folder, extra in VARIANTS.items():
        for path, text in render_variant(helm, extra).items():
            if folder == Path() or path.parts[0] != "prometheus-operator":
                files[folder / path] = text
    return files


def render_variant(helm: str, extra: tuple[str, ...]) -> dict[Path, str]:
    """Relative path -> file text of every manifest of one `helm template`."""
    header = HEADER.format(extra=f" and {' '.join(extra)}" if extra else "")
    out = subprocess.run(
        [helm, "template", RELEASE, str(CHART), "-f", str(VALUES), "--skip-tests", *extra],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    files: dict[Path, str] = {}
    for doc in out.split("\n---\n"):
        body = "\n".join(
            line for line in doc.strip().splitlines() if not line.startswith("# Source:")
        ).strip()
        if not body or body == "---":
            continue
        obj = yaml.safe_load(body)
        folder = Path("prometheus-operator") if obj["apiVersion"].startswith(OPERATOR_APIS) else Path()
        path = folder / f"{obj['kind'].lower()}.yaml"
        if path in files:
            raise SystemExit(f"two objects of kind {obj['kind']} in the chart: name the files apart")
        files[path] = header + body + "\n"
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if k8s/ differs from the chart")
    parser.add_argument("--helm", help="helm binary (default: Helm 4 from scripts/ci/install_k8s_tools.sh)")
    parser.add_argument("--out", type=Path, default=OUT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    files = render(find_helm(args.helm))
    existing = {p.relative_to(args.out) for p in args.out.rglob("*.yaml")} if args.out.exists() else set()
    stale = sorted(p for p in files if not (args.out / p).exists() or (args.out / p).read_text() != files[p])
    extra = sorted(existing - set(files))
    if args.check:
        for p in stale:
            print(f"k8s/{p} differs from the chart", file=sys.stderr)
        for p in extra:
            print(f"k8s/{p} is not rendered by the chart", file=sys.stderr)
        if stale or extra:
            print("run python scripts/render_manifests.py", file=sys.stderr)
            return 1
        return 0
    for p in extra:
        (args.out / p).unlink()
    for p in stale:
        (args.out / p).parent.mkdir(parents=True, exist_ok=True)
        (args.out / p).write_text(files[p])
        print(f"wrote k8s/{p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
