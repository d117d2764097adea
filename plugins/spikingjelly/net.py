"""The SpikingJelly export of a graph that is not a chain: a ``MemoryModule`` stepping the graph.

Part of the ``spikingjelly`` plugin, apart because its class derives from SpikingJelly's own
``base.MemoryModule`` and so imports SpikingJelly, which the plugin itself does only on first use.
"""

from __future__ import annotations

from typing import Any

import torch
from spikingjelly.activation_based import base
from torch import nn

from hub_plugins.torchnn.graph import GraphRunner, Layout
from hub_plugins.torchnn.layers import StepDelay

STEP_MODES = ("s", "m")


class SpikingJellyNet(GraphRunner, base.MemoryModule):
    """A canonical graph of any topology over SpikingJelly's neurons and layers.

    It is a SpikingJelly ``MemoryModule`` like any other: ``functional.reset_net`` resets it
    (and its neurons), ``functional.set_step_mode`` or ``net.step_mode = ...`` switches it and
    every module in it between single-step (``"s"``: ``net(x_t)`` on ``[N, *]``, one step per
    call) and multi-step (``"m"``: ``net(x_seq)`` on ``[T, N, *]``). The graph is stepped as
    :mod:`hub_plugins.torchnn.graph` says. In multi-step mode SpikingJelly's modules get the whole
    sequence, plain torch modules get it with time folded into the batch (as
    ``SeqToANNContainer`` does), and a graph with recurrent edges is stepped one time step at a
    time, since a recurrent edge needs the step before.
    """

    def __init__(self, modules: dict[str, nn.Module], lay: Layout, step_mode: str = "s") -> None:
        super().__init__()
        self._setup(modules, lay)
        self.register_memory("last", {})
        self.step_mode = step_mode

    @property
    def step_mode(self) -> str:
        return self._step_mode

    @step_mode.setter
    def step_mode(self, value: str) -> None:
        if value not in STEP_MODES:
            raise ValueError(f"step_mode must be 's' or 'm', got {value!r}")
        self._step_mode = value
        for module in self.children():
            if isinstance(module, base.StepModule) and value in module.supported_step_mode():
                module.step_mode = value

    def supported_step_mode(self) -> tuple[str, ...]:
        return STEP_MODES

    def reset(self) -> None:
        super().reset()
        for module in self.children():
            if isinstance(module, StepDelay):
                module.reset()

    def single_step_forward(self, x: Any) -> Any:
        values = self.step_graph(self.given(x), self.last, _call_one)
        self.last = values
        return self.results(values)

    def multi_step_forward(self, x_seq: Any) -> Any:
        given = self.given(x_seq)
        if not self.recurrent:
            return self.results(self.step_graph(given, {}, _call_sequence, lead=2))
        steps = next(iter(given.values())).shape[0]
        results = []
        for t in range(steps):
            values = self.step_graph({k: v[t:t + 1] for k, v in given.items()}, self.last,
                                     _call_sequence, lead=2)
            self.last = values
            results.append(self.results(values))
        if isinstance(results[0], dict):
            return {k: torch.cat([r[k] for r in results]) for k in results[0]}
        return torch.cat(results)


def _call_one(name: str, module: nn.Module, *args: torch.Tensor) -> torch.Tensor:
    return module(*args)


def _call_sequence(name: str, module: nn.Module, *args: torch.Tensor) -> torch.Tensor:
    """A module applied to ``[T, N, *]`` sequences as it means them."""
    if getattr(module, "step_mode", None) == "m":
        return module(*args)
    if isinstance(module, (base.StepModule, StepDelay)):  # one step per call
        return torch.stack([module(*xs) for xs in zip(*(a.unbind(0) for a in args))])
    steps, batch = args[0].shape[:2]
    y = module(*(a.flatten(0, 1) for a in args))
    return y.view(steps, batch, *y.shape[1:])
