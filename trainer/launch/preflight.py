"""The preflight: the cheap checks a pod can fail before any model loads, run by the launcher before torchrun.

A read-only or full output volume, the container runtime's 64 MiB /dev/shm, a node without the GPUs asked
for, an unreadable input or an unreachable Pushgateway each show as one line at once, not as a crash minutes
into loading a 6 B-parameter model. The launcher runs them inside the trainer container (`PREFLIGHT=true`,
which the chart sets) rather than as an init container: the training operator reads only the trainer
container's exit code, so a failed init container made it recreate the pod in a loop with no record of why,
where the launcher's exit code 2 fails the job for good, with its termination message saying which check
failed. `higgs-audio-trainer preflight` runs the same checks as a command.
"""

from __future__ import annotations

import os
import re
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from trainer.config.options import Config
from trainer.config.values import SPECS
from trainer.errors import ConfigError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")
# A full fine-tune saves bf16 weights (2 bytes per parameter) and AdamW's two fp32 moments (8 bytes): five
# times the weight files. A LoRA checkpoint is the adapter and its moments; a twentieth of that is ample.
FULL_FACTOR, LORA_FACTOR = 5.0, 0.25
UNITS = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
         "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50}

# The launcher's variables for the preflight (listed in `trainer.launch.topology.ENV_VARS`).
PREFLIGHT_ENV = "PREFLIGHT"
EXPECT_GPUS_ENV = "PREFLIGHT_EXPECT_GPUS"
MIN_SHM_ENV = "PREFLIGHT_MIN_SHM"
MIN_FREE_SPACE_ENV = "PREFLIGHT_MIN_FREE_SPACE"
GATEWAY_TIMEOUT_ENV = "PREFLIGHT_GATEWAY_TIMEOUT_SECONDS"
PREFIX = "preflight failed: "


def quantity(text: str) -> int:
    """Bytes of a Kubernetes quantity (`1Gi`, `500M`, `1024`), as the chart's values give them.

    Raises:
        ValueError: `text` is not such a quantity.
    """
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P|)\s*", text)
    if not match:
        raise ValueError(f"expected a size such as 1Gi, 500M or 1048576, got {text!r}")
    return int(float(match.group(1)) * UNITS[match.group(2)])


def gib(n: float) -> str:
    """A byte count as the messages show it: GiB, or MiB below one GiB."""
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


@dataclass(frozen=True)
class Settings:
    """What the checks expect of this pod (the chart's `preflight.*` and `gpu.count`)."""

    expect_gpus: int = 0
    min_shm: int = 2**30
    shm_path: str = "/dev/shm"
    min_free_space: int | None = None  # None: estimated from the newest checkpoint or the model's weights
    gateway_timeout_seconds: float = 5.0


def enabled(environ: Mapping[str, str]) -> bool:
    """Whether the launcher runs the preflight: `PREFLIGHT` true (the chart's `preflight.enabled`).

    Off when unset, so that a workstation launch checks nothing it did not ask for.

    Raises:
        ConfigError: `PREFLIGHT` is not a boolean word.
    """
    raw = environ.get(PREFLIGHT_ENV, "").strip().lower()
    if raw in ("", "false", "0", "no", "off"):
        return False
    if raw in ("true", "1", "yes", "on"):
        return True
    raise ConfigError(f"environment variable {PREFLIGHT_ENV}: expected true or false, got {environ[PREFLIGHT_ENV]!r}")


def _raw(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name, "").strip()
    return value or None


def _number(environ: Mapping[str, str], name: str, default: float, *, whole: bool) -> float:
    text = _raw(environ, name)
    if text is None:
        return default
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        value = -1
    if value < 0:
        what = "a whole number" if whole else "a number"
        raise ConfigError(f"environment variable {name}: expected {what} of at least 0, got {text!r}")
    return value


def _size(environ: Mapping[str, str], name: str) -> int | None:
    text = _raw(environ, name)
    try:
        return quantity(text) if text is not None else None
    except ValueError as err:
        raise ConfigError(f"environment variable {name}: {err}") from None


def settings_from_env(environ: Mapping[str, str]) -> Settings:
    """The checks' settings from the `PREFLIGHT_*` variables; raises `ConfigError` naming a bad one."""
    defaults = Settings()
    shm = _size(environ, MIN_SHM_ENV)
    return Settings(expect_gpus=int(_number(environ, EXPECT_GPUS_ENV, defaults.expect_gpus, whole=True)),
                    min_shm=defaults.min_shm if shm is None else shm,
                    min_free_space=_size(environ, MIN_FREE_SPACE_ENV),
                    gateway_timeout_seconds=_number(environ, GATEWAY_TIMEOUT_ENV, defaults.gateway_timeout_seconds,
                                                    whole=False))


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


def run_checks(cfg: Config, settings: Settings, visible: Callable[[], int]) -> list[str]:
    """Every failed check's line (empty: all passed); every check runs, so one look shows them all.

    Args:
        cfg (`Config`):
            the trainer's options (output directory, inputs, Pushgateway).
        settings (`Settings`):
            what this pod must offer.
        visible (`Callable[[], int]`):
            counts the GPUs this process sees.
    """
    return [*check_output(cfg, settings.min_free_space), *check_shm(settings.shm_path, settings.min_shm),
            *check_gpus(settings.expect_gpus, visible), *check_inputs(cfg),
            *check_gateway(cfg, settings.gateway_timeout_seconds)]


def reason(failed: list[str]) -> str:
    """The one-line reason of a failed preflight: the termination message, the Event, the launcher's last line."""
    return PREFIX + "; ".join(failed)
