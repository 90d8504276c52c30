"""`--fsdp` in one process: what reaches transformers' `TrainingArguments`, and the combinations it refuses.

The two-process runs (losses against DDP, resume, saved models) are in tests/e2e/test_fsdp_torchrun.py.
"""

from __future__ import annotations

import pytest
import torch

from tests.conftest import clean_env, to_argv
from trainer.config.cli import parse_train_args
from trainer.errors import ConfigError
from trainer.train.args import DECODER_LAYER, build_training_args, fsdp_config, fsdp_mixed_precision


def _cfg(base_args: dict[str, str], **over: str):
    return parse_train_args(to_argv(base_args | over), clean_env())


def test_fsdp_wraps_the_decoder_layer_class_transformers_builds_one_unit_per_layer(tiny_ckpt) -> None:
    from transformers import HiggsAudioV2ForConditionalGeneration
    from transformers.models.higgs_audio_v2 import modeling_higgs_audio_v2

    assert hasattr(modeling_higgs_audio_v2, DECODER_LAYER)  # the name accelerate looks up in the model
    model = HiggsAudioV2ForConditionalGeneration.from_pretrained(str(tiny_ckpt[0]))
    units = [m for m in model.modules() if type(m).__name__ == DECODER_LAYER]
    assert len(units) == model.config.num_hidden_layers == len(model.model.layers)


def test_fsdp_arguments_full_shard_full_state_dict_and_offload_as_asked(base_args) -> None:
    assert fsdp_config(_cfg(base_args)) is None
    args = build_training_args(_cfg(base_args, fsdp="true"), use_cpu=False, bf16=False)
    plugin = args.fsdp_plugin_args
    assert args.fsdp and plugin["fsdp_version"] == 2 and plugin["reshard_after_forward"] is True
    assert plugin["transformer_cls_names_to_wrap"] == DECODER_LAYER
    assert plugin["state_dict_type"] == "FULL_STATE_DICT"  # loads on any number of processes
    assert "cpu_offload" not in plugin
    offload = build_training_args(_cfg(base_args, fsdp="true", fsdp_cpu_offload="true"), use_cpu=False, bf16=False)
    assert offload.fsdp_plugin_args["cpu_offload"] is True


def test_fsdp_computes_in_bf16_and_reduces_in_the_stated_precision(base_args) -> None:
    assert fsdp_mixed_precision(_cfg(base_args, fsdp="true"), bf16=False) is None  # fp32 throughout
    assert fsdp_mixed_precision(_cfg(base_args, fsdp="true"), bf16=True) == {
        "param_dtype": torch.bfloat16, "reduce_dtype": torch.float32}
    low = _cfg(base_args, fsdp="true", fsdp_reduce_dtype="bfloat16")
    assert fsdp_mixed_precision(low, bf16=True)["reduce_dtype"] is torch.bfloat16


@pytest.mark.parametrize(("over", "names"), [
    ({"fsdp_cpu_offload": "true"}, ["--fsdp_cpu_offload / FSDP_CPU_OFFLOAD", "--fsdp / FSDP"]),
    ({"fsdp": "true", "sample_steps": "5"}, ["--fsdp / FSDP", "--sample_steps / SAMPLE_STEPS"]),
    ({"fsdp": "true", "sample_at_checkpoints": "true"}, ["--sample_at_checkpoints / SAMPLE_AT_CHECKPOINTS"]),
])
def test_fsdp_combinations_it_cannot_honour_are_one_line_config_errors(base_args, over, names) -> None:
    with pytest.raises(ConfigError) as err:
        _cfg(base_args, **over)
    message = str(err.value)
    assert "\n" not in message and all(n in message for n in names), message


def test_fsdp_cpu_offload_without_a_gpu_is_a_config_error_before_the_model_loads(base_args) -> None:
    from trainer.commands.train import build

    if torch.cuda.is_available():
        pytest.skip("this process has a GPU: offloading to its host is allowed there")
    with pytest.raises(ConfigError, match=r"--fsdp_cpu_offload / FSDP_CPU_OFFLOAD: .*has none"):
        build(_cfg(base_args, fsdp="true", fsdp_cpu_offload="true"))
