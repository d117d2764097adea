r"""The ``ann`` format: trained ReLU networks, converted to rate-coded spiking networks.

``hub.load(relu_net, source="ann", calibration=loader)`` (or ``hub.convert(..., source="ann")``)
turns a trained torch ReLU network into a canonical graph of integrate-and-fire neurons whose
firing rates approximate the ReLU activations, by data-based normalisation (Diehl et al. 2015,
Rueckauer et al. 2017). It only imports: there is no export back to an ANN.

What it takes
-------------
An ``nn.Sequential`` or any module that ``torch.fx`` can trace, built from:
``Conv1d``/``Conv2d``/``Linear``; ``BatchNorm1d``/``BatchNorm2d`` right after one of those (folded
into it with the running statistics, as in eval mode); ``ReLU`` (module, ``F.relu``,
``torch.relu``, ``.relu()``); the sum of two activations (``a + b``, ``a += b``, ``torch.add``:
residual skip connections); ``AvgPool2d``; ``AdaptiveAvgPool2d`` at the traced input size where
the output is the input (dropped), where each input side is a multiple of the output side (an
``AvgPool2d``), or, any sizes, right before a ``Flatten`` and a ``Linear`` (folded into that
``Linear``, below); ``Flatten``, ``torch.flatten``, ``.view``/``.reshape`` that merge sample
axes (which axes is read from the shapes, so ``[N, C, 1, 1]`` to ``[N, C]`` is a Flatten);
``Dropout`` and ``Identity`` (dropped: eval mode). ``MaxPool2d`` is refused unless
``maxpool="approximate"``. Anything else (another activation, a concatenation, a product, a
softmax) is refused with :class:`hub.UnsupportedError` naming the module. Converting never
changes the model: it works on a copy in eval mode.

The method
----------
Split the chain at its ReLUs. Layer ``l`` is the affine map between ReLU ``l-1`` (or the input)
and ReLU ``l``: exactly one convolution or linear layer, with any pooling and flattening around
it. Its ANN activation is ``a_l = relu(W_l a_{l-1} + b_l)`` (pooling is linear and commutes with
the scale, so it is left out here).

*Neurons.* Each ReLU becomes an ``IF`` neuron per element: ``v = v + z``; spike when
``v > 1`` (``comparison=">"``, or ``">="``); on a spike ``v = v - 1`` (reset by subtraction, in
the same step); ``v`` starts at ``v_init``. With a constant input current ``0 <= z <= 1`` and
threshold 1, write ``w_t = v_init + t z``; then ``v_t = w_t - n_t`` where ``n_t`` is the number of
spikes so far, and by induction over the steps (``v`` gains at most 1 per step, so it crosses at
most one threshold) ``n_t = floor(w_t)`` for ``">="`` (``v_t`` stays in ``[0, 1)``) and
``n_t = max(0, ceil(w_t) - 1)`` for ``">"`` (``v_t`` in ``[0, 1]``); the two differ only where
``w_t`` is a whole number. So the rate ``n_t / t`` is ``z + (v_init - v_t) / t``: ``z`` to within
``1/t``, and within ``1/(2t)`` for ``v_init = 0.5``. Input above 1 gives a spike every step (the
rate saturates at 1). Reset by subtraction keeps the remainder ``v_t``, so no input is lost
(reset to zero would throw away up to one threshold per spike and bias every rate low);
negative input drives ``v`` below zero and gives no spikes, which is the ReLU's zero.
``v_init = 0.5`` (the default) centres the error, rounding ``t z`` to the nearest whole spike
instead of down (Bu et al. 2022); ``v_init=0`` is the classic choice.
``reset_timing="next"`` subtracts the threshold at the start of the next step instead (snnTorch's
``reset_delay``): the same spikes in exact arithmetic, possibly not in float. The options exist
so that a target framework can be met exactly: snnTorch needs ``v_init=0, reset_timing="next"``,
SpikingJelly ``comparison=">="`` and ``readout="spikes"`` (docs/ann2snn.md).

*Normalisation.* Pick a scale ``lambda_l`` per layer from the calibration data: the largest
activation of ReLU ``l`` (``mode="max"``), a percentile ``p`` of its positive activations
(``mode="99.9%"``: a few outliers no longer compress every other rate into a few spikes; what
lies above saturates at one spike per step), or a fraction ``f`` of the largest
(``mode=0.5``). Then ``W'_l = W_l lambda_{l-1} / lambda_l`` and ``b'_l = b_l / lambda_l``, with
``lambda_0 = 1`` (the input is not rescaled). If layer ``l-1`` fires at rate
``r_{l-1} ~ a_{l-1} / lambda_{l-1}``, layer ``l``'s mean input current is
``(W_l a_{l-1} + b_l) / lambda_l``, so its rate is ``~ a_l / lambda_l``, clipped at 1: by
induction every layer's rate, times ``lambda_l``, approximates its ReLU activation. Bias terms
are a constant current each step.

*Skip connections.* Every value between neurons is a linear function of the spikes of the
neuron layers (or the input) it comes from, so it is kept in a known unit. Before any weight
layer a value is in the units of its source ``s``: the ANN's value is ``lambda_s`` times it
(pooling and flattening keep that). A weight layer on the way to neuron layer ``d`` gets
``W' = W lambda_s / lambda_d``, ``b' = b / lambda_d``: its output is in ``d``'s units. An
addition ``z = u + v`` feeding ``d`` must add values in one unit, so each branch is brought to
``d``'s units: a branch with a weight layer is already there; a branch with none (a ResNet's
identity shortcut, from neuron layer ``s``) is multiplied by ``lambda_s / lambda_d``. Then ``d``
receives ``(u + v) / lambda_d = z / lambda_d``, its rate approximates ``relu(z) / lambda_d``,
and the induction above goes on through the block. Without the factor the shortcut would arrive
``lambda_s / lambda_d`` times too strong or weak (``tests/test_ann.py`` shows the rate check
failing for it). The factor is a per-channel 1x1 convolution (a diagonal ``Affine`` for
vectors): each output is one product ``w x``, exactly ``ratio * x`` in float32, and every torch
target has the layer (``Scale`` would say the same, but fewer formats export it); an addition
of two values already in one unit needs none. A ``ReLU`` whose input has no weight layer
between it and a neuron layer is dropped (its input is never negative). Each path from a
neuron layer to the next holds at most one weight layer, and a value after a weight layer may
feed only one neuron layer (or the output): it is scaled for that one.

*Adaptive pooling before a Linear.* Average pooling to any size is a linear map ``P`` per
channel, from ``h*w`` positions to ``k*l``, so ``W flatten(pool(x)) = W' flatten(x)`` with
``W'[o, c, :] = W[o, c, :] P``: exact in real arithmetic, computed in float64. VGG's
``AdaptiveAvgPool2d(7)`` after a 1x1 map (a 32x32 input) replicates each channel 49 times; its
``W'`` sums the 49 weights of each channel, and ``Linear(25088, 4096)`` becomes
``Linear(512, 4096)``. Anywhere else, adaptive pooling with windows of different sizes is
refused.

*Input.* The analog input ``x`` is applied unchanged as the first layer's input current at every
time step: feed ``present(x, steps)``, i.e. ``x`` repeated ``T`` times along a new time axis
(``[T, N, *x.shape[1:]]``).

*Readout* (``readout=``). ``"integrate"`` (default): the last layer (no ReLU after it, as in a
classifier's logits) becomes a non-spiking ``Integrator`` (``v = v + z``, gain 1, i.e. an LI with
beta 1) fed by ``W_L lambda_{L-1} s + b_L``; after ``T`` steps ``v / T`` approximates the ANN's
output itself (unclipped, negative values included), so ``argmax(v)`` is the prediction. This is
the most accurate readout: it never saturates and has no spike-count ties. If the network ends
with a ReLU, the integrator sums that last IF layer's spikes with gain ``lambda_L`` instead.
``"spikes"``: the last layer spikes too (normalised like the others, by the statistics of
``relu`` of the output), and the prediction is the neuron with the most spikes; positive outputs
only, ties possible, a little less accurate.

Graph metadata ``"ann"`` records the options and each layer's ``lambda``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import hub
from hub.errors import HubError
from hub_plugins.ann.building import PRODUCES, _build
from hub_plugins.ann.calibration import (MAX_SAMPLES, MODES_HELP, _as_batch,  # noqa: F401
                                         _batches, _calibrate, _parse_mode, _plan, _samples,
                                         _scale_name)
from hub_plugins.ann.tracing import _flatten, _Folded, _known_leaves, _node_name, trace  # noqa: F401


class ANNFormat(hub.Format):
    name = "ann"
    aliases = ("relu",)
    description = ("trained torch ReLU networks, converted to rate-coded IF networks with "
                   "calibration data (import only)")
    requires = ("torch",)
    install_hint = "torch"
    load_options = ("calibration", "mode", "maxpool", "readout", "comparison", "v_init",
                    "reset_timing", "progress")
    imports = PRODUCES

    def recognizes(self, obj: Any) -> bool:
        """A torch module built only from layers this converter takes, with at least one ReLU."""
        import torch.nn as nn

        if not isinstance(obj, nn.Module):
            return False
        leaves = [m for m in obj.modules() if not list(m.children())]
        return (any(isinstance(m, nn.ReLU) for m in leaves)
                and all(isinstance(m, _known_leaves()) for m in leaves))

    def load(self, obj: Any, calibration: Any = None, mode: str | float = "99.9%",
             maxpool: str = "refuse", readout: str = "integrate", comparison: str = ">",
             v_init: float = 0.5, reset_timing: str = "same",
             progress: bool | None = None) -> hub.Graph:
        return convert(obj, calibration, mode=mode, maxpool=maxpool, readout=readout,
                       comparison=comparison, v_init=v_init, reset_timing=reset_timing,
                       progress=progress)


# -- the public helpers ------------------------------------------------------------------------


def convert(model: Any, calibration: Any, *, mode: str | float = "99.9%",
            maxpool: str = "refuse", readout: str = "integrate", comparison: str = ">",
            v_init: float = 0.5, reset_timing: str = "same",
            progress: bool | None = None) -> hub.Graph:
    """Convert the ReLU network ``model`` with ``calibration`` data (module docstring).

    ``calibration`` is an iterable of input batches ``[N, *in]`` or of ``(x, y, ...)`` tuples
    (a ``DataLoader``), or one tensor holding a batch. ``progress`` shows a bar during
    calibration: ``None`` shows it on a terminal only.
    """
    fraction, percentile = _parse_mode(mode)
    if maxpool not in ("refuse", "approximate"):
        raise HubError(f"maxpool={maxpool!r}: expected 'refuse' (the default) or 'approximate'")
    if readout not in ("integrate", "spikes"):
        raise HubError(f"readout={readout!r}: expected 'integrate' (the default) or 'spikes'")
    if comparison not in (">", ">="):
        raise HubError(f"comparison={comparison!r}: expected '>' (the default) or '>='")
    if reset_timing not in ("same", "next"):
        raise HubError(f"reset_timing={reset_timing!r}: expected 'same' (the default) or 'next'")
    if isinstance(v_init, bool) or not isinstance(v_init, (int, float)) \
            or not 0.0 <= float(v_init) < 1.0:
        raise HubError(f"v_init={v_init!r}: expected a number in [0, 1), a fraction of the "
                       "threshold (0.5 centres the rate error, 0 is the classic choice)")
    if calibration is None:
        raise HubError("the 'ann' format needs calibration=<data>: an iterable of input batches "
                       "(or (x, y) tuples, e.g. a DataLoader) to measure each layer's activations")
    batches = _batches(calibration)
    first = next(batches, None)
    if first is None:
        raise HubError("calibration: the data loader is empty; give it at least one batch")
    net = trace(model, first, maxpool=maxpool)
    plan = _plan(net, readout)
    stats = _calibrate(net, plan, first, batches, percentile=percentile is not None,
                       show=progress, total=_samples(calibration))
    scales = {key: stat.scale(fraction, percentile, _scale_name(net, key))
              for key, stat in stats.items()}
    return _build(net, plan, scales, mode=mode, readout=readout, comparison=comparison,
                  v_init=float(v_init), reset_timing=reset_timing)


def present(x: Any, steps: int) -> Any:
    """The analog input ``x`` (``[N, *in]``) as a constant current for ``steps`` time steps."""
    import torch

    x = torch.as_tensor(x)
    return x.unsqueeze(0).expand(steps, *x.shape)


def folded(model: Any, example: Any, *, maxpool: str = "refuse") -> Any:
    """The network as the converter sees it: batch norm folded into the layers before it,
    dropout and identities gone, adaptive pooling as ``AvgPool2d`` or folded into the ``Linear``
    after it. A chain is an ``nn.Sequential``; a network with additions a module that runs the
    same steps. It computes what ``model`` computes in eval mode, up to float rounding.
    ``example`` is one input batch, for tracing shapes."""
    import torch.nn as nn

    net = trace(model, _as_batch(example, "example"), maxpool=maxpool)
    keys = list(net.steps)
    if all(step.kind != "add" and step.inputs == [prev]
           for step, prev in zip(net.steps.values(), ["input", *keys])):
        return nn.Sequential(OrderedDict((_node_name(s), s.module) for s in net.steps.values()))
    return _Folded(net)


@hub.hookimpl
def hub_register_formats(register) -> None:
    register(ANNFormat())
