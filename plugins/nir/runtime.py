"""NIR's native runtime: an interpreter of NIR graphs, for the conformance suite.

NIR has no runtime of its own, so the conformance suite needs one that reads a NIR graph the
way any NIR consumer would: from NIR's own parameters (``tau``, ``r``, ``v_leak``,
``v_threshold``, ``v_reset``, ``tau_syn``, ``tau_mem``, ``w_in``, ``weight``, ``bias``, ``scale``,
``delay``, ...), integrating NIR's continuous-time equations by forward Euler at the time step
``dt``. It is deliberately a second implementation of the arithmetic: it never builds canonical
neurons or calls their ``step``, so a mistake in the NIR mapping or in the reference simulator
shows up as a disagreement between the two.

**Structure from the hub, arithmetic from NIR.** Which edges are recurrent (carrying the
previous step's value) and the order nodes run in are a matter of definition, and the hub's
definition is the one conversions must agree with; so the runtime imports the graph with the
NIR plugin only to call :meth:`hub.Graph.plan` (order, forward and recurrent edges, shapes).
Everything a node computes comes from the NIR node itself. A node's input is the sum of its
incoming edges, forward ones from this step, then recurrent ones from the step before. Nested
NIR graphs run inlined (their inner ``Input``/``Output`` pass values through).

**The time step.** ``dt`` comes from the graph's metadata ``{"hub": {"dt": ...}}``, which
snn-hub writes on export, or from ``run(..., dt=)`` for a graph without it; with neither, the
runtime refuses to guess. Per-step factors (``dt/tau``, ``dt*r``) are computed in float64 and
cast to float32 once; the state and all arithmetic are float32.

**Neurons, forward Euler.** With input ``I`` (the summed edges) and ``k = dt/tau``:

=========  ======================================================================================
LIF, LI    ``v = v + k * ((v_leak - v) + r * I)``
IF, I      ``v = v + (dt * r) * I``
CubaLIF,   ``I_syn' = I_syn + k_syn * (w_in * I - I_syn)`` and
CubaLI     ``v = v + k_mem * ((v_leak - v) + r * I_syn')``: the voltage sees this step's
           current ``I_syn'``, as snnTorch, Norse and SpikingJelly compute NIR's CubaLIF, or
           the previous ``I_syn`` (forward Euler of both equations) with
           ``current_order="previous"`` or where the dialect says so
=========  ======================================================================================

``Delay`` delays by ``delay/dt`` steps (a whole number, else an error); ``Threshold``,
``Affine``, ``Linear``, ``Scale``, ``Conv1d``/``Conv2d`` (integer, ``'same'`` or ``'valid'``
padding), ``SumPool2d``/``AvgPool2d`` (zero padding, counted in the average), ``Flatten``,
``Identity``, ``Input`` and ``Output`` compute what their NIR definitions say.

**NIR's semantics, and the snn-hub dialect.** A node without snn-hub metadata follows NIR's
documented semantics: it spikes when ``v > v_threshold``, resets to ``v_reset`` in the same step,
and emits binary spikes. Discrete conventions NIR cannot hold are stored by snn-hub's exporter in
the node's metadata under ``"hub"``; they are part of the file (the snn-hub dialect of NIR), and
the runtime honours them:

- ``comparison`` (``">"``, ``">="``), also on ``Threshold``;
- ``reset`` (``"zero"`` to ``v_reset``, ``"subtract"`` the threshold, ``"none"``) and
  ``reset_timing`` (``"same"`` step, or ``"next"``: at the start of the next step, undecayed);
- ``spike_mode`` (``"binary"``, ``"multi"``: one spike per threshold multiple reached,
  ``"graded"``: the voltage), and ``amplitude`` (every output is multiplied by it);
- ``refractory`` (steps the voltage is held and silent after a spike) and ``delay`` (axonal
  delay of the output, in steps);
- ``current_order`` (``"new"``: the voltage sees this step's synaptic current, or
  ``"previous"``);
- ``v_init`` (the voltage before the first step; NIR has no initial state).

Only these conventions are read from the metadata; every continuous parameter comes from NIR's
own fields, so a file whose NIR parameters were edited runs with the edited values. The one
exception is a layer NIR has no node for (``ReLU``, ``Mul``, ``Concat``, ``MaxPool2d``, and
settings of the others that no NIR node computes, :mod:`hub_plugins.nir.layers`): it is written
as a unit ``Scale`` whose metadata names the layer and holds its parameters, and the runtime
computes that layer (a ``Mul`` or ``Concat`` takes its inputs as operands in edge order).
Metadata written for another node type is ignored with a warning. Anything else the runtime
cannot do raises a :class:`hub.HubError` naming the node and the field."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hub.errors import (
    FormatError,
    GraphError,
    HubError,
    ParameterError,
    ShapeError,
)
from hub_plugins.nir.common import (
    CURRENT_ORDER,
    META,
    HubMetadataWarning,
    _check_current_order,
    _check_dt,
    _plain,
)
from hub_plugins.nir.files import read_nir
from hub_plugins.nir.operations import DTYPE, _make_op, _Op
from hub_plugins.nir.reading import _import_graph

Tensors = torch.Tensor | dict[str, torch.Tensor]


def run(nir_graph: Any, x: Any, *, dt: float | None = None,
        current_order: str = CURRENT_ORDER) -> Tensors:
    """Run a NIR graph (a ``nir.NIRGraph`` or a ``.nir`` path) on a time-major input.

    ``x`` is ``[T, N, *in]`` (a tensor or an array), or a dict of them by input node name when
    the graph has several inputs. Returns a float32 tensor ``[T, N, *out]``, or a dict by output
    name for several outputs, like :func:`hub.simulate`. ``dt`` (seconds) is needed only for a
    graph whose metadata does not say which time step it was made for. ``current_order`` is
    the current a ``CubaLIF``/``CubaLI`` voltage sees where the node's metadata does not say:
    ``"new"`` (this step's, as snnTorch, Norse and SpikingJelly read NIR) or ``"previous"``.
    """
    path = None
    if isinstance(nir_graph, (str, os.PathLike)):
        path = Path(nir_graph)
    try:
        if path is not None:
            if not path.is_file():
                raise FormatError("no such file" if not path.exists() else "not a file")
            nir_graph = read_nir(path)
        return Runtime(nir_graph, dt=dt, current_order=current_order)(x)
    except HubError as e:
        raise e.at(file=path) if path is not None else e


def _graph_dt(nir_graph: Any, dt: float | None) -> float:
    """The time step: the graph's own (snn-hub metadata), else the one given, never a guess."""
    meta = _plain(getattr(nir_graph, "metadata", None) or {}).get(META)
    stored = meta.get("dt") if isinstance(meta, dict) else None
    if stored is not None:
        stored = _check_dt(stored)
        if dt is not None and not math.isclose(_check_dt(dt), stored, rel_tol=1e-12):
            raise ParameterError(f"the graph was made for dt={stored}, but dt={dt} was given; "
                                 "leave dt out to run it as made", field="dt")
        return stored
    if dt is None:
        raise FormatError("running a NIR graph needs a time step, and its metadata has none "
                          "(snn-hub writes {'hub': {'dt': ...}}); pass dt=<seconds>", field="dt")
    return _check_dt(dt)


def _nir_nodes(nir_graph: Any, prefix: str = "") -> dict[str, Any]:
    """Every non-graph NIR node by the dotted name :meth:`hub.Graph.flat` gives it."""
    import nir

    out = {}
    for name, node in nir_graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            out.update(_nir_nodes(node, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = node
    return out


class Runtime:
    """A NIR graph ready to run: the hub's plan, and one NIR operation per node."""

    def __init__(self, nir_graph: Any, *, dt: float | None = None,
                 current_order: str = CURRENT_ORDER) -> None:
        self.dt = _graph_dt(nir_graph, dt)
        current_order = _check_current_order(current_order)
        with warnings.catch_warnings():
            # the plugin warns about metadata it distrusts; the runtime reads its own below
            warnings.simplefilter("ignore", HubMetadataWarning)
            graph = _import_graph(nir_graph, self.dt)
        self.plan = graph.plan()
        flat = graph.flat()
        self.inputs, self.outputs = flat.inputs, flat.outputs
        self.operands = {n for n in self.plan.order if getattr(flat.nodes[n], "operands", False)}
        nodes = _nir_nodes(nir_graph)
        self.ops: dict[str, _Op] = {}
        for name in self.plan.order:
            try:
                self.ops[name] = _make_op(nodes[name], self.dt, self.plan.output_shapes[name],
                                          current_order)
            except HubError as e:
                raise e.at(node=name)

    def __call__(self, x: Any) -> Tensors:
        inputs = self._named(x)
        first = next(iter(inputs.values()))
        steps, batch = first.shape[:2]
        like = first  # device and dtype of the state
        states = {name: op.start(batch, like) for name, op in self.ops.items()}
        last = {name: like.new_zeros((batch, *self.plan.output_shapes[name]))
                for name in self.plan.order}
        results: dict[str, list[torch.Tensor]] = {name: [] for name in self.outputs}
        for t in range(steps):
            now: dict[str, torch.Tensor] = {}
            for name in self.plan.order:
                if name in inputs:
                    total = inputs[name][t]
                elif name in self.operands:  # separate operands, in edge order
                    total = tuple(now[s] for s in self.plan.forward[name])
                else:
                    sources = [now[s] for s in self.plan.forward[name]]
                    sources += [last[s] for s in self.plan.recurrent[name]]
                    if not sources:
                        raise GraphError("nothing feeds this node", node=name)
                    total = sources[0]
                    for value in sources[1:]:
                        total = total + value
                try:
                    now[name], states[name] = self.ops[name].step(total, states[name])
                except HubError as e:
                    raise e.at(node=name)
            last = now
            for name in self.outputs:
                results[name].append(now[name])
        out = {name: torch.stack(values) for name, values in results.items()}
        return out if len(out) > 1 else next(iter(out.values()))

    def _named(self, x: Any) -> dict[str, torch.Tensor]:
        """The input sequences by input name, as float32 ``[T, N, *shape]``, checked."""
        if isinstance(x, Mapping):
            if set(x) != set(self.inputs):
                raise HubError(f"the graph's inputs are {', '.join(self.inputs)}; got "
                               f"{', '.join(map(str, x))}")
            given = dict(x)
        elif len(self.inputs) == 1:
            given = {self.inputs[0]: x}
        else:
            raise HubError(f"the graph has {len(self.inputs)} inputs "
                           f"({', '.join(self.inputs)}); pass a dict of tensors by input name")
        out, lead = {}, None
        for name, value in given.items():
            value = torch.as_tensor(np.asarray(value) if not torch.is_tensor(value) else value)
            want = tuple(self.plan.output_shapes[name])
            if value.dim() != 2 + len(want) or tuple(value.shape[2:]) != want:
                raise ShapeError(f"expected input of shape [T, N, {', '.join(map(str, want))}]"
                                 f", got {list(value.shape)}", node=name)
            if lead is not None and tuple(value.shape[:2]) != lead:
                raise ShapeError("inputs disagree on the time or batch size", node=name)
            lead = tuple(value.shape[:2])
            out[name] = value.to(DTYPE)
        return out
