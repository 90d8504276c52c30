"""Text normalization and error counting as the published TTS benchmarks do it (Seed-TTS-eval).

So a recognizer's capitals, punctuation, Unicode form or spelling variant is not counted as an error.

- English: Whisper's own `EnglishTextNormalizer` (numbers, contractions, titles, British -> American spelling
  through the checkpoint's `normalizer.json`, the map every Whisper checkpoint ships).
- Any other language: NFKC, lower case, punctuation and symbols removed, and, when asked, diacritics (Arabic
  harakat, accents) removed; the text is never split at a combining mark, which Whisper's `BasicTextNormalizer`
  does and which turns a correct Arabic transcript into WER 1.0.
- Chinese, Japanese and Korean are written without spaces between words, so their error rate counts
  characters (what the published tables call WER for Chinese).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CHARACTER_LANGUAGES = frozenset({"zh", "ja", "ko", "yue"})
_BRACKETED = re.compile(r"[<\[][^>\]]*[>\]]|\(([^)]+?)\)")  # [music], <noise>, (laughs): not speech


def language_code(language: str | None) -> str | None:
    """'English', 'en' or '<|en|>' -> 'en' (Whisper's language names and codes); None stays None."""
    if not language:
        return None
    from transformers.models.whisper.tokenization_whisper import TO_LANGUAGE_CODE

    name = language.strip().lower().removeprefix("<|").removesuffix("|>")
    return TO_LANGUAGE_CODE.get(name, name)


def is_character_script(c: str) -> bool:
    """Han, kana and Hangul: scripts written without spaces between words."""
    o = ord(c)
    return (0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0x20000 <= o <= 0x2FA1F or 0xF900 <= o <= 0xFAFF
            or 0x3040 <= o <= 0x30FF or 0xAC00 <= o <= 0xD7AF or 0x1100 <= o <= 0x11FF or 0x3130 <= o <= 0x318F)


def basic_normalize(text: str, strip_diacritics: bool = False) -> str:
    """NFKC, lower case, bracketed annotations and punctuation/symbols removed, single spaces."""
    s = unicodedata.normalize("NFKC", _BRACKETED.sub("", text)).lower()
    if strip_diacritics:
        s = unicodedata.normalize("NFKC", "".join(c for c in unicodedata.normalize("NFKD", s)
                                                  if unicodedata.category(c) != "Mn"))
    s = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in s)
    return " ".join(s.split())


def spelling_map(asr_model_path: str | None) -> dict[str, str] | None:
    """The English spelling map of a Whisper checkpoint (`normalizer.json`), or None where it has none."""
    if not asr_model_path:
        return None
    p = Path(asr_model_path) / "normalizer.json"
    if not p.is_file():
        return None
    return dict(json.loads(p.read_text(encoding="utf-8")))


@dataclass(frozen=True)
class TextRules:
    """How a reference and a transcript are made comparable; `describe` says which rules applied."""

    language: str | None = None  # a Whisper language code; None: by script (Han/kana/Hangul by character)
    strip_diacritics: bool = False
    spelling: dict[str, str] | None = None  # English spelling map (normalizer.json); None: none available

    def normalizer(self) -> Callable[[str], str]:
        """The function that makes a text comparable: Whisper's English normalizer, or the basic one."""
        if self.language == "en":
            from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

            english = EnglishTextNormalizer(self.spelling or {})
            return lambda s: " ".join(english(unicodedata.normalize("NFKC", s)).split())
        return lambda s: basic_normalize(s, self.strip_diacritics)

    def by_character(self, normalized_reference: str) -> bool:
        """Whether errors are counted per character: a language written without spaces between words."""
        if self.language is not None:
            return self.language in CHARACTER_LANGUAGES
        letters = [c for c in normalized_reference if not c.isspace()]
        return bool(letters) and 2 * sum(map(is_character_script, letters)) >= len(letters)

    def describe(self) -> str:
        """The rules applied, for the report, so two scores are compared only under the same rules."""
        if self.language == "en":
            return "whisper-english" + ("" if self.spelling is not None else " (no normalizer.json spelling map)")
        return "basic" + (" without diacritics" if self.strip_diacritics else "")


@dataclass(frozen=True)
class Counts:
    """Errors and reference length of one clip, in words (or characters) and in characters."""

    unit: str  # "word" or "character"
    errors: int
    units: int
    char_errors: int
    chars: int

    @property
    def wer(self) -> float:
        """Word error rate (1.0 for errors against an empty reference)."""
        return self.errors / self.units if self.units else float(self.errors > 0)

    @property
    def cer(self) -> float:
        """Character error rate (1.0 for errors against an empty reference)."""
        return self.char_errors / self.chars if self.chars else float(self.char_errors > 0)


def _edits(ref: list[str], hyp: list[str]) -> int:
    """Substitutions + deletions + insertions that turn `ref` into `hyp` (jiwer's alignment)."""
    if not ref or not hyp:
        return len(ref) + len(hyp)
    import jiwer

    out = jiwer.process_words(" ".join(ref), " ".join(hyp))
    return int(out.substitutions + out.deletions + out.insertions)


def count_errors(reference: str, hypothesis: str, rules: TextRules | None = None) -> Counts:
    """Word (or, for Chinese, Japanese and Korean, character) and character errors of `hypothesis`."""
    rules = rules or TextRules()
    norm = rules.normalizer()
    ref, hyp = norm(reference), norm(hypothesis)
    if rules.by_character(ref):
        ref_chars, hyp_chars = list(ref.replace(" ", "")), list(hyp.replace(" ", ""))
        errors = _edits(ref_chars, hyp_chars)
        return Counts("character", errors, len(ref_chars), errors, len(ref_chars))
    # characters of the normalized text, spaces included (jiwer's CER); "_" stands for a space token
    ref_chars, hyp_chars = list(ref.replace(" ", "_")), list(hyp.replace(" ", "_"))
    return Counts("word", _edits(ref.split(), hyp.split()), len(ref.split()), _edits(ref_chars, hyp_chars),
                  len(ref_chars))
