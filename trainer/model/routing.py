"""Audio/text token routing computed once per forward and shared by every decoder layer.

transformers' `HiggsAudioV2DecoderLayer` sends each token to the audio or the text norms and FFN with
boolean-mask indexing and `masked_scatter` (`hidden_states[audio_token_mask]` and its complement): eight
data-dependent gathers and scatters per layer, each a device-to-host synchronisation on a GPU and a graph
break for `torch.compile`, although the mask is the same in every layer of a forward pass.

Here the split is computed once, by a forward pre-hook on the inner `HiggsAudioV2Model`, from the model's own
`get_placeholder_mask`: a stable sort of the flat mask puts the text tokens' indices first and the audio
tokens' after them, and one count (the forward's only synchronisation) says where they part. Each layer then
runs both norms on every token and picks with `torch.where` (elementwise, cheap, static shapes) and feeds each
FFN its own tokens with `index_select`, adding the result back with `index_add` (shapes fixed by the index
tensors it is given, so a compiled layer is one graph). Running both FFNs on every token instead would keep
every shape static but costs the FFN FLOPs twice (about three quarters of a layer's); `bench/bench_cpu_step.py`
measures that too.

The layers keep their modules (only their class changes to a subclass), so the state dict, checkpoints and
LoRA adapters are those of transformers' layer, and peft's wrappers inside the FFNs are called as before.
Where no mask exists (generation's decode steps pass audio codes only) the layer is transformers' own.
"""

from __future__ import annotations

import inspect
from typing import Any, NamedTuple

import torch
from transformers.models.higgs_audio_v2.modeling_higgs_audio_v2 import HiggsAudioV2DecoderLayer, HiggsAudioV2Model

ROUTING_KWARG = "audio_text_routing"


class Routing(NamedTuple):
    """One forward's token split: the (batch, seq) audio mask and the flat indices of each kind of token."""

    audio_mask: torch.Tensor
    text_index: torch.Tensor
    audio_index: torch.Tensor


def routing_for(audio_mask: torch.Tensor) -> Routing:
    """The split of one forward's tokens, with a single synchronisation (the audio token count).

    Args:
        audio_mask (`torch.Tensor`):
            (batch, seq) bool, true at audio tokens, as `HiggsAudioV2Model.get_placeholder_mask` returns it.

    Returns:
        `Routing`: the mask and the flat token indices of the text and the audio tokens, each ascending.
    """
    flat = audio_mask.reshape(-1)
    order = torch.argsort(flat.to(torch.int8), stable=True)
    text_count = flat.numel() - int(flat.sum())
    return Routing(audio_mask, order[:text_count], order[text_count:])


class RoutedDecoderLayer(HiggsAudioV2DecoderLayer):
    """transformers' decoder layer with the token split of `Routing` instead of boolean indexing.

    Installed by changing the class of an existing layer (`install_routing`), never constructed.
    """

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None,
        attention_mask: torch.Tensor | None = None,
        audio_token_mask: torch.BoolTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Any = None,
        use_cache: bool | None = False,
        **kwargs: Any,
    ) -> torch.Tensor:
        """The layer's output, equal to transformers' layer for the same weights and inputs."""
        routing = kwargs.pop(ROUTING_KWARG, None)
        if audio_token_mask is None:  # audio-only input (generation's decode steps): no split to make
            return super().forward(hidden_states, position_embeddings, attention_mask, audio_token_mask,
                                   position_ids, cache, use_cache, **kwargs)
        if routing is None:  # called outside the model's forward: split here, once for this layer
            routing = routing_for(audio_token_mask.to(hidden_states.device))
        audio = routing.audio_mask.unsqueeze(-1)
        residual = hidden_states
        hidden_states = torch.where(audio, self.audio_input_layernorm(hidden_states),
                                    self.input_layernorm(hidden_states))
        hidden_states, _ = self.self_attn(
            hidden_states=hidden_states,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            position_embeddings=position_embeddings,
            **kwargs,
        )
        hidden_states = residual + hidden_states
        flat = hidden_states.reshape(-1, hidden_states.shape[-1])
        text = self.mlp(self.post_attention_layernorm(flat.index_select(0, routing.text_index)))
        speech = self.audio_mlp(self.audio_post_attention_layernorm(flat.index_select(0, routing.audio_index)))
        flat = flat.index_add(0, routing.text_index, text.to(flat.dtype))
        flat = flat.index_add(0, routing.audio_index, speech.to(flat.dtype))
        return flat.view_as(hidden_states)


# Wrapping policies find the layer class by its name (accelerate's FSDP auto-wrap reads the model's
# `_no_split_modules`, "HiggsAudioV2DecoderLayer"): the routed layer answers to it, so FSDP still wraps each layer.
RoutedDecoderLayer.__name__ = HiggsAudioV2DecoderLayer.__name__


def _add_routing(module: HiggsAudioV2Model, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Forward pre-hook: compute the forward's routing once and hand it to every layer with the kwargs."""
    bound = inspect.signature(module.forward).bind_partial(*args, **kwargs).arguments
    input_ids, inputs_embeds = bound.get("input_ids"), bound.get("inputs_embeds")
    if input_ids is None and inputs_embeds is None:
        return args, kwargs
    mask = module.get_placeholder_mask(input_ids, inputs_embeds, bound.get("audio_input_ids_mask"))
    return args, {**kwargs, ROUTING_KWARG: routing_for(mask)}


def install_routing(model: Any) -> int:
    """Route every decoder layer of `model` with one split per forward; return the number of layers routed.

    Call it on the loaded model before LoRA or any other wrapper: the modules and their names do not change,
    so a checkpoint or adapter saved from a routed model loads into transformers' and back.

    Args:
        model (`Any`):
            A `HiggsAudioV2ForConditionalGeneration` (or anything holding a `HiggsAudioV2Model`).

    Returns:
        `int`: how many decoder layers now route with the shared split.
    """
    routed = 0
    for module in model.modules():
        if isinstance(module, HiggsAudioV2Model) and not getattr(module, "_routing_hook", None):
            module._routing_hook = module.register_forward_pre_hook(_add_routing, with_kwargs=True)
        if type(module) is HiggsAudioV2DecoderLayer:
            module.__class__ = RoutedDecoderLayer
        routed += isinstance(module, RoutedDecoderLayer)
    return routed


def remove_routing(model: Any) -> None:
    """Give `model` back transformers' routing (its layers' own class, no pre-hook)."""
    for module in model.modules():
        hook = getattr(module, "_routing_hook", None)
        if hook is not None:
            hook.remove()
            module._routing_hook = None
        if type(module) is RoutedDecoderLayer:
            module.__class__ = HiggsAudioV2DecoderLayer
