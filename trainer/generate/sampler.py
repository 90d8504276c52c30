"""Audio samples while training: a fixed prompt set synthesized every N steps and/or at every checkpoint.

Rank 0 writes `OUTPUT_DIR/samples/step-N/<id>.wav` and `samples.jsonl` (text, reference, seconds, why it
stopped, and WER/CER/speaker similarity when the quality models are given), and reports the means through the
Trainer's log (so the Prometheus series and TensorBoard get them) without touching its logging control. Each
sample set runs isolated (`trainer.generate.isolation`): a run with samples trains bit for bit as one without,
and a checkpoint's random state is the one the run goes on with. The other ranks wait in `dist.barrier`,
whose timeout counts from the last progress: rank 0 reports progress after every clip, so a long sample set
never trips --ddp_timeout, while a rank 0 stuck in one clip ends the run (160) after that long. A failure is
logged and counted (`sample_failures`), never fatal to training.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from trainer import dist
from trainer.config.options import Config
from trainer.config.values import label
from trainer.errors import ConfigError
from trainer.generate.isolation import isolated, log_keeping_control
from trainer.generate.prompts import Prompt, read_prompts

log = logging.getLogger(__name__)


def prompt_of_conversation(conv: Any) -> Prompt | None:
    """The prompt of an evaluation sample.

    Its conversation up to its first target turn, laid out as training laid it out (its own system message and scene,
    every reference clip before the target, however many), and the text that turn speaks. None when no user text
    precedes the target (nothing to speak).

    Every input format reaches here as the same native layout (`trainer.data.chatml.native_turns` maps the
    seed scripts' one), so the community layout, native ChatML, directories and JSONL are read alike.
    """
    target = next((i for i in range(len(conv.messages)) if conv.is_target_turn(i)), None)
    if target is None or target == 0 or conv.messages[target - 1]["role"] != "user":
        return None
    context = tuple(conv.messages[:target])
    text = " ".join(c["text"] for c in context[-1]["content"] if c["type"] == "text").strip()
    if not text:
        return None
    system = next((" ".join(c["text"] for c in m["content"] if c["type"] == "text") for m in context
                   if m["role"] == "system"), None)
    scene = next((" ".join(c["text"] for c in m["content"] if c["type"] == "text") for m in context
                  if m["role"] == "scene"), None)
    ref_audio = ref_text = None
    for i, m in enumerate(context):  # the last reference clip: the voice a speaker-similarity score compares with
        audio = [c for c in m["content"] if c["type"] == "audio"]
        if audio:
            ref_audio = audio[-1]["path"]
            before = context[i - 1] if i and context[i - 1]["role"] == "user" else None
            ref_text = " ".join(c["text"] for c in before["content"] if c["type"] == "text") if before else None
    return Prompt(f"eval-{conv.id}", text, ref_audio, ref_text, system, scene, context)


def prompts_of_conversations(convs: list[Any], wanted: list[str]) -> list[Prompt]:
    """Prompts of the evaluation samples `wanted` (ids), in that order.

    A sample with no text to speak before its target is left out with a warning, never replaced by another.
    """
    by_id = {c.id: c for c in convs}
    prompts = []
    for sample_id in wanted:
        conv = by_id.get(sample_id)
        prompt = prompt_of_conversation(conv) if conv is not None else None
        if prompt is None:
            log.warning("--sample_from_eval: evaluation sample %s has no text before its target turn; not sampled",
                        conv.source if conv is not None else sample_id)
            continue
        prompts.append(prompt)
    return prompts


def wait_for_samples(step: int) -> None:
    """Every rank waits here until rank 0 has written the samples of `step`.

    The wait is bounded by --ddp_timeout counted from rank 0's last finished clip (`dist.barrier`): a rank 0
    that hangs in generation ends the run with a `DistStoreError`, exit code 160 (retried), after at most
    that long, and the message says what the rank waited for.
    """
    import torch.distributed as tdist

    try:
        dist.barrier()
    except tdist.DistStoreError as err:
        raise tdist.DistStoreError(f"waiting for rank 0's samples at step {step}: {err}") from None


class SampleCallback(TrainerCallback):
    """Synthesizes `prompts` at the configured steps.

    `make_synthesizer(model)` and `make_scorer()` build the heavy parts on rank 0 the first time they are needed;
    `report(logs)` hands the results to the Trainer's log.
    """

    def __init__(self, cfg: Config, prompts: list[Prompt], make_synthesizer: Callable[[Any], Any],
                 make_scorer: Callable[[], Any] | None = None) -> None:
        self.cfg, self.prompts = cfg, prompts
        self.every, self.at_checkpoints = cfg.samples.sample_steps, cfg.samples.sample_at_checkpoints
        self.make_synthesizer, self.make_scorer = make_synthesizer, make_scorer
        self.root = Path(cfg.train.output_dir or ".") / "samples"
        self.report: Callable[[dict[str, float]], None] = lambda logs: None
        self._synth: Any = None
        self._scorer: Any = None
        self._done: set[int] = set()
        self.failures = 0

    @classmethod
    def prompts_from_config(cls, cfg: Config) -> list[Prompt]:
        """The prompts file's prompts, read and checked before anything loads (a bad line: exit code 2)."""
        s = cfg.samples
        prompts = read_prompts(s.sample_prompts_file, label("sample_prompts_file")) \
            if s.sample_prompts_file else []
        if (s.sample_steps or s.sample_at_checkpoints) and not (prompts or s.sample_from_eval):
            raise ConfigError("--sample_steps / --sample_at_checkpoints: no prompts to synthesize; set "
                              "SAMPLE_PROMPTS_FILE or SAMPLE_FROM_EVAL")
        return prompts

    @property
    def enabled(self) -> bool:
        """Whether there is anything to synthesize and a step or a checkpoint to do it at."""
        return bool(self.prompts) and (self.every > 0 or self.at_checkpoints)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        """Sample every `--sample_steps` steps, to hear how the voice develops."""
        if self.every and state.global_step % self.every == 0:
            self.sample(state.global_step, model)

    def on_save(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        """Sample at each checkpoint (`--sample_at_checkpoints`), so a clip goes with each saved model."""
        if self.at_checkpoints:
            self.sample(state.global_step, model)

    def sample(self, step: int, model: Any) -> None:
        """Every rank calls it at the same step; rank 0 works, the others wait for it."""
        if not self.enabled or step in self._done:
            return
        self._done.add(step)
        if dist.is_main():
            inner = getattr(model, "module", model)
            with isolated(inner):  # the run goes on exactly as it would have without this sample
                try:
                    self._sample(step, inner)
                except Exception as err:  # a sample is worth less than the run: log, count, go on
                    self.failures += 1
                    log.exception("samples at step %d failed (%d so far); training goes on: %s", step,
                                  self.failures, err)
                    self.report({"sample_failures": 1.0})
        wait_for_samples(step)

    def _sample(self, step: int, model: Any) -> None:
        from trainer.generate.wav import write_index, write_wav
        from trainer.quality.scoring import means

        started = time.monotonic()
        inner = model
        if self._synth is None:
            self._synth = self.make_synthesizer(inner)
            self._scorer = self.make_scorer() if self.make_scorer else None
        synth = self._synth
        synth.model = inner
        out = self.root / f"step-{step}"
        rows = []
        for i, prompt in enumerate(self.prompts):
            clip = synth.synthesize(prompt, self.cfg.generation, self.cfg.samples.sample_max_audio_seconds,
                                    self.cfg.train.seed + i)
            write_wav(out / f"{prompt.id}.wav", clip.samples, clip.sample_rate)
            row = {"id": prompt.id, "file": f"{prompt.id}.wav", "step": step, "text": prompt.text,
                   "reference_audio": prompt.reference_audio, "reference_text": prompt.reference_text,
                   "seconds": round(clip.seconds, 3), "stopped": clip.stopped}
            if self._scorer is not None and self._scorer.active:
                from trainer.data.audio import load_audio

                ref = prompt.reference_audio
                reference = (load_audio(ref, clip.sample_rate), clip.sample_rate) if ref else None
                row.update(self._scorer.score(prompt.text, clip.samples, clip.sample_rate, reference))
            rows.append(row)
            self._tensorboard(step, prompt.id, clip)
            dist.note_progress()  # the ranks waiting in the barrier count their timeout from here
        write_index(out, rows)
        logs = {"sample_step": float(step), "generated_clips": float(len(rows))}
        logs.update({f"sample_{k}": v for k, v in means(rows).items()})
        log.info("samples at step %d: %d clips in %s (%.1f s)", step, len(rows), out, time.monotonic() - started)
        self.report(logs)

    def _tensorboard(self, step: int, name: str, clip: Any) -> None:
        """With report_to including tensorboard, the clip goes to TensorBoard as audio."""
        if "tensorboard" not in self.cfg.train.report_to:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning("report_to tensorboard: the tensorboard package is not installed; clips are not logged")
            return
        import torch

        if not hasattr(self, "_writer"):
            self._writer = SummaryWriter(str(Path(self.cfg.train.output_dir or ".") / "runs" / "samples"))
        self._writer.add_audio(f"samples/{name}", torch.from_numpy(clip.samples)[None], step, clip.sample_rate)
        self._writer.flush()


def build_sampler(cfg: Config, trainer: Any, tokenizer: Any, prompts: list[Prompt]) -> SampleCallback | None:
    """The sampling callback of a built trainer, or None when nothing is to be sampled.

    Every rank builds it alike (the prompt count decides whether a rank waits), rank 0 alone ever loads the audio
    tokenizer.
    """
    s, q = cfg.samples, cfg.quality
    if not (s.sample_steps or s.sample_at_checkpoints):
        return None
    prompts = list(prompts)
    if s.sample_from_eval and trainer.eval_dataset is not None:
        from trainer.encode.prepare import read_dataset

        wanted = [x.id for x in trainer.eval_dataset.samples[: s.sample_from_eval]]
        convs, _ = read_dataset(cfg.data, cfg.data.eval_data_file or cfg.data.train_data_file or "")
        prompts += prompts_of_conversations(convs, wanted)
    elif s.sample_from_eval:
        log.warning("--sample_from_eval: the run has no evaluation set (DISABLE_EVAL); only the prompts file is "
                    "sampled")

    def make_synthesizer(model: Any) -> Any:
        from trainer.generate.synthesizer import Synthesizer
        from trainer.model.load import load_audio_tokenizer

        codec = load_audio_tokenizer(cfg.model, next(model.parameters()).device)
        return Synthesizer(model, codec, tokenizer, trainer.layout, cfg.data.system_prompt)

    def make_scorer() -> Any:
        from trainer.quality.scoring import Scorer

        return Scorer.load(q.asr_model_path, q.speaker_model_path)

    callback = SampleCallback(cfg, prompts, make_synthesizer,
                              make_scorer if (q.asr_model_path or q.speaker_model_path) else None)
    callback.report = log_keeping_control(trainer)
    return callback if callback.enabled else None
