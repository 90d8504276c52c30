"""Where a GPU training step's time goes, from a `torch.profiler` trace: top kernels, synchronisation, idle gaps.

`summarize(prof, steps)` reads the events of a profiler that recorded `steps` training steps and returns JSON
figures per step:

- `top_kernels`: the device kernels with the most total time (name, milliseconds per step, calls per step,
  share of all kernel time);
- `sync_ms_per_step`: host time spent in calls that wait for the device (`cudaStreamSynchronize`,
  `cudaDeviceSynchronize`, `cudaEventSynchronize`, blocking device-to-host copies); `syncs_per_step` counts them;
- `idle_gaps`: the device timeline's gaps between consecutive kernels and copies (milliseconds per step in
  gaps over 10 microseconds, their count, the longest), where the GPU waited for the host;
- `busy_share`: kernel time over the profiled wall time.

On CPU (no device events) the kernel and gap figures are empty and the CPU operators take the kernels' place,
so the script can be dry-run without a GPU.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")
GAP_US = 10.0


class ProfileSteps(TrainerCallback):
    """A Trainer callback that profiles the steps `first + 1` .. `first + steps` and keeps their `summarize`."""

    def __init__(self, first: int, steps: int, cuda: bool) -> None:
        self.first, self.steps, self.cuda = first, steps, cuda
        self.summary: dict[str, Any] | None = None
        self._prof: Any = None

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.first and self._prof is None:
            import torch
            from torch.profiler import ProfilerActivity, profile

            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.cuda else [])
            if self.cuda:
                torch.cuda.synchronize()
            self._prof = profile(activities=activities)
            self._prof.__enter__()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._prof is not None and self.summary is None and state.global_step >= self.first + self.steps:
            import torch

            if self.cuda:
                torch.cuda.synchronize()
            self._prof.__exit__(None, None, None)
            self.summary = summarize(self._prof, self.steps)
            self._prof = None


def _device_time(e: Any) -> float:
    return float(getattr(e, "device_time_total", 0.0) or getattr(e, "cuda_time_total", 0.0) or 0.0)


def summarize(prof: Any, steps: int, top: int = 15) -> dict[str, Any]:
    """Figures per step from a finished `torch.profiler.profile` (see the module docstring)."""
    steps = max(1, steps)
    averages = prof.key_averages()
    device = [e for e in averages if _device_time(e) > 0 and not e.key.startswith("ProfilerStep")]
    on_device = bool(device)
    rows = device if on_device else [e for e in averages if e.self_cpu_time_total > 0]
    timed = (lambda e: _device_time(e)) if on_device else (lambda e: float(e.self_cpu_time_total))
    total = sum(timed(e) for e in rows) or 1.0
    ranked = sorted(rows, key=timed, reverse=True)[:top]
    sync = [e for e in averages if e.key.startswith(SYNC_CALLS)]
    result: dict[str, Any] = {
        "device_events": on_device,
        "top_kernels": [{"name": e.key[:120], "ms_per_step": round(timed(e) / 1e3 / steps, 3),
                         "calls_per_step": round(e.count / steps, 1), "share": round(timed(e) / total, 4)}
                        for e in ranked],
        "sync_ms_per_step": round(sum(e.cpu_time_total for e in sync) / 1e3 / steps, 3),
        "syncs_per_step": round(sum(e.count for e in sync) / steps, 1),
        "sync_calls": {e.key: round(e.count / steps, 1) for e in sync},
    }
    spans = sorted((ev.time_range.start, ev.time_range.end) for ev in prof.events()
                   if on_device and str(getattr(ev, "device_type", "")).endswith("CUDA"))
    gaps, end, first = [], None, spans[0][0] if spans else 0.0
    for start, stop in spans:
        if end is not None and start - end > GAP_US:
            gaps.append(start - end)
        end = stop if end is None else max(end, stop)
    wall = (end - first) if spans and end is not None else 0.0
    result["idle_gaps"] = {
        "ms_per_step": round(sum(gaps) / 1e3 / steps, 3), "count_per_step": round(len(gaps) / steps, 1),
        "longest_ms": round(max(gaps, default=0.0) / 1e3, 3), "threshold_us": GAP_US,
    }
    result["busy_share"] = round(sum(timed(e) for e in device) / wall, 4) if wall else None
    return result
