"""The ``nir`` format: NIR graphs (``nir.NIRGraph`` objects and ``.nir`` files).

NIR is continuous-time; the hub is discrete-time. With a time step ``dt``, forward Euler maps one
onto the other:

===================  ==========================================================================
NIR node             canonical node
===================  ==========================================================================
LIF(tau, r, ...)     LIF(beta = 1 - dt/tau, gain = dt*r/tau)
IF(r, ...)           IF(gain = dt*r)
CubaLIF(tau_syn,     CubaLIF(alpha = 1 - dt/tau_syn, current_gain = dt*w_in/tau_syn,
  tau_mem, r, w_in)    beta = 1 - dt/tau_mem, gain = dt*r/tau_mem, current_order="new")
LI, CubaLI, I        LI, CubaLI, Integrator, likewise
Delay(delay)         Delay(steps = delay/dt), which must be a whole number of steps
Affine, Linear,      the same, with integer padding ('same'/'valid' resolved)
Conv1d, Conv2d,
SumPool2d,
AvgPool2d, Flatten,
Scale, Threshold
Identity             Add
===================  ==========================================================================

and back: ``tau = dt/(1-beta)``, ``r = gain/(1-beta)``. NIR's own semantics apply to a file with
nothing else in it: spike when ``v > v_threshold``, reset to ``v_reset`` in the same step. A
current-based neuron's voltage sees this step's current, as snnTorch, Norse and SpikingJelly
write and read NIR; ``load(..., current_order="previous")`` reads it as forward Euler of both
equations instead. Import keeps the file's own values of what export would not give back bit
for bit (:mod:`hub_plugins.nir.source`), so NIR -> hub -> NIR returns the file's parameters.

Export keeps what NIR cannot hold (``dt``, the comparison, reset kind and timing, spike mode,
refractory and axonal delays, exact discrete parameters) in each node's metadata under
``"hub"``, and the graph's ``dt`` in the graph's metadata, so hub -> NIR -> hub gives back the
identical graph. On import that metadata is used only if it still agrees with the node's NIR
parameters (a tool that edited the file without updating it gets a warning and NIR's values).
Another NIR reader ignores the metadata and sees NIR's semantics: a ``>=`` or subtract-reset
neuron then behaves differently there, which ``hub check`` (the conformance suite) shows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hub
from hub.legalise import Accepts
from hub_plugins.nir.common import CARRIED, META, HubMetadataWarning  # noqa: F401  (public)
from hub_plugins.nir.common import CURRENT_ORDER, _check_current_order, _check_dt
from hub_plugins.nir.files import read_nir
from hub_plugins.nir.reading import _check_declared_shapes, _import_graph, _keep_source
from hub_plugins.nir.writing import _EXPORTERS, _export_graph


class NIRFormat(hub.Format):
    name = "nir"
    description = "Neuromorphic Intermediate Representation (NIRGraph objects, .nir files)"
    suffixes = (".nir",)
    requires = ("nir",)
    install_hint = "nir"
    load_options = ("dt", "current_order")
    save_options = ("dt",)
    # imports and exports: set from the conversion tables (reading.py, writing.py) below

    def recognizes(self, obj: Any) -> bool:
        import nir

        return isinstance(obj, nir.NIRGraph)

    def read(self, path: Path, dt: float | None = None,
             current_order: str = CURRENT_ORDER) -> hub.Graph:
        return self.load(read_nir(path), dt=dt, current_order=current_order)

    def load(self, obj: Any, dt: float | None = None,
             current_order: str = CURRENT_ORDER) -> hub.Graph:
        """``current_order`` is how a ``CubaLIF``/``CubaLI`` without snn-hub metadata is read:
        ``"new"`` (the voltage sees this step's synaptic current, as snnTorch, Norse and
        SpikingJelly read and write NIR) or ``"previous"`` (forward Euler of both equations)."""
        dt = _check_dt(dt) if dt is not None else None
        graph = _import_graph(obj, dt, current_order=_check_current_order(current_order))
        plan = graph.plan()
        _check_declared_shapes(obj, graph, plan)
        _keep_source(obj, graph, plan.input_shapes, "")
        return graph

    def export(self, graph: hub.Graph, dt: float | None = None) -> Any:
        dt = dt if dt is not None else graph.metadata.get("dt")
        dt = _check_dt(dt) if dt is not None else None
        plan = graph.plan()
        return _export_graph(graph, dt, plan.input_shapes, plan.output_shapes, "")

    def write(self, graph: hub.Graph, path: Path, dt: float | None = None) -> None:
        """Write a ``.nir`` file, its arrays uncompressed: ``nir.write``'s default, gzip, takes
        about five times as long as the rest of the write on trained (random-looking) float
        weights, for files a third smaller; an uncompressed file is also one any HDF5 reader
        can read without a filter."""
        import nir

        nir.write(path, self.export(graph, dt=dt), compression=None)

    def run(self, native: Any, x: Any, dt: float | None = None,
            current_order: str = CURRENT_ORDER) -> Any:
        """Run a NIR graph or ``.nir`` file in NIR's own runtime, :mod:`hub_plugins.nir.runtime`
        (an interpreter of NIR's equations, independent of the hub's simulator)."""
        from .runtime import run

        return run(native, x, dt=dt, current_order=current_order)


@hub.hookimpl
def hub_register_formats(register) -> None:
    register(NIRFormat())


# Every canonical type that has a NIR counterpart converts both ways.
NIRFormat.imports = NIRFormat.exports = frozenset(_EXPORTERS)
#: Every exported node keeps all its fields: what NIR cannot hold travels in the "hub" metadata.
NIRFormat.accepts = Accepts({tuple(sorted(_EXPORTERS)): ()}, name="NIR", notes=[
    "every field NIR has no place for travels in the node's 'hub' metadata"])
