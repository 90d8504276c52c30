"""The tests' own process helper: `TrainerProcess.kill` leaves nothing running, whatever the tree looks like."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.processes import TrainerProcess

# A leader in a group of its own whose child starts a session of its own, as `launch` -> torchrun -> ranks do.
TREE = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
open(sys.argv[1], "w").write(str(child.pid))
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie has ended; only its parent's wait is missing
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_kill_of_a_process_with_its_own_group_reaches_a_child_in_another_session(tmp_path: Path) -> None:
    pid_file, log = tmp_path / "child.pid", tmp_path / "tree.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", TREE, str(pid_file)], stdout=out, stderr=out,
                                start_new_session=True)
    tree, child = TrainerProcess(proc, log, own_group=True), 0
    try:
        tree.wait_for(lambda: pid_file.is_file() and pid_file.read_text(), "the child's pid", timeout=30, interval=0.1)
        child = int(pid_file.read_text())
        assert _alive(child)
        tree.kill()
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child), f"the child {child} in its own session outlived kill()"
    finally:  # nothing outlives the test, even when it fails
        if proc.poll() is None:
            proc.kill()
        if child and _alive(child):
            os.kill(child, 9)
        proc.wait(timeout=10)
