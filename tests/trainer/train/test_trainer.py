"""Real training runs of the tiny model on the bundled speech, in this process (no mocks)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from tests.conftest import clean_env, to_argv
from trainer.commands.train import build, save_final
from trainer.config.cli import parse_train_args
from trainer.train.losses import audio_codebook_losses


def _cfg(args: dict[str, str], **over: str):
    return parse_train_args([], {k.upper(): v for k, v in (args | over).items()})


def _fixed_batch(trainer) -> dict[str, torch.Tensor]:
    return trainer.data_collator([trainer.train_dataset[i] for i in range(min(4, len(trainer.train_dataset)))])


def _audio_loss(model, batch, layout) -> float:
    """The training objective (sum over codebooks of each codebook's mean CE) on one batch, eval mode."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        inputs = {k: v for k, v in batch.items() if k not in ("audio_labels", "labels")}
        out = model(**inputs)
        sums, counts = audio_codebook_losses(out.logits, batch["input_ids"], batch["audio_input_ids_mask"],
                                             batch["audio_labels"], layout)
    model.train(was_training)
    return float((sums / counts.clamp(min=1)).sum())


class _Probe(TrainerCallback):
    """Records the fixed-batch loss at every save and counts evaluations."""

    def __init__(self, trainer) -> None:
        self.trainer, self.batch = trainer, _fixed_batch(trainer)
        self.at_save: dict[int, float] = {}
        self.evaluations = 0
        self.initial = _audio_loss(trainer.model, self.batch, trainer.layout)

    def on_save(self, args, state, control, model=None, **kw):
        self.at_save[state.global_step] = _audio_loss(self.trainer.model, self.batch, self.trainer.layout)

    def on_evaluate(self, args, state, control, **kw):
        self.evaluations += 1


def _train(cfg):
    trainer, tokenizer, resume = build(cfg)
    probe = _Probe(trainer)
    trainer.add_callback(probe)
    trainer.train(resume_from_checkpoint=resume)
    save_final(trainer, cfg, tokenizer)
    return trainer, probe


def test_lora_checkpoints_reload_with_the_training_loss_base_frozen_and_loss_falls(base_args) -> None:
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import HiggsAudioV2ForConditionalGeneration

    cfg = _cfg(base_args)
    trainer, probe = _train(cfg)
    out = Path(cfg.train.output_dir)
    assert sorted(probe.at_save) == [10, 20]
    for step, loss in probe.at_save.items():
        adapter = out / f"checkpoint-{step}" / "lora_adapters"
        assert (adapter / "adapter_model.safetensors").is_file()
        base = HiggsAudioV2ForConditionalGeneration.from_pretrained(cfg.model.model_path)
        reloaded = PeftModel.from_pretrained(base, str(adapter))
        assert _audio_loss(reloaded, probe.batch, trainer.layout) == pytest.approx(loss, abs=1e-5)
    # The final adapter equals the last checkpoint's.
    final = load_file(str(out / "lora_adapters" / "adapter_model.safetensors"))
    last = load_file(str(out / "checkpoint-20" / "lora_adapters" / "adapter_model.safetensors"))
    assert final.keys() == last.keys() and all(torch.equal(final[k], last[k]) for k in final)
    # Base weights unchanged: every non-LoRA tensor equals the checkpoint on disk.
    original = load_file(str(Path(cfg.model.model_path) / "model.safetensors"))
    current = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
               for k, v in trainer.model.state_dict().items() if "lora_" not in k}
    compared = 0
    for name, tensor in original.items():
        if name in current:
            assert torch.equal(current[name], tensor), name
            compared += 1
    assert compared > 20
    # Learning happened on real speech codes.
    assert probe.at_save[20] < probe.initial - 0.1  # deterministic eval-mode loss; no backward = no change


def test_disable_eval_runs_no_evaluation_and_builds_no_eval_set(base_args) -> None:
    cfg = _cfg(base_args, disable_eval="true", eval_steps="5")
    trainer, probe = _train(cfg)
    assert trainer.eval_dataset is None
    assert trainer.args.eval_strategy == "no" and trainer.args.eval_steps is None
    assert trainer.args.load_best_model_at_end is False and trainer.args.metric_for_best_model is None
    assert probe.evaluations == 0
    assert trainer.evaluate() == {}
    assert probe.evaluations == 0
    assert not any("eval_loss" in e for e in trainer.state.log_history)


def test_evaluation_runs_and_logs_eval_loss(base_args) -> None:
    cfg = _cfg(base_args, disable_eval="false", eval_steps="10", validation_split="0.1")
    trainer, probe = _train(cfg)
    assert len(trainer.eval_dataset) == 3 and len(trainer.train_dataset) == 25
    assert probe.evaluations == 2
    evals = [e for e in trainer.state.log_history if "eval_loss" in e]
    assert [e["step"] for e in evals] == [10, 20]
    assert all(torch.isfinite(torch.tensor(e["eval_loss"])) for e in evals)
    assert all("eval_codebook_1_loss" in e for e in evals)


def test_old_default_save_and_eval_steps_do_not_crash(base_args) -> None:
    cfg = _cfg(base_args, disable_eval="false", save_steps="7000", eval_steps="5000", max_steps="5")
    trainer, _probe = _train(cfg)
    assert trainer.state.global_step == 5
    assert (Path(cfg.train.output_dir) / "lora_adapters" / "adapter_model.safetensors").is_file()


def test_logs_carry_audio_text_and_codebook_losses_and_throughput(base_args) -> None:
    cfg = _cfg(base_args, use_text_head="true", max_steps="10", save_steps="100")
    trainer, _ = _train(cfg)
    logs = [e for e in trainer.state.log_history if "loss" in e and "eval_loss" not in e]
    assert logs
    for entry in logs:
        for key in ("audio_loss", "text_loss", "codebook_0_loss", "codebook_1_loss", "samples_per_second",
                    "tokens_per_second", "audio_seconds_per_second", "learning_rate", "grad_norm"):
            assert key in entry, key
        assert entry["audio_loss"] == pytest.approx(entry["codebook_0_loss"] + entry["codebook_1_loss"], rel=1e-6)
        # the window's totals, and its step time with the data-loader wait inside it
        assert entry["trained_samples"] > 0 and entry["trained_tokens"] > 0 and entry["trained_audio_seconds"] > 0
        assert 0 < entry["data_wait_seconds"] < entry["step_seconds"]
        assert entry["loss"] == pytest.approx(entry["audio_loss"] + entry["text_loss"], rel=1e-3)


def test_audio_loss_scale_does_not_depend_on_the_text_label_count(base_args) -> None:
    cfg = _cfg(base_args, use_text_head="true")
    trainer, _, _ = build(cfg)
    batch = _fixed_batch(trainer)
    trainer.model.eval()
    with torch.no_grad():
        ours = trainer.compute_loss(trainer.model, batch)
        ours_with_count = trainer.compute_loss(trainer.model, batch, num_items_in_batch=torch.tensor(7))
        more_text = dict(batch)
        more_text["labels"] = torch.where(batch["attention_mask"].bool() & (batch["labels"] == -100),
                                          batch["input_ids"], batch["labels"])
        audio_only = trainer.compute_loss(trainer.model, {k: v for k, v in batch.items() if k != "labels"})
        # transformers' own loss with the Trainer's text-label count: the audio part changes scale.
        native = trainer.model(**batch, num_items_in_batch=torch.tensor(7)).loss
    assert float(ours) == pytest.approx(float(ours_with_count))
    assert float(native) != pytest.approx(float(ours), rel=0.05)
    del more_text
    # The audio component is the same with or without text labels.
    audio_with_text = _audio_loss(trainer.model, batch, trainer.layout)
    assert float(audio_only) == pytest.approx(audio_with_text, rel=1e-6)


def test_freeze_llm_trains_only_the_audio_path(base_args) -> None:
    from safetensors.torch import load_file

    cfg = _cfg(base_args, use_lora="false", freeze_llm="true", max_steps="5", save_steps="100")
    trainer, _ = _train(cfg)
    original = load_file(str(Path(cfg.model.model_path) / "model.safetensors"))
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach(), original[n])}
    assert changed, "nothing trained"
    assert all(any(a in n for a in ("audio_mlp", "audio_", "embed_audio_tokens")) for n in changed), changed
    assert any("audio_mlp" in n for n in changed) and "audio_lm_head.weight" in changed
    final = Path(cfg.train.output_dir) / "model"
    assert (final / "model.safetensors").is_file() and (final / "tokenizer.json").is_file()


def test_merge_writes_a_model_that_from_pretrained_loads(base_args, tmp_path) -> None:
    from peft import PeftModel
    from transformers import HiggsAudioV2ForConditionalGeneration

    cfg = _cfg(base_args, max_steps="5", save_steps="100")
    trainer, probe = _train(cfg)
    adapter = Path(cfg.train.output_dir) / "lora_adapters"
    merged_dir = tmp_path / "merged"
    # what an earlier merge killed while writing left: a half-written copy (a whole model, with real weights)
    (tmp_path / ".merged.tmp-killed").mkdir()
    (tmp_path / ".merged.tmp-killed" / "model.safetensors").write_bytes(b"\0" * 1024)
    proc = subprocess.run(
        [sys.executable, "-m", "trainer", "merge", "--model_path", cfg.model.model_path, "--adapter_path",
         str(adapter), "--output_dir", str(merged_dir)], env=clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".merged")) == []
    merged = HiggsAudioV2ForConditionalGeneration.from_pretrained(merged_dir)
    base = HiggsAudioV2ForConditionalGeneration.from_pretrained(cfg.model.model_path)
    with_adapter = PeftModel.from_pretrained(base, str(adapter))
    assert _audio_loss(merged, probe.batch, trainer.layout) == pytest.approx(
        _audio_loss(with_adapter, probe.batch, trainer.layout), abs=1e-4)
    assert (merged_dir / "chat_template.jinja").is_file() or "chat_template" in json.loads(
        (merged_dir / "tokenizer_config.json").read_text())


def _write_bad_manifest(tmp_path: Path) -> Path:
    import soundfile as sf

    from tests.conftest import DEMO_DATA

    good = sorted((DEMO_DATA.parent / "audio").rglob("*.flac"))[:3]
    long_clip = tmp_path / "long.wav"
    sf.write(long_clip, torch.zeros(24000 * 3).numpy(), 24000)
    lines = [
        {"audio": str(good[0]), "text": "A fine sample."},
        {"audio": str(tmp_path / "missing.flac"), "text": "Missing audio."},
        {"audio": str(good[1]), "text": "   "},
        {"audio": str(long_clip), "text": "Too long."},
        {"audio": str(good[2]), "text": "Another fine one."},
    ]
    manifest = tmp_path / "data.jsonl"
    manifest.write_text("\n".join(json.dumps(line) for line in lines) + "\n{not json\n")
    return manifest


def test_bad_samples_stop_the_run_before_training_with_one_report(base_args, tmp_path) -> None:
    manifest = _write_bad_manifest(tmp_path)
    args = base_args | {"train_data_file": str(manifest), "max_audio_seconds": "2.5"}
    proc = subprocess.run([sys.executable, "-m", "trainer", "train", *to_argv(args)], env=clean_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr
    err = proc.stderr
    for line, reason in ((2, "not found"), (3, "transcript"), (4, "max_audio_seconds"), (6, "JSON")):
        assert f"data.jsonl:{line}" in err and reason in err, (line, reason, err)
    assert "data.jsonl:1" not in err and "data.jsonl:5" not in err
    assert not list(Path(args["output_dir"]).glob("checkpoint-*"))


def test_skip_bad_samples_trains_on_the_rest_and_counts_them(base_args, tmp_path) -> None:
    manifest = _write_bad_manifest(tmp_path)
    cfg = _cfg(base_args, train_data_file=str(manifest), max_audio_seconds="2.5", skip_bad_samples="true",
               max_steps="2", save_steps="100")
    trainer, _ = _train(cfg)
    assert len(trainer.train_dataset) == 2
    assert any(e.get("skipped_samples") == 4 for e in trainer.state.log_history)


def test_gradient_checkpointing_gives_the_same_first_loss_and_trains(base_args) -> None:
    plain, _ = _train(_cfg(base_args, max_steps="2", save_steps="100", logging_steps="1"))
    ckpt_cfg = _cfg(base_args, max_steps="2", save_steps="100", logging_steps="1", gradient_checkpointing="true",
                    output_dir=base_args["output_dir"] + "-gc")
    checkpointed, _ = _train(ckpt_cfg)
    first = [e["loss"] for e in plain.state.log_history if "loss" in e]
    first_gc = [e["loss"] for e in checkpointed.state.log_history if "loss" in e]
    assert first_gc[0] == pytest.approx(first[0], rel=1e-5)
    assert first_gc[1] == pytest.approx(first[1], rel=1e-4)


def test_length_grouping_uses_the_known_lengths_and_pads_less(base_args) -> None:
    import random

    from transformers.trainer_pt_utils import LengthGroupedSampler

    class Lengths:
        """Sample lengths of clips from 1 to 20 s (25 frames/s plus text), as `SampleDataset.lengths()` gives."""

        def __init__(self) -> None:
            rng = random.Random(0)
            self._lengths = [int(25 * rng.uniform(1, 20)) + rng.randint(20, 60) for _ in range(400)]

        def __len__(self) -> int:
            return len(self._lengths)

        def lengths(self) -> list[int]:
            return self._lengths

    def padding(trainer, data) -> float:
        order = list(iter(trainer._get_train_sampler(data)))
        assert sorted(order) == list(range(len(data)))  # every sample once per epoch
        lengths = data.lengths()
        batches = [order[i:i + 4] for i in range(0, len(order), 4)]
        real = sum(lengths[i] for b in batches for i in b)
        return 1 - real / sum(max(lengths[i] for i in b) * len(b) for b in batches)

    grouped, _, _ = build(_cfg(base_args, per_device_train_batch_size="4"))
    plain, _, _ = build(_cfg(base_args, per_device_train_batch_size="4", group_by_length="false"))
    assert isinstance(grouped._get_train_sampler(), LengthGroupedSampler)
    assert not isinstance(plain._get_train_sampler(), LengthGroupedSampler)
    data = Lengths()
    assert padding(grouped, data) < 0.1 < 0.3 < padding(plain, data)


def test_a_run_resumed_at_max_steps_trains_nothing_and_writes_the_checkpoints_adapter(base_args) -> None:
    from safetensors.torch import load_file

    args = base_args | {"max_steps": "4", "save_steps": "4", "logging_steps": "1"}
    _train(_cfg(args))
    out = Path(args["output_dir"])
    (out / "lora_adapters" / "adapter_model.safetensors").unlink()  # died while writing its final output

    trainer, _ = _train(_cfg(args))

    assert trainer.state.global_step == 4
    assert not [h for h in trainer.state.log_history if "loss" in h and h["step"] > 4]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4"]
    final = load_file(out / "lora_adapters" / "adapter_model.safetensors")
    saved = load_file(out / "checkpoint-4" / "lora_adapters" / "adapter_model.safetensors")
    assert final.keys() == saved.keys() and all(torch.equal(final[k], saved[k]) for k in final)


def test_a_resumed_run_saves_and_logs_at_its_own_intervals_not_the_checkpoints(base_args) -> None:
    first = base_args | {"max_steps": "4", "save_steps": "4", "logging_steps": "4"}
    _train(_cfg(first))
    out = Path(first["output_dir"])

    # restarted with a longer run that should save and log more often, as after a preemption
    trainer, probe = _train(_cfg(first, max_steps="8", save_steps="2", logging_steps="1"))

    assert sorted(probe.at_save) == [6, 8]
    assert sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*")) == [4, 6, 8]
    logged = [h["step"] for h in trainer.state.log_history if "loss" in h]
    assert [s for s in logged if s > 4] == [5, 6, 7, 8]


def test_the_loss_and_its_logging_read_nothing_back_to_the_host_per_micro_batch(base_args) -> None:
    """On a GPU, reading a value on the host (`float(t)`, `t.item()`, `bool(t)`) waits for every queued
    kernel. Our loss and log window must add no such read to a training micro-batch beyond the model's own;
    the window is read once per log. Counted here as the dispatcher's scalar reads, which CPU tensors go
    through too."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class HostReads(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.count += func is torch.ops.aten._local_scalar_dense.default
            return func(*args, **(kwargs or {}))

    cfg = _cfg(base_args, use_text_head="true")
    trainer, _, _ = build(cfg)
    batch = _fixed_batch(trainer)
    model = trainer.model
    model.train()
    with HostReads() as model_alone:
        model(**{k: v for k, v in batch.items() if k != "audio_labels"}).loss.backward()
    with HostReads() as ours:
        trainer.compute_loss(model, batch).backward()
    assert ours.count == model_alone.count
    logs = trainer._reduce(trainer._train)  # the one read, at log time
    assert logs["audio_loss"] > 0 and logs["text_loss"] > 0 and logs["tokens_per_second"] > 0
