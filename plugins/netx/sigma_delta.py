"""netx's sigma-delta layers (neuron ``type`` ``SDNN``) to Lava's fixed-point nodes and back.

netx 0.6 (``hdf5.Network.get_neuron_params``) builds, for a neuron group of type ``SDNN``:

- in an ``input`` layer, Lava's ``Delta`` process: :class:`hub.Delta`;
- with a ``sigma_output`` key, Lava's ``Sigma`` process: :class:`hub.Sigma`;
- otherwise Lava's ``SigmaDelta`` process with the layer's ``bias``: :class:`hub.SigmaDelta`;

each with ``vth = vThMant``, ``spike_exp = 6``, ``state_exp = 6``, in ``arithmetic="fixed"``.
netx passes no ``act_mode`` (so Lava's default, ReLU, whatever the file's ``activation`` key
says) and no ``cum_error`` (off); a file's ``activation`` other than ``relu`` is refused rather
than run as ReLU. netx's dense synapse delivers the integer sum ``sum(w * s)`` of the graded
spikes, as for CUBA layers (``write.netx_weights_exact``), and with a ``delay`` key its
``DelayDense`` delivers them as late as a CUBA layer's (a ``Delay`` node here, ``docs/loihi.md``).
"""

from __future__ import annotations

from typing import Callable

import h5py
import numpy as np

import hub
from hub.errors import FormatError, UnsupportedError

SDNN = "SDNN"
#: The exponents netx gives every sigma-delta process (``spike_exp=6`` by default, ``state_exp``
#: fixed at 6 in ``get_neuron_params``).
SPIKE_EXP = 6
STATE_EXP = 6
NODES = (hub.SigmaDelta, hub.Delta, hub.Sigma)


def read_neuron(group: h5py.Group, where: str, bias: np.ndarray | None, *, input_layer: bool,
                scalar: Callable[[h5py.Group, str, str], int],
                string: Callable[[h5py.Group, str, str], str]) -> hub.Node:
    """The node of an ``SDNN`` neuron group (``scalar``/``string``: the reader's checked
    dataset readers)."""
    if "activation" in group:
        activation = string(group, "activation", where).lower()
        if activation != "relu":
            raise UnsupportedError(f"is {activation!r}, but netx builds Lava's SigmaDelta with "
                                   "its default ReLU activation whatever this key says",
                                   node=where, field="activation")
    fixed = {"arithmetic": "fixed"}
    if "sigma_output" in group and not input_layer:
        if bias is not None and np.any(bias):
            raise UnsupportedError("netx's Sigma process takes no bias", node=where,
                                   field="bias")
        return hub.Sigma(**fixed)
    threshold = scalar(group, "vThMant", where)
    try:
        if input_layer:
            return hub.Delta(threshold=threshold, **fixed)
        return hub.SigmaDelta(threshold=threshold,
                              bias=np.zeros((), np.float32) if bias is None else
                              bias.astype(np.float32), **fixed)
    except hub.HubError as e:
        raise FormatError(e.message, node=where,
                          field="vThMant" if e.field == "threshold" else e.field) from None


def check_neuron(name: str, node: hub.Node) -> hub.Node:
    """``node`` if netx writes it as an ``SDNN`` neuron that Lava runs exactly, else
    UnsupportedError naming the field (the rules are :mod:`hub_plugins.netx.accepts`')."""
    from hub_plugins.netx.accepts import ACCEPTS

    ACCEPTS.check(node, name)
    return node


def write_neuron(group: h5py.Group, node: hub.Node) -> None:
    group.create_dataset("neuron/type", data=SDNN)
    group.create_dataset("neuron/activation", data="relu")
    threshold = getattr(node, "threshold", np.zeros(()))
    group.create_dataset("neuron/vThMant", data=np.int64(np.asarray(threshold).reshape(-1)[0]))
    if isinstance(node, hub.Sigma):
        group.create_dataset("neuron/sigma_output", data=True)
