"""The routing change measured for `bench_cpu_step.py`: transformers' per-layer boolean-mask routing against
ours (`trainer/model/routing.py`, one split per forward), and a third way that keeps every shape static by
running both FFNs on every token and picking with `torch.where` (twice the FFN FLOPs).

Each way trains a copy of the same weights on the same batches, step by step in turn; per way: the median step
time, its ratio to transformers' (above 1 is faster), the largest relative loss gap to transformers' steps,
the synchronisations of one step (`SyncCounter`: host-reading operations in forward, backward and optimizer)
and the `torch.compile` graph breaks of one decoder layer on the inputs it met in a real forward.
"""

from __future__ import annotations

import statistics
from typing import Any

import torch

from trainer.model.routing import ROUTING_KWARG, RoutedDecoderLayer, install_routing, remove_routing
from trainer.model.sync_probe import SyncCounter, graph_breaks


class DenseRoutedLayer(RoutedDecoderLayer):
    """Both FFNs on every token, picked with `torch.where`: static shapes, no index tensors, double FFN cost."""

    def forward(self, hidden_states: torch.Tensor, position_embeddings: Any, attention_mask: Any = None,
                audio_token_mask: Any = None, position_ids: Any = None, cache: Any = None, use_cache: Any = False,
                **kwargs: Any) -> torch.Tensor:
        kwargs.pop(ROUTING_KWARG, None)
        if audio_token_mask is None:
            return super().forward(hidden_states, position_embeddings, attention_mask, None, position_ids, cache,
                                   use_cache, **kwargs)
        audio = audio_token_mask.unsqueeze(-1)
        residual = hidden_states
        hidden_states = torch.where(audio, self.audio_input_layernorm(hidden_states),
                                    self.input_layernorm(hidden_states))
        hidden_states, _ = self.self_attn(hidden_states=hidden_states, attention_mask=attention_mask,
                                          position_ids=position_ids, cache=cache, use_cache=use_cache,
                                          position_embeddings=position_embeddings, **kwargs)
        hidden_states = residual + hidden_states
        return hidden_states + torch.where(audio, self.audio_mlp(self.audio_post_attention_layernorm(hidden_states)),
                                           self.mlp(self.post_attention_layernorm(hidden_states)))


def _set_way(model: torch.nn.Module, way: str) -> None:
    remove_routing(model)
    if way != "transformers":
        install_routing(model)
    if way == "dense":
        for layer in model.model.layers:
            layer.__class__ = DenseRoutedLayer


def _layer_breaks(step: Any, batch: dict[str, torch.Tensor]) -> int:
    """Graph breaks of the first decoder layer, called with what it received in a real forward."""
    layer = step.model.model.layers[0]
    seen: list[tuple[tuple, dict]] = []
    handle = layer.register_forward_pre_hook(lambda m, a, k: seen.append((a, dict(k))), with_kwargs=True)
    try:
        with torch.no_grad():
            step.model(**{k: v for k, v in batch.items() if k != "audio_labels"})
    finally:
        handle.remove()
    args, kwargs = seen[0]
    return graph_breaks(layer, *args, **kwargs)


def compare(make_step: Any, batches: list[dict[str, torch.Tensor]], warmup: int) -> dict[str, Any]:
    """Time transformers' routing, ours and the dense way on copies of one model; see the module docstring.

    Args:
        make_step (`Any`):
            Returns a fresh `HandStep` on a copy of the same initial weights at each call.
        batches (`list[dict[str, torch.Tensor]]`):
            The training batches, the same for every way.
        warmup (`int`):
            Leading steps left out of the medians.
    """
    ways = ("transformers", "routed", "dense")
    steps = {}
    for way in ways:
        steps[way] = make_step()
        _set_way(steps[way].model, way)
    times: dict[str, list[float]] = {way: [] for way in ways}
    for i, batch in enumerate(batches):  # in turn, a different one first each step
        for way in ways[i % 3:] + ways[:i % 3]:
            times[way].append(steps[way](batch))
    base = [float(x) for x in steps["transformers"].losses]
    out: dict[str, Any] = {"layers": len(steps["routed"].model.model.layers)}
    for way in ways:
        probe = make_step()
        _set_way(probe.model, way)
        with SyncCounter() as counter:
            probe(batches[0])
        gap = max(abs(float(a) - b) / abs(b) for a, b in zip(steps[way].losses, base, strict=True))
        out[way] = {
            "step_seconds": round(statistics.median(times[way][warmup:]), 5),
            "speedup_over_transformers": round(statistics.median(
                t / s for t, s in zip(times["transformers"][warmup:], times[way][warmup:], strict=True)), 3),
            "max_relative_loss_gap": float(f"{gap:.2e}"),
            "syncs_per_step": counter.total,
            "graph_breaks_per_layer": _layer_breaks(probe, batches[0]),
        }
    return out
