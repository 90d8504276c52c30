"""`trainer.launch.torchrun`: real torchrun, one worker that exits with 3; its failure report goes to the
launcher's file, or to stderr without torchrun's traceback when run by hand."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import clean_env
from trainer.launch.torchrun import TORCHRUN_REPORT_ENV


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    worker = tmp_path / "worker.py"
    worker.write_text("import sys\nsys.exit(3)\n")
    return subprocess.run([sys.executable, "-m", "trainer.launch.torchrun", "--standalone", "--nproc_per_node=1",
                           str(worker)], env=clean_env(OMP_NUM_THREADS="1", **env), capture_output=True, text=True,
                          timeout=120)


def test_the_report_goes_to_the_launchers_file_and_torchruns_exit_code_stays(tmp_path) -> None:
    report = tmp_path / "report.txt"
    proc = _run(tmp_path, **{TORCHRUN_REPORT_ENV: str(report)})
    assert proc.returncode == 1, proc.stderr  # torchrun's code for a failed worker group
    text = report.read_text()
    assert "ChildFailedError" in text and "exitcode  : 3" in text, text
    assert "ChildFailedError" not in proc.stderr and "Traceback" not in proc.stderr


def test_run_by_hand_it_prints_the_report_without_a_traceback(tmp_path) -> None:
    proc = _run(tmp_path)
    assert proc.returncode == 1
    assert "ChildFailedError" in proc.stderr and "exitcode  : 3" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
