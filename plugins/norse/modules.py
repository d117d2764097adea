"""The modules an export builds from Norse's cells: :class:`NeuronCell` and, for a graph
that is not a chain, :class:`NorseGraph`."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from hub_plugins.torchnn import graph as torch_graph
from hub_plugins.torchnn.graph import GraphRunner
from hub_plugins.torchnn.layers import StepDelay

# -- modules the export builds from Norse cells ------------------------------------------------


def norse_cls(name: str) -> type:
    """A class of ``norse.torch`` by name (imported on first use)."""
    import norse.torch

    return getattr(norse.torch, name)


def _stateful(module: torch.nn.Module) -> bool:
    """Whether ``module.forward`` takes a state, as ``SequentialState`` decides it."""
    return "state" in inspect.signature(module.forward).parameters


def _rate(cell: torch.nn.Module) -> torch.Tensor | float:
    """``dt * tau_mem_inv`` of a cell, computed as Norse computes it (IAF: 1)."""
    p = cell.p
    return cell.dt * p.tau_mem_inv if hasattr(p, "tau_mem_inv") else 1.0


class NeuronCell(torch.nn.Module):
    """A Norse neuron cell with input gains and, optionally, an ``LIBoxCell`` synapse before it.

    As ``norse.torch.utils.import_nir`` builds NIR's ``CubaLIF`` (``w_in``, an ``LIBoxCell``
    synapse, ``r``, an ``LIFBoxCell``), with the gains stated the canonical way: the synapse
    ``i = i + ks*((0 - i) + x * current_gain/ks)`` (``ks = dt * tau_mem_inv`` of the synapse)
    and the neuron driven by ``u * gain/k``, where ``u`` is this step's current (``order="new"``)
    or the previous step's (``"previous"``), or ``x`` without a synapse. ``v_init``, if given,
    is the neuron's first voltage in place of the cell's own start. One step:
    ``y, state = cell(x, state)``.
    """

    def __init__(self, neuron: torch.nn.Module, gain: Any, synapse: torch.nn.Module | None = None,
                 current_gain: Any = 1.0, order: str = "new", v_init: Any = None) -> None:
        super().__init__()
        if order not in ("new", "previous"):
            raise ValueError(f"order must be 'new' or 'previous', got {order!r}")
        self.neuron = neuron
        self.synapse = synapse
        self.order = order
        self.register_buffer("gain", torch.as_tensor(gain, dtype=torch.float32))
        self.register_buffer("current_gain", torch.as_tensor(current_gain, dtype=torch.float32))
        #: the voltage to start from, where it is not the neuron cell's own start
        self.register_buffer("v_init", None if v_init is None else
                             torch.as_tensor(v_init, dtype=torch.float32))

    def _start(self, like: torch.Tensor) -> Any:
        """The neuron cell's first state, with the voltage at ``v_init``."""
        from norse.torch.functional.iaf import IAFFeedForwardState
        from norse.torch.functional.leaky_integrator_box import LIBoxState
        from norse.torch.functional.lif_box import LIFBoxFeedForwardState

        v = self.v_init.expand_as(like).clone()
        for cls, state in ((norse_cls("LIFBoxCell"), LIFBoxFeedForwardState),
                           (norse_cls("LIBoxCell"), LIBoxState),
                           (norse_cls("IAFCell"), IAFFeedForwardState)):
            if isinstance(self.neuron, cls):
                return state(v=v)
        raise TypeError(f"cannot start a {type(self.neuron).__name__} at v_init")

    def extra_repr(self) -> str:
        return f"order={self.order!r}"

    def forward(self, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        syn_state, neuron_state = (None, None) if state is None else state
        u = x
        if self.synapse is not None:
            previous = (torch.zeros_like(x) if syn_state is None
                        else syn_state.v.expand_as(x))
            current, syn_state = self.synapse(x * (self.current_gain / _rate(self.synapse)),
                                              syn_state)
            u = current if self.order == "new" else previous
        if neuron_state is None and self.v_init is not None:
            neuron_state = self._start(u)
        out, neuron_state = self.neuron(u * (self.gain / _rate(self.neuron)), neuron_state)
        return out, (syn_state, neuron_state)


class NorseGraph(GraphRunner, torch.nn.Module):
    """A graph of any topology over torch and Norse modules, stepped one time step per call like
    ``SequentialState``: ``y, state = model(x_t, state)``.

    Each node's module is registered under the node's name (dots become ``__``); the graph is
    stepped as :mod:`hub_plugins.torchnn.graph` says (recurrent edges deliver the previous step's
    value). ``x_t`` is a tensor (a dict by input name if several), ``y`` likewise by output. The
    state holds every node's last value and each cell's own state; ``state=None`` starts afresh
    (and empties the delay lines, which keep theirs inside).
    """

    def __init__(self, modules: dict[str, torch.nn.Module],
                 lay: torch_graph.Layout) -> None:
        super().__init__()
        self._setup(modules, lay)

    def forward(self, x: Any, state: Any = None) -> tuple[Any, Any]:
        if state is None:
            state = {"last": {}, "cells": {}}
            for module in self.modules():
                if isinstance(module, StepDelay):
                    module.reset()
        cells = dict(state["cells"])

        def call(name: str, module: torch.nn.Module, *args: torch.Tensor) -> torch.Tensor:
            if len(args) == 1 and _stateful(module):
                y, cells[name] = module(args[0], cells.get(name))
                return y
            return module(*args)

        values = self.step_graph(self.given(x), state["last"], call)
        return self.results(values), {"last": values, "cells": cells}
