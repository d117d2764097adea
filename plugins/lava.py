"""Lava: the bridge to Lava's Loihi fixed-point simulator, and the ``slayer`` format.

lava-dl 0.6 needs Python 3.10 and torch < 2.4, so it lives in its own environment,
``.venv-lava`` at the repository root (``scripts/setup-lava`` creates it). This module works
from any environment:

- :func:`run_netx` runs a netx hdf5 file (``lava.lib.dl.netx.hdf5.Network``) in Lava's CPU
  simulator with ``Loihi2SimCfg(select_tag="fixed_pt")``, bit-accurate to Loihi's fixed-point
  neurons. The work happens in ``plugins/lava_worker.py`` under the Lava environment's Python,
  one long-lived process per session that serves every request (Lava takes seconds to import),
  exchanging ``.npy`` files (never pickles) over JSON lines. The output is aligned step for step
  with the network without Lava's synaptic latency: see the worker's docstring and
  ``docs/lava.md``.
- The ``slayer`` format reads and writes lava-dl slayer CUBA block networks; it is usable where
  lava-dl is importable (in ``.venv-lava``) and reports itself unavailable elsewhere.

Which Python runs Lava: ``HUB_LAVA_PYTHON`` if set; else this interpreter when it can import
lava-dl; else ``.venv-lava/bin/python`` in the repository (or the current directory). Where none
is found, :func:`run_netx` raises :class:`LavaUnavailable` saying to run ``scripts/setup-lava``.
"""

from __future__ import annotations

import atexit
import collections
import importlib.util
import json
import os
import selectors
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import hub
import hub.hdf5
from hub.errors import FormatError, PluginError, RuntimeUnavailable
from hub.legalise import Accepts

#: Environment variable naming the Python that has lava-dl.
PYTHON_ENV = "HUB_LAVA_PYTHON"
#: Seconds one request may take before the worker is considered hung; ``HUB_LAVA_TIMEOUT``
#: overrides it.
TIMEOUT = 600.0
WORKER = Path(__file__).with_name("lava_worker.py")
SETUP_HINT = "run scripts/setup-lava (it needs Python 3.10)"


class LavaUnavailable(RuntimeUnavailable):
    """Lava's environment is missing or broken, so Lava cannot run here.

    A :class:`hub.errors.RuntimeUnavailable`, not an ``UnsupportedError``: the model is fine,
    the machine lacks Lava, and the conformance suite reports such a run as "not run" with this
    reason, never as a pass or as "not expressible".
    """


def _lava_here() -> bool:
    try:
        return importlib.util.find_spec("lava.lib.dl.netx") is not None
    except (ImportError, ValueError):
        return False


def lava_python() -> Path:
    """The Python interpreter that runs Lava; raises :class:`LavaUnavailable` if there is none."""
    named = os.environ.get(PYTHON_ENV)
    if named:
        path = Path(named)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise LavaUnavailable(f"Lava environment missing: {PYTHON_ENV}={named!r} is not an "
                                  f"executable Python; point it at the Python of an environment "
                                  f"with lava-dl 0.6, or unset it and {SETUP_HINT}")
        return path
    if _lava_here():
        return Path(sys.executable)
    candidates = [Path(__file__).resolve().parents[1] / ".venv-lava" / "bin" / "python",
                  Path.cwd() / ".venv-lava" / "bin" / "python"]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise LavaUnavailable(f"Lava environment missing: no {candidates[0]}; {SETUP_HINT}, or set "
                          f"{PYTHON_ENV} to a Python with lava-dl 0.6")


def unavailable() -> str | None:
    """Why Lava cannot run here (a cheap check: the interpreter exists), or ``None``."""
    try:
        lava_python()
    except LavaUnavailable as e:
        return e.message
    return None


class _Worker:
    """One ``lava_worker.py`` process serving requests over JSON lines."""

    def __init__(self, python: Path) -> None:
        self.python = python
        self.log = tempfile.TemporaryFile(mode="w+", prefix="hub-lava-", suffix=".log")
        # -I: the worker's directory must not be on sys.path (this file would shadow `lava`)
        # and the user's PYTHON* variables must not leak into the other environment.
        try:
            self.proc = subprocess.Popen(
                [str(python), "-I", str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=self.log, text=True, encoding="utf-8", bufsize=1)
        except OSError as e:
            self.log.close()
            raise LavaUnavailable(f"Lava environment broken: cannot start {python} ({e}); "
                                  f"{SETUP_HINT}") from None
        self.tmp = tempfile.TemporaryDirectory(prefix="hub-lava-")
        self.count = 0
        self.versions = self.request({"op": "hello"}, starting=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr_tail(self, lines: int = 15) -> str:
        self.log.flush()
        self.log.seek(0)
        text = self.log.read().strip().splitlines()
        return "\n".join(text[-lines:])

    def request(self, message: dict, starting: bool = False) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self._failed(starting, "it exited")
        timeout = _timeout()
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                self.close()
                raise PluginError(f"Lava worker gave no answer in {timeout:.0f} s (set "
                                  "HUB_LAVA_TIMEOUT to allow more); it was stopped")
        line = self.proc.stdout.readline()
        if not line:
            self._failed(starting, "it exited")
        try:
            reply = json.loads(line)
        except json.JSONDecodeError:
            self._failed(starting, f"it answered {line[:200]!r}, not a JSON reply")
        if not reply.get("ok"):
            kind = reply.get("kind")
            if starting:
                self._failed(starting, reply.get("message", ""))
            if kind == "format":
                raise FormatError(reply.get("message", "netx cannot run this file"))
            raise PluginError(f"Lava failed: {reply.get('message')}")
        return reply

    def _failed(self, starting: bool, what: str):
        self._stop()
        tail = self.stderr_tail()
        self.close()
        if starting:
            raise LavaUnavailable(
                f"Lava environment broken: {self.python} -I {WORKER.name} failed ({what}); "
                f"{SETUP_HINT}. Its output ended with:\n{tail}")
        raise PluginError(f"Lava worker ({self.python}) {what}. Its output ended with:\n{tail}")

    def path(self, stem: str) -> str:
        self.count += 1
        return os.path.join(self.tmp.name, f"{stem}{self.count}.npy")

    def _stop(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                self.proc.kill()
                self.proc.wait()

    def close(self) -> None:
        self._stop()
        for stream in (self.proc.stdout, self.proc.stdin, self.log):
            try:
                if stream is not None and not stream.closed:
                    stream.close()
            except OSError:
                pass
        self.tmp.cleanup()


def _timeout() -> float:
    value = os.environ.get("HUB_LAVA_TIMEOUT")
    try:
        return float(value) if value else TIMEOUT
    except ValueError:
        raise PluginError(f"HUB_LAVA_TIMEOUT={value!r} is not a number of seconds") from None


_lock = threading.Lock()
_worker: _Worker | None = None
#: Wall seconds of the last :func:`run_netx` calls in this session (the measurements in docs).
timings: collections.deque[float] = collections.deque(maxlen=1000)


def _get_worker() -> _Worker:
    global _worker
    python = lava_python()
    if _worker is not None and (not _worker.alive() or _worker.python != python):
        _worker.close()
        _worker = None
    if _worker is None:
        _worker = _Worker(python)
    return _worker


def shutdown() -> None:
    """Stop this session's Lava worker (it is started again on the next request)."""
    global _worker
    with _lock:
        if _worker is not None:
            _worker.close()
            _worker = None


atexit.register(shutdown)


def worker_versions() -> dict[str, str]:
    """The Python, lava-nc and lava-dl versions of the Lava worker (starting it if needed)."""
    with _lock:
        return {k: v for k, v in _get_worker().versions.items() if k != "ok"}


def run_netx(path: str | os.PathLike, x: Any, *,
             input_message_bits: int | None = None) -> np.ndarray:
    """Run a netx hdf5 network in Lava's Loihi fixed-point CPU simulator.

    ``x`` is time-major ``[T, N, *features]`` (features in torch order, e.g. ``C, H, W``) of
    binary spikes, or of integer graded spikes (then the input is sent with 24 message bits
    unless ``input_message_bits`` says otherwise). Returns ``[T, N, *out]`` float32: the
    output layer's spikes, aligned with the network without Lava's one-step delay per synapse
    layer (step ``t`` of the result is Lava's step ``t + L`` for ``L`` synapse layers), so it
    lines up with ``hub.simulate`` of the same network. The batch runs in one simulation with
    Lava's own state reset between samples where the network allows it, else one per sample.
    """
    path = Path(path)
    if not path.is_file():
        raise FormatError("no such file", file=path)
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float32)
    if x.ndim < 3:
        raise hub.ShapeError(f"run_netx needs input [T, N, *features], got shape {list(x.shape)}",
                             file=path)
    start = time.perf_counter()
    with _lock:
        worker = _get_worker()  # first: a missing Lava environment is said as such
        with hub.hdf5.open_file(path, nodes="layer"):
            pass  # Lava's netx would follow links and external storage: check the file first
        x_path, y_path = worker.path("x"), worker.path("y")
        np.save(x_path, x, allow_pickle=False)
        try:
            reply = worker.request({"op": "run_netx", "net": str(path.resolve()), "x": x_path,
                                    "out": y_path, "input_message_bits": input_message_bits})
            y = np.load(reply["out"], allow_pickle=False)
        except FormatError as e:
            raise e.at(file=path) from None
        finally:
            for p in (x_path, y_path):
                if os.path.exists(p):
                    os.unlink(p)
    timings.append(time.perf_counter() - start)
    return y


# -- the slayer format ----------------------------------------------------------------------

#: slayer's CUBA neuron keeps its state scaled by ``scale`` (``w_scale``, 1 << 6 by default)
#: relative to the hardware's threshold mantissa, and its weights on a grid of ``2 / scale``.
DEFAULT_SCALE = 1 << 6
#: slayer's ``quantize_8bit`` keeps even weight mantissas in [-256, 254].
WEIGHT_RANGE = (-256, 254)


def _slayer_here() -> bool:
    try:
        return importlib.util.find_spec("lava.lib.dl.slayer") is not None
    except (ImportError, ValueError):
        return False


def _is_slayer_block(module: Any) -> bool:
    return type(module).__module__.startswith("lava.lib.dl.slayer.block")


def _blocks(obj: Any) -> list[Any] | None:
    """The blocks of a slayer network: a ModuleList/Sequential of blocks, or ``obj.blocks``."""
    if isinstance(obj, (torch.nn.ModuleList, torch.nn.Sequential)):
        blocks = list(obj)
    elif isinstance(getattr(obj, "blocks", None), torch.nn.ModuleList):
        blocks = list(obj.blocks)
    else:
        return None
    if not blocks or not all(_is_slayer_block(b) for b in blocks):
        return None
    return blocks


def _integral(values: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(values)) and np.all(values == np.round(values)))


class SlayerFormat(hub.Format):
    """lava-dl slayer networks of CUBA blocks, in slayer's own quantised arithmetic.

    What a network is: a ``torch.nn.ModuleList`` (or ``Sequential``) of
    ``lava.lib.dl.slayer.block.cuba`` blocks, or any module whose ``blocks`` attribute is one,
    as slayer's examples build them; the blocks run in order. The mapping (``docs/lava.md``)
    goes through the canonical Loihi neuron, :class:`hub.LoihiCUBA`: a ``Dense``/``Conv`` block
    is a ``Linear``/``Conv2d`` of its integer weight mantissas followed by a ``LoihiCUBA`` with
    ``i_decay``/``v_decay`` the 12-bit decays and ``threshold`` the threshold mantissa, the same
    numbers slayer's ``export_hdf5`` writes for netx. slayer's per-block one-step
    ``delay_shift`` (the hardware's synaptic latency) is transport, not model: it is not in
    the graph, and :meth:`run` switches it off while it runs, so outputs line up with
    ``hub.simulate`` and with :func:`run_netx`.
    """

    name = "slayer"
    aliases = ("lava-dl", "slayer-blocks")
    description = "lava-dl slayer CUBA block networks (torch modules; Loihi fixed point)"
    requires = ("lava.lib.dl.slayer",)
    install_hint = "lava-dl==0.6.0 (in the Lava environment: scripts/setup-lava)"
    load_options = ("input_shape",)
    imports = exports = frozenset({"Input", "Output", "Linear", "Conv2d", "Flatten",
                                   "LoihiCUBA"})
    accepts = Accepts({tuple(sorted(exports)): ()}, name="slayer", notes=[
        "field values are checked by the exporter against slayer's CUBA blocks"])

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

    def load(self, obj: Any, input_shape: tuple[int, ...] | None = None) -> hub.Graph:
        blocks = _blocks(obj)
        if blocks is None:
            raise FormatError(f"a {type(obj).__name__} is not a slayer network: expected a "
                              "ModuleList of lava.lib.dl.slayer.block.cuba blocks, or a module "
                              "whose `blocks` is one")
        nodes: list[tuple[str, hub.Node]] = []
        first_shape: tuple[int, ...] | None = None
        for index, block in enumerate(blocks):
            where = f"blocks.{index}"
            try:
                mapped, shape = _import_block(block)
            except hub.HubError as e:
                raise e.at(node=where) from None
            if first_shape is None and shape is not None:
                first_shape = shape
            nodes += [(f"{where}.{part}", node) for part, node in mapped]
        if input_shape is None:  # a network exported by snn-hub knows its input shape
            input_shape = getattr(obj, "input_shape", None)
        if input_shape is not None:
            first_shape = tuple(int(n) for n in input_shape)
        if first_shape is None or any(n is None for n in first_shape):
            raise FormatError("the input shape is unknown: the first block is a convolution "
                              "that has not seen an input yet; pass input_shape=(C, H, W)",
                              field="input_shape")
        return hub.Graph.chain(("input", hub.Input(shape=first_shape)), *nodes)

    # -- export -----------------------------------------------------------------------------

    def export(self, graph: hub.Graph) -> Any:
        chain = _chain(graph)
        blocks = []
        shape = chain[0][1].shape
        plan = graph.flat().plan().output_shapes
        i = 1
        while i < len(chain):
            name, node = chain[i]
            if isinstance(node, hub.Flatten):
                if len(shape) < 2 or node._span(shape) != (0, len(shape) - 1):
                    raise hub.UnsupportedError(
                        "slayer's Flatten merges every axis of [C, H, W]; this Flatten keeps "
                        f"some of the axes of {list(shape)}", node=name, field="start_dim")
                flatten = _slayer().block.cuba.Flatten()
                flatten.shape = [int(np.prod(shape)), 1, 1]  # what its first forward would set
                blocks.append(flatten)
                shape = plan[name]
                i += 1
                continue
            if isinstance(node, hub.Output):
                break
            neuron = chain[i + 1] if i + 1 < len(chain) else (None, None)
            if not isinstance(node, (hub.Linear, hub.Affine, hub.Conv2d)) or \
                    not isinstance(neuron[1], hub.LoihiCUBA):
                raise hub.UnsupportedError(
                    f"slayer CUBA blocks are a synapse (Linear or Conv2d) followed by a "
                    f"LoihiCUBA neuron; found {type(node).__name__} followed by "
                    f"{type(neuron[1]).__name__}", node=name)
            blocks.append(_export_block(name, node, neuron[0], neuron[1], shape,
                                        plan[neuron[0]]))
            shape = plan[neuron[0]]
            i += 2
        return SlayerNetwork(torch.nn.ModuleList(blocks), input_shape=chain[0][1].shape)

    # -- runtime ----------------------------------------------------------------------------

    def run(self, native: Any, x: Any) -> Any:
        """slayer's own forward on time-major ``x``, without its per-block one-step delay."""
        blocks = _blocks(native)
        if blocks is None:
            raise FormatError(f"a {type(native).__name__} is not a slayer network")
        x = torch.as_tensor(x, dtype=torch.float32)
        y = hub.to_lava(x).contiguous()
        saved = [(b, getattr(b, "delay_shift", None), b.training) for b in blocks]
        try:
            with torch.no_grad():
                for block in blocks:
                    if hasattr(block, "delay_shift"):
                        block.delay_shift = False
                    block.eval()
                    y = block(y)
                    if isinstance(y, tuple):  # count_log blocks return (spikes, rate)
                        y = y[0]
        finally:
            for block, shift, training in saved:
                if shift is not None:
                    block.delay_shift = shift
                block.train(training)
        return hub.from_lava(y)


def _slayer() -> Any:
    from lava.lib.dl import slayer

    return slayer


def _decay(parameter: Any, field: str, p_scale: int) -> np.ndarray:
    """A slayer decay parameter (already scaled by ``p_scale``) as Loihi's 12-bit integer."""
    raw = parameter.detach().cpu().to(torch.float32)
    if raw.min() < 0 or raw.max() > p_scale:
        raise hub.UnsupportedError(
            f"{field} {raw.min().item() / p_scale}..{raw.max().item() / p_scale} is outside "
            "[0, 1]: slayer's forward would use it unclamped but its export clamps it",
            field=field)
    values = torch.round(raw).numpy().astype(np.int64)  # slayer's quantize(step=1)
    return values.reshape(()) if values.size == 1 else values


def _import_neuron(neuron: Any, channels_first: bool) -> hub.LoihiCUBA:
    if type(neuron).__name__ != "Neuron" or not type(neuron).__module__.endswith("neuron.cuba"):
        raise hub.UnsupportedError(f"{type(neuron).__module__}.{type(neuron).__name__} is not "
                                   "slayer's CUBA neuron", field="neuron")
    if neuron.graded_spike:
        raise hub.UnsupportedError(
            "graded spikes: slayer's graded spike is v / 4096 of its own scale, truncated "
            "again by the next synapse, which the canonical Loihi neuron's graded output "
            "(v / 64, integer synaptic sums) does not express", field="graded_spike")
    if neuron.norm is not None:
        raise hub.UnsupportedError("a neuron norm (slayer's bias path) is not mapped",
                                   field="norm")
    # slayer keeps the threshold as int(threshold * scale) / scale, so this is the mantissa
    # its forward compares with (plus 0.01 / 4096: v >= vth + eps is Loihi's v > vth << 6)
    # and exactly what its export writes as vThMant
    scale = int(neuron.w_scale)
    mantissa = float(neuron.threshold) * scale
    if mantissa != round(mantissa) or not 0 <= mantissa <= (1 << 17) - 1:
        raise hub.UnsupportedError(
            f"threshold {float(neuron.threshold)} is not a mantissa of 1/{scale} in Loihi's "
            "unsigned 17-bit range", field="threshold")
    i_decay = _decay(neuron.current_decay, "current_decay", int(neuron.p_scale))
    v_decay = _decay(neuron.voltage_decay, "voltage_decay", int(neuron.p_scale))
    if channels_first and (i_decay.ndim or v_decay.ndim):
        raise hub.UnsupportedError(
            "per-channel decays (shared_param=False) in a convolution block: slayer broadcasts "
            "them over the last (width) axis, not over channels", field="shared_param")
    return hub.LoihiCUBA(i_decay=i_decay, v_decay=v_decay, threshold=np.int64(round(mantissa)),
                         bias=np.int64(0))


def _weights(block: Any) -> np.ndarray:
    """The block's integer weight mantissas, as slayer's export_hdf5 computes them."""
    synapse = block.synapse
    if getattr(synapse, "complex", False):
        raise hub.UnsupportedError("complex synapses are not mapped", field="synapse")
    if synapse.weight_norm_enabled:
        raise hub.UnsupportedError(
            "weight normalisation is on; its export switches it off in place (a change to the "
            "model): call block.synapse.disable_weight_norm() first", field="weight_norm")
    with torch.no_grad():
        weight = synapse.weight.detach()
        if getattr(block, "mask", None) is not None:
            weight = weight * block.mask
        mant = synapse.pre_hook_fx(weight, descale=True).cpu().numpy().astype(np.float64)
    if not _integral(mant):
        raise hub.UnsupportedError("the synapse's pre-hook gives non-integer weight mantissas",
                                   field="weight")
    return mant.astype(np.float32)


def _import_block(block: Any) -> tuple[list[tuple[str, hub.Node]], tuple[int, ...] | None]:
    """The canonical nodes of one slayer block, and the input shape it reveals (if any)."""
    kind = type(block).__name__
    family = type(block).__module__.rsplit(".", 1)[-1]
    if family != "cuba":
        raise hub.UnsupportedError(f"slayer.block.{family}.{kind}: only CUBA blocks map to "
                                   "the canonical Loihi neuron")
    if kind == "Flatten":
        return [("flatten", hub.Flatten())], None
    if kind == "Input":
        if block.neuron is not None:
            raise hub.UnsupportedError("an Input block with a neuron: netx cannot simulate it "
                                       "in Lava 0.10, so it is not mapped", node="neuron")
        return [], None
    if kind not in ("Dense", "Conv"):
        raise hub.UnsupportedError(f"slayer.block.cuba.{kind} is not mapped (Dense, Conv, "
                                   "Flatten and Input without a neuron are)")
    if block.delay is not None:
        raise hub.UnsupportedError("learnable axonal delays (delay=True) are not mapped",
                                   field="delay")
    weight = _weights(block)
    synapse = block.synapse
    if kind == "Dense":
        weight = weight.reshape(weight.shape[:2])
        node: hub.Node = hub.Linear(weight=weight)
        shape: tuple[int, ...] | None = (weight.shape[1],)
    else:
        if synapse.kernel_size[2] != 1 or synapse.stride[2] != 1 or synapse.padding[2] != 0:
            raise hub.UnsupportedError("a convolution over time is not mapped", field="synapse")
        node = hub.Conv2d(weight=weight[..., 0], stride=synapse.stride[:2],
                          padding=synapse.padding[:2], dilation=synapse.dilation[:2],
                          groups=synapse.groups)
        shape = _conv_input_shape(block, weight)
    try:
        neuron = _import_neuron(block.neuron, kind == "Conv")
    except hub.HubError as e:
        raise e.at(node="neuron") from None
    return [("synapse", node), ("neuron", neuron)], shape


def _conv_input_shape(block: Any, weight: np.ndarray) -> tuple[int, ...] | None:
    """A convolution's input (C, H, W) from its output shape, where stride 1 makes it unique."""
    channels = weight.shape[1] * block.synapse.groups
    out = getattr(block.neuron, "shape", None)
    s = block.synapse
    if out is None or len(out) != 3 or tuple(s.stride[:2]) != (1, 1):
        return (channels, None, None)  # type: ignore[return-value]
    return (channels, *(int(o) - 2 * p + d * (k - 1) for o, p, d, k in
                        zip(out[1:], s.padding[:2], s.dilation[:2], weight.shape[2:4])))


def _chain(graph: hub.Graph) -> list[tuple[str, hub.Node]]:
    """The graph's nodes in order, if it is one chain from its input to its output."""
    flat = graph.flat()
    if len(flat.inputs) != 1 or len(flat.outputs) != 1:
        raise hub.UnsupportedError("slayer networks have one input and one output; the graph "
                                   f"has {len(flat.inputs)} and {len(flat.outputs)}")
    following: dict[str, list[str]] = {}
    for a, b in flat.edges:
        following.setdefault(a, []).append(b)
    order = [flat.inputs[0]]
    while following.get(order[-1]):
        nexts = following[order[-1]]
        if len(nexts) != 1 or nexts[0] in order:
            raise hub.UnsupportedError("slayer block networks are a chain of blocks: branches "
                                       "and recurrence are not mapped", node=order[-1])
        order.append(nexts[0])
    if len(order) != len(flat.nodes):
        raise hub.UnsupportedError("slayer block networks are a chain of blocks; this graph has "
                                   "nodes off the path from input to output")
    return [(name, flat.nodes[name]) for name in order]


def _export_block(name: str, synapse: hub.Node, neuron_name: str, neuron: hub.LoihiCUBA,
                  shape: tuple[int, ...], out_shape: tuple[int, ...]) -> Any:
    slayer = _slayer()
    if isinstance(synapse, (hub.Affine, hub.Conv2d)) and np.any(synapse.bias != 0):
        raise hub.UnsupportedError("slayer's CUBA synapses have no bias", node=name,
                                   field="bias")
    weight = np.asarray(synapse.weight, dtype=np.float64)
    low, high = WEIGHT_RANGE
    if not _integral(weight) or np.any(weight % 2) or weight.min() < low or weight.max() > high:
        raise hub.UnsupportedError(
            f"slayer's 8-bit weights are even integer mantissas in [{low}, {high}] (its "
            f"quantize_8bit keeps steps of 2/{DEFAULT_SCALE}); these are "
            f"{weight.min()}..{weight.max()}" + ("" if _integral(weight) else ", not integers"),
            node=name, field="weight")
    for field, value in (("bias", np.any(neuron.bias != 0)), ("refractory", neuron.refractory),
                         ("delay", neuron.delay),
                         ("spike_mode", neuron.spike_mode != "binary")):
        if value:
            raise hub.UnsupportedError(f"slayer's CUBA neuron has no {field} of this kind "
                                       "(no bias, no refractory period, no axonal delay, "
                                       "binary spikes)", node=neuron_name, field=field)
    if neuron.threshold.size != 1:
        raise hub.UnsupportedError("slayer's CUBA neuron has one threshold per block",
                                   node=neuron_name, field="threshold")
    conv = isinstance(synapse, hub.Conv2d)
    per_channel = neuron.i_decay.size > 1 or neuron.v_decay.size > 1
    if per_channel and (conv or len(shape) != 1):
        raise hub.UnsupportedError("per-channel decays map to slayer only in Dense blocks",
                                   node=neuron_name, field="i_decay")
    params = {"threshold": float(neuron.threshold.reshape(())) / DEFAULT_SCALE,
              "current_decay": 0.0, "voltage_decay": 0.0}
    if per_channel:
        params["shared_param"] = False
    if conv:
        block = slayer.block.cuba.Conv(
            params, int(weight.shape[1] * synapse.groups), int(weight.shape[0]),
            tuple(int(k) for k in weight.shape[2:]), stride=tuple(synapse.stride),
            padding=tuple(synapse.padding), dilation=tuple(synapse.dilation),
            groups=synapse.groups)
        tensor = torch.tensor(weight[..., None] / DEFAULT_SCALE, dtype=torch.float32)
    else:
        block = slayer.block.cuba.Dense(params, int(weight.shape[1]), int(weight.shape[0]))
        tensor = torch.tensor(weight[..., None, None, None] / DEFAULT_SCALE, dtype=torch.float32)
    count = int(weight.shape[0])
    with torch.no_grad():
        block.synapse.weight.copy_(tensor)
        for attr, value in (("current_decay", neuron.i_decay), ("voltage_decay", neuron.v_decay)):
            # slayer holds decays scaled by p_scale = 4096: exactly Loihi's 12-bit integers
            values = np.broadcast_to(value, (count,)) if per_channel else value.reshape(1)
            getattr(block.neuron, attr).data = torch.tensor(values.astype(np.float32))
    if per_channel:  # slayer draws random decays on the first forward unless these are gone
        for attr in ("current_decay_min", "current_decay_max", "voltage_decay_min",
                     "voltage_decay_max"):
            if hasattr(block.neuron, attr):
                delattr(block.neuron, attr)
    # slayer learns the neuron shape on the first forward; export_hdf5 needs it before that
    block.neuron.shape = torch.Size(out_shape)
    block.neuron.num_neurons = int(np.prod(out_shape))
    return block


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


@hub.hookimpl
def hub_register_formats(register) -> None:
    register(SlayerFormat())
