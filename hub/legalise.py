"""Legalisation: rewrite a graph into what a format accepts, by proven rewrites.

A format declares what it accepts (:class:`Accepts`: node types, a rule per field, the
topologies it builds). Before export, :func:`legalise` walks the graph and, for every node a
rule refuses, tries the rewrites below, each an identity between canonical graphs:

- **exact**: the rewritten graph computes bit-identical float32 values for every input;
- **float-equivalent**: it computes the same real numbers, so in float32 the two may part only
  where a voltage sits within rounding of a threshold (a threshold tie, which the float tier
  allows).

What was done is returned as a :class:`Report`. A node no rewrite can make acceptable is refused
with an :class:`~hub.errors.UnsupportedError` naming node, field and what the format accepts.
The identities, with their derivations, are in ``docs/legalise.md``; ``tests/test_legalise.py``
checks each classification on random graphs and inputs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from .errors import HubError, UnsupportedError
from .graph import Graph
from .node import Node, node_types

EXACT = "exact"
FLOAT = "float-equivalent"
#: The ``rewrites=`` levels of :func:`legalise`: which kinds of rewrite may be used.
LEVELS = ("none", EXACT, FLOAT)

_WEIGHTED = ("Affine", "Linear", "Conv1d", "Conv2d")


# -- what a format accepts --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Rule:
    """What a format accepts for one field: ``test(node)`` says whether ``node`` complies.

    ``says`` is what is accepted, as ``hub plugins --accepts`` prints it (``"'>'"``, ``"0"``);
    ``why`` is the format's reason, for the error when no rewrite helps.
    """

    field: str
    says: str
    test: Callable[[Node], bool]
    why: str = ""

    def __call__(self, node: Node) -> bool:
        if not hasattr(node, self.field) and self.field != "type":
            return True  # a rule about a field the node type does not have
        return bool(self.test(node))


def one_of(field: str, *values: Any, why: str = "") -> Rule:
    """The field (a choice or an integer) is one of ``values``."""
    return Rule(field, " or ".join(map(repr, values)),
                lambda n: getattr(n, field) in values, why)


def equal(field: str, value: float, why: str = "") -> Rule:
    """Every element of the array field is ``value``."""
    return Rule(field, f"{value:g}", lambda n: bool(np.all(getattr(n, field) == value)), why)


def between(field: str, low: float, high: float, why: str = "") -> Rule:
    """Every element of the array field lies in ``[low, high]``."""
    return Rule(field, f"in [{low:g}, {high:g}]", lambda n: bool(np.all(
        (getattr(n, field) >= low) & (getattr(n, field) <= high))), why)


def at_least(field: str, low: float, why: str = "") -> Rule:
    return Rule(field, f">= {low:g}", lambda n: bool(np.all(getattr(n, field) >= low)), why)


def uniform(field: str, why: str = "") -> Rule:
    """The array field holds one value for all neurons (no per-neuron values)."""
    def test(n: Node) -> bool:
        flat = np.asarray(getattr(n, field)).ravel()
        return flat.size > 0 and bool((flat == flat[0]).all())
    return Rule(field, "one value for all neurons", test, why)


def rule(field: str, says: str, test: Callable[[Node], bool], why: str = "") -> Rule:
    """Any condition on a node, reported against ``field``."""
    return Rule(field, says, test, why)


TOPOLOGIES = {
    "any": "any graph: skips, branches, concatenation, recurrence, subgraphs",
    "chain": "a feed-forward chain from one input to one output",
}


class Accepts:
    """What a format accepts: the node types it exports, rules per type, and topology.

    ``nodes`` maps a node type name, or a tuple of names sharing rules, to its rules (an empty
    tuple: any values). ``everything=True`` accepts every node type and value (formats such as
    NIR and the hub's own files that keep every field).
    """

    def __init__(self, nodes: Mapping[str | tuple[str, ...], Iterable[Rule]] | None = None, *,
                 topology: str = "any", everything: bool = False, notes: Iterable[str] = (),
                 name: str = "") -> None:
        if topology not in TOPOLOGIES:
            raise ValueError(f"topology must be one of {', '.join(TOPOLOGIES)}, got {topology!r}")
        self.rules: dict[str, list[Rule]] = {}
        for key, rules in (nodes or {}).items():
            for kind in (key,) if isinstance(key, str) else key:
                self.rules.setdefault(kind, []).extend(rules)
        self.topology = topology
        self.everything = everything
        self.notes = tuple(notes)
        #: how messages name the format ("NIR has no MaxPool2d node")
        self.name = name

    @classmethod
    def anything(cls, note: str = "") -> Accepts:
        return cls(everything=True, notes=(note,) if note else ())

    def accepts_type(self, kind: str) -> bool:
        return self.everything or kind in self.rules

    def violations(self, node: Node) -> list[Rule]:
        """The rules ``node`` breaks (a ``type`` rule when its type is not exported at all)."""
        if self.everything:
            return []
        if node.type not in self.rules:
            return [Rule("type", ", ".join(sorted(self.rules)), lambda n: False,
                         f"{self.name or 'the format'} has no {node.type} node")]
        return [r for r in self.rules[node.type] if not r(node)]

    def check(self, node: Node, name: str | None = None, skip: Iterable[str] = ()) -> None:
        """Raise :class:`UnsupportedError` for the first rule ``node`` breaks (but ``skip``)."""
        skipped = set(skip)
        for r in self.violations(node):
            if r.field not in skipped:
                raise _refusal(node, r, name)

    def describe(self) -> str:
        """A plain-text listing, one node type a paragraph, as ``hub plugins --accepts``."""
        if self.everything:
            lines = ["every node type, every field value"]
        else:
            free = sorted(k for k, rules in self.rules.items() if not rules)
            lines = [f"{', '.join(free)}: any values"] if free else []
            for kind in sorted(k for k in self.rules if self.rules[k]):
                lines.append(f"{kind}:")
                has = _fields(kind)
                for r in self.rules[kind]:
                    if has is not None and r.field not in has:
                        continue  # a rule shared with types that have the field
                    lines.append(f"  {r.field}: {r.says}" + (f"  ({r.why})" if r.why else ""))
        lines.append(f"topology: {TOPOLOGIES[self.topology]}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _fields(kind: str) -> set[str] | None:
    """The field names of node type ``kind``, or ``None`` if it is not registered."""
    cls = node_types().get(kind)
    return None if cls is None else {f.name for f in dataclasses.fields(cls)}


_TRIED = {(): "rewrites are off (rewrites='none')",
          (EXACT,): "no exact rewrite of the graph gives that (rewrites='exact')",
          (EXACT, FLOAT): "no exact or float-equivalent rewrite of the graph gives that",
          None: "no rewrite made it acceptable"}


def _refusal(node: Node, r: Rule, name: str | None,
             allowed: tuple[str, ...] | None = None) -> UnsupportedError:
    value = getattr(node, r.field, node.type)
    if isinstance(value, np.ndarray):
        shown = value.item() if value.size == 1 else \
            f"{np.unique(value)[:4].tolist()} ({value.size} values)"
    else:
        shown = value
    if r.field == "type" and r.test(node) is False and node.type not in r.says.split(", "):
        return UnsupportedError(f"{r.why}; supported types are {r.says}", node=name,
                                field="type")
    why = f" ({r.why})" if r.why else ""
    shown = shown if isinstance(shown, str) and shown.endswith("values)") else repr(shown)
    return UnsupportedError(f"{shown} is not accepted: the target takes {r.says}{why}, and "
                            f"{_TRIED.get(allowed, _TRIED[None])}",
                            node=name, field=r.field)


# -- the report -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Rewrite:
    """One rewrite applied: at which node, which identity, its classification, what changed."""

    node: str
    name: str
    kind: str  # EXACT or FLOAT
    detail: str
    touches: tuple[str, ...] = ()  # every node the rewrite changed

    def __str__(self) -> str:
        return f"{self.node}: {self.name} ({self.kind}): {self.detail}"


@dataclasses.dataclass
class Report:
    """What legalisation did to reach a target: the rewrites, in the order applied."""

    target: str = ""
    rewrites: list[Rewrite] = dataclasses.field(default_factory=list)

    @property
    def exact(self) -> bool:
        """Whether every rewrite is exact (the result is bit-identical for every input)."""
        return all(r.kind == EXACT for r in self.rewrites)

    def __iter__(self) -> Iterator[Rewrite]:
        return iter(self.rewrites)

    def __len__(self) -> int:
        return len(self.rewrites)

    def __str__(self) -> str:
        to = f" to {self.target!r}" if self.target else ""
        if not self.rewrites:
            return f"conversion{to}: no rewrites needed"
        kind = "exact" if self.exact else "float-equivalent (only threshold ties may differ)"
        return "\n".join([f"conversion{to}: {len(self.rewrites)} rewrite(s), {kind}",
                          *(f"  {r}" for r in self.rewrites)])


# -- the rewrites -----------------------------------------------------------------------------


def _f32(value: Any) -> np.ndarray:
    return np.asarray(value, dtype=np.float32)


def _power_of_two(value: np.ndarray) -> bool:
    """Whether every element is +-2**k (scaling by it commutes with float32 rounding)."""
    a = np.abs(_f32(value)).astype(np.float64)
    if not (a > 0).all():
        return False
    mantissa, _ = np.frexp(a)
    # a normal float32 whose scaled values stay normal: 2**-100 .. 2**100 is ample
    return bool((mantissa == 0.5).all() and (a > 2.0 ** -100).all() and (a < 2.0 ** 100).all())


@dataclasses.dataclass(frozen=True)
class _Step:
    """A rewrite rule: which fields it repairs and how (``apply`` returns None where it cannot)."""

    name: str
    fixes: tuple[str, ...]
    apply: Callable[[Graph, str, Node], tuple[str, str] | None]


def _zero_reset_same_step(g: Graph, name: str, node: Node) -> tuple[str, str] | None:
    """reset="zero" in the next step sets v = v_reset before the decay; in the same step it sets
    it after the spike. Either way the next integration starts from v_reset, and the spike test
    of the step itself sees the unreset voltage: the same float operations."""
    if not node.spiking or node.reset != "zero" or node.reset_timing != "next":
        return None
    g.nodes[name] = node.replace(reset_timing="same")
    return EXACT, ("reset_timing 'next' -> 'same' (a zero reset before or after the step is the "
                   "same state)")


def _zero_reset_next_step(g: Graph, name: str, node: Node) -> tuple[str, str] | None:
    """The inverse of :func:`_zero_reset_same_step` (no refractory period)."""
    if not node.spiking or node.reset != "zero" or node.reset_timing != "same" or node.refractory:
        return None
    g.nodes[name] = node.replace(reset_timing="next")
    return EXACT, ("reset_timing 'same' -> 'next' (a zero reset before or after the step is the "
                   "same state)")


def _plain(node: Node) -> bool:
    """Whether ``node`` is a spiking neuron of the IF/LIF family (``spike_mode`` and all): the
    voltage identities below scale or shift its voltage, threshold and reset, which is not all
    the state of an adaptive or resonating neuron (its threshold step, imag_reset...)."""
    return bool(node.spiking) and hasattr(node, "spike_mode")


def _leaky(node: Node) -> bool:
    return bool(getattr(node, "leaky", False))


def _subtract_same_step(g: Graph, name: str, node: Node) -> tuple[str, str] | None:
    """Next-step subtraction ``v = L + b(v - L) + g*u - th*s_prev`` is a same-step subtraction
    of ``th/b`` (decayed by ``b`` to ``th``), compared against ``th/b`` after shifting the
    voltage by ``a = th/b - th``: ``w = v + a``, ``v_leak + a``, ``v_init + a``."""
    if (not node.spiking or node.reset != "subtract" or node.reset_timing != "next"
            or node.spike_mode != "binary"):
        return None
    if not _leaky(node) or bool(np.all(node.beta == 1)):
        g.nodes[name] = node.replace(reset_timing="same")
        return EXACT, ("reset_timing 'next' -> 'same' (without decay an undecayed subtraction "
                       "is the same-step one)")
    if not bool(np.all(node.beta > 0)):
        return None
    beta = node.beta.astype(np.float64)
    th = node.threshold.astype(np.float64)
    big = _f32(th / beta)
    shift = _f32(big.astype(np.float64) - th)
    g.nodes[name] = node.replace(reset_timing="same", threshold=big,
                                 v_leak=_f32(node.v_leak + shift), v_init=_f32(node.v_init + shift))
    return FLOAT, (f"reset_timing 'next' -> 'same': subtracts threshold/beta "
                   f"({_show(big)}) in the spiking step, voltage shifted by {_show(shift)} "
                   "(v_leak, v_init)")


def _subtract_next_step(g: Graph, name: str, node: Node) -> tuple[str, str] | None:
    """The inverse of :func:`_subtract_same_step`: a same-step subtraction of ``T`` is a
    next-step subtraction of ``th = b*T`` with the voltage shifted by ``-a``, ``a = T(1 - b)``.
    Where ``v_init`` already is ``a`` (up to rounding: it came from the forward rewrite) the
    shift is ``v_init`` itself, so the voltage starts at 0."""
    if (not node.spiking or node.reset != "subtract" or node.reset_timing != "same"
            or node.spike_mode != "binary" or node.refractory):
        return None
    if not _leaky(node) or bool(np.all(node.beta == 1)):
        g.nodes[name] = node.replace(reset_timing="next")
        return EXACT, ("reset_timing 'same' -> 'next' (without decay the subtraction need not "
                       "be decayed)")
    if not bool(np.all(node.beta > 0)):
        return None
    big = node.threshold.astype(np.float64)
    beta = node.beta.astype(np.float64)
    real = big * (1 - beta)
    init = node.v_init.astype(np.float64)
    close = np.abs(init - real) <= 8 * np.spacing(_f32(np.maximum(np.abs(big), 1e-30)))
    shift = np.where(close, init, _f32(real)).astype(np.float64)
    th = _f32(big - shift)
    g.nodes[name] = node.replace(reset_timing="next", threshold=th,
                                 v_leak=_f32(node.v_leak - shift), v_init=_f32(init - shift))
    return FLOAT, (f"reset_timing 'same' -> 'next': subtracts {_show(th)} = threshold*beta in "
                   f"the next step, voltage shifted by {_show(-shift)} (v_leak, v_init)")


def _comparison(g: Graph, name: str, node: Node) -> tuple[str, str] | None:
    """``v >= t`` is ``v > nextafter(t, -inf)`` and ``v > t`` is ``v >= nextafter(t, +inf)``
    for every float32 ``v``. Exact unless the reset subtracts the threshold, which then moves
    by one ulp (float-equivalent)."""
    if not hasattr(node, "comparison") or getattr(node, "spike_mode", "binary") == "multi":
        return None
    to, way = (">", -np.inf) if node.comparison == ">=" else (">=", np.inf)
    moved = np.nextafter(_f32(node.threshold), np.float32(way)).astype(np.float32)
    g.nodes[name] = node.replace(comparison=to, threshold=moved)
    subtracts = getattr(node, "reset", "") == "subtract"
    kind = FLOAT if subtracts else EXACT
    extra = "; the subtracted threshold moves by one ulp" if subtracts else ""
    return kind, f"comparison {node.comparison!r} -> {to!r} on threshold {_show(moved)}{extra}"


def _current_gain_into_gain(g: Graph, name: str, node: Node) -> tuple[str, str] | None:
    """Scaling the current by ``1/current_gain`` (it starts at 0) moves the input gain of the
    current into the gain of the current into the voltage."""
    if not getattr(node, "current", False) or bool(np.all(node.current_gain == 1)):
        return None
    cg = node.current_gain
    if not bool(np.all(cg != 0)):
        return None
    gain = _f32(node.gain.astype(np.float64) * cg.astype(np.float64))
    g.nodes[name] = node.replace(current_gain=np.float32(1.0), gain=gain)
    exact = _power_of_two(cg)
    return (EXACT if exact else FLOAT), (f"current_gain {_show(cg)} -> 1, gain -> {_show(gain)} "
                                         "(the current scaled by 1/current_gain)")


def _gain_into_threshold(g: Graph, name: str, node: Node) -> tuple[str, str] | None:
    """Scaling the voltage by ``1/gain`` (``gain > 0``) makes the gain 1 and divides threshold,
    v_reset, v_leak and v_init by it: the spike tests compare the same real numbers."""
    if not _plain(node) or node.spike_mode == "graded" or bool(np.all(node.gain == 1)):
        return None
    gain = node.gain.astype(np.float64)
    if not bool(np.all(gain > 0)):
        return None

    def scaled(value: np.ndarray) -> np.ndarray:
        return _f32(value.astype(np.float64) / gain)

    changes = {"gain": np.float32(1.0), "threshold": scaled(node.threshold),
               "v_reset": scaled(node.v_reset), "v_init": scaled(node.v_init)}
    if _leaky(node):
        changes["v_leak"] = scaled(node.v_leak)
    g.nodes[name] = node.replace(**changes)
    exact = _power_of_two(node.gain)
    return (EXACT if exact else FLOAT), (f"gain {_show(node.gain)} -> 1: the voltage scaled by "
                                         f"1/gain, threshold -> {_show(changes['threshold'])}")


def _gain_into_current_gain(g: Graph, name: str, node: Node) -> tuple[str, str] | None:
    """The inverse of :func:`_current_gain_into_gain`: scaling the current by ``gain`` moves
    the gain into the voltage into the input gain of the current (readouts included: the
    voltage is untouched)."""
    if not getattr(node, "current", False) or bool(np.all(node.gain == 1)):
        return None
    if not bool(np.all(node.gain != 0)):
        return None
    cg = _f32(node.current_gain.astype(np.float64) * node.gain.astype(np.float64))
    g.nodes[name] = node.replace(gain=np.float32(1.0), current_gain=cg)
    exact = _power_of_two(node.gain)
    return (EXACT if exact else FLOAT), (f"gain {_show(node.gain)} -> 1, current_gain -> "
                                         f"{_show(cg)} (the current scaled by gain)")


def _input_gain_into_weights(g: Graph, name: str, node: Node) -> tuple[str, str] | None:
    """``gain * (W x + b)`` is ``(gain W) x + gain b``: the input gain (``current_gain`` of a
    current-based neuron, else ``gain``) folds into the weights and bias of the layer before,
    when that layer feeds only this neuron; readouts and graded spikes included."""
    field = "current_gain" if getattr(node, "current", False) else "gain"
    value = getattr(node, field, None)
    if value is None or bool(np.all(value == 1)):
        return None
    source = _only_source(g, name)
    layer = g.nodes.get(source) if source else None
    if layer is None or getattr(layer, "type", "") not in _WEIGHTED:
        return None
    per = _channels(value, layer)
    if per is None:
        return None
    shape = (-1,) + (1,) * (layer.weight.ndim - 1)
    changes: dict[str, Any] = {
        "weight": _f32(layer.weight.astype(np.float64) * per.astype(np.float64).reshape(shape))}
    if layer.type != "Linear":
        changes["bias"] = _f32(np.broadcast_to(layer.bias, per.shape).astype(np.float64)
                               * per.astype(np.float64))
    g.nodes[source] = layer.replace(**changes)
    g.nodes[name] = node.replace(**{field: np.float32(1.0)})
    exact = _power_of_two(per)
    return (EXACT if exact else FLOAT), (f"{field} {_show(value)} -> 1: folded into the weights "
                                         f"and bias of {source!r}")


def _offset(g: Graph, name: str, node: Node) -> tuple[str, str] | None:
    """Shifting the voltage by ``c``, ``w = v - c``, subtracts ``c`` from threshold, v_reset,
    v_leak and v_init: the spike tests compare the same real numbers. ``c`` is the reset
    potential (else the start), so that a target that resets to 0, starts at 0 or decays to 0
    gets it; a rest potential left behind moves into the bias (leak-into-bias). Not with a
    subtractive reset (the amount subtracted would move with the threshold) or graded spikes."""
    if not _plain(node) or node.reset == "subtract" or node.spike_mode == "graded":
        return None
    c = node.v_reset if node.reset == "zero" and bool(np.any(node.v_reset != 0)) else node.v_init
    if not bool(np.any(c != 0)):
        return None
    c64 = c.astype(np.float64)

    def moved(value: np.ndarray) -> np.ndarray:
        return _f32(value.astype(np.float64) - c64)

    changes = {"threshold": moved(node.threshold), "v_reset": moved(node.v_reset),
               "v_init": moved(node.v_init)}
    if _leaky(node):
        changes["v_leak"] = moved(node.v_leak)
    g.nodes[name] = node.replace(**changes)
    return FLOAT, f"voltage shifted by {_show(-c)} (threshold, v_reset, v_leak, v_init)"


def _only_source(g: Graph, name: str) -> str | None:
    """The one node feeding ``name``, if that node feeds nothing else."""
    sources = [a for a, b in g.edges if b == name]
    if len(sources) != 1:
        return None
    source = sources[0]
    if [b for a, b in g.edges if a == source] != [name]:
        return None
    return source


def _channels(value: np.ndarray, node: Node) -> np.ndarray | None:
    """``value`` (per neuron or a scalar) as one value per output channel of ``node``."""
    out = node.weight.shape[0]
    value = _f32(value)
    if value.size == 1:
        return np.broadcast_to(value.reshape(()), (out,))
    if node.type in ("Affine", "Linear") and value.shape == (out,):
        return value
    if value.ndim >= 1 and value.shape[0] == out:
        per = value.reshape(out, -1)
        if bool((per == per[:, :1]).all()):
            return per[:, 0].copy()
    return None


def _leak_into_bias(g: Graph, name: str, node: Node) -> tuple[str, str] | None:
    """``v = L + b(v - L) + g*u`` is ``v = b*v + g*(u + (1 - b)L/g)``: a rest potential ``L``
    is a constant input, added to the bias of the layer before (which feeds only this neuron)."""
    if node.type not in ("LIF", "LI") or bool(np.all(node.v_leak == 0)):
        return None
    if not bool(np.all(node.gain != 0)):
        return None
    source = _only_source(g, name)
    layer = g.nodes.get(source) if source else None
    if layer is None or getattr(layer, "type", "") not in _WEIGHTED:
        return None
    extra = ((1 - node.beta.astype(np.float64)) * node.v_leak.astype(np.float64)
             / node.gain.astype(np.float64))
    per = _channels(_f32(extra), layer)
    if per is None:
        return None
    if layer.type == "Linear":
        from .nodes import Affine
        layer = Affine(weight=layer.weight, bias=np.float32(0.0))
    bias = np.broadcast_to(layer.bias, per.shape).astype(np.float64) + per.astype(np.float64)
    g.nodes[source] = layer.replace(bias=_f32(bias))
    g.nodes[name] = node.replace(v_leak=np.float32(0.0))
    return FLOAT, (f"v_leak {_show(node.v_leak)} -> 0: the constant (1-beta)*v_leak/gain added "
                   f"to the bias of {source!r}")


def _scale_into_weights(g: Graph, name: str, node: Node) -> tuple[str, str] | None:
    """``y = s * (W x + b)`` is ``(s W) x + s b``: a ``Scale`` after a weighted layer that
    feeds only it folds into that layer's weights and bias (per output channel), and the node
    goes away."""
    if node.type != "Scale":
        return None
    source = _only_source(g, name)
    layer = g.nodes.get(source) if source else None
    if layer is None or getattr(layer, "type", "") not in _WEIGHTED:
        return None
    per = _channels(node.scale, layer)
    if per is None:
        return None
    shape = (-1,) + (1,) * (layer.weight.ndim - 1)
    weight = _f32(layer.weight.astype(np.float64) * per.astype(np.float64).reshape(shape))
    changes: dict[str, Any] = {"weight": weight}
    if layer.type != "Linear":
        changes["bias"] = _f32(np.broadcast_to(layer.bias, per.shape).astype(np.float64)
                               * per.astype(np.float64))
    g.nodes[source] = layer.replace(**changes)
    del g.nodes[name]
    g.edges = [(source if a == name else a, b) for a, b in g.edges if b != name]
    exact = _power_of_two(per)
    return (EXACT if exact else FLOAT), (f"scale {_show(node.scale)} folded into the weights and "
                                         f"bias of {source!r}")


def _only_target(g: Graph, name: str) -> str | None:
    """The one node ``name`` feeds, if ``name`` is all that feeds it."""
    targets = [b for a, b in g.edges if a == name]
    if len(targets) != 1:
        return None
    target = targets[0]
    if [a for a, b in g.edges if b == target] != [name]:
        return None
    return target


def _input_factors(value: np.ndarray, layer: Node) -> np.ndarray | None:
    """``value`` (a scalar, or per input of ``layer``) as the factor of each of the layer's
    weights that multiplies that input: per column of a dense layer, per input channel of a
    convolution (its groups included), shaped ``[out or 1, in/groups, 1...]``."""
    weight = layer.weight
    value = _f32(value)
    if value.size == 1:
        return value.reshape((1,) * weight.ndim)
    if layer.type in ("Affine", "Linear"):
        return value.reshape(1, -1) if value.shape == (weight.shape[1],) else None
    groups = layer.groups
    channels = weight.shape[1] * groups
    if value.ndim != weight.ndim - 1 or value.shape[0] != channels:
        return None
    per = value.reshape(channels, -1)
    if not bool((per == per[:, :1]).all()):  # a convolution slides one weight over positions
        return None
    per = per[:, 0].reshape(groups, weight.shape[1])  # [group, channel in the group]
    group_of_out = np.arange(weight.shape[0]) // (weight.shape[0] // groups)
    return per[group_of_out].reshape(weight.shape[:2] + (1,) * (weight.ndim - 2))


def _scale_into_next_weights(g: Graph, name: str, node: Node) -> tuple[str, str] | None:
    """``W (s x) + b`` is ``(W diag(s)) x + b``: a ``Scale`` that feeds only a weighted layer,
    and is all that feeds it, folds into that layer's weights (per input feature or input
    channel; the bias stays), and the node goes away. Exact where ``s`` is a power of two
    (``w * (s * x)`` and ``(w * s) * x`` then round alike), float-equivalent otherwise."""
    if node.type != "Scale":
        return None
    target = _only_target(g, name)
    layer = g.nodes.get(target) if target else None
    if layer is None or getattr(layer, "type", "") not in _WEIGHTED:
        return None
    factors = _input_factors(node.scale, layer)
    if factors is None:
        return None
    weight = _f32(layer.weight.astype(np.float64) * factors.astype(np.float64))
    g.nodes[target] = layer.replace(weight=weight)
    del g.nodes[name]
    g.edges = [(a, target if b == name else b) for a, b in g.edges if a != name]
    exact = _power_of_two(node.scale)
    return (EXACT if exact else FLOAT), (f"scale {_show(node.scale)} folded into the weights of "
                                         f"{target!r} after it")


def _show(value: Any) -> str:
    a = np.asarray(value)
    if a.size == 1:
        return f"{a.item():.9g}"
    return f"<{a.size} values>"


#: Rewrites in the order they are tried on a refused field.
STEPS: tuple[_Step, ...] = (
    _Step("zero-reset-same-step", ("reset_timing",), _zero_reset_same_step),
    _Step("zero-reset-next-step", ("reset_timing", "refractory"), _zero_reset_next_step),
    _Step("subtract-reset-same-step", ("reset_timing",), _subtract_same_step),
    _Step("subtract-reset-next-step", ("reset_timing",), _subtract_next_step),
    _Step("comparison-next-float", ("comparison",), _comparison),
    _Step("current-gain-into-gain", ("current_gain",), _current_gain_into_gain),
    _Step("gain-into-threshold", ("gain",), _gain_into_threshold),
    _Step("gain-into-current-gain", ("gain",), _gain_into_current_gain),
    _Step("input-gain-into-weights", ("gain", "current_gain"), _input_gain_into_weights),
    _Step("leak-into-bias", ("v_leak",), _leak_into_bias),
    _Step("voltage-offset", ("v_reset", "v_init", "v_leak"), _offset),
    _Step("scale-into-weights", ("type",), _scale_into_weights),
    _Step("scale-into-next-weights", ("type",), _scale_into_next_weights),
)


# -- the pass ---------------------------------------------------------------------------------


def legalise(graph: Graph, accepts: Accepts | None, *, target: str = "",
             rewrites: str = FLOAT, strict: bool = True) -> tuple[Graph, Report]:
    """``graph`` rewritten into what ``accepts`` allows, and the report of what was done.

    ``rewrites`` says which rewrites may be used: ``"float-equivalent"`` (the default: exact
    and float-equivalent ones), ``"exact"`` (bit-identical ones only) or ``"none"``. A node that
    stays refused raises :class:`UnsupportedError` naming node and field (``strict=False``
    leaves it to the exporter, which may approximate it). The graph itself is not changed: a
    rewritten graph is a flattened copy; with nothing to do, ``graph`` itself is returned.
    """
    if rewrites not in LEVELS:
        raise HubError(f"rewrites must be one of {', '.join(map(repr, LEVELS))}, got "
                       f"{rewrites!r}", field="rewrites")
    report = Report(target)
    if accepts is None or accepts.everything:
        return graph, report
    refused = [(name, node) for name, node in graph.walk() if accepts.violations(node)]
    if not refused:
        return graph, report
    flat = graph.flat()
    g = _copy(flat)
    allowed = _ALLOWED[rewrites]
    for name in list(g.nodes):
        if name in g.nodes:  # not folded away by a rewrite of a node before it
            _legalise_node(g, name, accepts, allowed, report, strict)
    # the node each rewritten node was, where a rewrite of that node alone made it (an exporter
    # may record it, so that importing the export gives the original graph back)
    touched = {n for r in report for n in r.touches}
    setattr(g, ORIGINS, {r.node: flat.nodes[r.node] for r in report
                         if r.node in flat.nodes and touched & set(r.touches) == {r.node}
                         and all(set(o.touches) == {r.node} for o in report
                                 if r.node in o.touches)})
    return g, report


#: Attribute of a legalised graph: node name -> the node it was before its own rewrites.
ORIGINS = "legalised_from"
_ALLOWED = {"none": (), EXACT: (EXACT,), FLOAT: (EXACT, FLOAT)}


def legalise_node(node: Node, accepts: Accepts, rewrites: str = FLOAT) -> Node:
    """``node`` rewritten by the rewrites that need no neighbours, as :func:`legalise` would
    (an :class:`UnsupportedError` where they do not suffice)."""
    g = Graph()
    g.nodes["node"] = node
    _legalise_node(g, "node", accepts, _ALLOWED[rewrites], Report(), True)
    return g.nodes["node"]


def _legalise_node(g: Graph, name: str, accepts: Accepts, allowed: tuple[str, ...],
                   report: Report, strict: bool) -> None:
    """Rewrite node ``name`` of ``g`` (in place) until the format accepts it.

    A depth-first search over the rewrites (each used at most once per node) for a sequence
    after which no rule refuses the node; the first found in the order of :data:`STEPS` wins.
    Without one: refused (``strict``), or the sequence that leaves the fewest refused fields,
    if fewer than before, for the exporter to approximate the rest.
    """
    before = len(accepts.violations(g.nodes[name]))
    if not before:
        return
    found, best = _search(g, name, accepts, allowed, frozenset())
    if found is None and not strict and best is not None and best[0] < before:
        found = best[1:]
    if found is None:
        if strict:
            # name what no rewrite could repair: the first rule the best attempt still breaks
            node = g.nodes[name]
            closest = best[1].nodes.get(name) if best is not None else None
            left = accepts.violations(closest) if closest is not None else []
            first = accepts.violations(node)
            still = [r for r in first if r.field in {v.field for v in left}] or first
            raise _refusal(node, still[0], name, allowed)
        return
    done, rewrites = found
    g.nodes, g.edges = done.nodes, done.edges
    report.rewrites.extend(rewrites)


_Found = tuple[Graph, list[Rewrite]]


def _search(g: Graph, name: str, accepts: Accepts, allowed: tuple[str, ...],
            tried: frozenset[str]) -> tuple[_Found | None, tuple[int, Graph, list] | None]:
    """A rewrite sequence making ``name`` acceptable (``None`` if none), and the best partial
    one as ``(refused fields, graph, rewrites)``."""
    node = g.nodes.get(name)
    bad = accepts.violations(node) if node is not None else []
    if not bad:
        return (g, []), (0, g, [])
    best: tuple[int, Graph, list] | None = (len(bad), g, [])
    if _fixed_point(node):
        return None, best
    fields = {r.field for r in bad}
    for step in STEPS:
        if step.name in tried or not fields & set(step.fixes):
            continue
        trial = _copy(g)
        outcome = _try(step, trial, name)
        if outcome is None or outcome[0] not in allowed:
            continue
        now = ({r.field for r in accepts.violations(trial.nodes[name])}
               if name in trial.nodes else set())
        neighbours_ok = all(not accepts.violations(trial.nodes[n]) or
                            accepts.violations(g.nodes[n])
                            for n in trial.nodes if n != name and n in g.nodes)
        if not fields & set(step.fixes) - now or not neighbours_ok:
            continue
        changed = tuple(n for n in {**g.nodes, **trial.nodes}
                        if trial.nodes.get(n) is not g.nodes.get(n))
        rewrite = Rewrite(name, step.name, outcome[0], outcome[1], changed)
        found, partial = _search(trial, name, accepts, allowed, tried | {step.name})
        if found is not None:
            return (found[0], [rewrite, *found[1]]), None
        if partial is not None and (best is None or partial[0] < best[0]):
            best = (partial[0], partial[1], [rewrite, *partial[2]])
    return None, best


def _fixed_point(node: Node | None) -> bool:
    """Whether ``node`` computes in Loihi's integers: the rewrites are identities of float
    arithmetic (rounding toward zero, shifts and 12-bit decays are not), so none applies."""
    from .loihi import LoihiCUBA

    return isinstance(node, LoihiCUBA) or getattr(node, "arithmetic", "float") == "fixed"


def _try(step: _Step, g: Graph, name: str) -> tuple[str, str] | None:
    try:
        return step.apply(g, name, g.nodes[name])
    except HubError:  # the rewritten node is invalid (a check of its own refuses it)
        return None


def _copy(g: Graph) -> Graph:
    out = Graph(metadata=dict(g.metadata))
    out.nodes = dict(g.nodes)
    out.edges = list(g.edges)
    return out
