"""Outcome files (rank -> launcher) and the termination log (launcher -> Kubernetes)."""

from __future__ import annotations

import pytest

from trainer.errors import Stopped, classify, lost_peer
from trainer.rank_reports import OUTCOME_DIR_ENV, Outcome, collect, one_line, record, write_termination_log


def test_each_rank_records_its_code_and_one_line_reason(tmp_path) -> None:
    for rank, code in ((1, 3), (0, 0)):
        record(code, "data error:\n  a.wav: missing\n  b.wav: empty" if code else "",
               {OUTCOME_DIR_ENV: str(tmp_path), "RANK": str(rank)})
    (tmp_path / "rank-9.json").write_text("{not json")  # a rank killed mid-write: ignored
    assert collect(tmp_path) == [Outcome(0, 0, ""), Outcome(1, 3, "data error: a.wav: missing b.wav: empty")]


def test_outside_a_launch_nothing_is_recorded(tmp_path) -> None:
    record(2, "configuration error", {"RANK": "0"})
    assert list(tmp_path.iterdir()) == []


def test_reasons_are_cut_to_fit_a_termination_message() -> None:
    assert one_line("x" * 5000) == "x" * 1997 + "..."


def test_termination_log_is_written_where_it_can_be(tmp_path) -> None:
    path = tmp_path / "termination-log"
    assert write_termination_log("exit 2:\nUSE_LORA", {"TERMINATION_LOG": str(path)}) == path
    assert path.read_text() == "exit 2: USE_LORA\n"
    nowhere = tmp_path / "no-such-dir" / "termination-log"
    assert write_termination_log("x", {"TERMINATION_LOG": str(nowhere)}) is None
    assert not nowhere.parent.exists()


def test_a_lost_peer_is_recorded_as_retried_process_lost(monkeypatch, tmp_path) -> None:
    """A collective that fails because another rank died ends this rank with 160 (retried), not 1."""
    import torch.distributed as torch_dist

    import trainer.__main__ as cli
    from trainer import errors

    def collective_with_dead_peer(argv):  # what gloo raises when the other end of an all_reduce is gone
        raise torch_dist.DistBackendError("[gloo] Connection closed by peer [127.0.0.1]:29500")

    def own_bug(argv):
        raise ValueError("a bug in this process")

    monkeypatch.setitem(cli.COMMANDS, "peer", collective_with_dead_peer)
    monkeypatch.setitem(cli.COMMANDS, "bug", own_bug)
    assert cli.main(["peer"]) == errors.PROCESS_LOST
    assert lost_peer(RuntimeError("Connection reset by peer"))
    # gloo's own words for a collective that outlasted --ddp_timeout (torch 2.11, CPU)
    assert lost_peer(RuntimeError("[gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 10000ms for recv "
                                  "operation to complete"))
    assert lost_peer(RuntimeError("Application timeout caused pair closure"))
    with pytest.raises(ValueError):
        cli.main(["bug"])


def test_every_ending_maps_to_its_exit_code_for_the_cli_and_the_metrics_alike() -> None:
    from trainer import errors
    from trainer.errors import ConfigError, DataError

    cases = {
        errors.CONFIG_ERROR: ConfigError("LORA_RANK: expected an integer"),
        errors.DATA_ERROR: DataError("no usable samples"),
        errors.PREEMPTED: Stopped(errors.PREEMPTED, "stopped by SIGTERM at step 4"),
        errors.DISK_FULL: Stopped(errors.DISK_FULL, "out of disk space while saving x"),
        errors.INTERRUPTED: KeyboardInterrupt(),
        errors.PROCESS_LOST: RuntimeError("[gloo] Connection closed by peer"),
        errors.FAILURE: ValueError("a bug"),
    }
    got = {code: classify(err)[0] for code, err in cases.items()}
    assert got == {code: code for code in cases}
    assert classify(ConfigError("LORA_RANK: expected an integer"))[1] == (
        "configuration error: LORA_RANK: expected an integer")
    assert classify(ValueError("a bug"))[1] == "unexpected error: ValueError: a bug"
