r"""The ``snntorch`` format: snnTorch models (``torch.nn.Module`` s holding snnTorch neurons).

Import takes an :class:`SnnTorchNet` (what export produces, read from its recorded structure)
or any other module, read from what its ``forward`` computes by the shared tracer
(:mod:`hub_plugins.torch_trace`): tutorial classes that loop over time with explicit state,
functional pooling and reshapes, ``nn.Sequential`` s of neurons with ``init_hidden=True``; the
import is proved against the model's own run. Export produces an :class:`SnnTorchNet`: the graph's
layers as ``torch.nn`` layers and its neurons as snnTorch neurons with ``init_hidden=True``, each
registered on the net under its node's name, and a forward that advances one time step.

Every neuron update below is derived from snnTorch 1.0.0's source
(``snntorch/_neurons/{neurons,leaky,synaptic,rleaky,rsynaptic,lapicque}.py``). With ``H(z)`` the
spike function (every snnTorch surrogate's forward pass is ``(z > 0).float()``), ``m`` the stored
membrane, ``c`` the stored synaptic current, ``x`` the input, ``th`` the threshold and ``g`` the
``graded_spikes_factor``, one forward call computes::

    r   = H(m - th)                      # the reset signal, from the *stored* membrane
    Leaky:     m' = clamp(beta,0,1)*m + x        - r*th            (subtract)
               m' = clamp(beta,0,1)*((1-r)*m) + x                  (zero: before integrating)
    Synaptic:  c' = clamp(alpha,0,1)*c + x ;  m' = clamp(beta,0,1)*m + c'
               m' = m' - r*th (subtract),  m' = m' - r*m' (zero: after integrating)
    RLeaky:    m' = (clamp(beta,0,1)*m + x) + rec(spk_prev), resets as Synaptic's
    RSynaptic: c' = (clamp(alpha,0,1)*c + x) + rec(spk_prev), then as Synaptic
    Lapicque:  m' = x*R*(1/(R*C))*dt + (1 - dt/(R*C))*m, resets as Synaptic's
    spk = H(m' - th) * g

and with ``reset_delay=False`` (Leaky, Synaptic, RLeaky) then ``m = m' - (spk/g - r)*th``
(subtract) or ``m = m' - (spk/g - r)*m'`` (zero); otherwise ``m = m'``. So, in canonical fields
(``comparison=">"``, ``gain=1``, ``current_gain=1``, ``v_leak=0``, ``v_reset=0``,
``amplitude=g``, ``current_order="new"``):

=====================================  =====================================================
snnTorch                               canonical neuron
=====================================  =====================================================
Leaky subtract, reset_delay=True       LIF reset="subtract", reset_timing="next"
Leaky zero, reset_delay=True           LIF reset="zero", reset_timing="next"
Leaky zero, reset_delay=False          LIF reset="zero", reset_timing="same"
Synaptic/RLeaky/RSynaptic/Lapicque     reset="zero", reset_timing="same", refractory=1: the
  zero, reset delayed                    step after a spike the membrane is zeroed *after*
                                         integrating, so it stays 0 and cannot spike
Synaptic/RLeaky zero, reset_delay=     reset="zero", reset_timing="same"
  False
any, reset_mechanism="none"            reset="none" (timing recorded from reset_delay)
subtract, reset_delay=False            not expressible: a reset that leaves m above th makes
                                         the next step subtract th again before testing the
                                         spike (``r`` is 1), so it equals a same-step
                                         subtraction only while no reset leaves m above th.
                                         Refused; ``strict=False`` converts it as
                                         reset_timing="same" with a warning
RLeaky / RSynaptic recurrence           a recurrent edge neuron -> rec -> neuron: ``Scale(V)``
                                         (one-to-one), ``Linear``/``Conv2d`` (all-to-all); the
                                         recurrent layer's bias, which snnTorch adds from the
                                         first step on, becomes a zero-weight Affine/Conv2d fed
                                         forward (a recurrent edge carries 0 at the first step)
Lapicque                               LIF with beta = 1 - dt/(R*C) and gain = R*(1/(R*C))*dt
                                         as snnTorch computes them in float32; exact when R and
                                         dt are powers of two (else refused, or approximated
                                         with ``strict=False``)
=====================================  =====================================================

RSynaptic's ``reset_delay=False`` has no effect in snnTorch 1.0.0 (its no-delay branch writes a
local variable), so it imports as the delayed reset. Rounding: RLeaky and RSynaptic add the
recurrent term after the input, ``(beta*m + x) + rec``, where the canonical neuron adds its summed
input, ``beta*m + (x + rec)``; ``nn.Conv1d/2d`` add their bias inside the convolution where the
canonical ``Conv`` adds it after. Both agree bit for bit on the exact tier's dyadic values and to
float32 rounding otherwise. Gradients: snnTorch detaches the reset signal, the hub's simulator
lets the surrogate gradient flow through it (spikes are the same).

Export maps back: LIF/IF (``beta=1``) -> Leaky, CubaLIF -> Synaptic, LI/Integrator (``beta=1``)
-> Leaky with ``reset_mechanism="none"`` and ``output=True`` read as its membrane, CubaLI ->
Synaptic likewise, Threshold -> Leaky with ``beta=0`` and no reset. ``current_order="previous"``
(NIR's forward Euler) is exact as a Synaptic whose input the net delays by one step. Refused
(:class:`hub.UnsupportedError` naming node and field): ``comparison=">="``, ``v_leak``,
``v_init``, ``v_reset`` other than 0, ``gain``/``current_gain`` other than 1, multi and graded
spikes, refractory periods (but the one above), axonal delays, decays outside [0, 1] (snnTorch
clamps them), negative thresholds (snnTorch's first reset signal would fire), LIF
``reset="zero"`` with refractory and CubaLIF ``reset="zero"`` with ``reset_timing="next"``.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

import hub
from hub.graph import check_dt
from hub.errors import FormatError, UnsupportedError
from hub.layout import as_input
from hub_plugins import torch_graph, torch_trace
from hub_plugins.snntorch import families as snntorch_families
from hub_plugins.torch_graph import GraphRunner
from hub_plugins.torch_layers import Scale  # noqa: F401  (re-exported: where it lived before)
from hub_plugins.torch_layers import (EXPORTED, StepDelay, export_layer, import_conv,
                                      import_module)
from hub.node import Node
from hub.legalise import Accepts, at_least, between, equal, one_of, rule


class SnnTorchApproximationWarning(UserWarning):
    """A ``strict=False`` conversion changed behaviour; the message says where and how."""


# -- the exported model --------------------------------------------------------------------


class SnnTorchNet(GraphRunner, nn.Module):
    """A canonical graph of any topology as snnTorch layers: call it once per time step.

    Each node's module is registered on the net under the node's name (dots become ``__``);
    snnTorch neurons have ``init_hidden=True``, so they keep their state between calls. ``net(x)``
    advances one step on ``x`` of shape ``[N, *in]``; ``net.reset()`` forgets all state (the
    neurons' ``reset_mem`` and the net's recurrent and delayed values); ``net.run(x)`` resets and
    runs a whole ``[T, N, *in]`` sequence. The graph is stepped as
    :mod:`hub_plugins.torch_graph` says (recurrent edges carry the value of the step before).
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


# -- what snnTorch accepts --------------------------------------------------------------------

_NEURONS = ("IF", "LIF", "CubaLIF", "LI", "CubaLI", "Integrator")
_SPIKING = ("IF", "LIF", "CubaLIF")
#: Rules that ``strict=False`` lets through, converted approximately with a warning.
APPROXIMATED = ("reset_timing",)


def _timing_ok(n: Node) -> bool:
    if n.reset == "subtract":
        return n.reset_timing == "next"
    return not (n.type == "CubaLIF" and n.reset == "zero" and n.reset_timing == "next")


def _refractory_ok(n: Node) -> bool:
    if n.type == "CubaLIF" and n.reset == "zero":
        return n.refractory <= 1
    return n.refractory == 0


def _amplitude_ok(n: Node) -> bool:
    same_step = not _reset_delay(n) and n.reset != "none"
    return not (same_step and bool((n.amplitude == 0).any()))


#: What snnTorch's neurons compute (see the module docstring), per node type and field.
ACCEPTS = Accepts({
    tuple(sorted(EXPORTED)): (),
    "Delay": (),
    "Threshold": (
        one_of("comparison", ">", why="snnTorch spikes where the membrane exceeds the "
               "threshold"),
        at_least("threshold", 0, why="snnTorch's first reset signal H(0 - threshold) fires "
                 "where the threshold is negative"),
    ),
    _NEURONS: (
        equal("v_init", 0, why="its state starts at 0"),
        equal("v_leak", 0, why="its membrane decays towards 0"),
        equal("gain", 1, why="its input enters the membrane unscaled"),
        equal("current_gain", 1, why="its input enters the current unscaled"),
        between("alpha", 0, 1, why="snnTorch clamps alpha to [0, 1] in every step"),
        between("beta", 0, 1, why="snnTorch clamps beta to [0, 1] in every step"),
    ),
    _SPIKING: (
        one_of("comparison", ">", why="snnTorch spikes where the membrane exceeds the "
               "threshold"),
        one_of("spike_mode", "binary", why="snnTorch neurons emit one spike per step"),
        one_of("delay", 0, why="snnTorch neurons have no axonal delay; put a Delay node after "
               "the neuron"),
        equal("v_reset", 0, why="it resets to 0"),
        at_least("threshold", 0, why="snnTorch's first reset signal H(0 - threshold) fires "
                 "where the threshold is negative, before any spike"),
        rule("reset_timing", "'next' for reset='subtract' (reset_delay=True; the same-step "
             "one subtracts twice after a reset left the membrane above threshold); 'same' "
             "for CubaLIF's zero reset (Synaptic's delayed one is 'same' with refractory=1)",
             _timing_ok,
             why="snnTorch's reset_delay=False subtraction and Synaptic's zeroing after "
             "integration differ from these"),
        rule("refractory", "0; 1 for CubaLIF with reset='zero' (Synaptic's delayed zero "
             "reset)", _refractory_ok, why="snnTorch has no refractory period"),
        rule("amplitude", "nonzero where the reset is in the same step", _amplitude_ok,
             why="snnTorch's same-step reset divides by graded_spikes_factor"),
    ),
    # the families' exporter (snntorch_families) checks its own fields
    "AlphaLIF": (),
}, topology="any", name="snnTorch", notes=[
    ("per-neuron beta, alpha and threshold are exported as tensors (snnTorch broadcasts "
     "them)")])


# -- the format -----------------------------------------------------------------------------


class SnnTorchFormat(hub.Format):
    name = "snntorch"
    aliases = ("snn",)
    description = "snnTorch models (nn.Sequential or nn.Module with snnTorch neurons)"
    requires = ("snntorch",)
    install_hint = "snntorch"
    load_options = ("strict", "input_shape", "dt")
    save_options = ("strict",)
    exports = EXPORTED | frozenset({"Delay", "Threshold", "IF", "LIF", "CubaLIF", "LI", "AlphaLIF",
                                    "CubaLI", "Integrator"})
    imports = exports | torch_trace.TRACED
    accepts = ACCEPTS

    def recognizes(self, obj: Any) -> bool:
        import snntorch

        if isinstance(obj, SnnTorchNet):
            return True
        return isinstance(obj, nn.Module) and any(
            isinstance(m, snntorch.SpikingNeuron) for m in obj.modules())

    def load(self, obj: Any, strict: bool = True, input_shape: tuple[int, ...] | None = None,
             dt: float | None = None) -> hub.Graph:
        """Import ``obj``; ``dt`` (seconds per step, which snnTorch models do not record; its
        own NIR export assumes 1e-4) is stored in the graph for exports that need it (NIR)."""
        if not isinstance(obj, nn.Module):
            raise FormatError(f"expected a torch.nn.Module, got {type(obj).__name__}")
        if isinstance(obj, SnnTorchNet):
            graph = _import_net(obj, strict)
        else:
            graph = torch_trace.import_model(obj, framework(strict),
                                             input_shape=input_shape).graph
        if dt is not None:
            graph.metadata["dt"] = check_dt(dt, field="dt")
        return graph

    def export(self, graph: hub.Graph, strict: bool = True) -> SnnTorchNet:
        return _export(graph, strict)

    def run(self, native: nn.Module, x: Any) -> torch.Tensor:
        """Run ``native`` in snnTorch on ``x`` ``[T, N, *in]``: an :class:`SnnTorchNet` through
        its ``run``; another module (a copy) called as its forward wants, one call per step, one
        call on the sequence, or one call on a static input (``torch_trace.run_native``)."""
        x = as_input(x)
        with torch.no_grad():
            if isinstance(native, SnnTorchNet):
                return native.run(x)
            return torch_trace.run_native(native, framework(False), x)


@hub.hookimpl
def hub_register_formats(register) -> None:
    register(SnnTorchFormat())


# -- shared checks --------------------------------------------------------------------------


def _array(value: Any, what: str) -> np.ndarray:
    """A module's parameter as a float32 array; other dtypes are refused (snnTorch computes
    spikes in float32 whatever the membrane's dtype)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.is_floating_point() and value.dtype != torch.float32:
            raise UnsupportedError(f"is {value.dtype}; the hub converts float32 models: call "
                                   "model.float() first", field=what)
        return value.to(torch.float32).numpy().copy()
    return np.asarray(value, dtype=np.float32)


def _approximate(strict: bool, message: str, field: str) -> None:
    """Refuse (strict) or warn that the conversion changes behaviour as ``message`` says."""
    if strict:
        raise UnsupportedError(f"{message}; pass strict=False to convert it anyway", field=field)
    warnings.warn(f"{field}: {message}; converted approximately (strict=False)",
                  SnnTorchApproximationWarning, stacklevel=4)


def _power_of_two(value: np.ndarray) -> bool:
    mantissa, _ = np.frexp(value.astype(np.float64))
    return bool(np.all(mantissa == 0.5))


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


# -- export ---------------------------------------------------------------------------------


def _export(graph: hub.Graph, strict: bool) -> SnnTorchNet:
    return SnnTorchNet(*torch_graph.layout(
        graph, lambda name, node, shape: _export_node(node, strict, shape)))


def _t(value: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(value, dtype=np.float32))


def _export_node(node: Node, strict: bool, input_shape: tuple[int, ...] | None = None
                 ) -> tuple[nn.Module | None, dict[str, Any]]:
    module, role = _export_module(node, strict, input_shape)
    shapes = {k: list(v.shape) for k, v in node.params().items() if isinstance(v, np.ndarray)}
    if shapes and module is not None:
        role["shapes"] = shapes
    return module, role


def _export_module(node: Node, strict: bool, input_shape: tuple[int, ...] | None = None
                   ) -> tuple[nn.Module | None, dict[str, Any]]:
    kind = node.type
    role: dict[str, Any] = {"type": kind}
    if node.operands:
        role["operands"] = True
    # what snnTorch cannot spell is refused here, as ACCEPTS declares it; the core's
    # legalisation has already rewritten what it could (hub.legalise)
    ACCEPTS.check(node, skip=() if strict else APPROXIMATED)
    if kind == "Threshold":
        import snntorch

        return snntorch.Leaky(beta=torch.tensor(0.0), threshold=_t(node.threshold),
                              reset_mechanism="none", init_hidden=True), role
    if isinstance(node, hub.Neuron):
        return _export_neuron(node, strict)
    if kind in EXPORTED:
        return export_layer(node, input_shape), role
    other = snntorch_families.export_neuron(node)
    if other is not None:
        return other, role
    raise UnsupportedError(f"snnTorch has no counterpart of {kind}", field="type")


def _export_neuron(node: Node, strict: bool) -> tuple[nn.Module, dict[str, Any]]:
    import snntorch

    kind = node.type
    role: dict[str, Any] = {"type": kind}
    if getattr(node, "current_order", "new") == "previous":
        role["previous"] = True  # the net delays the input one step: exact, see the docstring
    if not node.spiking:
        role["readout"] = True
        if kind == "CubaLI":
            return snntorch.Synaptic(alpha=_t(node.alpha), beta=_t(node.beta),
                                     reset_mechanism="none", init_hidden=True, output=True), role
        beta = _t(node.beta) if kind == "LI" else torch.tensor(1.0)
        return snntorch.Leaky(beta=beta, reset_mechanism="none", init_hidden=True,
                              output=True), role

    cuba = kind == "CubaLIF"
    if node.reset == "subtract" and node.reset_timing == "same":
        _approximate(strict, "snnTorch's same-step subtraction (reset_delay=False) "
                     "subtracts the threshold again in the step after a reset that left "
                     "the membrane above threshold; reset_timing='next' (snnTorch's "
                     "default reset_delay=True) converts exactly", "reset_timing")
    mechanism, delay = node.reset, _reset_delay(node)
    common = {"threshold": _t(node.threshold), "reset_mechanism": mechanism,
              "reset_delay": delay, "init_hidden": True}
    if cuba:
        neuron = snntorch.Synaptic(alpha=_t(node.alpha), beta=_t(node.beta), **common)
        neuron.graded_spikes_factor = _t(node.amplitude)  # Synaptic's constructor omits it
        return neuron, role
    beta = _t(node.beta) if kind == "LIF" else torch.tensor(1.0)  # IF: 1 * v is exact
    return snntorch.Leaky(beta=beta, graded_spikes_factor=_t(node.amplitude), **common), role


def _reset_delay(node: Node) -> bool:
    """snnTorch's ``reset_delay`` for a spiking node: Synaptic zeroes the integrated membrane,
    so its delayed zero reset is the canonical same-step one with ``refractory=1``."""
    if node.type == "CubaLIF" and node.reset == "zero":
        return node.refractory == 1
    return node.reset_timing == "next"
