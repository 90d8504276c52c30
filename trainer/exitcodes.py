"""Exit codes of `higgs-audio-trainer`, one table for the CLI, the launcher and the chart.

Configuration and data errors are below 128: retrying cannot fix them, so a PyTorchJob with
`restartPolicy: ExitCode` does not restart on them. Codes of 128 and above are retried.
"""

OK = 0
FAILURE = 1  # an unexpected error (a Python traceback says where)
CONFIG_ERROR = 2  # a flag, environment variable, YAML key or path is wrong; the message names it
DATA_ERROR = 3  # the dataset has bad samples (all listed) or no usable samples

TABLE = {
    OK: "success",
    FAILURE: "unexpected error",
    CONFIG_ERROR: "configuration error (flag, env var, YAML key or path)",
    DATA_ERROR: "data error (bad samples are listed)",
}
