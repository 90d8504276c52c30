"""Count, on any device, the operations of a model step that make a GPU wait for the host or vice versa.

`torch.cuda.set_sync_debug_mode` only exists where there is a GPU. The synchronisations it reports come from
operations whose output shape or value the host must read from the device: `nonzero`, `masked_select`,
indexing or index assignment with a boolean mask (which runs `nonzero` inside the kernel), and `.item()`
(`_local_scalar_dense`). A `TorchDispatchMode` sees every aten operation of the forward and the backward, so
counting those operations on the CPU gives the number of synchronisations the same step makes on a GPU.
`masked_scatter` is counted apart: it reads the mask on the device and needs no host round trip in current
PyTorch, but it is a data-dependent copy, and `torch.compile` cannot give its output a static layout either.
Count under autograd or `torch.no_grad`, not `torch.inference_mode`: operations on tensors made in inference
mode bypass Python dispatch modes, so they would go uncounted.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_ALWAYS_SYNC = {"aten.nonzero.default", "aten.masked_select.default", "aten._local_scalar_dense.default"}
_SYNC_WITH_BOOL_INDEX = {"aten.index.Tensor", "aten.index_put.default", "aten.index_put_.default",
                         "aten._index_put_impl_.default"}
_DATA_DEPENDENT_COPIES = {"aten.masked_scatter.default", "aten.masked_scatter_.default"}


def _has_bool_index(args: tuple) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices or ())


class SyncCounter(TorchDispatchMode):
    """A dispatch mode that counts host-synchronising operations (`syncs`) and `masked_scatter`s by name.

    Use it as a context manager around a forward and backward; `total` is the number of synchronisations.
    """

    def __init__(self) -> None:
        super().__init__()
        self.syncs: Counter[str] = Counter()
        self.masked_scatters = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        name = str(func)
        if name in _ALWAYS_SYNC or (name in _SYNC_WITH_BOOL_INDEX and _has_bool_index(args)):
            self.syncs[name] += 1
        elif name in _DATA_DEPENDENT_COPIES:
            self.masked_scatters += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        """Synchronisations counted so far."""
        return sum(self.syncs.values())


def graph_breaks(module: torch.nn.Module, *args: Any, **kwargs: Any) -> int:
    """`torch.compile` graph breaks of one call of `module` (from `torch._dynamo.explain`, which runs on CPU)."""
    import torch._dynamo

    torch._dynamo.reset()
    try:
        return torch._dynamo.explain(module)(*args, **kwargs).graph_break_count
    finally:
        torch._dynamo.reset()
