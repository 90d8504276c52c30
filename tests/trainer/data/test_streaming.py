"""A ChatML list and a JSONL manifest are read as streams: the same items and candidates as a whole-file read,
errors that name the line and column, and memory that does not grow with the file."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.allocations import peak_bytes
from tests.trainer.datafiles import ARABIC, SEED_SYSTEM, load, seed_dataset, seed_sample
from trainer.data import json_stream
from trainer.data import load as data_load
from trainer.data.chatml import _chatml_candidate, read_chatml
from trainer.data.json_stream import iter_json_list
from trainer.data.pairs import read_jsonl
from trainer.errors import DataError

CHUNK_SIZES = (1, 2, 3, 7, 64, 4096, None)  # None: the default, larger than every file here but the big ones

TRICKY: list[Any] = [
    {"text": "brackets ] [ } { and commas , , inside a string", "n": 1},
    {"text": 'escaped \\"quotes\\" and a backslash at the end \\\\', "list": [[], {}, [[[]]]]},
    "a string item with \n a newline and a \t tab, \u00e9, \U0001f600, " + ARABIC[0],
    "\\u0041 is not an escape here, \"\\\" is",
    -0, 0, 7, -12345678901234567890123, 1.5e300, -2.5e-7, 0.1, 1e5, 3.0,
    True, False, None,
    {"nested": {"deeper": [{"k": "v", "n": [1, 2.5, -3e-2, None, "]"]}]}},
    {"big": "x" * 50_000 + "]," * 1000, "after": [1, 2, 3]},  # spans many chunks of every size here
    [],
    {},
    "",
    {"last": "item"},
]


def _write(path: Path, text: str, *, bom: bool = False) -> Path:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def _json_load(path: Path) -> Any:
    with open(path, encoding="utf-8-sig") as f:
        return json.load(f)


LAYOUTS: dict[str, Callable[[Any], str]] = {
    "compact": lambda v: json.dumps(v, separators=(",", ":")),
    "ascii-indent": lambda v: json.dumps(v, indent=1),
    "utf8-indent": lambda v: json.dumps(v, indent=2, ensure_ascii=False),
    "spaced": lambda v: " \n\t" + json.dumps(v, separators=(" ,\r\n ", " : ")) + " \n\n",
    "crlf": lambda v: json.dumps(v, indent=1, ensure_ascii=False).replace("\n", "\r\n"),
    "cr": lambda v: json.dumps(v, indent=1).replace("\n", "\r"),
}


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_items_are_json_loads_at_every_chunk_size(tmp_path, layout, chunk_size) -> None:
    for bom in (False, True):
        path = _write(tmp_path / "d.json", LAYOUTS[layout](TRICKY), bom=bom)
        expected = _json_load(path)
        assert list(iter_json_list(str(path), chunk_size)) == expected
        assert len(expected) == len(TRICKY)


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(7 if depth < 4 else 4)
    if kind == 0:
        return rng.choice([True, False, None])
    if kind == 1:
        return rng.choice([rng.randint(-10**20, 10**20), rng.uniform(-1e6, 1e6), rng.randint(0, 9), -0.0])
    if kind in (2, 3):
        return "".join(rng.choice('ab ,]}["\\\n\u00e9\u0645\U0001f600/') for _ in range(rng.randrange(12)))
    if kind in (4, 5):
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {str(_random_value(rng, 4)): _random_value(rng, depth + 1) for _ in range(rng.randrange(5))}


def test_random_lists_read_as_json_loads_them(tmp_path) -> None:
    rng = random.Random(0)
    for case in range(60):
        value = [_random_value(rng) for _ in range(rng.randrange(0, 30))]
        layout = LAYOUTS[sorted(LAYOUTS)[case % len(LAYOUTS)]]
        path = _write(tmp_path / f"{case}.json", layout(value), bom=case % 3 == 0)
        assert list(iter_json_list(str(path), rng.choice(CHUNK_SIZES))) == _json_load(path), case


# --- the candidates ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seed_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seed-layout train.json with three bad samples among the good ones (a number, no messages, no assistant)."""
    path = seed_dataset(tmp_path_factory.mktemp("seed"), count=6)
    items = _json_load(path)
    items[2:2] = [42, {"start_index": 0}, {"messages": [{"role": "user", "content": "no assistant"}]}]
    path.write_text(json.dumps(items, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


@pytest.mark.parametrize("chunk_size", [3, 100, 1 << 20])
def test_the_seed_layout_reads_the_candidates_of_a_whole_file_read(seed_path, monkeypatch, chunk_size) -> None:
    monkeypatch.setattr(json_stream, "CHUNK_SIZE", chunk_size)
    base, stem = str(seed_path.parent), "train"
    expected = [_chatml_candidate(item, base, f"{stem}-{i}", f"{seed_path}[{i}]", SEED_SYSTEM)
                for i, item in enumerate(_json_load(seed_path))]
    assert len(expected) == 9 and sum(c.conversation is None for c in expected) == 3
    assert list(read_chatml(str(seed_path), SEED_SYSTEM)) == expected


@pytest.mark.parametrize("batch", [1, 2, 4])
def test_the_seed_layout_loads_the_same_at_any_chunk_and_check_batch_size(seed_path, monkeypatch, batch) -> None:
    whole = load(seed_path)  # one buffer, one batch
    assert [b.source for b in whole[1]] == [f"{seed_path}[{i}]" for i in (2, 3, 4)]
    assert [c.id for c in whole[0]] == [f"train-{i}" for i in (0, 1, 5, 6, 7, 8)]
    monkeypatch.setattr(json_stream, "CHUNK_SIZE", 5)
    monkeypatch.setattr(data_load, "CHECK_BATCH", batch)
    assert load(seed_path) == whole


def test_read_chatml_yields_the_samples_before_a_break_further_on(tmp_path) -> None:
    path = _write(tmp_path / "d.json", '[{"messages": []}, 7, {"messages": "x"},\n {"messages": [}]')
    candidates = read_chatml(str(path), SEED_SYSTEM)
    assert [next(candidates).source for _ in range(3)] == [f"{path}[{i}]" for i in range(3)]  # a whole read fails first
    with pytest.raises(DataError, match="line 2 column 16: in item 3: Expecting value"):
        next(candidates)


# --- errors --------------------------------------------------------------------------------------


BROKEN = {
    "missing comma": ('[\n  {"a": 1}\n  {"b": 2}\n]', "expected ',' or ']' after item 0, got '{'"),
    "broken item": ('[1,\n 2,\n {"a": tru}]', "in item 2: Expecting value"),
    "unterminated list": ('[1,\n2', "expected ',' or ']' after item 1, got the end of the file"),
    "trailing comma": ('[1,\n2,\n]', "expected item 2 after ',', got ']' (a trailing comma)"),
    "trailing garbage": ('[{"a": "]"}]\n\n  x', "unexpected data after the list's closing ']'"),
    "second list": ("[1] [2]", "unexpected data after the list's closing ']'"),
    "unterminated string": ('[\n"abc', 'in item 0: Unterminated string starting at'),
    "control character": ('["a\nb"]', "in item 0: Invalid control character at"),
    "bad escape": ('[ "\\x" ]', "in item 0: Invalid \\escape"),
}


@pytest.mark.parametrize("chunk_size", [1, 4, None])
@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_json_names_the_file_line_column_and_what_was_expected(tmp_path, case, chunk_size) -> None:
    text, what = BROKEN[case]
    text = "\n" * 40 + "   " + text  # the error well past the first chunk, on a line that does not start it
    path = _write(tmp_path / "d.json", text)
    with pytest.raises(json.JSONDecodeError) as json_error:  # where json itself places the error
        json.loads(text)
    with pytest.raises(DataError) as info:
        list(iter_json_list(str(path), chunk_size))
    message = str(info.value)
    assert message.startswith(f"{path}: not valid JSON at line {json_error.value.lineno} "
                              f"column {json_error.value.colno}: "), message
    assert what in message


def test_a_load_of_broken_json_fails_with_the_line_and_column(tmp_path) -> None:
    path = _write(tmp_path / "d.json", '[\n {"messages": []}\n {"messages": []}\n]')
    with pytest.raises(DataError, match="line 3 column 2: expected ',' or ']' after item 0"):
        load(path)


def test_a_file_that_is_not_utf8_names_the_file(tmp_path) -> None:
    path = tmp_path / "d.json"
    path.write_bytes(b'[\n"ok",\n"' + b"\xff" * 3 + b'"]')
    with pytest.raises(DataError, match=f"{path}: not valid JSON: not UTF-8 text at line 3"):
        list(read_chatml(str(path), SEED_SYSTEM))


@pytest.mark.parametrize(("text", "message"), [
    ('{"samples": []}', "pass its directory instead"),
    ('\ufeff \n {"messages": []}', "expected a JSON list of ChatML samples .*, got an object"),
    ("42", "got a number"),
    ("", "not valid JSON"),
    ("nope", "not valid JSON"),
])
def test_a_top_level_that_is_not_a_list_keeps_its_message(tmp_path, text, message) -> None:
    path = _write(tmp_path / "d.json", text)
    with pytest.raises(DataError, match=message):
        list(read_chatml(str(path), SEED_SYSTEM))


# --- memory --------------------------------------------------------------------------------------


def _drain(iterator: Any) -> None:
    for _ in iterator:
        pass


@pytest.fixture(scope="module")
def big_samples() -> list[dict]:
    """About 20 MB of seed-layout samples with paragraph-long transcripts."""
    text = " ".join([ARABIC[0], "and a sentence of English between them,", ARABIC[1]] * 12)
    return [seed_sample((text, f"./datasets/part_1/target_{i + 1:06d}.wav"),
                        (f"{i}: {text}", f"./datasets/part_1/target_{i:06d}.wav"), 1.5, f"sample_{i:06d}")
            for i in range(5000)]


def test_reading_a_big_chatml_list_peaks_far_below_json_load(tmp_path, big_samples) -> None:
    path = tmp_path / "train.json"
    path.write_text(json.dumps(big_samples, ensure_ascii=False, indent=1), encoding="utf-8")
    assert os.path.getsize(path) > 20e6
    whole = peak_bytes(lambda: _json_load(path))
    streamed = peak_bytes(lambda: _drain(read_chatml(str(path), SEED_SYSTEM)))
    assert whole > os.path.getsize(path)  # the objects of a whole-file read take more than the file
    assert streamed < whole / 10, (streamed, whole)


def test_reading_a_big_jsonl_peaks_far_below_json_load_of_the_same_records(tmp_path, big_samples) -> None:
    records = [{"audio": f"clips/{i}.wav", "text": s["misc"]["target_transcript"], "ref_audio": f"clips/{i + 1}.wav",
                "ref_text": s["misc"]["ref_transcript"], "speaker": s["speaker"]} for i, s in enumerate(big_samples)]
    records *= 2
    jsonl, as_list = tmp_path / "train.jsonl", tmp_path / "train.json"
    jsonl.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    as_list.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    assert os.path.getsize(jsonl) > 20e6
    whole = peak_bytes(lambda: _json_load(as_list))
    streamed = peak_bytes(lambda: _drain(read_jsonl(str(jsonl), SEED_SYSTEM)))
    assert streamed < whole / 10, (streamed, whole)
