"""The wait for the first audio encoding in a real launch (`higgs-audio-trainer launch`, torchrun, gloo on CPU):
the ranks that wait for local rank 0 to fill the code cache give up only after `--ddp_timeout` without
progress, never because encoding as a whole takes longer than that."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.processes import launch, launch_env
from tests.trainer.datafiles import distinct_clips

pytestmark = pytest.mark.slow
CLIPS = 2000  # distinct 1 s clips: about 20 s of encoding for the tiny audio tokenizer here
TIMEOUT = 6  # --ddp_timeout: far shorter than the encoding, far longer than any other wait of this run


def test_encoding_for_longer_than_the_ddp_timeout_does_not_end_the_waiting_ranks(base_args, tmp_path) -> None:
    env = launch_env(base_args, tmp_path, nproc_per_node="2", max_steps="2", save_steps="100",
                     ddp_timeout=str(TIMEOUT), train_data_file=str(distinct_clips(tmp_path / "clips", CLIPS)),
                     cache_dir=str(tmp_path / "cache"))

    run = launch(env, timeout=900)

    assert run.returncode == 0, run.stderr[-3000:]
    done = f"encoding audio: {CLIPS}/{CLIPS} clips, "
    rate = [line for line in run.stderr.splitlines() if done in line]
    assert rate, run.stderr[-3000:]
    # The last progress line's rate is clips over the whole encoding's seconds: its time is CLIPS / rate.
    elapsed = CLIPS / float(rate[-1].split(done)[1].split(" clips/s")[0])
    assert elapsed > 2 * TIMEOUT, f"encoding took only {elapsed:.1f} s: the test proves nothing"
    assert (Path(base_args["output_dir"]) / "lora_adapters" / "adapter_model.safetensors").is_file()
