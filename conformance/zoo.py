"""The model zoo: the canonical graphs and inputs that the conformance suite converts and runs.

Every case is a small canonical graph, an input sequence ``[T, N, *in]`` and a tier:

- ``exact``: weights and inputs are multiples of 1/4, decays are ``1 - 2**-k``, gains powers of
  two, and ``dt`` is ``2**-10``, so every value the update computes is a dyadic rational with few
  bits. Float32 arithmetic is then exact in any evaluation order, and any correct implementation
  gives bit-identical outputs. :func:`check_exact` proves it for each case (float32 and float64
  runs agree bit for bit); the suite's own tests run it over the whole tier.
- ``float``: random float32 models. Implementations may round differently, so a divergence is
  allowed only where it is a threshold tie (see ``hub_conformance.compare``).
- ``fixed``: integer models (integer weights, thresholds, inputs and state): what fixed-point
  hardware computes. Fixed-point neuron types join this tier through :data:`FIXED_NEURONS`.
- ``paper``: the real NIR graphs of the NIR paper, when their directory is present.

The neuron cases sweep every convention field (comparison, reset kind and timing, spike mode,
amplitude, refractory period, axonal delay, rest and reset potentials, current order, per-neuron
parameters) one at a time from a plain LIF; the topology cases cover dense, convolutional
(1-d and 2-d), pooled (sum, average, max), recurrent, skip-connected, delayed, scaled, flattened
and nested graphs. The other neuron families (:mod:`hub.families`) follow with seeds of their
own: adaptive threshold, alpha synapse and synaptic filter in both tiers, the quadratic and
exponential ones (QIF, Izhikevich, AdExLIF, EIF) in the float tier only.
"""

from __future__ import annotations

import abc
import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

import hub

from .compare import EXACT_TIERS

TIERS = ("exact", "float", "fixed", "paper")
#: The time step of every generated case: a power of two, so NIR's ``tau = dt / (1 - beta)``
#: and its inverse are exact.
DT = 2.0 ** -10
#: The time step at which the NIR paper's graphs are run (they carry none).
PAPER_DT = 1e-4
PAPER_ENV = "HUB_EXTERNAL"


@dataclasses.dataclass(frozen=True, eq=False)
class Case:
    """One conformance case: a canonical graph, an input, and the tier that says how to compare."""

    name: str
    tier: str
    graph: hub.Graph
    x: np.ndarray
    description: str = ""
    #: Format -> (the model ``graph`` was imported from, the options that import needs): routes
    #: from that format start from the original (the paper's real NIR files).
    originals: dict[str, tuple[Any, dict[str, Any]]] = dataclasses.field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.tier}/{self.name}"


# -- parameter sources: what makes a tier ---------------------------------------------------


class _Params(abc.ABC):
    """Draws the numbers of one tier; builders ask it for weights, decays, thresholds, inputs."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    @abc.abstractmethod
    def weight(self, *shape: int) -> np.ndarray:
        """Weights of ``shape``."""

    @abc.abstractmethod
    def decay(self, *shape: int) -> np.ndarray:
        """Per-neuron decays (beta, alpha) of ``shape``."""

    def threshold(self) -> float:
        return 1.0

    def low_threshold(self) -> float:
        """For stateless Threshold nodes, which see one step's input only."""
        return 0.5

    def spikes(self, *shape: int, p: float = 0.5) -> np.ndarray:
        return (self.rng.random(shape) < p).astype(np.float32)


class _Dyadic(_Params):
    steps = 16

    def weight(self, *shape: int) -> np.ndarray:
        return (self.rng.integers(-4, 5, size=shape) / 4).astype(np.float32)

    def decay(self, *shape: int) -> np.ndarray:
        return self.rng.choice(np.float32([0.5, 0.75]), size=shape)


class _Float(_Params):
    steps = 40

    def weight(self, *shape: int) -> np.ndarray:
        fan_in = int(np.prod(shape[1:])) or 1
        return (self.rng.normal(size=shape) * 2.5 / np.sqrt(fan_in)).astype(np.float32)

    def decay(self, *shape: int) -> np.ndarray:
        return self.rng.uniform(0.6, 0.97, size=shape).astype(np.float32)


class _Integer(_Params):
    steps = 16

    def weight(self, *shape: int) -> np.ndarray:
        return self.rng.integers(-2, 4, size=shape).astype(np.float32)

    def decay(self, *shape: int) -> np.ndarray:
        raise ValueError("integer models have no decay")

    def threshold(self) -> float:
        return 3.0

    def low_threshold(self) -> float:
        return 1.0

    def spikes(self, *shape: int, p: float = 0.5) -> np.ndarray:
        return self.rng.integers(0, 3, size=shape).astype(np.float32) * (
            self.rng.random(shape) < p)


class _EvenInteger(_Integer):
    """Integer models with even weights: slayer's 8-bit weight grid has steps of 2."""

    def weight(self, *shape: int) -> np.ndarray:
        return 2 * super().weight(*shape)


# -- neurons: one convention at a time ------------------------------------------------------

Make = Callable[[_Params, int], hub.Node]


def _lif(**changes: Any) -> Make:
    def make(p: _Params, n: int) -> hub.Node:
        return hub.LIF(**{"beta": p.decay(n), "threshold": p.threshold(), **changes})
    return make


def _cuba(**changes: Any) -> Make:
    def make(p: _Params, n: int) -> hub.Node:
        return hub.CubaLIF(**{"alpha": p.decay(n), "beta": p.decay(n),
                              "threshold": p.threshold(), **changes})
    return make


def _if(**changes: Any) -> Make:
    def make(p: _Params, n: int) -> hub.Node:
        return hub.IF(**{"threshold": p.threshold(), **changes})
    return make


#: Spiking neuron variants for the exact and float tiers: a plain LIF, then each field changed.
NEURONS: dict[str, Make] = {
    "lif": _lif(),
    "lif-ge": _lif(comparison=">="),
    "lif-subtract": _lif(reset="subtract"),
    "lif-subtract-ge": _lif(reset="subtract", comparison=">="),
    "lif-no-reset": _lif(reset="none"),
    "lif-v-reset": _lif(v_reset=-0.25),
    "lif-next-zero": _lif(reset_timing="next"),
    "lif-next-subtract": _lif(reset_timing="next", reset="subtract"),
    "lif-multi": _lif(spike_mode="multi", reset="subtract", threshold=0.5),
    "lif-multi-ge": _lif(spike_mode="multi", reset="subtract", comparison=">=", threshold=0.5),
    "lif-graded": _lif(spike_mode="graded", beta=np.float32(0.5)),
    "lif-amplitude": _lif(amplitude=2.0),
    "lif-refractory": _lif(refractory=2),
    "lif-delay": _lif(delay=2),
    "lif-v-leak": _lif(v_leak=0.25),
    "lif-v-init": _lif(v_init=0.5),
    "lif-gain": _lif(gain=0.5),
    "if": _if(),
    "if-ge-subtract": _if(comparison=">=", reset="subtract"),
    "if-gain": _if(gain=2.0),
    "cubalif": _cuba(),
    "cubalif-previous": _cuba(current_order="previous"),
    "cubalif-ge-subtract": _cuba(comparison=">=", reset="subtract"),
    "cubalif-gains": _cuba(gain=0.5, current_gain=2.0),
}

#: Neuron variants for the fixed-point tier: integer arithmetic only.
FIXED_NEURONS: dict[str, Make] = {
    "if": _if(),
    "if-ge": _if(comparison=">="),
    "if-subtract": _if(reset="subtract"),
    "if-next": _if(reset_timing="next", reset="subtract"),
    "if-multi": _if(spike_mode="multi", reset="subtract"),
    "if-refractory": _if(refractory=2, comparison=">="),
    "if-delay": _if(delay=3),
    "if-v-reset": _if(v_reset=-1.0),
}

#: Loihi's fixed-point CUBA neuron (``hub.LoihiCUBA``: 12-bit decays, shifts toward zero) in
#: the fixed tier. Kept apart from :data:`FIXED_NEURONS` so that their seeds, and with them the
#: other fixed cases, stay as they were.
LOIHI_NEURONS: dict[str, Make] = {
    "loihi": lambda p, n: hub.LoihiCUBA(i_decay=4096, v_decay=1024, threshold=2),
    "loihi-cuba": lambda p, n: hub.LoihiCUBA(i_decay=1024, v_decay=256, threshold=3),
}

#: Readouts: the last layer outputs the voltage itself.
#: Their decays are 0.5: a voltage that never resets gains a bit per step at 0.5, two at 0.75,
#: and must stay within float32's 24 for the exact tier.
READOUTS: dict[str, Make] = {
    "li": lambda p, n: hub.LI(beta=0.5),
    "li-v-leak": lambda p, n: hub.LI(beta=0.5, v_leak=0.5, gain=0.5),
    "integrator": lambda p, n: hub.Integrator(gain=0.5),
    "cubali": lambda p, n: hub.CubaLI(alpha=0.5, beta=0.5),
    "cubali-previous": lambda p, n: hub.CubaLI(alpha=0.5, beta=0.5, current_order="previous"),
}


def _dense(p: _Params, neuron: Make, readout: Make | None = None) -> hub.Graph:
    """Input(6) -> Linear -> neuron(8) -> Affine -> neuron(4) (or a readout)."""
    last = readout or neuron
    return hub.Graph.chain(
        ("input", hub.Input(shape=(6,))),
        ("fc1", hub.Linear(weight=p.weight(8, 6))),
        ("n1", neuron(p, 8)),
        ("fc2", hub.Affine(weight=p.weight(4, 8), bias=p.weight(4))),
        ("n2", last(p, 4)),
    )


# -- topologies -----------------------------------------------------------------------------


def _conv2d(p: _Params, neuron: Make, pool: str = "sum") -> hub.Graph:
    pools = {"sum": hub.SumPool2d(kernel_size=(2, 2), stride=(2, 2)),
             "avg": hub.AvgPool2d(kernel_size=(2, 2), stride=(2, 2)),
             "max": hub.MaxPool2d(kernel_size=(2, 2), stride=(2, 2))}
    return hub.Graph.chain(
        ("input", hub.Input(shape=(2, 6, 6))),
        ("conv", hub.Conv2d(weight=p.weight(4, 2, 3, 3), bias=p.weight(4), padding=(1, 1))),
        ("n1", neuron(p, 1)),
        ("pool", pools[pool]),
        ("flat", hub.Flatten()),
        ("fc", hub.Linear(weight=p.weight(5, 36))),
        ("n2", neuron(p, 1)),
    )


def _conv_strided(p: _Params, neuron: Make) -> hub.Graph:
    return hub.Graph.chain(
        ("input", hub.Input(shape=(2, 7, 7))),
        ("conv", hub.Conv2d(weight=p.weight(4, 1, 3, 3), stride=(2, 2), dilation=(1, 2),
                            groups=2, padding=(1, 2))),
        ("n1", neuron(p, 1)),
        ("rows", hub.Flatten(start_dim=1)),
        ("mid", neuron(p, 1)),
        ("flat", hub.Flatten()),
        ("fc", hub.Linear(weight=p.weight(3, 64))),
        ("n2", neuron(p, 1)),
    )


def _conv1d(p: _Params, neuron: Make) -> hub.Graph:
    return hub.Graph.chain(
        ("input", hub.Input(shape=(2, 8))),
        ("conv", hub.Conv1d(weight=p.weight(3, 2, 3), bias=p.weight(3), padding=(1,))),
        ("n1", neuron(p, 1)),
        ("flat", hub.Flatten()),
        ("fc", hub.Linear(weight=p.weight(4, 24))),
        ("n2", neuron(p, 1)),
    )


def _recurrent(p: _Params, neuron: Make) -> hub.Graph:
    """A recurrent layer: its spikes come back through ``rec`` one step later."""
    return hub.Graph(
        {"input": hub.Input(shape=(4,)), "fc1": hub.Linear(weight=p.weight(6, 4)),
         "n1": neuron(p, 6), "rec": hub.Linear(weight=p.weight(6, 6)),
         "fc2": hub.Linear(weight=p.weight(3, 6)), "n2": neuron(p, 3), "output": hub.Output()},
        [("input", "fc1"), ("fc1", "n1"), ("n1", "rec"), ("rec", "n1"), ("n1", "fc2"),
         ("fc2", "n2"), ("n2", "output")])


def _skip(p: _Params, neuron: Make) -> hub.Graph:
    """A residual block: the input reaches ``n2`` both through ``n1`` and around it."""
    return hub.Graph(
        {"input": hub.Input(shape=(6,)), "fc1": hub.Linear(weight=p.weight(6, 6)),
         "n1": neuron(p, 6), "fc2": hub.Linear(weight=p.weight(6, 6)), "add": hub.Add(),
         "n2": neuron(p, 6), "output": hub.Output()},
        [("input", "fc1"), ("fc1", "n1"), ("n1", "fc2"), ("fc2", "add"), ("input", "add"),
         ("add", "n2"), ("n2", "output")])


def _delayed(p: _Params, neuron: Make) -> hub.Graph:
    return hub.Graph.chain(
        ("input", hub.Input(shape=(5,))),
        ("scale", hub.Scale(scale=np.abs(p.weight(5)) + 1)),
        ("delay", hub.Delay(delay=np.array([0, 1, 2, 3, 1]))),
        ("fc", hub.Linear(weight=p.weight(4, 5))),
        ("n1", neuron(p, 4)),
    )


def _thresholds(p: _Params, neuron: Make) -> hub.Graph:
    """Stateless spiking: a Threshold node of each comparison, summed into a neuron."""
    return hub.Graph(
        {"input": hub.Input(shape=(4,)), "fc": hub.Linear(weight=p.weight(4, 4)),
         "gt": hub.Threshold(threshold=np.float32(p.low_threshold())),
         "ge": hub.Threshold(threshold=np.float32(p.low_threshold()), comparison=">="),
         "n1": neuron(p, 4), "output": hub.Output()},
        [("input", "fc"), ("fc", "gt"), ("fc", "ge"), ("gt", "n1"), ("ge", "n1"),
         ("n1", "output")])


def _nested(p: _Params, neuron: Make) -> hub.Graph:
    """A subgraph as a node: a block of two layers used inside a larger graph."""
    block = hub.Graph.chain(("input", hub.Input(shape=(6,))),
                            ("fc", hub.Linear(weight=p.weight(6, 6))), ("n", neuron(p, 6)))
    return hub.Graph.chain(("input", hub.Input(shape=(6,))), ("block", block),
                           ("fc", hub.Linear(weight=p.weight(3, 6))), ("n2", neuron(p, 3)))


TOPOLOGIES: dict[str, Callable[..., hub.Graph]] = {
    "conv2d-sumpool": _conv2d,
    "conv2d-avgpool": lambda p, n: _conv2d(p, n, "avg"),
    "conv2d-maxpool": lambda p, n: _conv2d(p, n, "max"),
    "conv2d-strided": _conv_strided,
    "conv1d": _conv1d,
    "recurrent": _recurrent,
    "skip": _skip,
    "delay": _delayed,
    "threshold": _thresholds,
    "nested": _nested,
}


def _sew_iand(p: _Params, neuron: Make) -> hub.Graph:
    """A SEW ResNet block with the IAND connection, ``(1 - skip) * block``, after a batch-normed
    convolution, then adaptive pooling, a ReLU and a readout layer (what real models import)."""
    return hub.Graph(
        {"input": hub.Input(shape=(2, 6, 6)),
         "conv": hub.Conv2d(weight=p.weight(4, 2, 3, 3), padding=(1, 1)),
         "bn": hub.BatchNorm(mean=p.weight(4), var=np.full(4, 0.75, np.float32),
                             weight=p.weight(4), bias=p.weight(4), eps=0.25),
         "n1": neuron(p, 1),
         "skip": hub.Conv2d(weight=p.weight(4, 2, 1, 1)), "ns": neuron(p, 1),
         "neg": hub.Scale(scale=np.float32(-1)), "one": hub.Bias(bias=np.float32(1)),
         "iand": hub.Mul(), "pool": hub.AdaptiveAvgPool2d(output_size=(3, 3)),
         "flat": hub.Flatten(), "relu": hub.ReLU(), "fc": hub.Linear(weight=p.weight(5, 36)),
         "n2": neuron(p, 1), "output": hub.Output()},
        [("input", "conv"), ("conv", "bn"), ("bn", "n1"), ("input", "skip"), ("skip", "ns"),
         ("ns", "neg"), ("neg", "one"), ("one", "iand"), ("n1", "iand"), ("iand", "pool"),
         ("pool", "flat"), ("flat", "relu"), ("relu", "fc"), ("fc", "n2"), ("n2", "output")])


def _concat_vote(p: _Params, neuron: Make) -> hub.Graph:
    """Two branches concatenated, reshaped and flattened back, a layer, and a voting readout
    (SpikingJelly's VotingLayer)."""
    return hub.Graph(
        {"input": hub.Input(shape=(6,)), "fc1": hub.Linear(weight=p.weight(4, 6)),
         "n1": neuron(p, 4), "fc2": hub.Linear(weight=p.weight(4, 6)), "n2": neuron(p, 4),
         "cat": hub.Concat(dim=0), "rows": hub.Reshape(shape=(2, 4)), "flat": hub.Flatten(),
         "fc3": hub.Linear(weight=p.weight(8, 8)), "n3": neuron(p, 8), "vote": hub.Vote(size=2),
         "output": hub.Output()},
        [("input", "fc1"), ("fc1", "n1"), ("input", "fc2"), ("fc2", "n2"), ("n1", "cat"),
         ("n2", "cat"), ("cat", "rows"), ("rows", "flat"), ("flat", "fc3"), ("fc3", "n3"),
         ("n3", "vote"), ("vote", "output")])


#: The layers real models bring in (batch norm, SEW connections, concatenation, adaptive pooling,
#: voting), appended after every other case of a tier so that the others keep their seeds.
REAL_LAYERS: dict[str, tuple[Callable[..., hub.Graph], str]] = {
    "sew-iand": (_sew_iand, "a SEW IAND block after a batch-normed convolution, adaptive "
                            "pooling and a ReLU"),
    "concat-vote": (_concat_vote, "two branches concatenated, a reshape, and a voting readout"),
}


# -- Loihi topologies: what netx expresses, with per-layer LoihiCUBA parameters --------------


def _loihi(i_decay: int, v_decay: int, threshold: int, bias: Any = 0) -> hub.LoihiCUBA:
    return hub.LoihiCUBA(i_decay=i_decay, v_decay=v_decay, threshold=threshold, bias=bias)


def _loihi_dense_linear(p: _Params) -> hub.Graph:
    """``dense-loihi-cuba`` without the Affine's bias, which netx cannot hold with a decaying
    current: Input(6) -> Linear -> LoihiCUBA(8) -> Linear -> LoihiCUBA(4)."""
    return hub.Graph.chain(
        ("input", hub.Input(shape=(6,))),
        ("fc1", hub.Linear(weight=p.weight(8, 6))),
        ("n1", LOIHI_NEURONS["loihi-cuba"](p, 8)),
        ("fc2", hub.Linear(weight=p.weight(4, 8))),
        ("n2", LOIHI_NEURONS["loihi-cuba"](p, 4)),
    )


def _loihi_dense3(p: _Params) -> hub.Graph:
    """Three dense layers, each neuron with its own decays and threshold, one with a bias."""
    return hub.Graph.chain(
        ("input", hub.Input(shape=(8,))),
        ("fc1", hub.Linear(weight=p.weight(12, 8))),
        ("n1", _loihi(4096, 512, 3)),
        ("fc2", hub.Linear(weight=p.weight(10, 12))),
        ("n2", _loihi(2048, 128, 4, bias=p.rng.integers(-2, 3, size=10))),
        ("fc3", hub.Linear(weight=p.weight(4, 10))),
        ("n3", _loihi(512, 1024, 5)),
    )


def _loihi_recurrent(p: _Params) -> hub.Graph:
    """netx's ``dense_rec``: a dense layer whose spikes return through ``rec`` a step later."""
    return hub.Graph(
        {"input": hub.Input(shape=(4,)), "fc1": hub.Linear(weight=p.weight(6, 4)),
         "n1": _loihi(1024, 256, 3), "rec": hub.Linear(weight=p.weight(6, 6)),
         "fc2": hub.Linear(weight=p.weight(3, 6)), "n2": _loihi(4096, 1024, 2),
         "output": hub.Output()},
        [("input", "fc1"), ("fc1", "n1"), ("n1", "rec"), ("rec", "n1"), ("n1", "fc2"),
         ("fc2", "n2"), ("n2", "output")])


def _loihi_conv(p: _Params) -> hub.Graph:
    """conv -> flatten -> dense; the conv layer's neuron has a bias per channel."""
    return hub.Graph.chain(
        ("input", hub.Input(shape=(2, 6, 6))),
        ("conv", hub.Conv2d(weight=p.weight(4, 2, 3, 3), padding=(1, 1))),
        ("n1", _loihi(1024, 256, 6, bias=p.rng.integers(-1, 2, size=(4, 1, 1)))),
        ("flat", hub.Flatten()),
        ("fc", hub.Linear(weight=p.weight(5, 144))),
        ("n2", _loihi(4096, 1024, 8)),
    )


def _loihi_conv_strided(p: _Params) -> hub.Graph:
    """A grouped conv with stride, dilation and unequal padding, then flatten -> dense."""
    return hub.Graph.chain(
        ("input", hub.Input(shape=(2, 7, 7))),
        ("conv", hub.Conv2d(weight=p.weight(4, 1, 3, 3), stride=(2, 2), dilation=(1, 2),
                            groups=2, padding=(1, 2))),
        ("n1", _loihi(2048, 64, 3)),
        ("flat", hub.Flatten()),
        ("fc", hub.Linear(weight=p.weight(3, 64))),
        ("n2", _loihi(4096, 512, 6)),
    )


def _loihi_pool(p: _Params) -> hub.Graph:
    """A sum pool with its own neuron (netx's writer lowers it to a depthwise conv layer)."""
    return hub.Graph.chain(
        ("input", hub.Input(shape=(2, 6, 6))),
        ("conv", hub.Conv2d(weight=p.weight(4, 2, 3, 3), padding=(1, 1))),
        ("n1", _loihi(4096, 1024, 3)),
        ("pool", hub.SumPool2d(kernel_size=(2, 2), stride=(2, 2))),
        ("n2", _loihi(4096, 2048, 1)),
        ("flat", hub.Flatten()),
        ("fc", hub.Linear(weight=p.weight(5, 36))),
        ("n3", _loihi(1024, 512, 6)),
    )


def _loihi_deep(p: _Params) -> hub.Graph:
    """conv -> pool -> conv -> flatten -> dense, five Loihi layers (the pool one lowered)."""
    return hub.Graph.chain(
        ("input", hub.Input(shape=(2, 8, 8))),
        ("conv1", hub.Conv2d(weight=p.weight(4, 2, 3, 3), padding=(1, 1))),
        ("n1", _loihi(4096, 1024, 3)),
        ("pool", hub.SumPool2d(kernel_size=(2, 2), stride=(2, 2))),
        ("n2", _loihi(4096, 4096, 1)),
        ("conv2", hub.Conv2d(weight=p.weight(6, 4, 3, 3), padding=(1, 1))),
        ("n3", _loihi(2048, 512, 4)),
        ("flat", hub.Flatten()),
        ("fc", hub.Linear(weight=p.weight(5, 96))),
        ("n4", _loihi(4096, 1024, 8)),
    )


def _loihi_pool_folded(p: _Params) -> hub.Graph:
    """The zoo's ``conv2d-sumpool`` with Loihi neurons: the conv's bias reaches a neuron whose
    current clears each step, and pool -> flatten -> dense is folded into one dense layer."""
    return _conv2d(p, lambda p, n: _loihi(4096, 1024, 2))


#: Loihi topologies for the fixed tier: name -> (builder, description). Appended after the
#: Loihi neuron cases with their own seeds, so that no earlier case changes.
def _loihi_upsample(p: _Params) -> hub.Graph:
    """conv -> transposed conv (a learned 2x upsampling, slayer's ConvT) -> flatten -> dense."""
    return hub.Graph.chain(
        ("input", hub.Input(shape=(2, 4, 4))),
        ("conv", hub.Conv2d(weight=p.weight(4, 2, 3, 3), padding=(1, 1))),
        ("n1", _loihi(1024, 256, 4)),
        ("up", hub.ConvTranspose2d(weight=p.weight(4, 3, 2, 2), stride=(2, 2))),
        ("n2", _loihi(2048, 512, 3)),
        ("flat", hub.Flatten()),
        ("fc", hub.Linear(weight=p.weight(5, 192))),
        ("n3", _loihi(4096, 1024, 6)),
    )


LOIHI_TOPOLOGIES: dict[str, tuple[Callable[[_Params], hub.Graph], str]] = {
    "dense-loihi-cuba-linear": (_loihi_dense_linear, "loihi-cuba neurons, no synapse bias"),
    "dense3-loihi": (_loihi_dense3, "three Loihi dense layers, per-layer parameters, a bias"),
    "recurrent-loihi": (_loihi_recurrent, "Loihi recurrent dense layer (netx dense_rec)"),
    "conv2d-loihi": (_loihi_conv, "Loihi conv -> flatten -> dense, a bias per channel"),
    "conv2d-strided-loihi": (_loihi_conv_strided, "Loihi grouped, strided, dilated conv"),
    "conv2d-sumpool-loihi": (_loihi_pool_folded, "Loihi conv, sum pool folded into dense"),
    "sumpool-layer-loihi": (_loihi_pool, "Loihi sum pool with its own neuron layer"),
    "conv-pool-conv-loihi": (_loihi_deep, "Loihi conv -> pool -> conv -> flatten -> dense"),
    "convtranspose-loihi": (_loihi_upsample, "Loihi conv -> transposed conv -> dense"),
}

#: Loihi topologies that slayer's blocks hold too (a chain of synapse + neuron blocks, no bias),
#: with even weights: name -> the Loihi topology it draws. Their own seeds, after the others.
LOIHI_SLAYER: dict[str, str] = {
    "dense-loihi-slayer": "dense-loihi-cuba-linear",
    "conv2d-strided-loihi-slayer": "conv2d-strided-loihi",
}


# -- the tiers ------------------------------------------------------------------------------


#: Seeds tried per case before giving up on finding an active one.
ATTEMPTS = 50


def _case(name: str, tier: str, make_params: Callable[[int], _Params],
          build: Callable[[_Params], hub.Graph], seed: int, spiking: bool,
          description: str = "") -> Case:
    """The first case ``build`` makes from seeds ``seed, seed + 1000, ...`` that tests something.

    A case whose outputs are all silent (or all active) cannot tell implementations apart, and an
    exact-tier case must pass :func:`check_exact`; seeds are tried until both hold.
    """
    for attempt in range(ATTEMPTS):
        p = make_params(seed + 1000 * attempt)
        graph = build(p)
        graph.metadata["dt"] = DT
        shape = graph.plan().output_shapes[graph.inputs[0]]
        case = Case(name, tier, graph, p.spikes(p.steps, 2, *shape), description)
        active = float((hub.simulate(graph, torch.as_tensor(case.x)) != 0).float().mean())
        if not (0.05 <= active <= 0.95 or (not spiking and active > 0)):
            continue
        if tier in EXACT_TIERS and check_exact(case) is not None:
            continue
        return case
    raise hub.HubError(f"no seed in {ATTEMPTS} gives an active, exact {tier} case {name!r}")


#: The topologies again with a neuron that snnTorch, Norse and SpikingJelly all have (``>``,
#: reset to zero in the spiking step, one decay per layer), so that every framework runs them:
#: the base neuron above subtracts in the spiking step, which none of them can.
PORTABLE: Make = _lif(beta=np.float32(0.75))


def _tier(tier: str, make_params: Callable[[int], _Params], neurons: dict[str, Make],
          readouts: dict[str, Make], base: Make, skip: tuple[str, ...] = (),
          portable: Make | None = None) -> Iterator[Case]:
    seed = 0
    for name, neuron in neurons.items():
        seed += 1
        yield _case(f"dense-{name}", tier, make_params, lambda p: _dense(p, neuron), seed, True,
                    f"{name} neurons")
    for name, readout in readouts.items():
        seed += 1
        yield _case(f"dense-{name}", tier, make_params, lambda p: _dense(p, base, readout), seed,
                    False, f"{name} readout")
    for name, build in TOPOLOGIES.items():
        seed += 1
        if name in skip:
            continue
        yield _case(name, tier, make_params, lambda p: build(p, base), seed, True)
    if portable is not None:  # after every other case, so that their seeds stay as they were
        for name, build in TOPOLOGIES.items():
            seed += 1
            yield _case(f"{name}-portable", tier, make_params,
                        lambda p: build(p, portable), seed, True,
                        f"{name} with LIF neurons every framework has")
        for name, (build, description) in REAL_LAYERS.items():
            seed += 1
            yield _case(name, tier, make_params, lambda p: build(p, portable), seed, True,
                        description)


def exact_cases() -> Iterator[Case]:
    """Dyadic models: bit-identical outputs are required."""
    yield from _tier("exact", _Dyadic, NEURONS, READOUTS, NEURONS["lif-subtract"],
                     portable=PORTABLE)
    yield from family_cases("exact")
    yield from sigma_delta_cases("exact")
    yield from mixed_family_cases()


def float_cases() -> Iterator[Case]:
    """Random float32 models: divergences must be threshold ties."""
    yield from _tier("float", _Float, NEURONS, READOUTS, NEURONS["lif-subtract"],
                     portable=PORTABLE)
    yield from family_cases("float")


def fixed_cases() -> Iterator[Case]:
    """Integer models: bit-identical outputs are required."""
    readouts = {"integrator": lambda p, n: hub.Integrator()}
    # average pooling divides: its outputs are not integers
    yield from _tier("fixed", _Integer, FIXED_NEURONS, readouts, FIXED_NEURONS["if-subtract"],
                     skip=("conv2d-avgpool",))
    for seed, (name, neuron) in enumerate(LOIHI_NEURONS.items(), start=500):
        yield _case(f"dense-{name}", "fixed", _Integer, lambda p: _dense(p, neuron), seed, True,
                    f"{name} neurons (Loihi fixed point)")
    for seed, (name, (build, description)) in enumerate(LOIHI_TOPOLOGIES.items(), start=510):
        yield _case(name, "fixed", _Integer, build, seed, True, description)
    for seed, (name, topology) in enumerate(LOIHI_SLAYER.items(), start=600):
        build, description = LOIHI_TOPOLOGIES[topology]
        yield _case(name, "fixed", _EvenInteger, build, seed, True,
                    f"{description}; even weights, as slayer holds them")
    for seed, (name, (build, description)) in enumerate(LOIHI_DELAYED.items(), start=700):
        yield _case(name, "fixed", _Integer, build, seed, True, description)
    yield from sigma_delta_cases("fixed")
    for seed, (name, (build, description)) in enumerate(LOIHI_RESONATORS.items(), start=900):
        yield _case(name, "fixed", _EvenInteger, build, seed, True, description)


def paper_dir() -> Path | None:
    """Where the NIR paper's graphs are: ``$HUB_EXTERNAL/nir-paper``, else beside a checkout."""
    if os.environ.get(PAPER_ENV):
        candidates = [Path(os.environ[PAPER_ENV]) / "nir-paper"]
    else:
        root = Path(__file__).resolve().parents[1]
        candidates = [root.parent / "shared" / "external" / "nir-paper"]
    return next((c for c in candidates if c.is_dir()), None)


def paper_cases(directory: Path | None = None) -> Iterator[Case | tuple[str, str]]:
    """The NIR paper's graphs at :data:`PAPER_DT`, with random input spikes.

    A file that does not load yields ``(name, reason)`` instead, so the report can say why.
    """
    directory = directory or paper_dir()
    if directory is None:
        return
    rng = np.random.default_rng(7)
    for path in sorted(Path(directory).glob("*.nir")):
        name = path.name.removesuffix(".nir")
        try:
            graph = hub.load(path, dt=PAPER_DT)
        except hub.HubError as e:
            yield name, f"does not load: {e}"
            continue
        shapes = graph.plan().output_shapes
        if len(graph.inputs) != 1:
            yield name, f"has {len(graph.inputs)} inputs; the zoo feeds one"
            continue
        x = (rng.random((20, 2, *shapes[graph.inputs[0]])) < 0.2).astype(np.float32)
        yield Case(name, "paper", graph, x, f"{path.name}, the NIR paper",
                   originals={"nir": (path, {"dt": PAPER_DT})})


def cases(tiers: tuple[str, ...] = TIERS,
          paper: Path | None = None) -> list[Case | tuple[str, str]]:
    """Every case of the given tiers (paper files that fail to load as ``(name, reason)``)."""
    makers = {"exact": exact_cases, "float": float_cases, "fixed": fixed_cases,
              "paper": lambda: paper_cases(paper)}
    unknown = set(tiers) - set(makers)
    if unknown:
        raise hub.HubError(f"unknown tier(s) {', '.join(sorted(unknown))}; the tiers are "
                           f"{', '.join(TIERS)}")
    return [case for tier in TIERS if tier in tiers for case in makers[tier]()]


def check_exact(case: Case) -> str | None:
    """Why ``case`` is not exact in float32 (its float32 and float64 runs differ), or ``None``."""
    x = torch.as_tensor(case.x)
    single = hub.simulate(case.graph, x, dtype=torch.float32)
    double = hub.simulate(case.graph, x.double(), dtype=torch.float64)
    if not torch.equal(single.double(), double):
        where = (single.double() != double).nonzero()[0].tolist()
        return f"float32 and float64 differ first at [t, n, ...] = {where}"
    return None


# -- Loihi axonal delays (appended after every other case, with their own seeds) -------------


def _loihi_dense3_delay(p: _Params) -> hub.Graph:
    """``dense3-loihi`` without its bias, the first neuron layer's spikes leaving 2 steps late
    (``delay=2``), which netx holds as the next dense layer's input delays (its ``delay`` key).
    No bias: a network with delays runs in Lava one simulation per sample, where a biased
    neuron also integrates its bias in the steps before its first input arrives."""
    return hub.Graph.chain(
        ("input", hub.Input(shape=(8,))),
        ("fc1", hub.Linear(weight=p.weight(12, 8))),
        ("n1", _loihi(4096, 512, 3).replace(delay=2)),
        ("fc2", hub.Linear(weight=p.weight(10, 12))),
        ("n2", _loihi(2048, 128, 4)),
        ("fc3", hub.Linear(weight=p.weight(4, 10))),
        ("n3", _loihi(512, 1024, 5)),
    )


#: Loihi topologies with axonal delays, for the fixed tier: name -> (builder, description).
LOIHI_DELAYED: dict[str, tuple[Callable[[_Params], hub.Graph], str]] = {
    "dense3-loihi-delay": (_loihi_dense3_delay, "three Loihi dense layers, the first neuron "
                                                "layer's output delayed 2 steps"),
}


# -- the other neuron families (hub.families; appended after every other case) ---------------


def _alpha_scale(alpha: float, beta: float) -> np.float32:
    """snnTorch's ``Alpha`` gain, as its float32 logarithms compute it."""
    a, b = torch.tensor(alpha), torch.tensor(beta)
    return np.float32((torch.log(a) / (torch.log(b) - torch.log(a)) + 1).item())


def _family_dense(neuron: Make, gain: float = 1.0) -> Callable[[_Params], hub.Graph]:
    """Input(6) -> Linear -> family neuron(8) -> Linear -> LIF(4) (``gain`` scales the first
    weights, for neurons that rest far below their threshold)."""
    def build(p: _Params) -> hub.Graph:
        return hub.Graph.chain(
            ("input", hub.Input(shape=(6,))),
            ("fc1", hub.Linear(weight=p.weight(8, 6) * np.float32(gain))),
            ("n1", neuron(p, 8)),
            ("fc2", hub.Linear(weight=p.weight(4, 8))),
            ("n2", PORTABLE(p, 4)),
        )
    return build


def _filtered(p: _Params) -> hub.Graph:
    """Input(6) -> Linear -> LIF(8) -> SynapseFilter -> Linear -> LIF(4)."""
    return hub.Graph.chain(
        ("input", hub.Input(shape=(6,))),
        ("fc1", hub.Linear(weight=p.weight(8, 6))),
        ("n1", PORTABLE(p, 8)),
        ("filter", hub.SynapseFilter(rate=0.5)),
        ("fc2", hub.Linear(weight=p.weight(4, 8) * np.float32(0.5))),
        ("n2", PORTABLE(p, 4)),
    )


def _alif(**changes: Any) -> Make:
    def make(p: _Params, n: int) -> hub.Node:
        return hub.ALIF(**{"alpha": p.decay(n), "beta": p.decay(n), "threshold": p.threshold(),
                           "threshold_decay": p.decay(n), "threshold_step": 0.5, **changes})
    return make


#: Cases of both tiers: name -> (builder, description).
FAMILIES: dict[str, tuple[Callable[[_Params], hub.Graph], str]] = {
    "dense-alif": (_family_dense(_alif(current_order="previous")),
                   "adaptive-threshold LIF (Norse's LSNN conventions)"),
    "dense-alif-refractory": (_family_dense(_alif(reset="none", refractory_decay=0.5,
                                                  refractory_scale=2.0)),
                              ("adaptive-threshold LIF reset by a decaying refractory voltage, "
                               "as Loihi's ALIF resets")),
    "dense-alpha": (_family_dense(lambda p, n: hub.AlphaLIF(
        alpha=0.75, beta=0.5, scale=_alpha_scale(0.75, 0.5), threshold=0.5), gain=2.0),
        "alpha-synapse neurons (snnTorch's Alpha)"),
    "synapse-filter": (_filtered, ("a synaptic filter between two LIF layers (SpikingJelly's "
                                   "SynapseFilter)")),
}

#: Cases of the float tier only: a quadratic voltage gains bits every step and an exponential
#: is never dyadic, so no model of them stays exact.
FLOAT_FAMILIES: dict[str, tuple[Callable[[_Params], hub.Graph], str]] = {
    "dense-qif": (_family_dense(lambda p, n: hub.QIF(tau=2.0, a0=0.5, v_c=0.5, v_reset=-0.125),
                                gain=2.0), "quadratic IF neurons (SpikingJelly's QIFNode)"),
    "dense-qif-adaptive": (_family_dense(lambda p, n: hub.QIF(
        tau=2.0, a0=0.5, v_c=0.5, v_rest=-0.125, tau_w=4.0, coupling=0.25, w_jump=0.5),
        gain=2.0), "QIF with adaptation (SpikingJelly's IzhikevichNode)"),
    "dense-izhikevich": (_family_dense(lambda p, n: hub.Izhikevich(
        rate=0.25, recovery_rate=np.float32(0.25 * 0.02), coupling=0.2, v_reset=-65.0,
        u_jump=6.0, v_init=-70.0, u_init=-14.0), gain=16.0),
        "Izhikevich neurons, tonic spiking (Norse's IzhikevichCell)"),
    "dense-adex": (_family_dense(lambda p, n: hub.AdExLIF(
        rate=0.5, syn_rate=0.25, ada_rate=0.125, delta_t=0.25, threshold=0.5, v_reset=-0.125,
        coupling=0.5, jump=0.25)), "adaptive exponential LIF (Norse's LIFAdExCell)"),
    "dense-eif": (_family_dense(lambda p, n: hub.EIF(tau=2.0, delta_t=0.5, theta_rh=0.75,
                                                     v_reset=-0.125, v_init=-0.125)),
                  "exponential IF (SpikingJelly's EIFNode)"),
}


#: The node types whose cases are in the float tier only (see :data:`FLOAT_FAMILIES`).
FLOAT_ONLY = frozenset({"QIF", "Izhikevich", "AdExLIF", "EIF"})


def _resonator_dense(p: _Params) -> hub.Graph:
    """Input(6) -> Linear -> Resonator(4) -> Linear -> LIF(4): the float resonator, a rotation
    by factors of 1/2 that keep the state dyadic."""
    return hub.Graph.chain(
        ("input", hub.Input(shape=(6,))),
        ("fc1", hub.Linear(weight=p.weight(8, 6) * np.float32(2))),
        ("n1", hub.Resonator(sin_decay=0.5, cos_decay=0.5, threshold=p.threshold() / 2,
                             threshold_step=0.5, threshold_decay=0.5, refractory_decay=0.5,
                             refractory_scale=1.0)),
        ("fc2", hub.Linear(weight=p.weight(4, 4))),
        ("n2", PORTABLE(p, 4)),
    )


#: Resonator cases of the exact and float tiers (after the other families, seeds of their own).
RESONATOR_FAMILIES: dict[str, tuple[Callable[[_Params], hub.Graph], str]] = {
    "dense-resonator": (_resonator_dense, "resonate-and-fire neurons with an adaptive "
                                          "threshold (hub.Resonator, float)"),
}


def _loihi_resonator(first: dict[str, Any], second: dict[str, Any]
                     ) -> Callable[[_Params], hub.Graph]:
    """Input(6) -> Linear -> Resonator(8) -> Linear -> Resonator(4), in Loihi's fixed point
    as slayer's resonator blocks and Lava's RF processes compute it (gain 64, thresholds
    multiples of 64, even weights)."""
    def neuron(p: _Params, fields: dict[str, Any]) -> hub.Resonator:
        sin, cos = (int(v) for v in p.rng.choice([[1774, 3448], [2800, 2800], [3548, 1845]]))
        threshold = 64.0 * int(p.rng.integers(3, 12))
        fields = dict(fields)
        if fields.get("reset") == "imag":
            fields["imag_reset"] = threshold - 1
        return hub.Resonator(sin_decay=sin / 4096, cos_decay=cos / 4096, gain=64.0,
                             threshold=threshold, arithmetic="fixed", **fields)

    def build(p: _Params) -> hub.Graph:
        return hub.Graph.chain(
            ("input", hub.Input(shape=(6,))),
            ("fc1", hub.Linear(weight=p.weight(16, 6) * np.float32(2))),
            ("n1", neuron(p, first)),
            ("fc2", hub.Linear(weight=p.weight(8, 8) * np.float32(2))),
            ("n2", neuron(p, second)))
    return build


RF_IZ = {"spike_rule": "imag", "reset": "imag"}
ADRF = {"threshold_step": 128.0, "threshold_decay": 3840 / 4096, "refractory_decay": 0.875,
        "refractory_scale": 2.0}
#: Resonator cases of the fixed tier: slayer's rf, rf_iz and adrf, Lava's RF and RF_IZ.
LOIHI_RESONATORS: dict[str, tuple[Callable[[_Params], hub.Graph], str]] = {
    "dense-rf-loihi": (_loihi_resonator({}, RF_IZ), "RF then RF-Izhikevich neurons (slayer's "
                                                     "rf, rf_iz; Lava's RF, RF_IZ)"),
    "dense-adrf-loihi": (_loihi_resonator(ADRF, ADRF), "adaptive RF neurons (slayer's adrf)"),
}


def family_cases(tier: str) -> Iterator[Case]:
    """The neuron-family cases of the exact or float tier, with seeds of their own."""
    make_params = {"exact": _Dyadic, "float": _Float}[tier]
    families = FAMILIES | (FLOAT_FAMILIES if tier == "float" else {}) | RESONATOR_FAMILIES
    for seed, (name, (build, description)) in enumerate(families.items(), start=800):
        yield _case(name, tier, make_params, build, seed, True, description)


# -- sigma-delta networks (hub.sigma_delta; appended after every other case) ------------------
# The exact tier holds slayer's float32 sigma-delta blocks with dyadic values on slayer's grids
# (weights even mantissas of 1/64, thresholds and biases mantissas of 1/64, graded outputs
# floored to 1/4096), which slayer's own forward computes exactly; the fixed tier holds the
# same layers in Lava's integers, as netx files hold them.


def _sd_weight(p: _Params, *shape: int) -> np.ndarray:
    """Even mantissas of 1/64, slayer's 8-bit weight grid."""
    return (p.rng.integers(-40, 41, size=shape) * 2 / 64).astype(np.float32)


def _sd_input() -> list[tuple[str, hub.Node]]:
    """A sigma-delta Input block: slayer's quantize_8bit of the input, then a delta encoder."""
    return [("quantize", hub.Quantize(grid=2 / 64, low=-256 / 64, high=254 / 64)),
            ("n0", hub.Delta(threshold=2 / 64))]


def _sd_dense(p: _Params) -> hub.Graph:
    """Input -> Delta -> Linear -> SigmaDelta (a bias) -> Linear -> SigmaDelta (delayed one
    step, slayer's delay_shift) -> Linear -> Sigma readout."""
    return hub.Graph.chain(
        ("input", hub.Input(shape=(6,))), *_sd_input(),
        ("fc1", hub.Linear(weight=_sd_weight(p, 8, 6))),
        ("n1", hub.SigmaDelta(threshold=3 / 64, bias=p.rng.integers(-8, 9, 8) / 64)),
        ("fc2", hub.Linear(weight=_sd_weight(p, 6, 8))),
        ("n2", hub.SigmaDelta(threshold=2 / 64)), ("d2", hub.Delay(delay=1)),
        ("fc3", hub.Linear(weight=_sd_weight(p, 4, 6))),
        ("n3", hub.Sigma()),
    )


def _sd_conv(p: _Params) -> hub.Graph:
    """Input -> Delta -> Conv2d -> SigmaDelta (a bias per channel, no activation) -> Flatten ->
    Linear -> SigmaDelta."""
    return hub.Graph.chain(
        ("input", hub.Input(shape=(2, 5, 5))), *_sd_input(),
        ("conv", hub.Conv2d(weight=_sd_weight(p, 3, 2, 3, 3), padding=(1, 1))),
        ("n1", hub.SigmaDelta(threshold=4 / 64, bias=p.rng.integers(-4, 5, (3, 1, 1)) * 2 / 64,
                              activation="identity")),
        ("flat", hub.Flatten()),
        ("fc", hub.Linear(weight=_sd_weight(p, 4, 75))),
        ("n2", hub.SigmaDelta(threshold=2 / 64)),
    )


def _sd_fixed(p: _Params, conv: bool) -> hub.Graph:
    """The sigma-delta topologies as netx files hold them: Lava's integers, netx's ReLU."""
    fixed = {"arithmetic": "fixed"}
    if conv:
        return hub.Graph.chain(
            ("input", hub.Input(shape=(2, 5, 5))), ("n0", hub.Delta(threshold=1, **fixed)),
            ("conv", hub.Conv2d(weight=p.rng.integers(-40, 41, (3, 2, 3, 3)) * 2,
                                padding=(1, 1))),
            ("n1", hub.SigmaDelta(threshold=2, bias=p.rng.integers(-4, 5, (3, 1, 1)), **fixed)),
            ("flat", hub.Flatten()),
            ("fc", hub.Linear(weight=p.rng.integers(-40, 41, (4, 75)) * 2)),
            ("n2", hub.SigmaDelta(threshold=2, **fixed)),
        )
    return hub.Graph.chain(
        ("input", hub.Input(shape=(6,))), ("n0", hub.Delta(threshold=1, **fixed)),
        ("fc1", hub.Linear(weight=p.rng.integers(-40, 41, (8, 6)) * 2)),
        ("n1", hub.SigmaDelta(threshold=3, bias=p.rng.integers(-8, 9, 8), **fixed)),
        ("fc2", hub.Linear(weight=p.rng.integers(-40, 41, (6, 8)) * 2)),
        ("n2", hub.SigmaDelta(threshold=2, **fixed)),
        ("fc3", hub.Linear(weight=p.rng.integers(-40, 41, (4, 6)) * 2)),
        ("n3", hub.Sigma(**fixed)),
    )


class _Graded(_Dyadic):
    """Graded inputs on slayer's input grid (multiples of 1/32 in [0, 2])."""

    def spikes(self, *shape: int, p: float = 0.5) -> np.ndarray:
        return (self.rng.integers(0, 65, size=shape) / 32).astype(np.float32)


class _GradedInteger(_Integer):
    """Integer graded inputs, as Lava's fixed-point input layer takes them (0 to 128)."""

    def spikes(self, *shape: int, p: float = 0.5) -> np.ndarray:
        return self.rng.integers(0, 129, size=shape).astype(np.float32)


#: Sigma-delta cases: name -> (tier, params, builder, spiking output, description).
SIGMA_DELTA: dict[str, tuple[str, Callable[[int], _Params], Callable[[_Params], hub.Graph],
                             bool, str]] = {
    "dense-sigma-delta": ("exact", _Graded, _sd_dense, False,
                          "slayer's sigma-delta Input, Dense (a bias, delay_shift) and Output "
                          "blocks, float32"),
    "conv-sigma-delta": ("exact", _Graded, _sd_conv, True,
                         "slayer's sigma-delta Input, Conv (no activation, a bias per channel), "
                         "Flatten and Dense blocks, float32"),
    "dense-sigma-delta-loihi": ("fixed", _GradedInteger, lambda p: _sd_fixed(p, False), False,
                                "netx's SDNN dense layers and sigma readout, Lava's integers"),
    "conv-sigma-delta-loihi": ("fixed", _GradedInteger, lambda p: _sd_fixed(p, True), True,
                               "netx's SDNN input, conv (a bias per channel) and dense layers, "
                               "Lava's integers"),
}


def _mixed_families(p: _Params) -> hub.Graph:
    """lava-dl's overview network in miniature, one block family per layer, as slayer's import
    gives it: a sigma-delta ``Input`` (graded values into a delta encoder), an ``rf_iz`` ``Conv``
    (the real then the imaginary output channels into a Resonator that rounds its graded drive
    toward zero; ``delay_shift``), a ``Flatten``, an ``alif`` ``Dense`` (``delay_shift``) and a
    ``cuba`` ``Affine`` voltage readout. Weights are slayer's even mantissas, decays its 12-bit
    integers, thresholds mantissas times 64."""
    def mantissas(*shape: int) -> np.ndarray:
        return (p.rng.integers(-24, 25, size=shape) * 2).astype(np.float32)

    def decay() -> int:
        return int(p.rng.integers(0, 17)) * 256

    sin, cos = (int(v) for v in p.rng.choice([[1774, 3448], [2800, 2800], [3548, 1845]]))
    rf_threshold = 64.0 * int(p.rng.integers(8, 24))
    alif_threshold = 64.0 * int(p.rng.integers(16, 48))
    return hub.Graph.chain(
        ("input", hub.Input(shape=(2, 4, 4))), *_sd_input(),
        ("conv", hub.Conv2d(weight=mantissas(6, 2, 3, 3), padding=(1, 1))),
        ("n1", hub.Resonator(sin_decay=sin / 4096, cos_decay=cos / 4096, gain=64.0,
                             threshold=rf_threshold, spike_rule="imag", reset="imag",
                             imag_reset=rf_threshold - 1, arithmetic="fixed",
                             input_rounding="toward_zero")),
        ("d1", hub.Delay(delay=1)),
        ("flat", hub.Flatten()),
        ("fc1", hub.Linear(weight=mantissas(8, 48))),
        ("n2", hub.ALIF(threshold=alif_threshold, alpha=1 - decay() / 4096,
                        beta=1 - decay() / 4096, gain=1.0, current_gain=64.0,
                        current_order="new", comparison=">=", reset="none",
                        threshold_step=64.0 * int(p.rng.integers(0, 32)),
                        threshold_decay=1 - decay() / 4096,
                        refractory_decay=1 - decay() / 4096, refractory_scale=2.0,
                        arithmetic="fixed")),
        ("d2", hub.Delay(delay=1)),
        ("fc2", hub.Linear(weight=mantissas(3, 8))),
        ("n3", hub.LoihiCUBA(i_decay=decay(), v_decay=decay(), threshold=1 << 17,
                             spike_mode="voltage")),
        ("scale", hub.Scale(scale=np.float32(1 / 64))),
    )


#: Cases that mix slayer's block families, as lava-dl's overview network does (exact tier,
#: after the sigma-delta cases, seeds of their own): name -> (builder, description).
MIXED_FAMILIES: dict[str, tuple[Callable[[_Params], hub.Graph], str]] = {
    "conv-mixed-families": (_mixed_families, "slayer's sigma_delta Input, rf_iz Conv, alif "
                                             "Dense and cuba Affine readout in one network"),
}


def mixed_family_cases() -> Iterator[Case]:
    """The exact-tier cases that mix slayer's block families."""
    for seed, (name, (build, description)) in enumerate(MIXED_FAMILIES.items(), start=950):
        yield _case(name, "exact", _Graded, build, seed, False, description)


def sigma_delta_cases(tier: str) -> Iterator[Case]:
    """The sigma-delta cases of one tier, with seeds of their own."""
    for seed, (name, (where, make_params, build, spiking, description)) in enumerate(
            SIGMA_DELTA.items(), start=900):
        if where == tier:
            yield _case(name, tier, make_params, build, seed, spiking, description)
