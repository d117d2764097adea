"""The ``netx`` format: lava-dl's netx hdf5 network description, for Loihi.

A netx file (written by slayer's ``block.*.export_hdf5``, run by ``lava.lib.dl.netx.hdf5.Network``)
is a group ``layer`` with subgroups ``0, 1, ...``, one per layer, in order. Each layer is a
synapse and a neuron group; read and written here with h5py only (no Lava needed):

=============  ===================================================  ==========================
layer type     keys (dtypes as slayer writes them)                  canonical nodes
=============  ===================================================  ==========================
``input``      ``type`` (S10 [1]), ``shape`` (int64, torch order    ``Input(shape)``, then its
               ``[C, H, W]`` or ``[N]``), optional ``neuron/*``,      ``LoihiCUBA`` if it has
               ``weight``, ``bias`` (netx's input transform)          a neuron group
(none)         slayer's ``export_hdf5`` writes no input layer       ``Input`` of the first
                                                                    layer's input size
``dense``      ``shape`` ``[out]``, ``inFeatures``, ``outFeatures``,  ``Linear(weight)`` (or
               ``weight`` float32 ``[out, in]`` (integers),          ``Affine``) ->
               ``bias`` (optional), ``neuron/*``                     ``LoihiCUBA``
``dense_rec``  as ``dense`` plus ``weight_rec`` ``[out, out]``       the same, plus a recurrent
                                                                    ``Linear(weight_rec)``
``conv``       ``shape`` ``[C, H, W]``, ``weight`` float32            ``Conv2d`` -> ``LoihiCUBA``
               ``[out, in/groups, kh, kw]`` (torch's layout: netx
               flips and transposes it to Lava's XYC), ``stride``,
               ``padding``, ``dilation`` ``[h, w]``, ``groups``,
               ``inChannels``, ``outChannels``, ``kernelSize``
``pool``       slayer's pool block: ``weight`` ``[1, 1, kh, kw]``,     depthwise ``Conv2d`` ->
               ``kernelSize``, ``stride``, ``padding``, ``dilation``  ``LoihiCUBA`` (read only)
``flatten``    ``shape``                                            ``Flatten()``
=============  ===================================================  ==========================

A ``dense`` layer with ``weight/real``, ``weight/imag`` and an ``RF_PHASE`` or ``RF_IZHIKEVICH``
neuron (netx's ``ComplexDense`` into Lava's ``RF``/``RF_IZ``) is a ``Linear`` of the stacked
weights into a :class:`hub.Resonator` (:mod:`.resonators`).

The neuron group ``neuron/``: ``type`` (``CUBA`` or ``LOIHI``), ``iDecay``, ``vDecay``,
``vThMant``, ``refDelay``, ``gradedSpike`` (scalars) maps onto :class:`hub.LoihiCUBA`
(``i_decay``, ``v_decay``, ``threshold``); a layer's ``bias`` becomes the neuron's bias mantissa
with ``bias_exp = 6``, which is what netx passes to Lava's LIF. netx ignores ``refDelay`` and
``gradedSpike`` (its LIF has neither), so a file asking for a refractory period
(``refDelay > 1``) or graded spikes is refused rather than silently run without.

An ``IF`` neuron that Loihi's neuron reproduces exactly (``>``, reset to zero, gain 1, an integer
threshold: :func:`exact_loihi`) is written as one. What netx 0.6 cannot run is refused when
writing, with :class:`hub.UnsupportedError` naming the node and field: other float neurons
(convert them with ``quantize=True``, or ``strict=False``, which also warns), per-neuron decays and
thresholds (netx's LIF takes one value per layer), refractory periods, graded spikes, delays
netx cannot hold (below), weights that are not integers or that netx's ``optimize_weight_bits``
would change (8-bit mantissa and exponent), and any topology other than a chain of layers (plus
a layer's own recurrence). Pooling, which netx 0.6 refuses (``create_pool`` raises
``NotImplementedError``), is written as what netx runs: a ``SumPool2d`` followed by a neuron
becomes a depthwise ``conv`` layer with unit weights, and a ``SumPool2d`` followed by ``Flatten``
and a dense layer is folded into that layer's weights; both are exact integer rewrites.

A :class:`hub.LoihiCUBA`'s axonal ``delay`` ``d`` is written as the input delays of the dense
layer its spikes reach (its ``delay`` key, float32 ``[in]`` filled with ``d``): Lava's
``DelayDense`` delivers a synapse with delay ``d`` exactly ``d`` steps after one without, so the
two are the same network (``read._delays``, ``docs/loihi.md``). A uniform ``delay`` key is
read back as the previous neuron's delay. Delays that differ per input (``[in]``, or an
``[out, in]`` matrix of equal rows) are a ``Delay`` on the previous output, per output neuron
(slayer's ``delay=True`` export) a ``Delay`` after the layer's neuron, and a matrix of their
sums both; a per-neuron ``Delay`` is written back as either. A matrix that delays single
synapses, a delay on the last neuron layer, into a conv or ``dense_rec`` layer, or above 62 are
refused. Sigma-delta and resonator neurons hold no delay, nor does the network's input: a
``Delay`` node after one is written the same way and read back as such a node; netx's RF layers
(``ComplexDense``) read no ``delay`` key, so delays into them are refused.

A file written here carries hdf5 attributes under ``hub.*`` (which netx ignores) that say which
canonical node a layer came from (``hub.folded``: the nodes folded into a dense layer, restored on
reading while they still fold to the file's weights), so hub -> netx -> hub gives back the
identical graph.

``run(path, x)`` runs the file in Lava's netx on the Loihi fixed-point simulator through
``hub_plugins.lava.run_netx`` (the Lava environment ``.venv-lava``); see ``docs/loihi.md``.

The package: :mod:`.schema` (the file's keys and limits), :mod:`.read` (file to graph),
:mod:`.write` (graph to layers, and what netx runs exactly), :mod:`.quantization` (float neurons
to Loihi's), :mod:`.resonators` (RF layers); this module holds the format.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import h5py
import numpy as np

import hub
import hub.hdf5
from hub.errors import HubError
from hub_plugins.netx import quantization
from hub_plugins.netx.accepts import ACCEPTS
from hub_plugins.netx.quantization import QuantizationWarning, _summary, quantize
from hub_plugins.netx.read import _read
from hub_plugins.netx.schema import (
    ATTR_BIAS, ATTR_FOLDED, ATTR_METADATA, ATTR_NEURON, ATTR_OP, DEFAULT_NEURON, INPUT_TRANSFORM,
    MAX_DELAY, NETX_BIAS_EXP, NETX_REFUSES, NEURON_TYPES)
from hub_plugins.netx.write import (
    Layer, _check_bias_before_delay, _write_layer, exact_loihi, netx_weights_exact, plan_layers)

__all__ = ["ATTR_BIAS", "ATTR_FOLDED", "ATTR_METADATA", "ATTR_NEURON", "ATTR_OP", "DEFAULT_NEURON",
           "INPUT_TRANSFORM", "MAX_DELAY", "NETX_BIAS_EXP", "NETX_REFUSES", "NEURON_TYPES",
           "Layer", "NetxFormat", "QuantizationWarning", "exact_loihi", "hub_register_formats",
           "netx_weights_exact", "plan_layers", "quantize"]


class NetxFormat(hub.Format):
    name = "netx"
    aliases = ("lava", "lava-netx", "loihi")
    description = "lava-dl netx hdf5 networks for Loihi (.net, .h5), run in Lava's netx"
    suffixes = (".net", ".h5")
    load_options = ("input_shape",)
    save_options = ("strict", "quantize", "x")
    imports = frozenset({"Input", "Linear", "Affine", "Conv2d", "SumPool2d", "Flatten",
                         "LoihiCUBA", "Resonator", "Output", "SigmaDelta", "Delta", "Sigma"})
    exports = imports | {"Delay"}
    #: what netx writes, per node type and field (:mod:`.accepts`)
    accepts = ACCEPTS

    def read(self, path: Path, input_shape: tuple[int, ...] | None = None) -> hub.Graph:
        """Read a netx file; ``input_shape`` (torch order) for a file without an input layer
        whose first layer does not say its input size (a strided convolution)."""
        # checked by hub.hdf5 (nothing outside the file, within the limits) before any read
        with hub.hdf5.open_file(path, nodes="layer") as f:
            try:
                return _read(f, input_shape)
            except HubError as e:
                raise e.at(file=path)

    def write(self, graph: hub.Graph, path: Path, *, strict: bool = True,
              quantize: bool = False, x: Any = None) -> None:
        """Write ``graph`` as a netx file. ``quantize=True`` (or ``strict=False``) first converts
        float neurons with :func:`quantize`; ``strict=False`` also warns with its report."""
        if quantize or not strict:
            graph, report = quantization.quantize(graph, x=x)
            if not strict:
                warnings.warn(QuantizationWarning(_summary(report)), stacklevel=2)
        layers = plan_layers(graph)
        _check_bias_before_delay(graph)
        transform = graph.metadata.get(INPUT_TRANSFORM)
        if layers[0].neuron is not None and isinstance(transform, dict):
            for key in ("weight", "bias"):
                if isinstance(transform.get(key), (int, float)):
                    layers[0].data[key] = np.float32(transform[key])
        with h5py.File(path, "w") as f:
            if graph.metadata:
                f.attrs[ATTR_METADATA] = json.dumps(graph.metadata)
            group = f.create_group("layer")
            for index, layer in enumerate(layers):
                _write_layer(group.create_group(str(index)), layer)

    def run(self, native: Any, x: Any) -> np.ndarray:
        """Run the file in Lava's netx on the Loihi fixed-point CPU simulator."""
        from hub_plugins.lava import run_netx

        return run_netx(Path(native), x)


@hub.hookimpl
def hub_register_formats(register) -> None:
    register(NetxFormat())
