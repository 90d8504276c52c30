"""`python -m trainer.launch.torchrun ARGS`: torchrun, with its failure report kept for the launcher.

When a worker fails, torchrun ends in an uncaught `ChildFailedError`: a traceback of its own code and a
box of every rank's exit code, about 35 lines printed after the rank's own one-line error. The launcher
reads what each rank reported and ends with one line saying why (`trainer.launch.launcher.decide`), so here
the report goes to the file named by `TORCHRUN_REPORT_ENV` instead, and the launcher shows it only where
no rank said why (a rank killed, a lost peer) or at LOG_LEVEL=debug. Without that variable (run by hand)
the report is printed as torchrun prints it, less the traceback. Exit codes are torchrun's.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

TORCHRUN_REPORT_ENV = "HIGGS_TORCHRUN_REPORT"


def main(argv: Sequence[str]) -> int:
    """Run torchrun; its failure report goes to `TORCHRUN_REPORT_ENV`'s file when that is set."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(list(argv)))
    except ChildFailedError as err:
        report = f"torchrun: {type(err).__name__}:\n{err.format_msg()}\n"
        path = os.environ.get(TORCHRUN_REPORT_ENV)
        if path:
            with open(path, "w") as f:
                f.write(report)
        else:
            print(report, file=sys.stderr, end="")
        return 1  # what torchrun's own uncaught ChildFailedError exits with
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
