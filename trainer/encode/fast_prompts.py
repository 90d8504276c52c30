"""Chat prompts rendered and tokenized a chunk at a time, with the same ids as `tokenize_conversation`.

Building the dataset index of a million samples spends most of its time in two places of the per-sample path:
`apply_chat_template` rebuilds each conversation as plain data before it renders it (two thirds of the template
time), and the tokenizer's `__call__` wraps the fast backend's own batch encoding in per-call bookkeeping. Here the
compiled template that `apply_chat_template` itself uses renders the messages with the same variables, and the
backend (`tokenizers`) encodes the prompts of a chunk at once. When every added token matches as plain text (no
lstrip/rstrip/single_word, no normalizer), each prompt is cut at the added tokens, as `tokenizers` does first, and
each distinct text piece of a chunk (the system prompt, the role headers, the reference transcripts repeat) is
encoded once.

Every private surface (`_compile_jinja_template`, the backend tokenizer and its `encode_batch_fast`) is looked up
once; a slow tokenizer, a template dict or a missing surface leaves `FastPrompts.of` returning None, and the caller
keeps the per-sample path. The caller also checks one conversation per chunk against that path (`index_chunks`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# Messages carrying these fields are aliased by `apply_chat_template` before it renders them: such a conversation
# takes the per-sample path.
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


def _added_tokens(backend: Any) -> dict[int, Any] | None:
    """The backend's added tokens by id, or None when one of them does not match as plain text."""
    try:
        added = backend.get_added_tokens_decoder()
    except AttributeError:
        return None
    for token in added.values():
        if token.lstrip or token.rstrip or token.single_word or not token.content:
            return None
    return added


def _pre_tokenizer(backend: Any) -> str:
    """The backend's pre-tokenizer as JSON (`"first"` when it cannot say, which turns the cutting off)."""
    try:
        return json.dumps(json.loads(backend.to_str())["pre_tokenizer"])
    except Exception:
        return '"first"'


def _splitter(contents: list[str]) -> re.Pattern[str] | None:
    """A regex that finds the leftmost-longest occurrence of any of `contents` (the backend's matching rule)."""
    if not contents:
        return None
    return re.compile("(" + "|".join(re.escape(c) for c in sorted(contents, key=len, reverse=True)) + ")")


class FastPrompts:
    """Renders conversations with the tokenizer's compiled chat template and encodes them with its fast backend.

    Args:
        tokenizer (`PreTrainedTokenizerBase`):
            A fast tokenizer whose `chat_template` is one string.
        template (`jinja2.Template`):
            That template, compiled by transformers' own `_compile_jinja_template`.
        backend (`tokenizers.Tokenizer`):
            The tokenizer's fast backend.
        added (`dict`, *optional*):
            The backend's added tokens by id; None when one of them does not match as plain text (no cutting).
        plain (`Callable`):
            transformers' `_plain_template_data`, which `apply_chat_template` applies to the template variables.
    """

    def __init__(self, tokenizer: Any, template: Any, backend: Any, added: dict[int, Any] | None,
                 plain: Callable[[Any], Any]) -> None:
        self.tokenizer, self.template, self.backend = tokenizer, template, backend
        # apply_chat_template passes the special tokens map as template variables (`bos_token`, ...), as plain data
        self.variables = plain(dict(tokenizer.special_tokens_map))
        self.bos = tokenizer.bos_token
        # Metaspace's `prepend_scheme: first` marks only the prompt's first piece: cutting would mark them all
        self.pieces = added is not None and backend.normalizer is None and '"first"' not in _pre_tokenizer(backend)
        self.ids: dict[str, int] = {}
        self.passes: list[re.Pattern[str]] = []
        if self.pieces and added is not None:
            self.ids = {t.content: i for i, t in added.items()}
            # tokenizers splits at the tokens matched on the raw text first, then at the normalized ones
            raw = _splitter([t.content for t in added.values() if not t.normalized])
            normalized = _splitter([t.content for t in added.values() if t.normalized])
            self.passes = [p for p in (raw, normalized) if p is not None]

    @classmethod
    def of(cls, tokenizer: Any) -> FastPrompts | None:
        """The fast path for `tokenizer`, or None when it lacks a surface the fast path needs."""
        try:
            from transformers.utils.chat_template_utils import _compile_jinja_template, _plain_template_data
        except ImportError:
            return None
        template_text = getattr(tokenizer, "chat_template", None)
        backend = getattr(tokenizer, "_tokenizer", None)
        if not isinstance(template_text, str) or not getattr(tokenizer, "is_fast", False) or backend is None:
            return None
        if not hasattr(backend, "encode_batch_fast") or getattr(tokenizer, "split_special_tokens", False):
            return None
        try:
            template = _compile_jinja_template(template_text)
        except Exception:
            return None
        return cls(tokenizer, template, backend, _added_tokens(backend), _plain_template_data)

    def usable(self) -> bool:
        """Whether the backend encodes as `__call__` would now: no truncation, no padding, added tokens split."""
        b = self.backend
        return b.truncation is None and b.padding is None and not b.encode_special_tokens

    def prompt(self, messages: list[dict]) -> str | None:
        """`apply_chat_template(messages, tokenize=False)`, or None for messages that path rewrites first."""
        plain = []
        for m in messages:
            if any(m.get(f) is not None for f in REASONING_FIELDS):
                return None
            # apply_chat_template drops the keys whose value is None (`_normalize_chat_messages`)
            plain.append(m if all(v is not None for v in m.values()) else {k: v for k, v in m.items()
                                                                            if v is not None})
        return self.template.render(messages=plain, add_generation_prompt=False, tools=None, documents=None,
                                    **self.variables)

    def encode(self, prompts: list[str]) -> list[list[int]]:
        """Token ids of each prompt, as `tokenize_conversation` gives them (BOS once, as the processor does)."""
        special = [not (self.bos and p.startswith(self.bos)) for p in prompts]
        out: list[list[int]] = [[] for _ in prompts]
        plain = [i for i, s in enumerate(special) if not s]
        if self.pieces:
            for i, ids in zip(plain, self._encode_in_pieces([prompts[i] for i in plain]), strict=True):
                out[i] = ids
        else:
            for i, enc in zip(plain, self.backend.encode_batch_fast([prompts[i] for i in plain],
                                                                    add_special_tokens=False), strict=True):
                out[i] = enc.ids
        with_special = [i for i, s in enumerate(special) if s]
        if with_special:  # the post-processor adds its tokens around the whole prompt: no pieces
            encs = self.backend.encode_batch_fast([prompts[i] for i in with_special], add_special_tokens=True)
            for i, enc in zip(with_special, encs, strict=True):
                out[i] = enc.ids
        return out

    def split(self, text: str) -> list[str]:
        """`text` cut before and after every added token, as the backend cuts it before pre-tokenizing."""
        parts = [text]
        for pattern in self.passes:
            # a capturing pattern: re.split keeps the tokens, between the (possibly empty) text pieces
            parts = [piece for part in parts
                     for piece in ((part,) if part in self.ids else pattern.split(part)) if piece]
        return parts

    def _encode_in_pieces(self, prompts: list[str]) -> list[list[int]]:
        """Each prompt's ids from its pieces; every distinct text piece of the batch encoded once."""
        split = [self.split(p) for p in prompts]
        texts = list({piece for parts in split for piece in parts if piece not in self.ids})
        encoded = {t: e.ids for t, e in zip(texts, self.backend.encode_batch_fast(texts, add_special_tokens=False),
                                            strict=True)}
        encoded.update({t: [i] for t, i in self.ids.items()})
        out = []
        for parts in split:
            ids: list[int] = []
            for piece in parts:
                ids += encoded[piece]
            out.append(ids)
        return out
