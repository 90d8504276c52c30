"""`higgs-audio-trainer preflight`: each check fails on the real condition it is about (a read-only tmpfs,
a small tmpfs, a full volume, a missing path, no GPU, a closed port), one line each, exit code 2."""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import clean_env
from tests.tooling import missing
from trainer import errors
from trainer.commands.preflight import FULL_FACTOR, quantity, weight_bytes

ROOT = Path(__file__).resolve().parents[3]


def preflight(base_args: dict[str, str], *args: str, mounts: dict[str, str] | None = None,
              **over: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m trainer preflight` with the options as env vars; `mounts` (dir -> tmpfs options) are
    real tmpfs mounts made first, in a mount namespace of the process's own (nothing is left mounted)."""
    env = clean_env(**{k.upper(): v for k, v in (base_args | over).items()})
    env.setdefault("PYTHONPATH", str(ROOT))
    cmd = [sys.executable, "-m", "trainer", "preflight", *args]
    if mounts:
        unshare = shutil.which("unshare")
        if unshare is None:
            missing("unshare, for real tmpfs mounts", "install the Debian package util-linux")
        script = "".join(f"mount -t tmpfs -o {opts} tmpfs '{d}' && " for d, opts in mounts.items())
        # root needs no user namespace (some hosts forbid unprivileged ones); others map themselves to root
        userns = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
        cmd = [unshare, *userns, "--mount", "sh", "-c", script + 'exec "$@"', "sh", *cmd]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    if mounts and "mount:" in proc.stderr:
        missing(f"permission to mount tmpfs in a user namespace ({proc.stderr.strip()})",
                "run the tests as root, or allow unprivileged user namespaces "
                "(sysctl kernel.unprivileged_userns_clone=1)")
    return proc


def failures(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stdout.splitlines() if line.startswith("preflight failed:")]


@pytest.fixture
def ok_args(base_args: dict[str, str], tmp_path: Path) -> dict[str, str]:
    (tmp_path / "shm").mkdir()
    return base_args


def shm(tmp_path: Path) -> tuple[str, str]:
    return "--shm_path", str(tmp_path / "shm")


def test_all_checks_pass_on_a_good_pod(ok_args: dict[str, str], tmp_path: Path) -> None:
    proc = preflight(ok_args, *shm(tmp_path), "--min_shm=1Mi", mounts={str(tmp_path / "shm"): "size=64m"})
    assert proc.returncode == errors.OK, proc.stdout + proc.stderr
    assert failures(proc) == [] and "ok" in proc.stdout


def test_read_only_output_volume_fails(ok_args: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "ro"
    out.mkdir()
    proc = preflight(ok_args, *shm(tmp_path), "--min_shm=1Mi", output_dir=str(out / "run"),
                     mounts={str(tmp_path / "shm"): "size=64m", str(out): "size=16m,ro"})
    assert proc.returncode == errors.CONFIG_ERROR
    (line,) = failures(proc)
    assert f"output_dir {out / 'run'}" in line and "Read-only file system" in line


def test_small_dev_shm_fails_with_its_size(ok_args: dict[str, str], tmp_path: Path) -> None:
    proc = preflight(ok_args, *shm(tmp_path), "--min_shm=1Gi", mounts={str(tmp_path / "shm"): "size=64m"})
    assert proc.returncode == errors.CONFIG_ERROR
    (line,) = failures(proc)
    assert str(tmp_path / "shm") in line and "64.0 MiB" in line and "storage.shm.sizeLimit" in line


def test_output_volume_without_room_for_a_checkpoint_fails(ok_args: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "small"
    out.mkdir()
    mounts = {str(tmp_path / "shm"): "size=64m", str(out): "size=8m"}
    proc = preflight(ok_args, *shm(tmp_path), "--min_shm=1Mi", "--min_free_space=1Gi", output_dir=str(out / "r"),
                     mounts=mounts)
    assert proc.returncode == errors.CONFIG_ERROR
    (line,) = failures(proc)
    assert "8.0 MiB free" in line and "1.00 GiB" in line and "storage.output.size" in line


def test_checkpoint_room_is_estimated_from_the_model_weights(ok_args: dict[str, str], tmp_path: Path) -> None:
    """A full fine-tune needs about 5x the weight files: a tmpfs below that fails, one above passes."""
    needed = int(weight_bytes(ok_args["model_path"]) * FULL_FACTOR)
    out = tmp_path / "est"
    out.mkdir()
    for size, code in ((needed // 2, errors.CONFIG_ERROR), (needed * 2 + 2**20, errors.OK)):
        proc = preflight(ok_args, *shm(tmp_path), "--min_shm=1Mi", use_lora="false", output_dir=str(out / "r"),
                         mounts={str(tmp_path / "shm"): "size=64m", str(out): f"size={size}"})
        assert proc.returncode == code, proc.stdout + proc.stderr
        if code:
            assert "full fine-tune" in failures(proc)[0]


def test_missing_input_paths_fail_one_line_each(ok_args: dict[str, str], tmp_path: Path) -> None:
    proc = preflight(ok_args, *shm(tmp_path), "--min_shm=1", model_path=str(tmp_path / "no-model"),
                     train_data_file=str(tmp_path / "no-data.jsonl"))
    assert proc.returncode == errors.CONFIG_ERROR
    lines = failures(proc)
    assert len(lines) == 2, lines
    assert "model_path (MODEL_PATH)" in lines[0] and "does not exist" in lines[0]
    assert "train_data_file (TRAIN_DATA_FILE)" in lines[1]


def test_a_file_where_a_checkpoint_directory_belongs_fails(ok_args: dict[str, str], tmp_path: Path) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"0")
    proc = preflight(ok_args, *shm(tmp_path), "--min_shm=1", audio_tokenizer_path=str(weights))
    assert proc.returncode == errors.CONFIG_ERROR
    (line,) = failures(proc)
    assert "audio_tokenizer_path (AUDIO_TOKENIZER_PATH)" in line and "expected the checkpoint's directory" in line


def test_fewer_gpus_than_expected_fails_no_gpu_on_this_machine(ok_args: dict[str, str], tmp_path: Path) -> None:
    proc = preflight(ok_args, *shm(tmp_path), "--min_shm=1", "--expect_gpus=64")
    assert proc.returncode == errors.CONFIG_ERROR
    (line,) = failures(proc)
    assert "64 expected (gpu.count)" in line


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ready_server() -> Iterator[str]:
    """A real HTTP server answering the Pushgateway's /-/ready."""
    class Ready(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/-/ready" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Ready)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_unreachable_gateway_fails_and_a_reachable_one_passes(ok_args: dict[str, str], tmp_path: Path,
                                                              ready_server: str) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    proc = preflight(ok_args, *shm(tmp_path), "--min_shm=1", "--gateway_timeout_seconds=2", pushgateway_url=closed)
    assert proc.returncode == errors.CONFIG_ERROR
    (line,) = failures(proc)
    assert f"pushgateway_url {closed}: unreachable" in line
    proc = preflight(ok_args, *shm(tmp_path), "--min_shm=1", pushgateway_url=ready_server)
    assert proc.returncode == errors.OK, proc.stdout


def test_every_failed_check_is_its_own_line(ok_args: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "ro"
    out.mkdir()
    proc = preflight(ok_args, *shm(tmp_path), "--min_shm=1Gi", "--expect_gpus=64", output_dir=str(out / "r"),
                     model_path=str(tmp_path / "none"), pushgateway_url=f"http://127.0.0.1:{free_port()}",
                     mounts={str(tmp_path / "shm"): "size=1m", str(out): "size=1m,ro"})
    assert proc.returncode == errors.CONFIG_ERROR
    assert [line.split(":", 2)[1].split()[0] for line in failures(proc)] == [
        "output_dir", str(tmp_path / "shm"), "GPUs", "model_path", "pushgateway_url"]


def test_a_bad_option_value_is_one_line_naming_the_variable(ok_args: dict[str, str], tmp_path: Path) -> None:
    proc = preflight(ok_args, *shm(tmp_path), "--min_shm=1", lora_rank="many")
    assert proc.returncode == errors.CONFIG_ERROR
    (line,) = failures(proc)
    assert "LORA_RANK" in line


def test_sizes_read_as_kubernetes_quantities() -> None:
    assert (quantity("1Gi"), quantity("500M"), quantity("1024"), quantity("1.5Ki")) == (2**30, 5 * 10**8, 1024, 1536)
    with pytest.raises(Exception, match="expected a size"):
        quantity("lots")


@pytest.mark.parametrize("unset", ["model_path", "audio_tokenizer_path", "train_data_file", "output_dir"])
def test_a_missing_required_option_is_one_complete_sentence(ok_args: dict[str, str], tmp_path: Path,
                                                            unset: str) -> None:
    proc = preflight({k: v for k, v in ok_args.items() if k != unset}, *shm(tmp_path), "--min_shm=1")
    assert proc.returncode == errors.CONFIG_ERROR
    (line,) = failures(proc)
    assert f"{unset.upper()}: required, not set. " in line, line
    # The help quoted after it ends where its sentence ends, not at the first dot (`config.json`).
    assert line.endswith(".") and line.count("(") == line.count(")"), line


def test_the_missing_model_path_message_quotes_its_help_to_the_end(ok_args: dict[str, str], tmp_path: Path) -> None:
    proc = preflight({k: v for k, v in ok_args.items() if k != "model_path"}, *shm(tmp_path), "--min_shm=1")
    (line,) = failures(proc)
    assert line.endswith("(config.json with model_type higgs_audio_v2, safetensors weights, tokenizer and chat "
                         "template)."), line


def test_the_failed_checks_are_the_containers_termination_message(ok_args: dict[str, str],
                                                                       tmp_path: Path) -> None:
    """Kubernetes shows the file's text as the container's termination message (`kubectl describe`,
    `higgs-audio-trainer status`); a passing preflight leaves it empty."""
    log = tmp_path / "termination-log"
    proc = preflight(ok_args, *shm(tmp_path), "--min_shm=1", model_path=str(tmp_path / "no-model"),
                     train_data_file=str(tmp_path / "no-data.jsonl"), termination_log=str(log))
    assert proc.returncode == errors.CONFIG_ERROR
    lines = [x.removeprefix("preflight failed: ") for x in failures(proc)]
    assert log.read_text() == "preflight failed: " + "; ".join(lines) + "\n"
    ok = tmp_path / "ok-log"
    assert preflight(ok_args, *shm(tmp_path), "--min_shm=1", termination_log=str(ok)).returncode == 0
    assert not ok.exists()
