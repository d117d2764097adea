"""Import: a live snnTorch model, read from what its forward computes, or an exported net."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

import hub
from hub.errors import UnsupportedError
from hub.node import Node
from hub_plugins.torchnn import graph as torch_graph
from hub_plugins.torchnn import trace as torch_trace
from hub_plugins.snntorch import families as snntorch_families
from hub_plugins.snntorch.common import _approximate, _array, _power_of_two
from hub_plugins.snntorch.net import SnnTorchNet
from hub_plugins.torchnn.layers import import_conv, import_module

# -- import ---------------------------------------------------------------------------------


def _import_net(net: SnnTorchNet, strict: bool) -> hub.Graph:
    """An exported net: its recorded structure, with the parameters its modules hold now."""

    def node_of(name: str, module: nn.Module, role: dict[str, Any]) -> Node:
        return _restore_shapes(_import_module(module, strict, role)[0][1],
                               role.get("shapes", {}))

    return torch_graph.read(net, node_of)


def _restore_shapes(node: Node, shapes: dict[str, list[int]]) -> Node:
    """Give fields the shapes the exported node had where the module holds them in another
    shape (a scalar bias as one per channel, a gain of 1 that snnTorch does not hold at all)."""
    changes = {}
    for field, shape in shapes.items():
        value = getattr(node, field, None)
        if not isinstance(value, np.ndarray) or value.shape == tuple(shape):
            continue
        first = value.ravel()[:1]
        if value.size and np.all(value == first):  # uniform: any shape holds it
            changes[field] = np.full(shape, first[0], dtype=value.dtype)
        elif np.broadcast_shapes(value.shape, tuple(shape)) == tuple(shape):
            changes[field] = np.array(np.broadcast_to(value, shape))
    return node.replace(**changes) if changes else node


# -- tracing a live model ------------------------------------------------------------------


def _is_neuron(module: nn.Module) -> bool:
    import snntorch

    return isinstance(module, snntorch.SpikingNeuron)


def _split(module: nn.Module, args: tuple, kwargs: dict) -> tuple[Any, Any]:
    """A neuron call's input and explicit state (None when the neuron keeps it hidden)."""
    state = tuple(a for a in args[1:] if a is not None)
    return args[0], (state or None)


def framework(strict: bool = True) -> torch_trace.Framework:
    """snnTorch as the shared tracer sees it."""
    return torch_trace.Framework("snntorch", _is_neuron, lambda call: _neuron_piece(call, strict),
                                 _split, reset=_reset)


def _reset(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, SnnTorchNet):
            module.reset()
        elif hasattr(module, "reset_mem"):
            module.reset_mem()


def _neuron_piece(call: torch_trace.Call, strict: bool) -> torch_trace.Piece:
    """A snnTorch neuron call as canonical nodes (module docstring), with its membrane where
    the forward reads it (output 1)."""
    import snntorch

    m = call.module
    if call.fresh:
        return _first_step(m)
    if call.used == {1} and m.reset_mechanism == "none":
        piece = _piece(_import_neuron(m, strict, {"readout": True}))
        piece.outputs[1] = ""  # a readout outputs its membrane
        return piece
    nodes = _import_neuron(m, strict, {})
    piece = _piece(nodes)
    if 1 not in call.used:
        return piece
    # the membrane snnTorch returns: integrated, and reset a step late by subtraction
    if type(m) is not snntorch.Leaky:  # not its subclasses (RLeaky), whose membrane differs
        raise UnsupportedError(f"the membrane of a {type(m).__name__} is read; the hub reads "
                               "the membrane of a Leaky only", field="mem")
    lif = piece.nodes[""]
    piece.nodes["_mem"] = hub.LI(beta=lif.beta)
    piece.edges.append(("<in>", "_mem"))
    if lif.reset == "subtract" and lif.reset_timing == "next":
        # mem_t = beta*mem + x - th*s_(t-1): an LI fed by the spikes of the step before
        piece.nodes["_reset"] = hub.Scale(scale=-lif.threshold / lif.amplitude)
        piece.nodes["_late"] = hub.Delay(delay=1)
        piece.edges += [("", "_reset"), ("_reset", "_late"), ("_late", "_mem")]
    elif lif.reset != "none":
        raise UnsupportedError(f"the membrane of a Leaky with reset_mechanism="
                               f"{m.reset_mechanism!r} and reset_delay={m.reset_delay} is read; "
                               "the hub reads it for the subtractive delayed reset (the "
                               "default) or no reset", field="mem")
    piece.outputs[1] = "_mem"
    return piece


def _piece(nodes: list[tuple[str, Node]]) -> torch_trace.Piece:
    """The nodes of :func:`_import_neuron` wired as a piece (recurrence and its bias)."""
    piece = torch_trace.Piece(dict(nodes))
    names = dict(nodes)
    if "_rec" in names:
        piece.edges += [("", "_rec"), ("_rec", "")]
    if "_bias" in names:
        piece.edges += [("<in>", "_bias"), ("_bias", "")]
    return piece


def _first_step(m: nn.Module) -> torch_trace.Piece:
    """A neuron whose state the forward starts afresh at every call: one step from zero,
    ``spk = H(x - th) * g`` and ``mem = x`` (the reset of a zero membrane is zero)."""
    import snntorch

    if type(m) not in (snntorch.Leaky, snntorch.Synaptic):
        raise UnsupportedError(f"a {type(m).__name__} started from fresh state at every step "
                               "has no canonical counterpart", field="type")
    _check_neuron(m)
    threshold = _array(m.threshold, "threshold")
    if (threshold < 0).any():
        raise UnsupportedError("a negative threshold fires snnTorch's first reset signal",
                               field="threshold")
    amplitude = _array(m.graded_spikes_factor, "graded_spikes_factor")
    piece = torch_trace.Piece({"": hub.Threshold(threshold=threshold)})
    if not np.all(amplitude == 1):
        piece.nodes["_amplitude"] = hub.Scale(scale=amplitude)
        piece.edges.append(("", "_amplitude"))
        piece.outputs[0] = "_amplitude"
    if m.reset_delay or m.reset_mechanism == "none":
        piece.nodes["_mem"] = hub.Add()
        piece.edges.append(("<in>", "_mem"))
        piece.outputs[1] = "_mem"
    return piece


def _import_module(module: nn.Module, strict: bool,
                   role: dict[str, Any]) -> list[tuple[str, Node]]:
    """The canonical node(s) of one module: ``[("", node)]``, plus ``("_rec", ...)`` and
    ``("_bias", ...)`` for a recurrent snnTorch neuron."""
    import snntorch

    if isinstance(module, snntorch.SpikingNeuron):
        return _import_neuron(module, strict, role)
    node = import_module(module)
    if node is None:
        raise UnsupportedError(f"{type(module).__qualname__} passes its input through; an "
                               "exported net holds no such module", field="type")
    return [("", node)]


def _check_neuron(m: nn.Module) -> None:
    """Refuse the options of a snnTorch neuron that no canonical field expresses."""
    if getattr(m, "inhibition", False):
        raise UnsupportedError("inhibition=True lets only the neuron with the largest membrane "
                               "of each sample spike, which no canonical neuron expresses; "
                               "set inhibition=False", field="inhibition")
    if getattr(m, "state_quant", False):
        raise UnsupportedError("state_quant quantizes the state with a function the hub cannot "
                               "read; remove it (or export the quantized values as weights)",
                               field="state_quant")
    probe = torch.tensor([-1.0, -1e-38, -0.0, 0.0, 1e-38, 1e-45, 1.0])
    with torch.no_grad():
        try:
            fired = m.spike_grad(probe.clone())
        except Exception as e:  # a user's function that cannot take a plain tensor
            raise UnsupportedError(f"spike_grad fails on a probe tensor ({type(e).__name__}: "
                                   f"{e})", field="spike_grad") from None
    if not isinstance(fired, torch.Tensor) or not torch.equal(
            fired.detach().float(), (probe > 0).float()):
        raise UnsupportedError("spike_grad's forward pass is not the Heaviside step z > 0 that "
                               "every snnTorch surrogate computes", field="spike_grad")


def _decay(m: nn.Module, field: str) -> np.ndarray:
    """``clamp(field, 0, 1)`` as snnTorch applies it in every forward pass."""
    return _array(getattr(m, field).detach().clamp(0, 1), field)


def _import_neuron(m: nn.Module, strict: bool,
                   role: dict[str, Any]) -> list[tuple[str, Node]]:
    import snntorch

    other = snntorch_families.import_neuron(m)
    if other is not None:
        return other
    if not isinstance(m, (snntorch.Leaky, snntorch.Synaptic, snntorch.RLeaky,
                          snntorch.RSynaptic, snntorch.Lapicque)):
        raise UnsupportedError(f"snnTorch's {type(m).__name__} has no canonical counterpart; "
                               "supported are Leaky, Synaptic, RLeaky, RSynaptic and Lapicque",
                               field="type")
    _check_neuron(m)
    threshold = _array(m.threshold, "threshold")
    if (threshold < 0).any():
        raise UnsupportedError("a negative threshold makes snnTorch's first reset signal "
                               "H(0 - threshold) fire before any spike; the canonical neuron "
                               "starts without one", field="threshold")
    amplitude = _array(m.graded_spikes_factor, "graded_spikes_factor")
    mechanism = m.reset_mechanism
    # RSynaptic 1.0.0's no-delay branch assigns a local variable: its reset is always delayed
    delayed = True if isinstance(m, (snntorch.RSynaptic, snntorch.Lapicque)) \
        else bool(m.reset_delay)
    # Leaky zeroes before integrating; the others zero the integrated membrane, holding it at 0
    # for the step after a spike
    zero_before = isinstance(m, snntorch.Leaky)
    fields: dict[str, Any] = {"threshold": threshold}
    if mechanism == "none":
        fields.update(reset="none", reset_timing="next" if delayed else "same")
    elif mechanism == "subtract":
        if not delayed:
            _approximate(strict, "reset_mechanism='subtract' with reset_delay=False subtracts "
                         "the threshold again, before testing the spike, in the step after a "
                         "reset that left the membrane above threshold; the canonical "
                         "same-step subtraction does not (they agree while no reset leaves the "
                         "membrane above threshold). reset_delay=True (snnTorch's default) or "
                         "reset_mechanism='zero' convert exactly", "reset_delay")
        fields.update(reset="subtract", reset_timing="next" if delayed else "same")
    elif zero_before and delayed:
        fields.update(reset="zero", reset_timing="next")
    else:
        fields.update(reset="zero", reset_timing="same", refractory=1 if delayed else 0)
    if (amplitude == 0).any() and fields["reset_timing"] == "same" and mechanism != "none":
        raise UnsupportedError("graded_spikes_factor=0 makes snnTorch's reset divide 0 by 0",
                               field="graded_spikes_factor")
    kind = role.get("type")
    readout = bool(role.get("readout"))
    if isinstance(m, snntorch.Lapicque):
        return [("", _import_lapicque(m, strict, fields, amplitude))]
    if isinstance(m, (snntorch.Synaptic, snntorch.RSynaptic)):
        alpha, beta = _decay(m, "alpha"), _decay(m, "beta")
        order = "previous" if role.get("previous") else "new"
        if readout:
            node: Node = hub.CubaLI(alpha=alpha, beta=beta, current_order=order)
        else:
            node = hub.CubaLIF(alpha=alpha, beta=beta, current_order=order, amplitude=amplitude,
                               **fields)
    else:
        beta = _decay(m, "beta")
        if readout and kind == "Integrator":
            node = hub.Integrator()
        elif readout:
            node = hub.LI(beta=beta)
        elif kind == "Threshold":
            node = hub.Threshold(threshold=threshold)
        elif kind == "IF":
            node = hub.IF(amplitude=amplitude, **fields)
        else:
            node = hub.LIF(beta=beta, amplitude=amplitude, **fields)
    nodes: list[tuple[str, Node]] = [("", node)]
    if isinstance(m, (snntorch.RLeaky, snntorch.RSynaptic)):
        nodes += _import_recurrence(m)
    return nodes


def _import_recurrence(m: nn.Module) -> list[tuple[str, Node]]:
    """The recurrent layer of an RLeaky/RSynaptic, and its bias as a zero-weight layer fed
    forward: snnTorch adds ``rec(spk)`` from the first step on, bias included, where a
    recurrent edge carries 0 at the first step."""
    rec = m.recurrent
    if isinstance(rec, nn.Linear):
        out = [("_rec", hub.Linear(weight=_array(rec.weight, "recurrent.weight")))]
        if rec.bias is not None and bool((rec.bias != 0).any()):
            n = rec.weight.shape[0]
            out.append(("_bias", hub.Affine(weight=np.zeros((n, n), np.float32),
                                            bias=_array(rec.bias, "recurrent.bias"))))
        return out
    if isinstance(rec, nn.Conv2d):
        out = [("_rec", import_conv(rec).replace(bias=0.0))]
        if rec.bias is not None and bool((rec.bias != 0).any()):
            c = rec.weight.shape[0]
            out.append(("_bias", hub.Conv2d(weight=np.zeros((c, c, 1, 1), np.float32),
                                            bias=_array(rec.bias, "recurrent.bias"))))
        return out
    if type(rec).__name__ == "RecurrentOneToOne":
        return [("_rec", hub.Scale(scale=_array(torch.as_tensor(rec.V), "V")))]
    raise UnsupportedError(f"a recurrent {type(rec).__name__} has no canonical counterpart",
                           field="recurrent")


def _import_lapicque(m: nn.Module, strict: bool, fields: dict[str, Any],
                     amplitude: np.ndarray) -> Node:
    rc = m.R * m.C
    k = 1 / rc
    beta = _array(1 - (m.time_step / rc), "beta")
    exact = _power_of_two(_array(torch.as_tensor(m.R), "R")) and \
        _power_of_two(_array(torch.as_tensor(m.time_step), "time_step"))
    if not exact:
        _approximate(strict, "snnTorch scales the input as ((x*R)*(1/(R*C)))*time_step, which "
                     "one canonical gain reproduces bit for bit only when R and time_step are "
                     "powers of two", "R")
    gain = _array(torch.ones(()) * m.R * k * m.time_step, "gain")
    return hub.LIF(beta=beta, gain=gain, amplitude=amplitude, **fields)
