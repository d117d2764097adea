"""netx's resonate-and-fire layers (neuron types ``RF_PHASE`` and ``RF_IZHIKEVICH``) and
:class:`hub.Resonator`, both ways.

What netx 0.6 builds (``hdf5.Network.create_dense``): a ``dense`` layer with ``weight/real`` and
``weight/imag`` becomes a ``ComplexDense`` block, two synapses into Lava's ``RF`` (``PHASE``)
or ``RF_IZ`` process, with ``vth = vThMant << 6`` and ``state_exp = 6`` (the synaptic sum is
shifted by 6 bits: ``gain = 64``). It builds nothing else for them: a ``conv`` or ``input`` layer
with an RF neuron fails in netx (a single synapse meets a neuron with two inputs), a
``dense_rec`` layer with complex weights is built as a plain ``ComplexDense`` (the recurrent
weights dropped), and a complex layer's ``delay`` and ``bias`` are not read (an RF layer's
spikes can still be delayed into a plain dense layer: its ``delay`` key). netx knows no
adaptive RF neuron (slayer's ``ADRF_PHASE``, ``ADRF_IZHIKEVICH``). Those are refused here.

netx does not hand the file's ``sinDecay``/``cosDecay`` to Lava: it turns them into a period and
a decay (slayer's ``neuron.rf.neuron_params``) and ``RF`` turns those back into
``int32((1 - decay) * sin(2 pi / period) * 4096)``, truncated. For an integer in the file that
floating-point round trip lands within a few ulps of the integer, on either side, depending on
numpy's sine (its version and the CPU): Lava runs the file's value or one less. The writer
therefore stores each as the integer plus one half, which the round trip brings back to the
integer whatever the last bit; the reader reads a half-integer as that integer and an integer
as itself (what slayer's forward uses; Lava may run one less, ``docs/loihi.md``).
"""

from __future__ import annotations

from typing import Any

import h5py
import numpy as np

import hub
from hub.errors import FormatError, UnsupportedError

#: netx's RF neuron types and the Resonator fields each fixes.
TYPES = {"RF_PHASE": {"spike_rule": "phase", "reset": "none"},
         "RF_IZHIKEVICH": {"spike_rule": "imag", "reset": "imag"}}
#: The adaptive RF neurons slayer exports, which netx 0.6 does not build.
ADAPTIVE = ("ADRF_PHASE", "ADRF_IZHIKEVICH")
#: ``state_exp``: netx shifts the RF neuron's synaptic input and threshold by 6 bits.
STATE_EXP = 6
GAIN = 1 << STATE_EXP
DECAY_UNITY = 1 << 12


def neuron_type(layer: h5py.Group, where: str) -> str | None:
    """The layer's neuron type where it is a resonator (``"RF_PHASE"``...), else ``None``."""
    from hub_plugins.netx import read

    group = layer.get("neuron")
    if not isinstance(group, h5py.Group) or "type" not in group:
        return None
    kind = read._string(group, "type", f"{where}/neuron")
    return kind if "RF" in kind else None


def read_layer(layer: h5py.Group, kind: str, rf_type: str, where: str, index: int
               ) -> list[tuple[str, hub.Node]]:
    """The canonical nodes of a netx layer with a resonator neuron."""
    from hub_plugins.netx import read

    if rf_type in ADAPTIVE:
        raise UnsupportedError(f"neuron type {rf_type!r}: netx 0.6 builds no adaptive RF neuron "
                               "(its hdf5 reader makes an RF_IZ of it, without the adaptation)",
                               node=f"{where}/neuron", field="type")
    if rf_type not in TYPES:
        raise UnsupportedError(f"neuron type {rf_type!r} has no canonical counterpart here; "
                               f"supported: {', '.join([*TYPES, 'CUBA', 'LOIHI'])}",
                               node=f"{where}/neuron", field="type")
    if kind != "dense":
        raise UnsupportedError(f"a {kind!r} layer with an {rf_type} neuron: netx 0.6 builds RF "
                               "neurons in dense layers only (ComplexDense; a recurrent one "
                               "would lose its recurrent weights)", node=where, field="type")
    for key, why in (("delay", "netx's ComplexDense has no synaptic delays"),
                     ("bias", "netx gives an RF neuron no bias")):
        if key in layer:
            raise UnsupportedError(f"is not read for an {rf_type} layer: {why}", node=where,
                                   field=key)
    weights = []
    for part in ("weight/real", "weight/imag"):
        weight = read._weights(layer, part, where)
        if weight.ndim == 1:
            out = int(np.prod(read._integers(layer, "shape", where)))
            if out < 1 or weight.size % out:
                raise FormatError(f"holds {weight.size} values, not a multiple of the {out} "
                                  "outputs", node=where, field=part)
            weight = weight.reshape(out, -1)
        if weight.ndim != 2:
            raise FormatError(f"should be [out, in], got {list(weight.shape)}", node=where,
                              field=part)
        weights.append(weight)
    if weights[0].shape != weights[1].shape:
        raise FormatError(f"{list(weights[0].shape)} real and {list(weights[1].shape)} "
                          "imaginary weights", node=where, field="weight/imag")
    return [(f"fc{index}", hub.Linear(weight=np.concatenate(weights))),
            (f"n{index}", _neuron(layer["neuron"], rf_type, f"{where}/neuron"))]


def _decay(group: h5py.Group, key: str, where: str) -> int:
    from hub_plugins.netx import read

    value = read._dataset(group, key, where)
    if value.dtype.kind not in "iuf" or value.size != 1:
        raise FormatError("should be one number per layer (Lava's RF takes a scalar)",
                          node=where, field=key)
    value = float(value.reshape(-1)[0])
    if not np.isfinite(value) or not 0 <= value <= DECAY_UNITY:
        raise FormatError(f"{value} is not a 12-bit decay", node=where, field=key)
    return int(np.floor(value))  # an integer as it is; the writer's half-integers back down


def _neuron(group: h5py.Group, rf_type: str, where: str) -> hub.Resonator:
    from hub_plugins.netx import read

    if "gradedSpike" in group and bool(read._scalar(group, "gradedSpike", where)):
        raise UnsupportedError("is set, but netx's RF emits binary spikes", node=where,
                               field="gradedSpike")
    threshold = read._scalar(group, "vThMant", where) << STATE_EXP
    sin, cos = (_decay(group, key, where) for key in ("sinDecay", "cosDecay"))
    fields: dict[str, Any] = dict(TYPES[rf_type])
    if fields["reset"] == "imag":
        fields["imag_reset"] = threshold - 1
    try:
        return hub.Resonator(sin_decay=sin / DECAY_UNITY, cos_decay=cos / DECAY_UNITY,
                             gain=float(GAIN), threshold=float(threshold), arithmetic="fixed",
                             **fields)
    except hub.HubError as e:
        raise FormatError(e.message, node=where, field=e.field) from None


# -- writing --------------------------------------------------------------------------------


def rf_type(name: str, node: hub.Resonator) -> str:
    """The netx neuron type of ``node``, or a refusal naming the field netx cannot hold (the
    rules are :mod:`hub_plugins.netx.accepts`')."""
    from hub_plugins.netx.accepts import ACCEPTS

    ACCEPTS.check(node, name)
    return next(k for k, v in TYPES.items()
                if (node.spike_rule, node.reset) == (v["spike_rule"], v["reset"]))


def neuron_data(name: str, node: hub.Resonator) -> dict[str, Any]:
    """The ``neuron/*`` datasets of a resonator layer (module docstring: the half-integers)."""
    kind = rf_type(name, node)
    sin, cos = (float(np.asarray(v, np.float64).reshape(-1)[0]) * DECAY_UNITY
                for v in (node.sin_decay, node.cos_decay))
    return {"neuron/type": kind, "neuron/sinDecay": np.float64(sin + 0.5),
            "neuron/cosDecay": np.float64(cos + 0.5),
            "neuron/vThMant": np.int64(float(node.threshold.reshape(-1)[0]) // GAIN),
            "neuron/gradedSpike": np.bool_(False)}


def check_synapse(ops: list[tuple[str, hub.Node]], name: str, rec: Any,
                  delayed: tuple[str, int] | None) -> None:
    """Refuse what netx's ComplexDense cannot hold before a resonator layer."""
    if rec is not None:
        raise UnsupportedError("netx 0.6 builds a dense_rec layer with an RF neuron as a plain "
                               "ComplexDense, dropping its recurrent weights", node=rec[0])
    if delayed is not None:
        raise UnsupportedError("netx's ComplexDense has no synaptic delays, so the spikes into "
                               "an RF layer cannot be delayed", node=delayed[0], field="delay")
    if not ops:
        raise UnsupportedError("netx builds an input layer with an RF neuron as an Input "
                               "block, whose single input does not reach the RF's two: an RF "
                               "layer needs a dense synapse before it", node=name)
    kinds = [type(op) for _, op in ops]
    for op_name, op in ops:
        if isinstance(op, hub.Bias) or (isinstance(op, hub.Affine) and np.any(op.bias)):
            raise UnsupportedError("netx gives an RF neuron no bias", node=op_name, field="bias")
    if kinds not in ([hub.Linear], [hub.Flatten, hub.Linear]):
        raise UnsupportedError("netx builds RF neurons in dense layers only (a Linear, after a "
                               "Flatten at most)", node=ops[-1][0], field="type")
