"""Running a native Norse model on a time-major input, as its users would."""

from __future__ import annotations

from typing import Any

import torch

from hub.layout import as_input
from hub_plugins.torchnn import trace as torch_trace
from hub_plugins.norse.modules import _stateful
from hub_plugins.norse.reading import _traced, framework

# -- running -----------------------------------------------------------------------------------


def _loops_over_time(model: torch.nn.Module) -> bool:
    """Whether the model holds Norse's time-looping modules (``LIF``, not ``LIFCell``)."""
    from norse.torch.module.snn import SNN, SNNRecurrent

    return any(isinstance(m, (SNN, SNNRecurrent)) for m in model.modules())


def run(model: Any, x: Any) -> Any:
    """Run a Norse model on ``x`` ``[T, N, *]`` the way Norse users do; returns ``[T, N, *]``.

    Cells are stepped one time step per call with their state carried along; a model of
    Norse's time-looping modules (``LIF``, ``LI``, ...) gets the whole sequence in one call.
    """
    from norse.torch import SequentialState

    x = as_input(x)
    if _traced(model):  # a class of its own: called as its forward wants
        return torch_trace.run_native(model, framework(), x)
    with torch.no_grad():
        if _loops_over_time(model):
            out = model(x)
            return out[0] if isinstance(out, tuple) else out
        if not isinstance(model, torch.nn.Sequential) or isinstance(model, SequentialState):
            step = model
        else:
            step = SequentialState(*model)  # plain nn.Sequential: step its modules with state
        state, ys = None, []
        for x_t in x.unbind(0):
            if _stateful(step):
                y, state = step(x_t, state)
            else:
                y = step(x_t)
            ys.append(y)
        if isinstance(ys[0], dict):
            return {k: torch.stack([y[k] for y in ys]) for k in ys[0]}
        return torch.stack(ys)
