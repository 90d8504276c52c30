"""The routed decoder layer against transformers' own, on the tiny checkpoint loaded from disk in float32.

The expected side is always transformers' `HiggsAudioV2DecoderLayer` on a copy of the same weights. The tiny
model's norms start at one, which would hide a layer that uses the wrong norm, so every norm weight is drawn
at random first.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from transformers.models.higgs_audio_v2.modeling_higgs_audio_v2 import HiggsAudioV2DecoderLayer

from trainer.config.options import LoraArgs, ModelArgs
from trainer.model import routing
from trainer.model.assemble import assemble
from trainer.model.load import load_model, load_weights
from trainer.model.routing import ROUTING_KWARG, RoutedDecoderLayer, install_routing, remove_routing, routing_for
from trainer.model.sync_probe import SyncCounter, graph_breaks

Batch = dict[str, torch.Tensor]


def close(got: torch.Tensor, want: torch.Tensor, what: str = "") -> None:
    """Equal to 1e-6 of the tensor's scale (of 1 where it is smaller): float32 sums in another order, such as
    an embedding row's gradient gathered from many tokens, differ in their last bits and no more."""
    assert got.shape == want.shape, what
    gap, scale = (got - want).abs().max(), want.abs().max().clamp(min=1)
    assert gap <= 1e-6 * scale, f"{what}: differs by {float(gap):.3g} at a scale of {float(scale):.3g}"


@pytest.fixture
def model_args(tiny_ckpt) -> ModelArgs:
    return ModelArgs(model_path=str(tiny_ckpt[0]), audio_tokenizer_path=str(tiny_ckpt[1]))


@pytest.fixture
def pair(model_args) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(transformers' model, the routed copy of it), float32, with random norm weights."""
    torch.manual_seed(1)
    plain = load_model(model_args, torch.float32)
    with torch.no_grad():
        for name, param in plain.named_parameters():
            if "layernorm" in name:
                param.copy_(1 + 0.5 * torch.randn_like(param))
    routed = copy.deepcopy(plain)
    assert install_routing(routed) == plain.config.num_hidden_layers
    return plain, routed


def _row(cfg, text_before: int, audio: int, text_after: int) -> list[int]:
    """Text tokens, `audio` frames of audio placeholders (the delay's last frames included), text tokens."""
    delay = cfg.num_codebooks - 1
    return [5] * text_before + [cfg.audio_token_id] * (audio - delay) + [cfg.audio_delay_token_id] * delay \
        + [7] * text_after


def _batch(cfg, rows: list[list[int]], pad_left: bool = False) -> Batch:
    """Padded rows (the pad id, attention 0) and the audio codes of their placeholders, frames right-padded."""
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), cfg.pad_token_id)
    attention = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if pad_left else slice(0, len(row))
        ids[i, span] = torch.tensor(row)
        attention[i, span] = 1
    audio = (ids == cfg.audio_token_id) | (ids == cfg.audio_delay_token_id)
    batch: Batch = {"input_ids": ids, "attention_mask": attention}
    frames = int(audio.sum(1).max())
    if frames:
        batch["audio_input_ids"] = torch.randint(0, cfg.codebook_size, (len(rows), frames, cfg.num_codebooks))
        batch["audio_input_ids_mask"] = torch.arange(frames)[None] < audio.sum(1)[:, None]
    return batch


BATCHES: dict[str, Callable[[object], Batch]] = {
    "mixed": lambda cfg: _batch(cfg, [_row(cfg, 4, 6, 2), _row(cfg, 3, 3, 5) + _row(cfg, 2, 4, 1)]),
    "right_padded": lambda cfg: _batch(cfg, [_row(cfg, 4, 6, 2), _row(cfg, 2, 3, 0)]),
    "left_padded": lambda cfg: _batch(cfg, [_row(cfg, 1, 3, 1), _row(cfg, 5, 7, 3)], pad_left=True),
    "all_text": lambda cfg: _batch(cfg, [[5, 6, 7, 8, 9], [9, 8, 7]]),
    "all_audio": lambda cfg: _batch(cfg, [_row(cfg, 0, 5, 0), _row(cfg, 0, 5, 0)]),
}


def _step(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits and every parameter's gradient of a loss that weighs each logit differently."""
    model.zero_grad(set_to_none=True)
    logits = model(**batch).logits
    weights = torch.randn(logits.shape, generator=torch.Generator().manual_seed(0))
    (logits * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logits.detach(), grads


def assert_same_step(plain: torch.nn.Module, routed: torch.nn.Module, batch: Batch) -> None:
    want_logits, want_grads = _step(plain, batch)
    got_logits, got_grads = _step(routed, batch)
    close(got_logits, want_logits, "logits")
    assert got_grads.keys() == want_grads.keys()
    for name, grad in want_grads.items():
        close(got_grads[name], grad, name)


@pytest.mark.parametrize("kind", list(BATCHES))
def test_routed_model_outputs_and_gradients_equal_transformers_layers(pair, kind) -> None:
    plain, routed = pair
    assert_same_step(plain, routed, BATCHES[kind](plain.config))


def test_each_forward_routes_its_own_tokens_when_batches_follow_each_other(pair) -> None:
    plain, routed = pair
    for kind in ("mixed", "left_padded", "all_audio", "mixed"):
        assert_same_step(plain, routed, BATCHES[kind](plain.config))


def test_the_comparison_fails_on_a_routing_kept_from_the_previous_forward(pair, monkeypatch) -> None:
    # The planted fault: one split reused for the next forward (the mask of another forward, or layer).
    plain, routed = pair
    first: list[routing.Routing] = []
    fresh = routing.routing_for
    monkeypatch.setattr(routing, "routing_for",
                        lambda mask: first[0] if first else first.append(fresh(mask)) or first[0])
    assert_same_step(plain, routed, BATCHES["right_padded"](plain.config))
    shifted = BATCHES["right_padded"](plain.config)
    shifted = {k: v.roll(1, dims=1) if k in ("input_ids", "attention_mask") else v for k, v in shifted.items()}
    with pytest.raises(AssertionError):
        assert_same_step(plain, routed, shifted)


def _layer_inputs(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, tuple, torch.Tensor, torch.Tensor]:
    ids = batch["input_ids"]
    hidden = torch.randn(*ids.shape, model.config.hidden_size, requires_grad=True)
    positions = torch.arange(ids.shape[1])[None]
    mask = model.model.get_placeholder_mask(ids, None, batch.get("audio_input_ids_mask"))
    return hidden, model.model.rotary_emb(hidden, positions), positions, mask


@pytest.mark.parametrize("given_routing", [True, False], ids=["routing_given", "routing_made_by_the_layer"])
def test_one_routed_layer_equals_transformers_layer_with_its_input_gradient(pair, given_routing) -> None:
    plain, routed = pair
    batch = BATCHES["mixed"](plain.config)
    hidden, rotary, positions, mask = _layer_inputs(plain, batch)
    extra = {ROUTING_KWARG: routing_for(mask)} if given_routing else {}
    outs = []
    for layer in (plain.model.layers[1], routed.model.layers[1]):
        hidden.grad = None
        out = layer(hidden, rotary, None, mask, positions, **(extra if layer is routed.model.layers[1] else {}))
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outs.append((out.detach(), hidden.grad.clone(), {n: p.grad.clone() for n, p in layer.named_parameters()}))
    (want, want_dx, want_dw), (got, got_dx, got_dw) = outs
    close(got, want, "output")
    close(got_dx, want_dx, "input gradient")
    for name in want_dw:
        close(got_dw[name], want_dw[name], name)


def test_routing_keeps_every_state_dict_name_and_tensor_and_comes_off_again(pair) -> None:
    plain, routed = pair
    want, got = plain.state_dict(), routed.state_dict()
    assert list(got) == list(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert all(type(layer) is RoutedDecoderLayer for layer in routed.model.layers)
    remove_routing(routed)
    assert all(type(layer) is HiggsAudioV2DecoderLayer for layer in routed.model.layers)
    assert not routed.model._forward_pre_hooks


def test_fsdp_auto_wrap_finds_the_routed_layers_by_transformers_layer_name(pair) -> None:
    from accelerate.utils.dataclasses import get_module_class_from_name

    plain, routed = pair
    for name in routed._no_split_modules:
        assert get_module_class_from_name(routed, name) is RoutedDecoderLayer
        assert get_module_class_from_name(plain, name) is HiggsAudioV2DecoderLayer


def test_gradient_checkpointing_of_routed_layers_gives_transformers_gradients(pair) -> None:
    plain, routed = pair
    routed.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    routed.train()
    plain.train()
    assert routed.model.layers[0].gradient_checkpointing
    assert_same_step(plain, routed, BATCHES["mixed"](plain.config))


def test_lora_adapter_trained_with_routing_gives_the_same_outputs_on_transformers_layers(model_args, tmp_path) -> None:
    torch.manual_seed(2)
    lora = LoraArgs(use_lora=True, lora_rank=4, lora_dropout=0.0,
                    lora_target_modules=["re:.*(q_proj|v_proj|mlp\\.(gate|up|down)_proj)"])
    assert model_args.precomputed_routing
    model = assemble(load_model(model_args, torch.float32), model_args, lora)
    assert all(type(layer) is RoutedDecoderLayer for layer in model.get_base_model().model.layers)
    batch = BATCHES["mixed"](model.config)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        model(**batch).logits.pow(2).mean().backward()
        optimizer.step()
    model.save_pretrained(tmp_path / "adapter")
    model.eval()
    with torch.no_grad():
        trained = model(**batch).logits

    plain = load_weights(model_args.model_path, dtype=torch.float32, adapter_path=str(tmp_path / "adapter")).eval()
    assert not any(isinstance(m, RoutedDecoderLayer) for m in plain.modules())
    with torch.no_grad():
        reloaded = plain(**batch).logits
        base = load_weights(model_args.model_path, dtype=torch.float32).eval()(**batch).logits
    assert not torch.allclose(trained, base, atol=1e-3)  # the adapter learned something
    close(reloaded, trained, "logits")


def test_greedy_generation_with_the_kv_cache_is_the_same_with_routing(pair) -> None:
    plain, routed = pair
    cfg = plain.config
    ids = torch.tensor([[1, 5, 6, 7, *_row(cfg, 0, 4, 0), 8, 9, cfg.audio_bos_token_id]])
    prompt = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
              "audio_input_ids": torch.randint(0, 10, (1, 4, cfg.num_codebooks)),
              "audio_input_ids_mask": torch.ones(1, 4, dtype=torch.bool)}
    frames = []
    for model in (plain, routed):
        with torch.no_grad():
            frames.append(model.eval().generate(**prompt, do_sample=False, max_new_tokens=8, use_cache=True))
    assert frames[0].shape[1] > 4  # it generated audio frames, one per step through the KV cache
    assert torch.equal(frames[1], frames[0])


def _syncs(model: torch.nn.Module, batch: Batch, layers: int) -> int:
    model.config.num_hidden_layers = layers  # the model runs its first `num_hidden_layers` layers
    try:
        with SyncCounter() as counter:
            model(**batch).logits.sum().backward()
    finally:
        model.config.num_hidden_layers = len(model.model.layers)
    return counter.total


def test_routing_syncs_once_per_step_instead_of_in_every_layer(pair) -> None:
    plain, routed = pair
    batch = BATCHES["mixed"](plain.config)
    per_layer = _syncs(plain, batch, 2) - _syncs(plain, batch, 1)
    outside_layers = _syncs(plain, batch, 1) - per_layer
    assert per_layer >= 8  # the eight data-dependent gathers and scatters, and their backward
    assert _syncs(routed, batch, 2) == _syncs(routed, batch, 1) == outside_layers + 1


def test_a_routed_layer_compiles_without_graph_breaks(pair) -> None:
    plain, routed = pair
    hidden, rotary, positions, mask = _layer_inputs(plain, BATCHES["mixed"](plain.config))
    hidden = hidden.detach()
    assert graph_breaks(plain.model.layers[0], hidden, rotary, None, mask, positions) >= 4
    assert graph_breaks(routed.model.layers[0], hidden, rotary, None, mask, positions,
                        **{ROUTING_KWARG: routing_for(mask)}) == 0
