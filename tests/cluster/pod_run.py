"""One pod run by the node agent (tests/cluster/node_agent.py): its volumes, its containers as processes in
private namespaces, and its status as a kubelet writes it."""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import re
import shlex
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.cluster.node_agent import NodeAgent

log = logging.getLogger(__name__)

NODE = "node-0"
TERMINATION_DIR = "/run/node-agent-termination"  # where a container finds its termination-log file
ENTRYPOINT, DEFAULT_ARGS = ["higgs-audio-trainer", "launch"], ["train"]  # image/Dockerfile's
# The image's ENV (image/Dockerfile), with a thread per process: the machine has few cores.
IMAGE_ENV = {"HOME": "/tmp", "XDG_CACHE_HOME": "/tmp/.cache", "HF_HOME": "/tmp/.cache/huggingface",
             "HF_HUB_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
             "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: a known variable is replaced, `$$(VAR)` stays literal, others stay."""
    return re.sub(r"\$(\$?)\(([A-Za-z_][A-Za-z0-9_.-]*)\)",
                  lambda m: f"$({m.group(2)})" if m.group(1) else env.get(m.group(2), m.group(0)), text)


def quantity(text: str) -> int:
    """Bytes of a Kubernetes quantity (2Gi, 500M, 1024): tmpfs takes bytes."""
    m = re.fullmatch(r"([0-9.]+)(Ki|Mi|Gi|Ti|k|M|G|T|)", str(text).strip())
    if not m:
        raise ValueError(f"quantity {text!r} is not served by the node agent")
    scale = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    return int(float(m.group(1)) * scale[m.group(2)])


@dataclass
class ContainerRun:
    """One container's process: the `unshare` command whose child is the container's PID 1."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    termination_log: Path
    started: str = field(default_factory=now)

    def pid1(self) -> int | None:
        """Host PID of the container's PID 1 (unshare's only child), None once it is gone."""
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    def signal(self, sig: int) -> None:
        pid = self.pid1()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


class PodRun:
    """Runs one pod on a thread: volumes, init containers, the container, status; `stop` ends it."""

    def __init__(self, agent: NodeAgent, pod: Any) -> None:
        self.agent, self.pod = agent, pod
        self.ns, self.name, self.uid = pod.metadata.namespace, pod.metadata.name, pod.metadata.uid
        self.dir = agent.root / "pods" / f"{self.ns}_{self.name}_{self.uid[:8]}"
        self.current: ContainerRun | None = None
        self.stopping = threading.Event()
        self.done = threading.Event()
        self.exit_code: int | None = None
        self.thread = threading.Thread(target=self._run, name=f"pod-{self.name}", daemon=True)

    # ---- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    def stop(self, grace: float) -> None:
        """SIGTERM to the running container, SIGKILL after `grace` seconds (the pod's grace period)."""
        self.stopping.set()
        run = self.current
        if run is None or run.proc.poll() is not None:
            return
        run.signal(signal.SIGTERM)
        try:
            run.proc.wait(grace)
        except subprocess.TimeoutExpired:
            run.signal(signal.SIGKILL)
            run.proc.wait()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the running container's PID 1 (a test's SIGKILL: an out-of-memory kill)."""
        if self.current is not None:
            self.current.signal(sig)

    def _run(self) -> None:
        try:
            self._run_pod()
        except Exception as exc:  # a fault of the agent shows in the pod's status, not as a hang
            log.exception("node agent: pod %s/%s", self.ns, self.name)
            self._status("Failed", message=f"node agent: {type(exc).__name__}: {exc}")
        finally:
            self.done.set()

    def _run_pod(self) -> None:
        spec = self.pod.spec
        self.dir.mkdir(parents=True, exist_ok=True)
        volumes = self._volumes()
        init = list(spec.init_containers or [])
        statuses_init: list[dict] = [self._waiting(c, "PodInitializing") for c in init]
        main = list(spec.containers)
        if len(main) != 1:
            self._status("Failed", message=f"node agent runs pods of one container; this one has {len(main)}")
            return
        (container,) = main
        self._status("Pending", init=statuses_init, main=[self._waiting(container, "PodInitializing")],
                     start=True)
        for i, c in enumerate(init):
            statuses_init[i] = self._running_status(c)
            self._status("Pending", init=statuses_init, main=[self._waiting(container, "PodInitializing")])
            code, message = self._run_container(c, volumes)
            statuses_init[i] = self._terminated(c, code, message)
            if code != 0 or self.stopping.is_set():
                self.exit_code = code
                self._status("Failed", init=statuses_init, main=[self._waiting(container, "PodInitializing")])
                return
        if self.stopping.is_set():
            return
        self._status("Running", init=statuses_init, main=[self._running_status(container)], ready=True)
        code, message = self._run_container(container, volumes)
        self.exit_code = code
        self._status("Succeeded" if code == 0 else "Failed", init=statuses_init,
                     main=[self._terminated(container, code, message)])

    # ---- one container --------------------------------------------------------------------------------------
    def _run_container(self, c: Any, volumes: dict[str, Path]) -> tuple[int, str]:
        env = self._env(c)
        command = [expand(a, env) for a in (c.command or ENTRYPOINT)]
        args = [expand(a, env) for a in (c.args if c.args is not None else ([] if c.command else DEFAULT_ARGS))]
        term_dir = self.dir / "termination"
        term_dir.mkdir(exist_ok=True)
        term = term_dir / c.name
        term.write_text("")
        # Bound at TERMINATION_DIR in the container: the agent's own directory may lie below a volume's mount
        # (/tmp), where the container would not see it.
        env["TERMINATION_LOG"] = f"{TERMINATION_DIR}/{c.name}"
        script = self._mount_script(c, volumes)
        log_path = self.dir / f"{c.name}.log"
        argv = ["unshare", "--mount", "--uts", "--propagation", "private", "--", "sh", "-c", script, "sh",
                *command, *args]
        with log_path.open("ab") as out:
            proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd="/",
                                    start_new_session=True)
        self.current = ContainerRun(c.name, proc, log_path, term)
        code = proc.wait()
        code = 128 - code if code < 0 else code
        message = term.read_text(errors="replace").strip()
        return code, message

    def _mount_script(self, c: Any, volumes: dict[str, Path]) -> str:
        hosts = self.dir / "hosts"
        hosts.write_text(self.agent.hosts_text(self.ns, self.pod))
        term = self.agent.mount_point(TERMINATION_DIR)
        lines = ["set -e", f"mount --bind {shlex.quote(str(self.dir / 'termination'))} {term}",
                 f"mount --bind {shlex.quote(str(hosts))} /etc/hosts",
                 f"hostname {shlex.quote(self.name)}"]
        mounts = list(c.volume_mounts or [])
        root = str(self.agent.root)
        # A mount that covers the agent's own directory (/tmp) goes last: the others' sources lie below it.
        mounts.sort(key=lambda m: (root.startswith(m.mount_path.rstrip("/") + "/"), m.mount_path.count("/")))
        for m in mounts:
            target = self.agent.mount_point(m.mount_path)
            vol = self._volume(m.name)
            if vol is not None and vol.empty_dir is not None and vol.empty_dir.medium == "Memory":
                size = f",size={quantity(vol.empty_dir.size_limit)}" if vol.empty_dir.size_limit else ""
                lines.append(f"mount -t tmpfs -o mode=1777{size} tmpfs {shlex.quote(target)}")
                continue
            source = volumes[m.name] / m.sub_path if m.sub_path else volumes[m.name]
            source.mkdir(parents=True, exist_ok=True)
            lines.append(f"mount --bind {shlex.quote(str(source))} {shlex.quote(target)}")
            read_only = m.read_only or (vol is not None and vol.persistent_volume_claim is not None
                                        and vol.persistent_volume_claim.read_only)
            if read_only:
                lines.append(f"mount -o remount,bind,ro {shlex.quote(target)}")
        # The command is PID 1 of a PID namespace of its own (a SIGKILL to it ends every process of the pod),
        # the first child of a shell that exits with its status, 128 + N for signal N, as a runtime reports it.
        # (`unshare --fork` passes a child's SIGKILL on by killing itself, which it cannot, and exits 1.)
        lines.append("exec unshare --pid -- sh -c '" + 'sh -c "mount -t proc proc /proc && exec \\"\\$@\\"" sh "$@"; '
                     "exit $?' sh \"$@\"")
        return "\n".join(lines)

    def _volume(self, name: str) -> Any:
        return next((v for v in self.pod.spec.volumes or [] if v.name == name), None)

    # ---- volumes and environment ----------------------------------------------------------------------------
    def _volumes(self) -> dict[str, Path]:
        """Volume name -> host directory; projected, Secret and ConfigMap volumes are written out here."""
        found: dict[str, Path] = {}
        fs_group = self.pod.spec.security_context and self.pod.spec.security_context.fs_group
        for v in self.pod.spec.volumes or []:
            if v.persistent_volume_claim is not None:
                path = self.agent.claim_dir(self.ns, v.persistent_volume_claim.claim_name)
            else:
                path = self.dir / "volumes" / v.name
                path.mkdir(parents=True, exist_ok=True)
                if v.projected is not None:
                    self._projected(v.projected, path)
                elif v.secret is not None:
                    self._write_map(path, self.agent.secret(self.ns, v.secret.secret_name), v.secret.items)
                elif v.config_map is not None:
                    self._write_map(path, self.agent.config_map(self.ns, v.config_map.name), v.config_map.items)
            writable = v.empty_dir is not None or (v.persistent_volume_claim is not None
                                                   and not v.persistent_volume_claim.read_only)
            if fs_group is not None and writable:
                self.agent.own_group(path, fs_group)
            found[v.name] = path
        return found

    def _projected(self, projected: Any, path: Path) -> None:
        for source in projected.sources or []:
            if source.service_account_token is not None:
                token = self.agent.token(self.ns, self.pod, source.service_account_token)
                (path / source.service_account_token.path).write_text(token)
            elif source.config_map is not None:
                self._write_map(path, self.agent.config_map(self.ns, source.config_map.name), source.config_map.items)
            elif source.secret is not None:
                self._write_map(path, self.agent.secret(self.ns, source.secret.name), source.secret.items)
            elif source.downward_api is not None:
                for item in source.downward_api.items or []:
                    (path / item.path).write_text(self._field(item.field_ref.field_path))
        for f in path.iterdir():
            f.chmod(0o644)

    @staticmethod
    def _write_map(path: Path, data: dict[str, str], items: Any) -> None:
        for key, rel in ([(i.key, i.path) for i in items] if items else [(k, k) for k in data]):
            (path / rel).parent.mkdir(parents=True, exist_ok=True)
            (path / rel).write_text(data[key])

    def _field(self, path: str) -> str:
        meta = self.pod.metadata
        simple = {"metadata.name": meta.name, "metadata.namespace": meta.namespace, "metadata.uid": meta.uid,
                  "spec.nodeName": NODE, "spec.serviceAccountName": self.pod.spec.service_account_name or "",
                  "status.podIP": "127.0.0.1", "status.hostIP": "127.0.0.1"}
        if path in simple:
            return simple[path] or ""
        m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
        if m:
            return (getattr(meta, m.group(1)) or {}).get(m.group(2), "")
        raise ValueError(f"fieldRef {path!r} is not served by the node agent")

    def _env(self, c: Any) -> dict[str, str]:
        env = {"PATH": f"{self.agent.bin_dir}:{self.agent.tools_dir}:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "HOSTNAME": self.name, **IMAGE_ENV,
               "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(self.agent.api_port)}
        for src in c.env_from or []:
            if src.config_map_ref is not None:
                data = self.agent.config_map(self.ns, src.config_map_ref.name, optional=src.config_map_ref.optional)
            else:
                data = self.agent.secret(self.ns, src.secret_ref.name, optional=src.secret_ref.optional)
            env.update({(src.prefix or "") + k: v for k, v in data.items()})
        for var in c.env or []:
            if var.value_from is None:
                env[var.name] = expand(var.value or "", env)
                continue
            ref = var.value_from
            if ref.field_ref is not None:
                env[var.name] = self._field(ref.field_ref.field_path)
            elif ref.secret_key_ref is not None:
                data = self.agent.secret(self.ns, ref.secret_key_ref.name, optional=ref.secret_key_ref.optional)
                if ref.secret_key_ref.key in data:
                    env[var.name] = data[ref.secret_key_ref.key]
                elif not ref.secret_key_ref.optional:
                    raise KeyError(f"secret {ref.secret_key_ref.name} has no key {ref.secret_key_ref.key}")
            elif ref.config_map_key_ref is not None:
                data = self.agent.config_map(self.ns, ref.config_map_key_ref.name,
                                             optional=ref.config_map_key_ref.optional)
                if ref.config_map_key_ref.key in data:
                    env[var.name] = data[ref.config_map_key_ref.key]
                elif not ref.config_map_key_ref.optional:
                    raise KeyError(f"configmap {ref.config_map_key_ref.name} has no key {ref.config_map_key_ref.key}")
        return env

    # ---- status ---------------------------------------------------------------------------------------------
    @staticmethod
    def _base(c: Any) -> dict:
        return {"name": c.name, "image": c.image or "", "imageID": "", "restartCount": 0, "ready": False}

    def _waiting(self, c: Any, reason: str) -> dict:
        return {**self._base(c), "state": {"waiting": {"reason": reason}}}

    def _running_status(self, c: Any) -> dict:
        return {**self._base(c), "ready": True, "started": True, "state": {"running": {"startedAt": now()}}}

    def _terminated(self, c: Any, code: int, message: str) -> dict:
        started = self.current.started if self.current else now()
        term = {"exitCode": code, "reason": "Completed" if code == 0 else "Error", "startedAt": started,
                "finishedAt": now(), **({"message": message[-4096:]} if message else {})}
        return {**self._base(c), "started": False, "state": {"terminated": term}}

    def _status(self, phase: str, *, init: list | None = None, main: list | None = None, ready: bool = False,
                start: bool = False, message: str | None = None) -> None:
        status: dict[str, Any] = {"phase": phase, "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
                                  "podIPs": [{"ip": "127.0.0.1"}]}
        if start:
            status["startTime"] = now()
        if init is not None:
            status["initContainerStatuses"] = init
        if main is not None:
            status["containerStatuses"] = main
        if message:
            status["message"] = message
        status["conditions"] = [{"type": t, "status": "True" if ok else "False", "lastTransitionTime": now()}
                                for t, ok in (("PodScheduled", True), ("Initialized", phase != "Pending"),
                                              ("ContainersReady", ready), ("Ready", ready))]
        self.agent.patch_status(self.ns, self.name, self.uid, status)
