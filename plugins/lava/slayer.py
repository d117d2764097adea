"""The ``slayer`` format: lava-dl slayer block networks, read and written as torch modules."""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np
import torch

import hub
from hub.errors import FormatError
from hub_plugins.lava import slayer_sigma_delta
from hub_plugins.lava.slayer_accepts import ACCEPTS
from hub_plugins.lava.slayer_common import (
    NEURONS, STATES, _blocks, _is_bootstrap, _slayer, _slayer_here)
from hub_plugins.lava.slayer_export import (
    _chain, _export_block, _export_input, _export_input_delay)
from hub_plugins.lava.slayer_import import _first_input_shape, _import_block
from hub_plugins.lava import slayer_resonators as resonators
from hub_plugins.lava.slayer_kwta import import_kwta
from hub_plugins.lava import slayer_readout as readout


class SlayerFormat(hub.Format):
    """lava-dl slayer networks of CUBA, ALIF and sigma-delta blocks, in slayer's arithmetic.

    What a network is: a ``torch.nn.ModuleList`` (or ``Sequential``) of
    ``lava.lib.dl.slayer.block.cuba`` blocks, or any module whose ``blocks`` attribute is one,
    as slayer's examples build them; the blocks run in order. The mapping (``docs/lava.md``)
    goes through the canonical Loihi neuron, :class:`hub.LoihiCUBA`: a ``Dense``/``Conv`` block
    is a ``Linear``/``Conv2d`` of its integer weight mantissas followed by a ``LoihiCUBA`` with
    ``i_decay``/``v_decay`` the 12-bit decays, ``threshold`` the threshold mantissa and
    ``bias`` its norm's (``MeanOnlyBatchNorm``) bias, the same numbers slayer's
    ``export_hdf5`` writes for netx; a ``Pool`` block is a depthwise ``Conv2d``, a
    ``Recurrent`` block adds a recurrent ``Linear`` on its neuron, and an ``Input`` block with
    a neuron is a ``Scale`` (and ``Bias``) before it. A block's timing is part of the model:
    its one-step ``delay_shift`` (on by default) and its learnable axonal delays
    (``delay=True``, one per channel, truncated to whole steps as slayer's forward does) are a
    ``Delay`` node after the neuron, and a ``Delay`` there is written back as ``delay_shift``
    and axonal delays. :meth:`run` is slayer's own forward, as its users call it.

    ``block.alif`` blocks are the same synapses followed by a :class:`hub.ALIF` with
    ``arithmetic="fixed"`` (slayer's integer adaptive-threshold neuron, :func:`_import_alif`);
    lava-dl's bootstrap blocks (``bootstrap.block.cuba``) are read as the spiking network their
    ``Mode.SNN`` forward runs, which is the slayer ``cuba`` block's.

    ``block.sigma_delta`` blocks become :class:`hub.SigmaDelta`, :class:`hub.Delta` and
    :class:`hub.Sigma` in slayer's float32 (``arithmetic="float"``), both ways
    (:mod:`hub_plugins.lava.slayer_sigma_delta`). The resonator families (``rf``, ``rf_iz``,
    ``adrf``) are complex synapses into a :class:`hub.Resonator` (:mod:`.slayer_resonators`), and
    a ``KWTA`` block is the recurrent network it computes (:mod:`.slayer_kwta`). The cuba
    ``Affine`` (a ``LoihiCUBA`` voltage readout, or the synaptic input) and every family's
    ``Average`` (a ``Vote``) map both ways (:mod:`.slayer_readout`), and so do the ``ConvT``
    and ``Unpool`` blocks of every family whose blocks run in lava-dl 0.6 (a
    :class:`hub.ConvTranspose2d` into the family's neuron, :mod:`.slayer_upsample`).
    """

    name = "slayer"
    aliases = ("lava-dl", "slayer-blocks")
    description = ("lava-dl slayer CUBA, ALIF, sigma-delta and resonator block networks (torch "
                   "modules; Loihi fixed point, sigma-delta in float32)")
    requires = ("lava.lib.dl.slayer",)
    install_hint = "lava-dl==0.6.0 (in the Lava environment: scripts/setup-lava)"
    load_options = ("input_shape", "delay_shift")
    imports = exports = frozenset({"Input", "Output", "Linear", "Conv2d", "Flatten",
                                   "LoihiCUBA", "ALIF", "Resonator", "Delay", "Scale", "Bias",
                                   "SigmaDelta", "Delta", "Sigma", "Quantize", "Vote",
                                   "ConvTranspose2d"})
    #: what slayer's blocks hold, per node type and field (:mod:`.slayer_accepts`)
    accepts = ACCEPTS

    def unavailable(self) -> str | None:
        if _slayer_here():
            return None
        version = ".".join(map(str, sys.version_info[:2]))
        return (f"lava-dl's slayer is not importable in this Python {version}: it lives in the "
                "Lava environment (Python 3.10), so run the hub from .venv-lava/bin/python "
                "(scripts/setup-lava creates it)")

    def recognizes(self, obj: Any) -> bool:
        return "lava.lib.dl.slayer" in sys.modules and _blocks(obj) is not None

    # -- import -----------------------------------------------------------------------------

    def load(self, obj: Any, input_shape: tuple[int, ...] | None = None,
             delay_shift: bool = True) -> hub.Graph:
        """The network's canonical graph. ``delay_shift=False`` reads the blocks as if their
        ``delay_shift`` were off: the network slayer's ``export_hdf5`` writes for netx, where
        Lava's pipeline supplies that latency (``docs/lava.md``)."""
        blocks = _blocks(obj)
        if blocks is None:
            raise FormatError(f"a {type(obj).__name__} is not a slayer network: expected a "
                              "ModuleList of lava.lib.dl.slayer.block.cuba blocks, or a module "
                              "whose `blocks` is one")
        if input_shape is None:  # a network exported by snn-hub knows its input shape
            input_shape = getattr(obj, "input_shape", None)
        first_shape = (tuple(int(n) for n in input_shape) if input_shape is not None
                       else resonators.first_input_shape(blocks) or _first_input_shape(blocks))
        if first_shape is None or any(n is None for n in first_shape):
            raise FormatError("the input shape is unknown: the first block is a convolution "
                              "that has not seen an input yet; pass input_shape=(C, H, W)",
                              field="input_shape")
        chain: list[tuple[str, hub.Node]] = [("input", hub.Input(shape=first_shape))]
        loops: list[tuple[str, hub.Node, str]] = []  # a recurrent synapse and its neuron
        graded = False  # whether the blocks so far end in graded (sigma-delta) values
        for index, block in enumerate(blocks):
            where = f"blocks.{index}"
            try:
                shape = hub.Graph.chain(*chain).plan().output_shapes[chain[-1][0]]
                family = type(block).__module__.rsplit(".", 1)[-1]
                if type(block).__name__ == "Average" and not _is_bootstrap(block):
                    # every family's Average is block.base.AbstractAverage
                    mapped, recurrent = readout.import_block(block, family, tuple(shape)), []
                elif resonators.family_of(block) is not None:
                    mapped, recurrent = resonators.import_block(block, delay_shift,
                                                                tuple(shape)), []
                elif type(block).__name__ == "KWTA" and family in ("cuba", "alif") and \
                        not _is_bootstrap(block):
                    mapped, recurrent = import_kwta(block, family, delay_shift)
                elif type(block).__name__ in readout.KINDS and family == "cuba" and \
                        not _is_bootstrap(block):
                    mapped, recurrent = readout.import_block(block, family, tuple(shape)), []
                else:
                    mapped, recurrent = _import_block(block, delay_shift, tuple(shape))
                mapped, graded = _graded_input(mapped, graded)
            except hub.HubError as e:
                raise e.at(node=where) from None
            chain += [(f"{where}.{part}", node) for part, node in mapped]
            loops += [(f"{where}.{part}", node, f"{where}.{target}")
                      for part, node, target in recurrent]
        graph = hub.Graph.chain(*chain)
        for name, node, target in loops:  # the recurrent edge carries the one-step delay
            graph.add(name, node)
            graph.connect(target, name)
            graph.connect(name, target)
        return graph

    # -- export -----------------------------------------------------------------------------

    def export(self, graph: hub.Graph) -> Any:
        chain, rec = _chain(graph)
        blocks = []
        shape = chain[0][1].shape
        plan = graph.flat().plan().output_shapes
        i = 1
        if slayer_sigma_delta.is_sigma_delta(chain):
            blocks, i, shape = slayer_sigma_delta.export_chain(chain, plan)
        while i < len(chain):
            name, node = chain[i]
            if isinstance(node, hub.Flatten):
                if len(shape) < 2 or node._span(shape) != (0, len(shape) - 1):
                    raise hub.UnsupportedError(
                        "slayer's Flatten merges every axis of [C, H, W]; this Flatten keeps "
                        f"some of the axes of {list(shape)}", node=name, field="start_dim")
                alif = any(isinstance(n, hub.ALIF) for _, n in chain)
                flatten = (_slayer().block.alif if alif else _slayer().block.cuba).Flatten()
                flatten.shape = [int(np.prod(shape)), 1, 1]  # what its first forward would set
                blocks.append(flatten)
                shape = plan[name]
                i += 1
                continue
            if isinstance(node, hub.Output):
                break
            if readout.is_readout(chain, i):  # an Average or Affine block
                block, after_block = readout.export_block(chain, i, shape)
                blocks.append(block)
                shape = plan[chain[after_block - 1][0]]
                i = after_block
                continue
            if i == 1 and isinstance(node, (hub.Scale, hub.LoihiCUBA, hub.ALIF)):
                block, i = _export_input(chain, i, shape)
                blocks.append(block)
                continue
            if isinstance(node, hub.Delay) and i == 1:
                blocks.append(_export_input_delay(name, node))
                i += 1
                continue
            neuron = chain[i + 1] if i + 1 < len(chain) else (None, None)
            bias = None  # an alif block's norm: a Bias between its synapse and its ALIF
            if isinstance(neuron[1], hub.Bias) and i + 2 < len(chain) and \
                    isinstance(chain[i + 2][1], (hub.ALIF, hub.Resonator)):
                bias, neuron, i = neuron, chain[i + 2], i + 1
            elif isinstance(neuron[1], hub.Bias) and i + 2 < len(chain) and \
                    isinstance(chain[i + 2][1], hub.LoihiCUBA):
                raise hub.UnsupportedError(
                    "a constant input before a LoihiCUBA (a cuba KWTA block's, where "
                    "threshold * (N - 2K) / N is not 0 on slayer's weight grid) has no cuba "
                    "block: a cuba neuron's bias (its norm) adds to the voltage, not to the "
                    "current", node=neuron[0], field="bias")
            after = chain[i + 2] if i + 2 < len(chain) else (None, None)
            delay = after if isinstance(after[1], hub.Delay) else None
            if isinstance(neuron[1], hub.Resonator) and \
                    isinstance(node, (hub.Linear, hub.Affine, hub.Conv2d, hub.ConvTranspose2d)):
                blocks.append(resonators.export_block(name, node, neuron[0], neuron[1], shape,
                                                      plan[neuron[0]], delay, bias))
                shape = plan[neuron[0]]
                i += 3 if delay else 2
                continue
            if not isinstance(node, (hub.Linear, hub.Affine, hub.Conv2d, hub.ConvTranspose2d)) \
                    or not isinstance(neuron[1], NEURONS):
                raise hub.UnsupportedError(
                    f"slayer blocks are a synapse (Linear, Conv2d or ConvTranspose2d) followed "
                    f"by a LoihiCUBA (cuba) or fixed-point ALIF (alif) neuron; found "
                    f"{type(node).__name__} "
                    f"followed by {type(neuron[1]).__name__}", node=name)
            after = chain[i + 2] if i + 2 < len(chain) else (None, None)
            delay = after if isinstance(after[1], hub.Delay) else None
            blocks.append(_export_block(name, node, neuron[0], neuron[1], shape,
                                        plan[neuron[0]], delay, rec.get(neuron[0]), bias))
            shape = plan[neuron[0]]
            i += 3 if delay else 2
        return SlayerNetwork(torch.nn.ModuleList(blocks), input_shape=chain[0][1].shape)

    # -- runtime ----------------------------------------------------------------------------

    def run(self, native: Any, x: Any) -> Any:
        """slayer's own forward on time-major ``x``, in eval mode, as its users run it."""
        blocks = _blocks(native)
        if blocks is None:
            raise FormatError(f"a {type(native).__name__} is not a slayer network")
        x = torch.as_tensor(x, dtype=torch.float32)
        y = hub.to_lava(x).contiguous()
        saved = [(b, b.training) for b in blocks]
        # a Recurrent block's neuron keeps its state from one call to the next (slayer sets
        # persistent_state); each run starts at rest, as a fresh model does, and the state
        # the model held is put back afterwards
        looping = [b for b in blocks if type(b).__name__ in ("Recurrent", "KWTA")]
        states = [(b.neuron, {k: getattr(b.neuron, k) for k in STATES if hasattr(b.neuron, k)})
                  for b in looping]
        # a KWTA block's delay_shift carries its last step into the next call, too
        buffers = [(b, getattr(b, "delay_buffer", None)) for b in looping]
        try:
            with torch.no_grad():
                for neuron, saved_state in states:
                    for k in saved_state:  # alif's threshold starts at its base threshold
                        start = float(neuron.threshold) if k == "threshold_state" else 0.0
                        setattr(neuron, k, torch.tensor([start]))
                for block, _ in buffers:
                    block.delay_buffer = None
                for block in blocks:
                    block.eval()
                    if _is_bootstrap(block):  # the spiking network, as bootstrap runs it
                        from lava.lib.dl.bootstrap.routine import Mode
                        y = block(y, mode=Mode.SNN)
                    else:
                        y = block(y)
                    if isinstance(y, tuple):  # count_log blocks return (spikes, rate)
                        y = y[0]
        finally:
            for block, training in saved:
                block.train(training)
            for neuron, saved_state in states:
                for k, value in saved_state.items():
                    setattr(neuron, k, value)
            for block, buffer in buffers:
                block.delay_buffer = buffer
        return hub.from_lava(y)


def _graded_input(mapped: list[tuple[str, hub.Node]], graded: bool
                  ) -> tuple[list[tuple[str, hub.Node]], bool]:
    """One block's nodes, given whether its input is graded (a sigma-delta block's output),
    and whether its output is. slayer's resonator dynamics take ``(s_scale * x).to(int64)``
    of the synaptic input: for spikes an integer already, for graded values (multiples of
    1/4096) rounded toward zero, which the Resonator then does too. slayer's cuba and alif
    neurons round their graded input the same way, which LoihiCUBA and ALIF do not model:
    refused."""
    out = []
    for part, node in mapped:
        if graded and isinstance(node, hub.Resonator) and node.arithmetic == "fixed":
            node = node.replace(input_rounding="toward_zero")
        elif graded and isinstance(node, (hub.LoihiCUBA, hub.ALIF)):
            raise hub.UnsupportedError(
                f"graded input (a sigma-delta block's output) reaches a {type(node).__name__}: "
                "slayer rounds the synaptic input at its state scale toward zero, which the "
                "canonical neuron (integer synaptic sums) does not model; a resonator block "
                "can follow a sigma-delta block", node=part, field="input")
        out.append((part, node))
        if isinstance(node, (hub.SigmaDelta, hub.Delta, hub.Sigma)):
            graded = True
        elif isinstance(node, (hub.Resonator, hub.ALIF, hub.LoihiCUBA)):
            graded = False
    return out, graded


class SlayerNetwork(torch.nn.Module):
    """A slayer block network as slayer's examples build it: ``blocks`` run in order.

    ``input_shape`` (``[C, H, W]`` or ``[N]``), when known, is written as netx's ``input``
    layer (a shape, no neuron), which netx needs when the first block is a convolution.
    """

    def __init__(self, blocks: torch.nn.ModuleList,
                 input_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.blocks = blocks
        self.input_shape = tuple(input_shape) if input_shape is not None else None

    def forward(self, spike: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            spike = block(spike)
        return spike

    def export_hdf5(self, filename: str | os.PathLike) -> None:
        """Write the network for netx (``lava.lib.dl.netx.hdf5.Network``), as slayer does."""
        import h5py

        with h5py.File(filename, "w") as handle:
            layers = handle.create_group("layer")
            offset = 0
            if self.input_shape is not None:
                first = layers.create_group("0")
                first.create_dataset("type", (1,), "S10", [b"input"])
                first.create_dataset("shape", data=np.array(self.input_shape))
                offset = 1
            for index, block in enumerate(self.blocks):
                block.export_hdf5(layers.create_group(f"{index + offset}"))
