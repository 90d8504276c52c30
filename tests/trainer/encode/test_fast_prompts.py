"""The fast chat-template path gives the prompts and ids of `apply_chat_template` + `__call__` on every input
format, with and without the post-processor's special tokens; it cuts at adjacent added tokens as the backend
does; a planted difference turns it off with a warning and the results still equal the per-sample path's; and the
auto worker count reads a real `cpu.max`."""

from __future__ import annotations

import logging
import os

import pytest
from tokenizers.processors import TemplateProcessing

from tests.trainer.encode.test_sample_index import FORMATS, _dataset
from trainer.config.options import DataArgs
from trainer.encode import cpus
from trainer.encode.collator import Layout, tokenize_conversation
from trainer.encode.fast_prompts import FastPrompts
from trainer.encode.index_chunks import ChunkRenderer
from trainer.encode.prepare import read_dataset, render
from trainer.model.tiny import CHAT_TEMPLATE


def _tokenizer(model_dir, with_bos_processor: bool):
    """The tiny checkpoint's tokenizer; with a post-processor that adds BOS, and a template that writes none."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    if with_bos_processor:
        bos = tok.bos_token
        tok._tokenizer.post_processor = TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, tok.bos_token_id)])
        tok.chat_template = CHAT_TEMPLATE.replace("{{- bos_token }}", "")
    return tok


def _layout(tok) -> Layout:
    return Layout(pad_id=tok.pad_token_id or 0, audio_token_id=tok.convert_tokens_to_ids("<|AUDIO_OUT|>"),
                  audio_delay_token_id=0, eot_id=tok.convert_tokens_to_ids("<|eot_id|>"), stream_bos=0,
                  stream_eos=1, num_codebooks=8)


def _renderer(tok, layout: Layout) -> ChunkRenderer:
    return ChunkRenderer(lambda c: render(c, tok, layout), tokenizer=tok, layout=layout, keys={},
                         frames=lambda key: 1, num_codebooks=layout.num_codebooks)


@pytest.mark.parametrize("with_bos_processor", [False, True], ids=["bos_in_template", "bos_from_processor"])
@pytest.mark.parametrize("kind", FORMATS)
def test_fast_path_gives_the_ids_of_apply_chat_template(kind, with_bos_processor, tiny_ckpt, tmp_path) -> None:
    (tmp_path / "speech").mkdir()
    convs, _ = read_dataset(DataArgs(), str(_dataset(kind, tmp_path)))
    assert convs
    tok = _tokenizer(tiny_ckpt[0], with_bos_processor)
    layout = _layout(tok)
    want_prompts = [tok.apply_chat_template(c.messages, tokenize=False) for c in convs]
    want_ids = [tokenize_conversation(tok, c.messages, layout) for c in convs]
    assert all(ids[0] == tok.bos_token_id and ids[1] != tok.bos_token_id for ids in want_ids)  # BOS once
    fast = FastPrompts.of(tok)
    assert fast is not None and fast.pieces
    assert [fast.prompt(c.messages) for c in convs] == want_prompts
    assert fast.encode(want_prompts) == want_ids
    renderer = _renderer(tok, layout)
    assert renderer.rendered(convs) == [render(c, tok, layout) for c in convs]
    assert renderer.fast is not None and renderer.fast_chunks == 1  # the chunk took the fast path


def test_whole_prompts_without_cutting_give_the_same_ids(tiny_ckpt) -> None:
    convs, _ = read_dataset(DataArgs(), "examples/demo_data/train.json")
    tok = _tokenizer(tiny_ckpt[0], False)
    fast = FastPrompts.of(tok)
    assert fast is not None
    fast.pieces = False  # what a tokenizer with a normalizer or an lstrip token gets
    prompts = [tok.apply_chat_template(c.messages, tokenize=False) for c in convs]
    assert fast.encode(prompts) == [tokenize_conversation(tok, c.messages, _layout(tok)) for c in convs]


def test_pieces_are_cut_at_adjacent_added_tokens(tiny_ckpt) -> None:
    tok = _tokenizer(tiny_ckpt[0], False)
    fast = FastPrompts.of(tok)
    assert fast is not None
    text = ("<|begin_of_text|><|eot_id|><|start_header_id|>user<|end_header_id|>\n\nhi there"
            "<|audio_out_bos|><|AUDIO_OUT|><|audio_eos|>!")
    assert fast.split(text) == ["<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "user", "<|end_header_id|>",
                                "\n\nhi there", "<|audio_out_bos|>", "<|AUDIO_OUT|>", "<|audio_eos|>", "!"]
    assert fast.encode([text]) == [tok(text, add_special_tokens=False)["input_ids"]]  # a prompt with its BOS: cut


def test_a_planted_difference_turns_the_fast_path_off_with_a_warning(tiny_ckpt, caplog, monkeypatch) -> None:
    convs, _ = read_dataset(DataArgs(), "examples/demo_data/train.json")
    tok = _tokenizer(tiny_ckpt[0], False)
    layout = _layout(tok)
    renderer = _renderer(tok, layout)
    assert renderer.fast is not None
    encode = FastPrompts.encode

    def off_by_one(self, prompts):  # added tokens one id too high: the likeliest fault
        added = set(self.ids.values())
        return [[t + 1 if t in added else t for t in ids] for ids in encode(self, prompts)]

    monkeypatch.setattr(FastPrompts, "encode", off_by_one)
    want = [render(c, tok, layout) for c in convs]
    with caplog.at_level(logging.WARNING, logger="trainer.encode.index_chunks"):
        got = renderer.rendered(convs[:10]) + renderer.rendered(convs[10:])
    assert got == want
    assert renderer.fast is None and renderer.fast_chunks == 0
    warnings = [r for r in caplog.records if "fast chat-template path" in r.getMessage()]
    assert len(warnings) == 1


def _workers_with(tmp_path, monkeypatch, content: str) -> tuple[float, int]:
    path = tmp_path / "cpu.max"
    path.write_text(content)
    monkeypatch.setenv(cpus.CPU_MAX_ENV, str(path))
    return cpus.usable_cpus(), cpus.prepare_workers(0)


def test_auto_workers_follow_the_cgroup_cpu_limit(tmp_path, monkeypatch) -> None:
    affinity = len(os.sched_getaffinity(0))
    auto = 2 if affinity >= 2 else 1
    assert _workers_with(tmp_path, monkeypatch, "150000 100000\n") == (min(1.5, affinity), 1)
    assert _workers_with(tmp_path, monkeypatch, "max 100000\n") == (affinity, auto)
    assert _workers_with(tmp_path, monkeypatch, "200000 100000\n") == (min(2.0, affinity), auto)
    assert _workers_with(tmp_path, monkeypatch, "garbage\n") == (affinity, auto)
    monkeypatch.setenv(cpus.CPU_MAX_ENV, str(tmp_path / "missing"))
    assert cpus.usable_cpus() == affinity
    assert cpus.prepare_workers(3) == 3  # an explicit count is kept


def _slow(xs: list) -> list:
    import time

    time.sleep(0.2)
    return xs


def test_a_build_stopped_midway_ends_its_workers_at_once(monkeypatch) -> None:
    import multiprocessing
    import time

    from trainer.encode import index_build

    monkeypatch.setattr(index_build, "CHUNK", 2)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        for _ in index_build.in_chunks(list(range(200)), _slow, workers=2):
            raise KeyboardInterrupt  # the builder stopped between chunks (a signal, a peer that stopped)
    assert time.monotonic() - started < 10
    assert multiprocessing.active_children() == []


STOP_WITH_A_SWALLOWING_HANDLER = """
import multiprocessing, signal, sys, time
from trainer.encode import index_build

def slow(xs):
    time.sleep(0.2)
    return xs

index_build.CHUNK = 2
signal.signal(signal.SIGTERM, lambda *_: None)  # a handler the workers inherit, which does not end them
try:
    for _ in index_build.in_chunks(list(range(200)), slow, workers=2):
        raise KeyboardInterrupt
except KeyboardInterrupt:
    pass
print(len(multiprocessing.active_children()))
"""


def test_workers_end_on_the_pools_terminate_whatever_sigterm_handler_they_inherited() -> None:
    """The builder's process may hold a SIGTERM handler (the trainer's graceful stop) that the forked workers
    inherit; the pool's terminate must still end them, or its join waits forever (run in a process of its own,
    so that a hang fails here instead of stopping the suite)."""
    import os
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", STOP_WITH_A_SWALLOWING_HANDLER], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the builder and the workers it left
        proc.communicate()
        raise AssertionError("the build's pool did not end within 60 s of its terminate") from None
    assert proc.returncode == 0 and out.strip() == "0", err[-2000:]
