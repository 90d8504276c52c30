"""Progress of a training run: plain `step N/M, loss, steps/s, eta` lines in a log, a bar on a real terminal (a
pseudo-terminal), both from rank 0, and a run that is the same with them and without them."""

from __future__ import annotations

import fcntl
import io
import logging
import os
import re
import struct
import termios
import threading

import torch

from trainer.commands.train import build
from trainer.config.cli import parse_train_args
from trainer.encode.counter import format_eta
from trainer.train.progress import ProgressReport, progress_line

LINE = re.compile(r"^step (\d+)/(\d+), loss (\d+\.\d{4}), (\S+) steps/s, eta (\d+:\d\d:\d\d)$")


def _cfg(base_args: dict[str, str], **over: str):
    return parse_train_args([], {k.upper(): v for k, v in (base_args | over).items()})


def _losses(trainer) -> list[float]:
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def test_a_progress_line_reads_as_worked_out_by_hand() -> None:
    # 1880 steps left at 1.92 steps/s: 979.17 s = 16 min 19 s
    assert progress_line(120, 2000, 3.21041, 1.92) == "step 120/2000, loss 3.2104, 1.92 steps/s, eta 0:16:19"
    assert progress_line(1, 20, 5.5, None) == "step 1/20, loss 5.5000"  # no rate after no finished step
    assert format_eta(26 * 3600 + 61) == "1d 2:01:01"


def test_a_run_into_a_log_writes_one_plain_line_per_logging_step(base_args, caplog) -> None:
    trainer, _, _ = build(_cfg(base_args, max_steps="20", logging_steps="5"))
    ProgressReport.attach(trainer, io.StringIO())  # not a terminal: plain lines through the log
    with caplog.at_level(logging.INFO, logger="trainer.progress"):
        trainer.train()
    lines = [r.getMessage() for r in caplog.records if r.name == "trainer.progress"]
    matched = [LINE.match(line) for line in lines if line.startswith("step ")]
    assert all(matched), lines
    logged = [h for h in trainer.state.log_history if "loss" in h and "eval_loss" not in h]
    # logging_first_step: steps 1, 5, 10, 15, 20, each line with that step's logged loss
    assert [(int(m[1]), int(m[2]), m[3]) for m in matched] == [
        (h["step"], 20, f"{h['loss']:.4f}") for h in logged]
    assert [h["step"] for h in logged] == [1, 5, 10, 15, 20]
    assert matched[-1][5] == "0:00:00"


def _terminal() -> tuple[int, int]:
    """A pseudo-terminal (master, slave) 120 columns wide, as a terminal window is (a new one is 0 x 0)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    return master, slave


def _drain(fd: int, into: bytearray) -> threading.Thread:
    """Read a pseudo-terminal's output as it comes: a full pty buffer would block the writer."""
    def read() -> None:
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the other side closed
                return
            if not chunk:
                return
            into.extend(chunk)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def test_on_a_terminal_it_is_a_bar_with_the_loss_and_the_logs_above_it(base_args, caplog) -> None:
    trainer, _, _ = build(_cfg(base_args, max_steps="20", logging_steps="5"))
    master, slave = _terminal()
    out = bytearray()
    reader = _drain(master, out)
    with open(slave, "w", closefd=True) as terminal, caplog.at_level(logging.INFO, logger="trainer.progress"):
        report = ProgressReport.attach(trainer, terminal)
        assert report.on_terminal
        trainer.train()
        terminal.flush()
    reader.join(timeout=10)
    os.close(master)
    text = out.decode(errors="replace")
    # tqdm writes a rate under one step per second as seconds per step (a loaded machine)
    assert re.search(r"training: 100%.*20/20 .*(step/s|s/step).*loss=\d+\.\d{4}", text), text[-2000:]
    assert "{'loss': " in text  # the Trainer's log dictionaries, written above the bar
    assert not [r for r in caplog.records if r.name == "trainer.progress"]  # no plain lines on a terminal


def test_the_run_is_the_same_with_progress_and_without(base_args) -> None:
    def run(progress: bool) -> tuple[list[float], dict[str, torch.Tensor]]:
        trainer, _, _ = build(_cfg(base_args, max_steps="12", logging_steps="1", save_steps="100"))
        if progress:
            ProgressReport.attach(trainer, io.StringIO())
            master, slave = _terminal()  # and a bar on a real terminal, reporting the same run twice
            out = bytearray()
            reader = _drain(master, out)
            terminal = open(slave, "w", closefd=True)  # noqa: SIM115 - closed after training, below
            ProgressReport.attach(trainer, terminal)
        trainer.train()
        if progress:
            terminal.close()
            reader.join(timeout=10)
            os.close(master)
            assert b"12/12" in out
        weights = {k: v.detach().clone() for k, v in trainer.model.named_parameters() if v.requires_grad}
        return _losses(trainer), weights

    (plain_losses, plain), (observed_losses, observed) = run(False), run(True)
    assert plain_losses == observed_losses and len(plain_losses) == 12
    assert plain.keys() == observed.keys()
    assert all(torch.equal(plain[k], observed[k]) for k in plain)
