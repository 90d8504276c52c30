"""`higgs-audio-trainer merge`: the same loading and the same one-line answers as `synthesize`."""

from __future__ import annotations

from trainer import errors
from trainer.__main__ import main


def test_merge_with_an_adapter_of_another_base_model_exits_2_with_one_line_naming_the_adapter(
    tiny_ckpt, tmp_path, capsys
) -> None:
    from transformers import HiggsAudioV2ForConditionalGeneration

    from trainer.config.options import LoraArgs
    from trainer.model.assemble import apply_lora
    from trainer.model.tiny import build_tiny_checkpoint

    other, _ = build_tiny_checkpoint(tmp_path / "other", hidden_size=48)  # the tiny base has hidden size 32
    adapter = tmp_path / "other_adapter"
    apply_lora(HiggsAudioV2ForConditionalGeneration.from_pretrained(other), LoraArgs(use_lora=True)) \
        .save_pretrained(str(adapter))
    out = tmp_path / "merged"
    capsys.readouterr()  # what building the other model printed

    code = main(["merge", "--model_path", str(tiny_ckpt[0]), "--adapter_path", str(adapter), "--output_dir", str(out)])

    assert code == errors.CONFIG_ERROR
    # transformers' progress bar of the base model's loading is not an error line
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "it/s]" not in line]
    assert len(lines) == 1, lines
    assert f"--adapter_path / ADAPTER_PATH ({adapter}): the adapter does not fit this base model" in lines[0]
    assert not out.exists()
