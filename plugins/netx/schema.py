"""The netx hdf5 file as this plugin reads and writes it: its neuron types, keys and limits."""

from __future__ import annotations

#: Layers netx 0.6 refuses with NotImplementedError.
NETX_REFUSES = ("pool", "convT", "unpool", "average", "concat")
#: Layers netx 0.6 names but cannot build, and why.
NETX_CANNOT_BUILD = {
    "dense_comp": "netx 0.6 cannot build it: hdf5.Network calls create_complex_dense, which it "
                  "does not define (AttributeError), so Lava cannot run the file; netx builds "
                  "a complex (RF) layer from a layer of type 'dense' holding weight/real and "
                  "weight/imag: give the layer that type",
}
NEURON_TYPES = ("CUBA", "LOIHI")
#: The bias exponent netx gives every CUBA neuron (``hdf5.Network.get_neuron_params``).
NETX_BIAS_EXP = 6
#: netx's neuron for a dense layer without a ``neuron`` group (``hdf5.Network.create_dense``).
DEFAULT_NEURON = {"iDecay": 0, "vDecay": 4096, "vThMant": 1 << 17}
ATTR_OP = "hub.op"
ATTR_BIAS = "hub.bias"
ATTR_NEURON = "hub.neuron"
ATTR_FOLDED = "hub.folded"
#: The graph's metadata (its ``dt``, ...) as JSON on the file's root, for the round trip.
ATTR_METADATA = "hub.metadata"
#: Graph metadata key of an input layer's ``weight``/``bias`` transform, which netx records
#: (``blocks.process.Input.transform``) but does not apply: the input's encoder applies it.
INPUT_TRANSFORM = "netx_input_transform"
#: Largest synaptic delay netx runs (``hdf5.Network.create_dense`` clips to it, ``max_delay=62``).
MAX_DELAY = 62
#: Longest ``hub.neuron`` attribute read back: one node's plain data.
MAX_ATTR = 1 << 16
#: Largest ``inputs**2`` for which a folded layer's nodes are restored on reading (refolding
#: runs them on the unit basis: 128 MiB of float64 at this size).
MAX_UNFOLD = 1 << 24
