"""The options of speech generation.

Sampling, the samples taken while training, their quality metrics, and the synthesize/evaluate commands' own inputs
(declared with `opt`, collected in `trainer.config.options`).
"""

from __future__ import annotations

from dataclasses import dataclass

from trainer.config.declare import PathStr, opt


@dataclass
class GenerationArgs:
    """How speech is sampled: by `synthesize` and for the samples taken while training (docs/synthesis.md)."""

    temperature: float = opt(
        0.3, "Sampling temperature of the audio codes; 0 picks the most likely code (greedy).",
        minimum=0.0,
    )
    top_k: int = opt(50, "Sample among the K most likely codes of each codebook; 0: no limit.", minimum=0)
    top_p: float = opt(
        0.95, "Sample among the most likely codes whose probabilities add up to P (nucleus sampling).",
        minimum=0.0, maximum=1.0, exclusive_min=True,
    )


@dataclass
class SampleArgs:
    """Audio samples synthesized while training, to listen to and to score (docs/synthesis.md)."""

    sample_prompts_file: PathStr | None = opt(
        None,
        "JSONL file of prompts to synthesize while training, one {\"text\", \"reference_audio\"?, "
        "\"reference_text\"?, \"id\"?} per line (the format of synthesize --input).",
    )
    sample_from_eval: int = opt(
        0, "Also synthesize the texts of the first N evaluation samples, with their own reference clips.",
        minimum=0,
    )
    sample_steps: int = opt(
        0, "Synthesize the prompts every N optimizer steps into OUTPUT_DIR/samples/step-N/; 0: not by steps.",
        minimum=0,
    )
    sample_at_checkpoints: bool = opt(False, "Synthesize the prompts at every checkpoint too.")
    sample_max_audio_seconds: float = opt(
        10.0, "Longest sample clip: generation stops there unless the audio stream ends first.",
        minimum=0.0, exclusive_min=True,
    )


@dataclass
class QualityArgs:
    """Objective quality of generated speech; both metrics are optional and read local models only."""

    asr_model_path: PathStr | None = opt(
        None,
        "Directory of a transformers speech recognition checkpoint (a Whisper-family model) used to transcribe "
        "generated clips for their word and character error rates; unset: no error rates.",
    )
    speaker_model_path: PathStr | None = opt(
        None,
        "Directory of a transformers audio x-vector checkpoint (WavLM speaker verification) used for the "
        "speaker similarity of generated clips to their references; unset: no similarity.",
    )


@dataclass
class SynthesisArgs:
    """Options of the synthesize and evaluate commands alone (not of training, so not in the chart)."""

    adapter_path: PathStr | None = opt(
        None, "A lora_adapters/ directory (a checkpoint's or the final one); unset: the model as it is."
    )
    text: str | None = opt(None, "Text to speak.")
    reference_audio: PathStr | None = opt(None, "Audio file of the voice to clone (needs reference_text).")
    reference_text: str | None = opt(None, "Transcript of reference_audio.")
    max_reference_seconds: float = opt(
        30.0, "Longest reference clip synthesize accepts (it is encoded into the prompt whole).",
        minimum=0.0, exclusive_min=True,
    )
    max_synthesis_seconds: float = opt(
        30.0, "Longest clip synthesize generates: generation stops there unless the audio stream ends first "
        "(replaces max_audio_seconds, which synthesize still reads with a deprecation line).",
        minimum=0.0, exclusive_min=True,
    )
    output: PathStr | None = opt(None, "WAV file to write (with text).")
    overwrite: bool = opt(
        False, "Replace existing clips (output, or output_dir's <id>.wav and samples.jsonl); unset: refuse."
    )
    input: PathStr | None = opt(
        None,
        "Batch: JSONL file, one {\"text\", \"reference_audio\"?, \"reference_text\"?, \"id\"?} per line; "
        "clips go to output_dir/<id>.wav with an index output_dir/samples.jsonl.",
    )
    samples_dir: PathStr | None = opt(
        None, "evaluate: a folder of generated clips with its samples.jsonl (synthesize's or training's)."
    )
    language: str | None = opt(
        None,
        "evaluate: the language of the texts (a Whisper code or name: en, zh, ar, ...): forces the recognizer's "
        "decoding language and picks the normalization (en: Whisper's English normalizer; zh, ja, ko: scored "
        "by character); unset: the recognizer detects it, and Han/kana/Hangul texts are scored by character.",
    )
    strip_diacritics: bool = opt(
        False, "evaluate: remove diacritics (accents, Arabic harakat) before comparing texts other than English.",
    )
