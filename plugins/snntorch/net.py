"""The exported model: a canonical graph of any topology stepped over snnTorch layers."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from hub_plugins.torchnn import graph as torch_graph
from hub_plugins.torchnn.graph import GraphRunner
from hub_plugins.torchnn.layers import StepDelay

# -- the exported model --------------------------------------------------------------------


class SnnTorchNet(GraphRunner, nn.Module):
    """A canonical graph of any topology as snnTorch layers: call it once per time step.

    Each node's module is registered on the net under the node's name (dots become ``__``);
    snnTorch neurons have ``init_hidden=True``, so they keep their state between calls. ``net(x)``
    advances one step on ``x`` of shape ``[N, *in]``; ``net.reset()`` forgets all state (the
    neurons' ``reset_mem`` and the net's recurrent and delayed values); ``net.run(x)`` resets and
    runs a whole ``[T, N, *in]`` sequence. The graph is stepped as
    :mod:`hub_plugins.torchnn.graph` says (recurrent edges carry the value of the step before).
    ``roles`` records per node what its module alone does not say (its canonical type where a
    module serves several, and ``"previous"`` for a neuron whose input the net delays by one
    step).
    """

    def __init__(self, modules: dict[str, nn.Module], lay: torch_graph.Layout) -> None:
        super().__init__()
        self._setup(modules, lay)
        self.reset()

    def reset(self) -> None:
        """Forget all state: the next call is the first step."""
        self._last: dict[str, torch.Tensor] = {}
        self._held: dict[str, torch.Tensor] = {}
        for module in self.children():
            if hasattr(module, "reset_mem"):
                module.reset_mem()
            elif isinstance(module, StepDelay):
                module.reset()

    def _call(self, name: str, module: nn.Module, *args: torch.Tensor) -> torch.Tensor:
        role = self.roles.get(name, {})
        if role.get("operands"):  # its inputs in edge order, not their sum
            return module(*args)
        (total,) = args
        if role.get("previous"):  # the voltage sees the previous step's current
            held = self._held.get(name)
            self._held[name] = total
            total = held if held is not None else torch.zeros_like(total)
        if role.get("readout"):
            return module(total)[-1]  # output=True: (..., mem); read the membrane
        return module(total)

    def forward(self, x: torch.Tensor | dict[str, torch.Tensor]) -> Any:
        values = self.step_graph(self.given(x), self._last, self._call)
        self._last = values
        return self.results(values)

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """Reset, then run ``x`` of shape ``[T, N, *in]`` step by step; returns ``[T, N, *out]``."""
        self.reset()
        results = [self(xt) for xt in torch.as_tensor(x).unbind(0)]
        if isinstance(results[0], dict):
            return {k: torch.stack([r[k] for r in results]) for k in results[0]}
        return torch.stack(results)
