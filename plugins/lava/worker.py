"""The Lava side of the bridge: runs netx hdf5 networks in Lava's Loihi fixed-point simulator.

This file is executed by the Python of the Lava environment (``.venv-lava``, Python 3.10 with
lava-dl 0.6.0), never imported by the hub: the hub's own environment cannot hold Lava. It needs
only numpy and Lava, so it runs whether or not snn-hub is installed there.

Protocol: one JSON object per line on stdin, one JSON reply per line on stdout. Arrays travel as
``.npy`` files (read with ``allow_pickle=False``) named in the request; nothing is unpickled.

``{"op": "hello"}``
    replies ``{"ok": true, "lava_dl": "0.6.0", "lava": "0.10.0", "python": "3.10.13"}``.
``{"op": "run_netx", "net": PATH, "x": PATH, "out": PATH, "input_message_bits": null}``
    runs the network on the time-major input in ``x`` (``[T, N, *features]``, features in the
    hub's (torch) order) and writes the output to ``out`` as ``[T, N, *features]`` float32,
    aligned step for step with the network without its synaptic latency (below). Replies
    ``{"ok": true, "out": PATH, "latency": L, "runs": R, "steps": S, "seconds": s}``.
``{"op": "quit"}``
    ends the worker.

A failure replies ``{"ok": false, "kind": KIND, "message": TEXT}``, ``KIND`` being ``"format"``
(the file or input is not something netx can run) or ``"lava"`` (Lava itself failed).

Timing, derived from the process models of lava-nc 0.10 (``lava.proc``) and lava-dl 0.6
(``lava.lib.dl.netx``), all under the ``LoihiProtocol`` where a message sent in step ``t`` is
received in the same step ``t``:

- ``io.source.RingBuffer`` sends ``data[..., (t - 1) % len]`` in step ``t`` (1-based), so
  step ``t`` carries input sample ``t - 1``: no delay.
- ``dense``/``conv`` synapses (``PyDenseModelBitAcc``, ``PyConvModelFixed``) first send
  ``a_buff``, the accumulation of the previous step, and then accumulate this step's input:
  **one step of delay per synapse layer**, and nothing reaches the neuron in step 1.
- The LIF neuron (``PyLifModelBitAcc``) integrates what it receives and sends its spikes in the
  same step: no delay. A netx ``input`` layer has a neuron but no synapse: no delay.
- ``io.sink.RingBuffer`` stores what it receives in step ``t`` at ``(t - 1) % len``: no delay.

So the network's output at step ``k`` (0-based) is the undelayed network's output at ``k - L``,
``L`` being the number of synapse layers (``dense``, ``dense_rec``'s forward synapse, ``conv``).
The worker runs ``T + L`` steps and returns steps ``L .. L + T - 1``. A recurrent synapse's own
one-step delay is part of the network's semantics and stays.

An ``input`` layer with a (CUBA) neuron is netx's ``Input`` block, whose in-port netx leaves
unconnected (its docstring: the input is handled through the neuron's bias); as lava-dl's own
tests do, the input is sent to that neuron's ``a_in``, so the neuron integrates the input as
any CUBA neuron does, in the same step. The layer's ``weight``/``bias`` are a transform netx
records but does not apply.

Batches: a netx ``Network`` holds one sample. Where every layer is a CUBA ``dense``/``conv``
layer (or the input neuron), the samples run back to back in one simulation of ``N * T + L``
steps with Lava's own state reset (``reset_interval=T``, ``LIFReset``): netx resets layer ``j``
(0-based) when ``time_step % T == (reset_offset + 1 + j) % T``, and with ``reset_offset=1``
(``0`` where an input neuron is layer 0, which no synapse delays) that is the step in which
sample ``n``'s first input reaches layer ``j`` through its synapse delays, so each sample
starts from zero state exactly as a fresh run would. The synapse buffers need no reset:
the value a layer receives in its reset step already belongs to the new sample. Other networks
(recurrent, axonal delays, sigma-delta, an input neuron) run one simulation per sample, with the
same reset: it zeroes each layer in the step its share of the sample begins, so a bias does not
integrate during the ``j + 1`` steps before the input reaches layer ``j``. (An axonal delay does
not move that step: the hub's neuron starts at its step 0 whatever its input's delay.)
netx builds no reset for sigma-delta layers, so there each ``SigmaDelta``'s bias is held at 0
until the step the sample reaches its layer (:func:`_stage_sigma_delta_biases`), to the same
effect.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

# This file sits among the hub's ``lava`` plugin modules, which must not shadow installed
# packages if this directory were on the path (it is when run as a script without ``python -I``).
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import numpy as np  # noqa: E402

#: Layer types netx 0.6 builds; any other makes ``netx.hdf5.Network`` raise.
SYNAPSE_LAYERS = ("dense", "dense_rec", "conv")
#: Layer types netx 0.6 names but cannot build: it calls a create_complex_dense it lacks.
UNBUILT_LAYERS = ("dense_comp",)


class RequestError(Exception):
    """The request cannot be served: the file or the input does not fit (kind "format")."""


def _layers(path: str) -> list[dict]:
    """Each layer's type, neuron type and whether it has axonal delays, from the hdf5 file."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise RequestError(f"not an hdf5 file ({e})") from None
    with f:
        if "layer" not in f:
            raise RequestError("no 'layer' group, so not a netx network description")
        group = f["layer"]
        keys = sorted(group.keys(), key=lambda k: int(k) if k.isdigit() else -1)
        out = []
        for key in keys:
            layer = group[key]
            kind = layer["type"][()] if "type" in layer else b""
            kind = (kind[0] if np.ndim(kind) else kind)
            kind = kind.decode("ascii", "replace") if isinstance(kind, bytes) else str(kind)
            neuron = ""
            if "neuron" in layer and "type" in layer["neuron"]:
                neuron = layer["neuron"]["type"][()]
                neuron = neuron.decode("ascii", "replace") if isinstance(neuron, bytes) \
                    else str(neuron)
            out.append({"name": key, "type": kind, "neuron": neuron,
                        "delay": "delay" in layer, "has_neuron": "neuron" in layer})
        return out


def _feature_order(x: np.ndarray) -> np.ndarray:
    """``[T, N, *f]`` (torch order, e.g. C, H, W) -> ``[N, *reversed(f), T]`` (Lava's W, H, C)."""
    return np.transpose(x, (1, *range(x.ndim - 1, 1, -1), 0))


def _back(y: np.ndarray) -> np.ndarray:
    """``[N, *reversed(f), T]`` -> ``[T, N, *f]``."""
    return np.transpose(y, (y.ndim - 1, 0, *range(y.ndim - 2, 0, -1)))


def run_netx(net_path: str, x: np.ndarray, input_message_bits: int | None = None) -> dict:
    """Run the netx file on ``x`` ``[T, N, *f]``; returns the output and how it was run."""
    from lava.lib.dl import netx
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source

    if x.ndim < 3:
        raise RequestError(f"input must be [T, N, *features], got shape {list(x.shape)}")
    if not np.all(np.isfinite(x)) or not np.all(x == np.round(x)):
        raise RequestError("Lava's fixed-point simulator takes integer inputs (spikes 0/1 or "
                           "integer graded spikes); the input has non-integer values")
    steps, batch = x.shape[:2]
    if input_message_bits is None:
        binary = bool(np.all((x == 0) | (x == 1)))
        input_message_bits = 0 if binary else 24
    layers = _layers(net_path)
    for layer in layers:
        if layer["type"] in UNBUILT_LAYERS:
            raise RequestError(f"layer {layer['name']!r} has type {layer['type']!r}, which "
                               "lava-dl 0.6's netx cannot build (hdf5.Network calls "
                               "create_complex_dense, which it does not define); netx builds a "
                               "complex layer from type 'dense' with weight/real and weight/imag")
        if layer["type"] not in (*SYNAPSE_LAYERS, "input", "flatten"):
            raise RequestError(f"layer {layer['name']!r} has type "
                               f"{layer['type']!r}, which lava-dl's netx does not build")
    input_neuron = bool(layers) and layers[0]["type"] == "input" and layers[0]["has_neuron"]
    together = batch > 1 and all(
        layer["type"] in ("dense", "conv", "input") and layer["neuron"] in ("CUBA", "LOIHI")
        and not layer["delay"]
        for layer in layers if layer["type"] != "flatten"
        and not (layer["type"] == "input" and not layer["has_neuron"]))
    # the input neuron is layer 0 and no synapse delays the input on its way there
    reset_offset = 0 if input_neuron else 1
    feats = tuple(reversed(x.shape[2:]))
    lava_x = _feature_order(x).astype(np.int32)  # [N, *f_rev, T]

    def network(reset: int | None):
        options = {"net_config": net_path, "input_message_bits": input_message_bits,
                   "input_shape": feats}
        if reset is not None:
            options.update(reset_interval=reset, reset_offset=reset_offset)
        try:
            net = netx.hdf5.Network(**options)
        except (KeyError, ValueError, RuntimeError, AssertionError, TypeError) as e:
            raise RequestError(f"netx cannot build this network: "
                               f"{type(e).__name__}: {e}") from None
        if tuple(net.in_layer.neuron.a_in.shape if input_neuron else net.inp.shape) != feats:
            raise RequestError(
                f"the network takes input of shape {list(reversed(net.inp.shape))} "
                f"(features, hub order) but got {list(x.shape[2:])}")
        latency = sum(1 for layer in net.layers
                      if hasattr(layer, "synapse") or hasattr(layer, "real_synapse"))
        return net, latency

    def simulate(data: np.ndarray, reset: int | None) -> tuple[np.ndarray, int]:
        net, latency = network(reset)
        staged = _stage_sigma_delta_biases(net)
        total = data.shape[-1] + latency
        padded = np.concatenate(
            [data, np.zeros((*data.shape[:-1], latency), dtype=np.int32)], axis=-1)
        source = Source(data=padded)
        sink = Sink(shape=net.out.shape, buffer=total)
        if input_neuron:
            # netx's Input block leaves its in-port unconnected (it expects the input through
            # the neuron's bias); lava-dl's own tests send the input to the neuron's a_in
            source.s_out.connect(net.in_layer.neuron.a_in)
        else:
            source.s_out.connect(net.inp)
        net.out.connect(sink.a_in)
        try:
            config, done = Loihi2SimCfg(select_tag="fixed_pt"), 0
            for arrival, var, value in staged:  # each bias from the step the sample arrives
                if arrival - 1 > done:
                    net.run(condition=RunSteps(num_steps=arrival - 1 - done), run_cfg=config)
                    done = arrival - 1
                var.set(value)
            net.run(condition=RunSteps(num_steps=total - done), run_cfg=config)
            out = np.asarray(sink.data.get())
        finally:
            net.stop()
        return out, latency

    start = time.perf_counter()
    if together:
        data = np.concatenate(list(lava_x), axis=-1)  # [*f_rev, N*T]
        out, latency = simulate(data, steps)
        chunks = [out[..., latency + n * steps: latency + (n + 1) * steps] for n in range(batch)]
        runs, simulated = 1, batch * steps + latency
    else:
        chunks = []
        for n in range(batch):
            # the same per-layer reset, once: without it a layer's bias would integrate in the
            # steps before the sample's first input reaches it
            out, latency = simulate(lava_x[n], steps)
            chunks.append(out[..., latency: latency + steps])
        runs, simulated = batch, batch * (steps + latency)
    y = _back(np.stack(chunks)).astype(np.float32)
    return {"y": y, "latency": latency, "runs": runs, "steps": simulated,
            "seconds": time.perf_counter() - start}


def _stage_sigma_delta_biases(net) -> list:
    """Zero each sigma-delta layer's bias until the step its share of the sample arrives.

    netx builds no reset for sigma-delta layers (it ignores ``reset_interval`` for them), so
    the per-layer reset that keeps a CUBA layer's bias from acting before the sample arrives
    is not available. A ``SigmaDelta`` with a bias and zero input sends ``relu(bias)`` in its
    first step, and that transient would reach the output. Its state stays zero while its bias
    and input are zero, so starting the bias in the step the sample reaches the layer (one
    step later per synapse layer before it, as ``reset_offset`` counts) runs each layer exactly
    as the network without Lava's latency. Returns ``(step, var, value)`` sorted by step.
    """
    staged, arrival = [], 1
    for layer in net.layers:
        if hasattr(layer, "synapse") or hasattr(layer, "real_synapse"):
            arrival += 1
        neuron = getattr(layer, "neuron", None)
        if type(neuron).__name__ != "SigmaDelta":
            continue
        value = np.array(neuron.bias.init)
        if np.any(value) and arrival > 1:
            neuron.bias.init = np.zeros_like(value)
            staged.append((arrival, neuron.bias, value))
    return sorted(staged, key=lambda item: item[0])


def versions() -> dict:
    from importlib.metadata import version

    return {"lava_dl": version("lava-dl"), "lava": version("lava-nc"),
            "python": ".".join(map(str, sys.version_info[:3]))}


def serve(inp, out) -> None:
    """Answer requests from ``inp`` on ``out`` until ``quit`` or end of input."""
    for line in inp:
        if not line.strip():
            continue
        request: dict = {}
        try:
            request = json.loads(line)
            op = request.get("op")
            if op == "quit":
                reply = {"ok": True}
            elif op == "hello":
                from lava.lib.dl import netx  # noqa: F401  (import now: the first run is faster)

                reply = {"ok": True, **versions()}
            elif op == "run_netx":
                x = np.load(request["x"], allow_pickle=False)
                result = run_netx(request["net"], x, request.get("input_message_bits"))
                np.save(request["out"], result.pop("y"), allow_pickle=False)
                reply = {"ok": True, "out": request["out"], **result}
            else:
                reply = {"ok": False, "kind": "format", "message": f"unknown op {op!r}"}
        except RequestError as e:
            reply = {"ok": False, "kind": "format", "message": str(e)}
        except Exception as e:  # Lava failed: report it, keep serving
            traceback.print_exc(file=sys.stderr)
            reply = {"ok": False, "kind": "lava", "message": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
        if request.get("op") == "quit":
            return


def main() -> None:
    # Lava and lava-dl print to stdout on import and while running; keep the protocol on a
    # private copy of stdout and send everything else to stderr.
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(sys.stdin, protocol)


if __name__ == "__main__":
    main()
