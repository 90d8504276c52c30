"""Data preparation: read and check the dataset, fill the code cache, tokenize, split off validation.

Runs before the model loads, so that every bad sample is reported (or, with `--skip_bad_samples`,
counted) in seconds. Local rank 0 of each node encodes missing audio into the code cache while the
other ranks wait; then every rank builds the same samples from the cache. A file that passed the header
check but fails to decode is a bad sample like any other, never replaced by another one.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainer import dist
from trainer.config.options import Config, DataArgs
from trainer.config.values import label
from trainer.data.bad_report import FILE_NAME as BAD_FILE
from trainer.data.bad_report import LIST_LIMIT, summarize_bad_samples, write_bad_samples
from trainer.data.load import ReadOptions, References, format_bad_samples, load_conversations
from trainer.data.samples import BadSample, Clip, Conversation
from trainer.encode.code_cache import CodeCache, clip_key, file_digest, fill_cache, tokenizer_identity
from trainer.encode.collator import EncodedSample, Layout, text_targets_after, tokenize_conversation
from trainer.encode.counter import Counter
from trainer.encode.cpus import prepare_workers
from trainer.encode.digest_cache import DigestCache
from trainer.encode.index_build import open_index, tokenizer_fingerprint, write_samples
from trainer.encode.part_store import PartStore
from trainer.encode.sample_index import IndexView, IndexWriter, SampleIndex
from trainer.errors import BadSamplesError, ConfigError, DataError

log = logging.getLogger(__name__)

# How often the encoding loop asks the store whether another rank was signalled, and tells the waiting
# ranks that it makes progress: a round trip per file would slow a fast codec down, and half a second is
# well inside any termination grace period and any --ddp_timeout.
PEER_CHECK_SECONDS = 0.5


@dataclass
class PreparedData:
    """The training and evaluation samples (lists in memory, or `IndexView`s of the dataset index)."""

    train: Sequence[EncodedSample]
    eval: Sequence[EncodedSample] | None
    bad: list[BadSample] = field(default_factory=list)


def cache_root(cfg: Config) -> Path:
    """Where the code cache lives: `--cache_dir`, else OUTPUT_DIR/code_cache."""
    assert cfg.train.output_dir
    return Path(cfg.data.cache_dir or Path(cfg.train.output_dir) / "code_cache")


def open_cache(cfg: Config) -> CodeCache:
    """The code cache of this run's audio tokenizer."""
    assert cfg.model.audio_tokenizer_path
    return CodeCache(cache_root(cfg), tokenizer_identity(cfg.model.audio_tokenizer_path))


def read_dataset(args: DataArgs, path: str) -> tuple[list[Conversation], list[BadSample]]:
    """The conversations of one data file, read with the data options of this run."""
    return load_conversations(
        path,
        system_prompt=args.system_prompt,
        max_audio_seconds=args.max_audio_seconds,
        min_audio_seconds=args.min_audio_seconds,
        read=ReadOptions(args.data_format, args.text_column, args.audio_column, args.speaker_column),
        references=References(args.reference_clips, args.reference_max_seconds, args.seed_split),
    )


def render(conv: Conversation, tokenizer: Any, layout: Layout) -> tuple[list[int], list[bool], list[int]] | BadSample:
    """A conversation's token ids, per clip whether it is a target, and its text target positions (or why not)."""
    try:
        ids = tokenize_conversation(tokenizer, conv.messages, layout)
    except Exception as err:  # the checkpoint's chat template raises on formats it cannot render
        return BadSample(conv.source, f"the chat template cannot render this conversation: {err}")
    positions = [i for i, t in enumerate(ids) if t == layout.audio_token_id]
    flags = conv.target_flags()
    if len(positions) != len(flags):
        return BadSample(
            conv.source, f"the chat template rendered {len(positions)} audio placeholders for {len(flags)} clips"
        )
    targets = [pos for pos, is_t in zip(positions, flags, strict=True) if is_t]
    return ids, flags, text_targets_after(ids, targets, layout.eot_id)


def encode_conversation(
    conv: Conversation, tokenizer: Any, layout: Layout, cache: CodeCache, keys: dict[Clip, str]
) -> EncodedSample | BadSample:
    """Tokenize one conversation and attach its cached codes."""
    clips = conv.clips()
    codes = []
    for clip in clips:
        c = cache.get(keys[clip])
        if c is None:
            return BadSample(conv.source, f"audio could not be decoded or encoded: {clip}")
        codes.append(c)
    out = render(conv, tokenizer, layout)
    if isinstance(out, BadSample):
        return out
    ids, flags, text_targets = out
    return EncodedSample(id=conv.id, source=conv.source, input_ids=ids, codes=codes, is_target=flags,
                         text_target_positions=text_targets)


def encode_all(
    convs: list[Conversation],
    *,
    cache: CodeCache,
    tokenizer: Any,
    layout: Layout,
    load_codec: Callable[[], Any],
    sample_rate: int,
) -> tuple[list[EncodedSample], list[BadSample]]:
    """Fill the cache (local rank 0), wait, then build samples on every rank.

    A SIGTERM to any rank stops them all within about a second, even while one encodes and the others wait
    (`trainer.train.signals`): the encoding loop and the wait both poll for a peer's stop. The waiting ranks give
    up after --ddp_timeout without encoding progress, not after --ddp_timeout in all.
    """
    keys = fill(convs, cache=cache, load_codec=load_codec, sample_rate=sample_rate)
    dist.barrier(poll=dist.raise_if_peer_stopped)
    samples: list[EncodedSample] = []
    bad: list[BadSample] = []
    for conv in convs:
        out = encode_conversation(conv, tokenizer, layout, cache, keys)
        (samples if isinstance(out, EncodedSample) else bad).append(out)  # type: ignore[arg-type]
    return samples, bad


def fill(convs: list[Conversation], *, cache: CodeCache, load_codec: Callable[[], Any],
         sample_rate: int) -> dict[Clip, str]:
    """Every clip's cache key; local rank 0 also encodes the clips missing from the cache."""
    clips = sorted({clip for c in convs for clip in c.clips()}, key=str)
    digests = digest_files(sorted({clip.path for clip in clips}), progress=dist.rank() == 0,
                           remembered=DigestCache(cache.dir.parent, file_digest))
    keys = {clip: clip_key(clip, digests[clip.path]) for clip in clips}
    if dist.local_rank() == 0:

        def between_files() -> None:
            dist.raise_if_peer_stopped()
            dist.note_progress()  # the ranks waiting at the barrier count their timeout from here

        between = at_most_every(PEER_CHECK_SECONDS, between_files)
        _, failures = fill_cache(clips, cache, load_codec, sample_rate=sample_rate, keys=keys,
                                 progress=dist.rank() == 0, between=between)
        for clip, reason in failures:
            log.error("%s: %s", clip, reason)
    return keys


def digest_files(paths: list[str], *, progress: bool, remembered: DigestCache) -> dict[str, str]:
    """Each audio file's content digest (the cache key's part that notices a file replaced under its name).

    A read of every byte of the files not read before (or changed since: `trainer.encode.digest_cache`),
    minutes on a large data set, so rank 0 shows it counting.
    """
    if not progress:
        digests = {p: remembered.digest(p) for p in paths}
    else:
        digests = {}
        with Counter(len(paths), "reading audio files", "file") as counter:
            for p in paths:
                digests[p] = remembered.digest(p)
                counter.advance()
    remembered.save()
    return digests


def at_most_every(seconds: float, action: Callable[[], None]) -> Callable[[], None]:
    """`action`, run on the first call and then only once `seconds` have passed since it last ran."""
    last = -float("inf")

    def throttled() -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= seconds:
            last = now
            action()

    return throttled


def split_validation(samples: list[EncodedSample], fraction: float, seed: int) -> tuple[list, list]:
    """Deterministic hold-out of `fraction` of the samples (at least one), the same on every rank."""
    if len(samples) < 2:
        raise ConfigError(
            f"{label('validation_split')}: {len(samples)} training sample(s) cannot be split; "
            "give EVAL_DATA_FILE or set DISABLE_EVAL=true"
        )
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    n_eval = min(len(samples) - 1, max(1, round(len(samples) * fraction)))
    held = set(order[:n_eval])
    return [s for i, s in enumerate(samples) if i not in held], [s for i, s in enumerate(samples) if i in held]


def split_rows(count: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`split_validation`'s hold-out as row numbers (train, eval), each in input order, for an index."""
    if count < 2:
        raise ConfigError(
            f"{label('validation_split')}: {count} training sample(s) cannot be split; "
            "give EVAL_DATA_FILE or set DISABLE_EVAL=true"
        )
    order = list(range(count))
    random.Random(seed).shuffle(order)  # the same draws as split_validation: the same split from either path
    n_eval = min(count - 1, max(1, round(count * fraction)))
    held = np.zeros(count, dtype=bool)
    held[np.asarray(order[:n_eval], dtype=np.int64)] = True
    del order
    return np.flatnonzero(~held), np.flatnonzero(held)


def report_bad(bad: list[BadSample], args: DataArgs, report_dir: Path | None) -> None:
    """Raise `BadSamplesError` with the report of every bad sample, or log it when skipping them.

    Up to `LIST_LIMIT` they are listed; more are summarised per kind, the full list in `report_dir`.
    """
    if not bad:
        return
    if len(bad) <= LIST_LIMIT:
        report = format_bad_samples(bad)
    else:
        full = None
        if report_dir is not None:
            full = Path(report_dir) / BAD_FILE
            if dist.is_main():
                write_bad_samples(bad, full)
        report = summarize_bad_samples(bad, full)
    if not args.skip_bad_samples:
        raise BadSamplesError(
            report + "\nFix these samples, or pass --skip_bad_samples (SKIP_BAD_SAMPLES=true) to skip them."
        )
    log.warning("skipping bad samples (--skip_bad_samples):\n%s", report)


def prepare_data(
    args: DataArgs,
    *,
    evaluate: bool,
    cache: CodeCache,
    tokenizer: Any,
    layout: Layout,
    load_codec: Callable[[], Any],
    sample_rate: int,
    report_dir: Path | None = None,
) -> PreparedData:
    """All of data preparation; raises `BadSamplesError` listing every bad sample unless skipping.

    With `--data_index` (the default) the samples come from the dataset index beside the code cache, built
    first when it is not current (`trainer.encode.index_build`); without it they are held in memory.
    """
    assert args.train_data_file
    if evaluate and not args.eval_data_file and args.validation_split <= 0:
        raise ConfigError(
            "evaluation is on but there is no evaluation data: set EVAL_DATA_FILE (--eval_data_file) or "
            "VALIDATION_SPLIT > 0, or turn evaluation off with DISABLE_EVAL=true"
        )
    common = dict(cache=cache, tokenizer=tokenizer, layout=layout, load_codec=load_codec, sample_rate=sample_rate)
    if args.data_index:
        return _prepare_indexed(args, evaluate=evaluate, report_dir=report_dir, **common)  # type: ignore[arg-type]
    train_convs, bad = read_dataset(args, args.train_data_file)
    eval_convs: list[Conversation] = []
    if evaluate and args.eval_data_file:
        eval_convs, eval_bad = read_dataset(args, args.eval_data_file)
        bad += eval_bad
    train, train_bad = encode_all(train_convs, **common)  # type: ignore[arg-type]
    evals, eval_bad2 = encode_all(eval_convs, **common) if eval_convs else ([], [])  # type: ignore[arg-type]
    bad += train_bad + eval_bad2
    report_bad(bad, args, report_dir)
    if not train:
        raise DataError(f"{args.train_data_file}: no usable training samples")
    eval_set: list[EncodedSample] | None = None
    if evaluate:
        if args.eval_data_file:
            if not evals:
                raise DataError(f"{args.eval_data_file}: no usable evaluation samples")
            eval_set = evals
        else:
            train, eval_set = split_validation(train, args.validation_split, args.seed_split)
    return PreparedData(train=train, eval=eval_set, bad=bad)


def _prepare_indexed(args: DataArgs, *, evaluate: bool, report_dir: Path | None, cache: CodeCache, tokenizer: Any,
                     layout: Layout, load_codec: Callable[[], Any], sample_rate: int) -> PreparedData:
    """`prepare_data` from the dataset index: every rank maps it; local rank 0 builds it when it is stale."""
    text_identity = tokenizer_fingerprint(tokenizer, layout)

    def index_of(path: str) -> SampleIndex:
        def build(writer: IndexWriter, parts: PartStore) -> None:
            convs, bad = read_dataset(args, path)
            keys = fill(convs, cache=cache, load_codec=load_codec, sample_rate=sample_rate)

            def between_samples() -> None:
                dist.raise_if_peer_stopped()
                dist.note_progress()

            write_samples(writer, convs, bad, keys=keys, cache=cache,
                          render=lambda conv: render(conv, tokenizer, layout), num_codebooks=layout.num_codebooks,
                          progress=dist.rank() == 0, between=at_most_every(PEER_CHECK_SECONDS, between_samples),
                          workers=prepare_workers(args.prepare_workers), tokenizer=tokenizer, layout=layout,
                          parts=parts)

        return open_index(args, path, cache=cache, text_identity=text_identity, build=build)

    assert args.train_data_file
    train_index = index_of(args.train_data_file)
    eval_index = index_of(args.eval_data_file) if evaluate and args.eval_data_file else None
    bad = list(train_index.bad_samples()) + (list(eval_index.bad_samples()) if eval_index is not None else [])
    report_bad(bad, args, report_dir)
    if not len(train_index):
        raise DataError(f"{args.train_data_file}: no usable training samples")
    train, eval_set = IndexView(train_index, cache), None
    if eval_index is not None:
        if not len(eval_index):
            raise DataError(f"{args.eval_data_file}: no usable evaluation samples")
        eval_set = IndexView(eval_index, cache)
    elif evaluate:
        train_rows, eval_rows = split_rows(len(train_index), args.validation_split, args.seed_split)
        train, eval_set = IndexView(train_index, cache, train_rows), IndexView(train_index, cache, eval_rows)
    return PreparedData(train=train, eval=eval_set, bad=bad)  # type: ignore[arg-type]
