"""Which Kubernetes API to talk to, and with whose credentials.

In-cluster (the pod's service account) or a kubeconfig (a workstation), and the job kinds this project runs.

The `kubernetes` package is imported here only, when a client is wanted: a run with Events off never loads it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class JobKind:
    """A custom resource this project renders, as the API addresses it."""

    kind: str
    group: str
    version: str
    plural: str
    pod_selector: str  # the pod label holding the job's name

    @property
    def api_version(self) -> str:
        """The `apiVersion` the custom objects API expects with this kind's group."""
        return f"{self.group}/{self.version}"


KINDS = {
    "PyTorchJob": JobKind("PyTorchJob", "kubeflow.org", "v1", "pytorchjobs", "training.kubeflow.org/job-name"),
    "TrainJob": JobKind("TrainJob", "trainer.kubeflow.org", "v1alpha1", "trainjobs",
                        "jobset.sigs.k8s.io/jobset-name"),
}


class ClusterUnavailable(Exception):
    """No credentials to reach a cluster with; the message says what was tried."""


def in_cluster(environ: Mapping[str, str]) -> bool:
    """Whether this process runs in a pod that has a service account token to call the API with."""
    return bool(environ.get("KUBERNETES_SERVICE_HOST")) and (SA_DIR / "token").is_file()


def api_client(environ: Mapping[str, str] | None = None, *, context: str | None = None) -> tuple[Any, str]:
    """(a `kubernetes.client.ApiClient`, where it points, in words); raises `ClusterUnavailable`.

    In a pod with a mounted token: the in-cluster configuration. Elsewhere: the kubeconfig of `KUBECONFIG`
    or ~/.kube/config.
    """
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    env = os.environ if environ is None else environ
    configuration = client.Configuration()
    if in_cluster(env):
        try:
            config.incluster_config.InClusterConfigLoader(
                token_filename=str(SA_DIR / "token"), cert_filename=str(SA_DIR / "ca.crt"), environ=env,
            ).load_and_set(configuration)
        except ConfigException as err:
            raise ClusterUnavailable(f"in-cluster configuration: {err}") from err
        return client.ApiClient(configuration), f"in-cluster API {configuration.host}"
    path = env.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    first = path.split(os.pathsep)[0]
    if not Path(first).is_file():
        raise ClusterUnavailable(f"no kubeconfig at {first} (KUBECONFIG or ~/.kube/config) and not in a pod")
    try:
        config.load_kube_config(config_file=first, context=context, client_configuration=configuration)
    except (ConfigException, OSError, ValueError, TypeError) as err:
        raise ClusterUnavailable(f"kubeconfig {first}: {err}") from err
    return client.ApiClient(configuration), f"{configuration.host} (kubeconfig {first})"


def namespace_of_pod(environ: Mapping[str, str]) -> str | None:
    """The pod's own namespace, from its service account; None outside a pod."""
    try:
        return (SA_DIR / "namespace").read_text().strip() or None
    except OSError:
        return None


def default_namespace(environ: Mapping[str, str] | None = None) -> str:
    """The kubeconfig context's namespace, else the pod's, else `default` (as kubectl does)."""
    env = os.environ if environ is None else environ
    if not in_cluster(env):
        try:
            from kubernetes import config

            path = (env.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")).split(os.pathsep)[0]
            _, current = config.list_kube_config_contexts(config_file=path)
            ns = (current or {}).get("context", {}).get("namespace")
            if ns:
                return str(ns)
        except Exception:  # no kubeconfig: the error comes from api_client, with what was tried
            pass
    return namespace_of_pod(env) or "default"
