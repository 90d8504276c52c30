"""Generate speech with transformers' own Higgs Audio v2 generation and decode it with the audio tokenizer.

One `Synthesizer` holds the model (with an adapter, or merged), the audio tokenizer and the text tokenizer;
`synthesize` turns a `Prompt` into a waveform at the audio tokenizer's sampling rate and says why it stopped:
at the end of the audio stream the model produced, or at the length limit. Training builds one around the
model it trains (`from_parts`) to take samples; `synthesize` loads one from disk (`load`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainer.config.options import GenerationArgs, ModelArgs
from trainer.data.audio import load_audio
from trainer.data.samples import Clip as AudioClip
from trainer.encode.code_cache import encode_waveform
from trainer.encode.collator import Layout
from trainer.errors import AudioError, ConfigError
from trainer.generate.layout import context_clips, generated_codes, prompt_arrays, prompt_messages
from trainer.generate.prompts import Prompt
from trainer.model.load import attach_adapter, check_adapter_dir  # noqa: F401  (synthesize checks adapters early)

log = logging.getLogger(__name__)

END_OF_AUDIO, AT_LIMIT = "end_of_audio", "max_audio_seconds"


@dataclass
class Clip:
    """One generated clip: mono float32 samples at `sample_rate`, and why generation stopped."""

    samples: np.ndarray
    sample_rate: int
    stopped: str  # END_OF_AUDIO or AT_LIMIT

    @property
    def seconds(self) -> float:
        """The clip's length in seconds."""
        return len(self.samples) / self.sample_rate


class Synthesizer:
    """Text (+ voice reference) -> speech, with the prompt laid out as in training."""

    def __init__(self, model: Any, codec: Any, tokenizer: Any, layout: Layout, system_prompt: str) -> None:
        self.model, self.codec, self.tokenizer, self.layout = model, codec, tokenizer, layout
        self.system_prompt = system_prompt
        self.sample_rate = int(codec.config.sample_rate)
        self.frame_rate = float(codec.config.frame_rate)
        self._reference_codes: dict[AudioClip, np.ndarray] = {}

    @classmethod
    def load(cls, args: ModelArgs, adapter_path: str | None, system_prompt: str) -> Synthesizer:
        """From disk: bf16 on GPU, fp32 on CPU. Directories are checked before anything heavy is read."""
        import torch

        from trainer.model.load import load_audio_tokenizer, load_parts, load_weights

        parts = load_parts(args)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        model = load_weights(args.model_path, dtype=dtype, attn_implementation=args.attn_implementation,
                             adapter_path=adapter_path)
        model = model.to(device).eval()
        codec = load_audio_tokenizer(args, device)
        return cls(model, codec, parts.tokenizer, Layout.from_model(parts.model_config, parts.tokenizer),
                   system_prompt)

    def reference_codes(self, clip: AudioClip | str) -> np.ndarray:
        """Codes (codebooks, frames) of a reference clip (a file, or a segment of one), encoded once per clip."""
        clip = clip if isinstance(clip, AudioClip) else AudioClip(clip)
        if clip not in self._reference_codes:
            try:
                wave = load_audio(clip.path, self.sample_rate, clip.offset, clip.duration)
            except AudioError as err:
                raise ConfigError(f"reference audio {clip}: {err}") from None
            self._reference_codes[clip] = encode_waveform(self.codec, wave)
        return self._reference_codes[clip]

    def prompt(self, prompt: Prompt) -> dict[str, np.ndarray]:
        """input_ids and audio_input_ids of `prompt`, laid out as training lays out the same conversation.

        Its own system message and scene, else --system_prompt, and every reference clip before the target.
        """
        messages = prompt_messages(prompt, self.system_prompt)
        codes = [self.reference_codes(clip) for clip in context_clips(messages)]
        return prompt_arrays(self.tokenizer, self.layout, messages, codes)

    def synthesize(self, prompt: Prompt, gen: GenerationArgs, max_seconds: float, seed: int,
                   streamer: Any = None) -> Clip:
        """One clip, at most `max_seconds` long; sampling is seeded with `seed` (greedy at temperature 0).

        `streamer` (a transformers streamer, such as a progress counter) sees each generated step.
        """
        import torch

        arrays = self.prompt(prompt)
        model = self.model
        device = next(model.parameters()).device
        input_ids = torch.from_numpy(arrays["input_ids"])[None].to(device)
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        audio = arrays["audio_input_ids"]
        if len(audio):
            kwargs["audio_input_ids"] = torch.from_numpy(audio)[None].to(device)
            kwargs["audio_input_ids_mask"] = torch.ones((1, len(audio)), dtype=torch.bool, device=device)
        max_codes = max(1, math.floor(max_seconds * self.frame_rate))
        # the stream BOS frame, the codes, and the delay's last frames (codebook k ends k frames late)
        max_new = max_codes + self.layout.num_codebooks
        sampling = gen.temperature > 0
        options: dict[str, Any] = {"do_sample": sampling, "max_new_tokens": max_new}
        if streamer is not None:
            options["streamer"] = streamer
        if sampling:
            options.update(temperature=gen.temperature, top_k=gen.top_k or None, top_p=gen.top_p)
        torch.manual_seed(seed)
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                frames = model.generate(**kwargs, **options, use_cache=True)
        finally:
            model.train(was_training)
        frames_np = frames[0].cpu().numpy()[len(audio):]  # the prompt's own audio comes first
        codes, ended = generated_codes(frames_np, self.layout)
        samples = self.decode(codes)
        return Clip(samples[: max_codes * round(self.sample_rate / self.frame_rate)], self.sample_rate,
                    END_OF_AUDIO if ended else AT_LIMIT)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Codes (codebooks, frames) -> mono float32 samples; no frames, no samples."""
        import torch

        if codes.shape[1] == 0:
            return np.zeros(0, dtype=np.float32)
        with torch.inference_mode():
            x = torch.from_numpy(codes).long()[None].to(self.codec.device)
            wave = self.codec.decode(x).audio_values
        return wave.reshape(-1).float().cpu().numpy()
