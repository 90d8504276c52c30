"""`higgs-audio-trainer status` where no API server answers: an unreachable server and a missing kubeconfig are
each one line and exit code 2. (A missing job and a refused read are on the real API server in
tests/cluster/test_status.py.)"""

from __future__ import annotations

import socket

from tests.trainer.cluster.events_api import kubeconfig
from trainer import errors
from trainer.__main__ import main


def status(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["status", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_an_unreachable_server_and_a_missing_kubeconfig_are_one_line_and_exit_code_2(capsys, monkeypatch,
                                                                                     tmp_path) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "kc", f"http://127.0.0.1:{closed}")))
    code, out, err = status(capsys, "private")
    assert (code, out) == (errors.CONFIG_ERROR, "") and err.count("\n") == 1
    assert err.startswith(f"higgs-audio-trainer status: cannot read PyTorchJob team/private from http://127.0.0.1:{closed}")

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    code, _, err = status(capsys, "private")
    assert code == errors.CONFIG_ERROR
    assert err == (f"higgs-audio-trainer status: no cluster to ask: no kubeconfig at {tmp_path / 'absent'} "
                   "(KUBECONFIG or ~/.kube/config) and not in a pod\n")
    assert "Traceback" not in err
