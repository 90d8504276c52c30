"""`Supervisor`: a signal to the launcher goes to the child's children first, then to the child."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import threading
import time

from trainer.launch.supervise import Supervisor, children_of

# A stand-in for torchrun: starts one worker that exits 7 on SIGTERM, and exits with the worker's code
# (torchrun would exit 1). It ignores SIGTERM itself, as long as its worker lives.
PARENT = textwrap.dedent("""
    import signal, subprocess, sys
    signal.signal(signal.SIGTERM, lambda *a: print("parent got SIGTERM", flush=True))
    worker = subprocess.Popen([sys.executable, "-c", '''
    import signal, sys, time
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(7))
    print("worker up", flush=True)
    time.sleep(60)
    '''])
    sys.exit(worker.wait())
""")


def test_sigterm_goes_to_the_workers_and_the_child_keeps_its_code(tmp_path) -> None:
    log = tmp_path / "log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    supervisor = Supervisor([sys.executable, "-c", PARENT], env, to_children=True)

    def signal_when_up() -> None:
        deadline = time.monotonic() + 30
        while supervisor._proc is None or len(children_of(supervisor._proc.pid)) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=signal_when_up)
    thread.start()
    with open(log, "w") as out:
        sys_stdout = os.dup(1)
        os.dup2(out.fileno(), 1)
        try:
            code = supervisor.run()
        finally:
            os.dup2(sys_stdout, 1)
            os.close(sys_stdout)
    thread.join()
    assert code == 7
    assert supervisor.received == signal.SIGTERM
    assert "parent got SIGTERM" not in log.read_text()  # the worker got it, and the parent was not disturbed


def test_a_child_killed_by_a_signal_reads_128_plus_its_number() -> None:
    supervisor = Supervisor([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
                            dict(os.environ), to_children=False)
    assert supervisor.run() == 137
    assert supervisor.received is None
