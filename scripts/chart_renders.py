"""Save, then compare, every rendering of the chart: the check that a refactor of its templates changed nothing.

`save DIR` runs `helm template` with Helm 3 and Helm 4 (.cache/tools/bin) on the defaults and every
ci/*.yaml values file, each as a PyTorchJob and as a TrainJob, with and without the Prometheus Operator's
API, and on every bad-values case of tests/chart/test_bad_values.py plus the template checks it does not
cover; it writes each output (stdout, or the exit status and stderr of a refusal) to DIR. `compare DIR`
renders the same again and fails on any difference: renders byte for byte, refusals by their message
(Helm's "execution error at (<template>:<line>:<col>)" prefix names where the check lives, which a
refactor may move).

Usage: python scripts/chart_renders.py save|compare DIR
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "higgs-audio-trainer"
HELMS = {name: REPO / ".cache" / "tools" / "bin" / name for name in ("helm3", "helm4")}
RELEASE = "test-run"
OPERATOR = ("--api-versions", "monitoring.coreos.com/v1")
# Template checks that test_bad_values.py leaves to other tests: id -> (values, release).
MORE_REFUSALS: dict[str, tuple[dict, str]] = {
    "trainjob-restart-always": ({"kind": "TrainJob", "restartPolicy": "Always"}, "run"),
    "trainjob-scheduling-policy": ({"kind": "TrainJob", "runPolicy": {"schedulingPolicy": {"queue": "q"}}}, "run"),
    "trainjob-reserved-env": ({"kind": "TrainJob", "extraEnv": [{"name": "PET_MASTER_PORT", "value": "1"}]}, "run"),
    "trainjob-pod-values-with-existing-runtime": (
        {"kind": "TrainJob", "trainJob": {"runtimeRef": {"name": "torch-distributed"}},
         "extraContainers": [{"name": "x", "image": "x"}]},
        "run",
    ),
    "trainjob-read-write-once": ({"kind": "TrainJob", "workers": 1}, "run"),
    "trainjob-host-network": ({"kind": "TrainJob", "hostNetwork": True}, "run"),
    "trainjob-suspend-under-kueue": ({"kind": "TrainJob", "kueue": {"queueName": "q"},
                                      "runPolicy": {"suspend": True}}, "run"),
    "trainjob-release-name-not-dns-1035": ({"kind": "TrainJob"}, "1st-run"),
    "trainjob-output-dir-off-the-volume": ({"kind": "TrainJob", "trainer": {"output_dir": "/tmp/out"}}, "run"),
    "trainjob-request-above-limit": ({"kind": "TrainJob", "resources": {"requests": {"memory": "512Gi"}}}, "run"),
    "hf-token-in-extra-env": ({"extraEnv": [{"name": "HF_TOKEN", "value": "x"}]}, "run"),
    "home-in-extra-env": ({"extraEnv": [{"name": "HOME", "value": "/x"}]}, "run"),
    "grace-period-skipped-schema": ({"terminationGracePeriodSeconds": 20}, "run"),
    "pushgateway-name-from-override-prefix": ({"jobName": "run", "fullnameOverride": "9-x"}, "run"),
}
SKIP_SCHEMA = {"grace-period-skipped-schema"}


def value_files() -> list[Path | None]:
    return [None, *sorted((CHART / "ci").glob("*.yaml"))]


def refusals() -> dict[str, tuple[dict, str]]:
    sys.path.insert(0, str(REPO))
    from tests.chart.test_bad_values import CASES

    return {**{k: (v[0], v[1]) for k, v in CASES.items()}, **MORE_REFUSALS}


def helm_template(helm: Path, release: str, *args: str) -> str:
    proc = subprocess.run([str(helm), "template", release, str(CHART), *args], capture_output=True, text=True,
                          check=False, timeout=120)
    return proc.stdout if proc.returncode == 0 else f"exit status {proc.returncode}\n{proc.stderr}"


def render_all() -> dict[str, str]:
    """Relative file name -> output, of every rendering."""
    out: dict[str, str] = {}
    for helm_name, helm in HELMS.items():
        if not helm.is_file():
            raise SystemExit(f"{helm} is missing: run scripts/ci/install_k8s_tools.sh")
        for values in value_files():
            stem = "defaults" if values is None else values.stem
            file_args = () if values is None else ("-f", str(values))
            for kind in ("PyTorchJob", "TrainJob"):
                for operator in (False, True):
                    args = (*file_args, "--set", f"kind={kind}", *(OPERATOR if operator else ()))
                    name = f"{helm_name}/{stem}.{kind}{'.operator' if operator else ''}.yaml"
                    out[name] = helm_template(helm, RELEASE, *args)
        with tempfile.TemporaryDirectory() as tmp:
            for case, (values, release) in refusals().items():
                f = Path(tmp) / f"{case}.yaml"
                f.write_text(yaml.safe_dump(values))
                extra = ("--skip-schema-validation",) if case in SKIP_SCHEMA else ()
                out[f"{helm_name}/refused/{case}.txt"] = helm_template(helm, release, "-f", str(f), *extra)
    return out


def message(text: str) -> str:
    """A refusal without the template location, which may move; the message must not."""
    return re.sub(r"execution error at \([^)]*\): ", "execution error: ", text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("save", "compare"))
    parser.add_argument("dir", type=Path)
    args = parser.parse_args()
    renders = render_all()
    if args.action == "save":
        for name, text in renders.items():
            (args.dir / name).parent.mkdir(parents=True, exist_ok=True)
            (args.dir / name).write_text(text)
        print(f"{len(renders)} renderings saved to {args.dir}")
        return 0
    differ = []
    saved = {str(p.relative_to(args.dir)) for p in args.dir.rglob("*") if p.is_file()}
    for name, text in renders.items():
        path = args.dir / name
        if not path.is_file():
            differ.append(f"{name}: not saved")
            continue
        before = path.read_text()
        refused = before.startswith("exit status")
        same = message(before) == message(text) if refused else before == text
        if not same:
            differ.append(f"{name}: differs")
    differ += [f"{name}: saved but not rendered now" for name in sorted(saved - set(renders))]
    for line in differ:
        print(line, file=sys.stderr)
    print(f"{len(renders) - len(differ)} of {len(renders)} renderings unchanged", file=sys.stderr)
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
