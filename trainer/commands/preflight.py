"""`higgs-audio-trainer preflight`: the cheap checks a pod can fail before any model loads.

Run as the trainer pods' init container, so that a read-only or full output volume, the container
runtime's 64 MiB /dev/shm, a node without the GPUs asked for, a wrong input path or an unreachable
Pushgateway each show as one line at once, not as a crash minutes into loading a 6 B-parameter model.
Every check runs; each failed one prints a line; the exit code is CONFIG_ERROR (not retried).
"""

from __future__ import annotations

import argparse
import os
import re
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from trainer import errors, rank_reports
from trainer.config.options import Config
from trainer.config.values import SPECS, build_config, parse_value

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")
# A full fine-tune saves bf16 weights (2 bytes per parameter) and AdamW's two fp32 moments (8 bytes): five
# times the weight files. A LoRA checkpoint is the adapter and its moments; a twentieth of that is ample.
FULL_FACTOR, LORA_FACTOR = 5.0, 0.25
UNITS = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
         "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50}


def quantity(text: str) -> int:
    """Bytes of a Kubernetes quantity (`1Gi`, `500M`, `1024`), as the chart's values give them."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P|)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected a size such as 1Gi, 500M or 1048576, got {text!r}")
    return int(float(match.group(1)) * UNITS[match.group(2)])


def gib(n: float) -> str:
    """A byte count as the messages show it: GiB, or MiB below one GiB."""
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def build_parser() -> argparse.ArgumentParser:
    """The flags of `preflight`: what the init container expects of its pod."""
    p = argparse.ArgumentParser(prog="higgs-audio-trainer preflight", description=__doc__.splitlines()[0])
    p.add_argument("--expect_gpus", type=int, default=0, help="GPUs this pod must see (the chart's gpu.count)")
    p.add_argument("--min_shm", type=quantity, default=quantity("1Gi"), help="smallest /dev/shm size accepted")
    p.add_argument("--shm_path", default="/dev/shm", help="where shared memory is mounted")
    p.add_argument("--min_free_space", type=quantity, default=None,
                   help="free space the output volume needs (default: estimated from the model's weight files)")
    p.add_argument("--gateway_timeout_seconds", type=float, default=5.0, help="how long the Pushgateway may take")
    return p


def options_from_env(environ: Mapping[str, str]) -> Config:
    """The trainer's options from its environment, as `train` reads them, without its path checks.

    The path checks are this command's, each reported on its own line.
    """
    values = {spec.name: parse_value(spec, raw, f"environment variable {spec.env}")
              for spec in SPECS.values() if (raw := environ.get(spec.env)) is not None and raw.strip() != ""}
    return build_config(values)


def weight_bytes(model_path: str) -> int:
    """The size of the model's weight files, the base of the free-space estimate for a checkpoint."""
    root = Path(model_path)
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file() and f.name.endswith(WEIGHT_SUFFIXES))


def check_output(cfg: Config, min_free: int | None) -> list[str]:
    """The output directory can be created and written, and its filesystem has room for a checkpoint."""
    from trainer.train import checkpoint as ckpt

    out = Path(cfg.train.output_dir or "")
    name = f"output_dir {out}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".preflight-{os.getpid()}"
        probe.write_bytes(b"x")
        probe.unlink()
    except OSError as err:
        return [f"{name}: not writable ({err.strerror or err}); mount the output volume read-write, writable "
                "by the pod's user (podSecurityContext.fsGroup)"]
    free = os.statvfs(out).f_bavail * os.statvfs(out).f_frsize
    needed, why = min_free, "--min_free_space"
    if needed is None:
        previous = ckpt.last_size(out)
        if previous:
            needed, why = previous, "the size of its newest checkpoint"
        elif cfg.model.model_path and Path(cfg.model.model_path).is_dir():
            factor = LORA_FACTOR if cfg.lora.use_lora else FULL_FACTOR
            needed = int(weight_bytes(cfg.model.model_path) * factor)
            why = f"{factor:g} x the model's weight files ({'LoRA' if cfg.lora.use_lora else 'full fine-tune'})"
    if needed and free < needed:
        return [f"{name}: {gib(free)} free, a checkpoint needs about {gib(needed)} ({why}); enlarge the volume "
                "(storage.output.size) or free space"]
    return []


def check_shm(path: str, minimum: int) -> list[str]:
    """/dev/shm is at least `minimum` bytes: the data loader's workers and NCCL fail late on a small one."""
    try:
        st = os.statvfs(path)
    except OSError as err:
        return [f"{path}: cannot be read ({err.strerror or err}); mount a memory volume there"]
    size = st.f_blocks * st.f_frsize
    if size < minimum:
        return [f"{path}: {gib(size)}, at least {gib(minimum)} needed (NCCL and data loader workers share memory "
                "there; container runtimes give 64 MiB): raise storage.shm.sizeLimit"]
    return []


def check_gpus(expected: int, visible: Callable[[], int]) -> list[str]:
    """The pod sees the GPUs it asked for: a missing device plugin would otherwise surface as a CPU run."""
    if expected <= 0:
        return []
    seen = visible()
    if seen < expected:
        return [f"GPUs: {seen} visible, {expected} expected (gpu.count): check the node's device plugin, "
                "runtimeClassName, and CUDA_VISIBLE_DEVICES"]
    return []


def check_inputs(cfg: Config) -> list[str]:
    """Each configured input path exists and can be read by this user."""
    failed = []
    directories = ("model_path", "audio_tokenizer_path", "tokenizer_path")  # checkpoints: from_pretrained dirs
    for name, value in (("model_path", cfg.model.model_path), ("audio_tokenizer_path", cfg.model.audio_tokenizer_path),
                        ("tokenizer_path", cfg.model.tokenizer_path), ("train_data_file", cfg.data.train_data_file),
                        ("eval_data_file", cfg.data.eval_data_file)):
        if not value:
            continue
        where = f"{name} ({SPECS[name].env}) {value}"
        path = Path(value)
        if name in directories and path.is_file():
            failed.append(f"{where}: a file, expected the checkpoint's directory")
            continue
        try:
            if path.is_dir():
                next(iter(path.iterdir()), None)
            else:
                with path.open("rb") as f:
                    f.read(1)
        except FileNotFoundError:
            failed.append(f"{where}: does not exist; check storage.model / storage.data and the path")
        except OSError as err:
            failed.append(f"{where}: not readable ({err.strerror or err})")
    return failed


def check_gateway(cfg: Config, timeout: float) -> list[str]:
    """The Pushgateway answers, so a misspelt URL or a missing CA fails before training, not at the first push."""
    url = cfg.metrics.pushgateway_url
    if not url:
        return []
    context = None
    if url.startswith("https"):
        context = ssl.create_default_context(cafile=cfg.metrics.pushgateway_tls_ca_file or None)
        if cfg.metrics.pushgateway_tls_insecure_skip_verify:
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/-/ready", timeout=timeout, context=context):
            return []
    except urllib.error.HTTPError as err:
        if err.code < 500:  # it answered (a 401 from an auth proxy still proves the route)
            return []
        return [f"pushgateway_url {url}: answered HTTP {err.code}"]
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        return [f"pushgateway_url {url}: unreachable within {timeout:g} s ({reason})"]


def preflight(args: argparse.Namespace, environ: Mapping[str, str], visible: Callable[[], int]) -> list[str]:
    """Every failed check's line (empty: all passed)."""
    try:
        cfg = options_from_env(environ)
    except errors.ConfigError as err:
        return [f"options: {err}"]
    return [*check_output(cfg, args.min_free_space), *check_shm(args.shm_path, args.min_shm),
            *check_gpus(args.expect_gpus, visible), *check_inputs(cfg),
            *check_gateway(cfg, args.gateway_timeout_seconds)]


def run(argv: Sequence[str]) -> int:
    """`higgs-audio-trainer preflight`: one line per failed check; returns the exit code."""
    from trainer.launch.topology import visible_gpus

    args = build_parser().parse_args(list(argv))
    failed = preflight(args, os.environ, visible_gpus)
    for line in failed:
        print(f"preflight failed: {line}", flush=True)
    if failed:
        # The init container's termination message: `kubectl describe pod` and `status` show why it failed.
        env = os.environ
        if env.get(rank_reports.TERMINATION_LOG_ENV) or os.path.exists(rank_reports.DEFAULT_TERMINATION_LOG):
            rank_reports.write_termination_log("preflight failed: " + "; ".join(failed), env)
        return errors.CONFIG_ERROR
    print("preflight: output volume, /dev/shm, GPUs, inputs and gateway ok", flush=True)
    return errors.OK
