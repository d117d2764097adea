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
- The ``slayer`` format reads and writes lava-dl slayer CUBA and ALIF block networks (and reads
  lava-dl's bootstrap blocks in their SNN mode); it is usable where
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
#: The bias exponent of slayer's CUBA neuron's bias (its norm's mean, in threshold units).
BIAS_EXP = 6
#: The ``max_delay`` of the axonal delays of slayer's CUBA blocks (``block.cuba``).
AXON_MAX_DELAY = 62
#: Loihi's (and slayer's ``p_scale``) unit decay: decays are integers 0 to 4096.
DECAY_UNITY = 1 << 12
#: The canonical neurons of slayer's mapped block families: cuba, alif.
NEURONS = (hub.LoihiCUBA, hub.ALIF)
#: A slayer neuron's persistent state buffers (cuba has the first two, alif all four).
STATES = ("current_state", "voltage_state", "threshold_state", "refractory_state")


def _slayer_here() -> bool:
    try:
        return importlib.util.find_spec("lava.lib.dl.slayer") is not None
    except (ImportError, ValueError):
        return False


def _is_slayer_block(module: Any) -> bool:
    return type(module).__module__.startswith(("lava.lib.dl.slayer.block",
                                               "lava.lib.dl.bootstrap.block"))


def _is_bootstrap(block: Any) -> bool:
    """A lava-dl bootstrap block (``bootstrap.block.cuba``): a slayer cuba block whose forward
    takes a ``mode`` (ANN by default); its SNN mode is the slayer block's forward."""
    return type(block).__module__.startswith("lava.lib.dl.bootstrap.block")


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
    """lava-dl slayer networks of CUBA and ALIF blocks, in slayer's own quantised arithmetic.

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
    """

    name = "slayer"
    aliases = ("lava-dl", "slayer-blocks")
    description = ("lava-dl slayer CUBA and ALIF block networks (torch modules; Loihi fixed "
                   "point)")
    requires = ("lava.lib.dl.slayer",)
    install_hint = "lava-dl==0.6.0 (in the Lava environment: scripts/setup-lava)"
    load_options = ("input_shape", "delay_shift")
    imports = exports = frozenset({"Input", "Output", "Linear", "Conv2d", "Flatten",
                                   "LoihiCUBA", "ALIF", "Delay", "Scale", "Bias"})
    accepts = Accepts({tuple(sorted(exports)): ()}, name="slayer", notes=[
        "field values are checked by the exporter against slayer's CUBA and ALIF blocks"])

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
                       else _first_input_shape(blocks))
        if first_shape is None or any(n is None for n in first_shape):
            raise FormatError("the input shape is unknown: the first block is a convolution "
                              "that has not seen an input yet; pass input_shape=(C, H, W)",
                              field="input_shape")
        chain: list[tuple[str, hub.Node]] = [("input", hub.Input(shape=first_shape))]
        loops: list[tuple[str, hub.Node, str]] = []  # a recurrent synapse and its neuron
        for index, block in enumerate(blocks):
            where = f"blocks.{index}"
            try:
                shape = hub.Graph.chain(*chain).plan().output_shapes[chain[-1][0]]
                mapped, recurrent = _import_block(block, delay_shift, tuple(shape))
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
                    isinstance(chain[i + 2][1], hub.ALIF):
                bias, neuron, i = neuron, chain[i + 2], i + 1
            if not isinstance(node, (hub.Linear, hub.Affine, hub.Conv2d)) or \
                    not isinstance(neuron[1], NEURONS):
                raise hub.UnsupportedError(
                    f"slayer blocks are a synapse (Linear or Conv2d) followed by a LoihiCUBA "
                    f"(cuba) or fixed-point ALIF (alif) neuron; found {type(node).__name__} "
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
        states = [(b.neuron, {k: getattr(b.neuron, k) for k in STATES if hasattr(b.neuron, k)})
                  for b in blocks if type(b).__name__ == "Recurrent"]
        try:
            with torch.no_grad():
                for neuron, saved_state in states:
                    for k in saved_state:  # alif's threshold starts at its base threshold
                        start = float(neuron.threshold) if k == "threshold_state" else 0.0
                        setattr(neuron, k, torch.tensor([start]))
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


def _import_neuron(neuron: Any, channels_first: bool, recurrent: bool = False
                   ) -> hub.LoihiCUBA:
    if type(neuron).__name__ != "Neuron" or not type(neuron).__module__.endswith("neuron.cuba"):
        raise hub.UnsupportedError(f"{type(neuron).__module__}.{type(neuron).__name__} is not "
                                   "slayer's CUBA neuron", field="neuron")
    if neuron.graded_spike:
        raise hub.UnsupportedError(
            "graded spikes: slayer's graded spike is v / 4096 of its own scale, truncated "
            "again by the next synapse, which the canonical Loihi neuron's graded output "
            "(v / 64, integer synaptic sums) does not express", field="graded_spike")
    bias = _norm_bias(neuron, channels_first)
    if neuron.persistent_state and not recurrent:
        raise hub.UnsupportedError("persistent_state carries the neuron's state (and slayer's "
                                   "delay buffer) from one forward call to the next; the hub's "
                                   "model starts each run at rest", field="persistent_state")
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
                         bias=bias, bias_exp=BIAS_EXP)


def _import_alif(neuron: Any, channels_first: bool, recurrent: bool = False) -> hub.ALIF:
    """slayer's ``alif`` neuron as the canonical ALIF in fixed arithmetic.

    slayer's forward (``neuron/alif.py``, ``dynamics/leaky_integrator.py`` and
    ``dynamics/adaptive_threshold.py``) keeps every state as an integer at its state scale
    ``s_scale = 64 * w_scale``: the current takes ``s_scale * z`` (``64`` times the synaptic
    sum of weight mantissas), each decay is ``(y * (4096 - decay)) >> 12`` rounded toward zero,
    the threshold relaxes to ``th0 = threshold * s_scale`` and steps by ``threshold_step *
    s_scale`` per spike, the refractory state grows by twice the threshold, and it spikes where
    ``v >= threshold + refractory``; the voltage is not reset. Its states pass between stages as
    float32, so the equality holds while they stay below ``2**24`` (slayer's own range). Its
    ``MeanOnlyBatchNorm`` subtracts ``quantize_8bit(running_mean)`` from the synaptic input
    (before the current integrates it): a ``Bias`` node of ``-mean`` mantissas before the ALIF.
    """
    if type(neuron).__name__ != "Neuron" or not type(neuron).__module__.endswith("neuron.alif"):
        raise hub.UnsupportedError(f"{type(neuron).__module__}.{type(neuron).__name__} is not "
                                   "slayer's ALIF neuron", field="neuron")
    if neuron.graded_spike:
        raise hub.UnsupportedError("graded spikes: slayer's alif emits v / s_scale of its own "
                                   "scale, which the canonical ALIF does not express",
                                   field="graded_spike")
    if neuron.persistent_state and not recurrent:
        raise hub.UnsupportedError("persistent_state carries the neuron's state from one "
                                   "forward call to the next; the hub's model starts each run "
                                   "at rest", field="persistent_state")
    if hasattr(neuron, "current_decay_min"):
        raise hub.UnsupportedError("per-channel decays (shared_param=False) are drawn at random "
                                   "on the block's first forward: run the network once first",
                                   field="shared_param")
    ratio = int(neuron.s_scale) // int(neuron.w_scale)
    state_scale = int(neuron.s_scale)
    fields = {}
    for field in ("threshold", "threshold_step"):
        value = float(getattr(neuron, field)) * state_scale  # slayer's int(value * s_scale)
        if value != round(value) or value < 0:
            raise hub.UnsupportedError(f"{field} {float(getattr(neuron, field))} is not a "
                                       f"non-negative mantissa of 1/{int(neuron.w_scale)}",
                                       field=field)
        fields[field] = np.float64(value)
    decays = {}
    for field, name in (("current_decay", "alpha"), ("voltage_decay", "beta"),
                        ("threshold_decay", "threshold_decay"),
                        ("refractory_decay", "refractory_decay")):
        value = _decay(getattr(neuron, field), field, int(neuron.p_scale))
        if channels_first and value.ndim:
            raise hub.UnsupportedError(
                "per-channel decays (shared_param=False) in a convolution block: slayer "
                "broadcasts them over the last (width) axis, not over channels", field=field)
        decays[name] = (DECAY_UNITY - value).astype(np.float64) / DECAY_UNITY
    return hub.ALIF(**decays, gain=1.0, current_gain=float(ratio), current_order="new",
                    refractory_scale=2.0, comparison=">=", reset="none", arithmetic="fixed",
                    **fields)


def _norm_bias(neuron: Any, channels_first: bool) -> np.ndarray:
    """The bias of slayer's CUBA neuron: its ``MeanOnlyBatchNorm`` in eval mode.

    The norm subtracts ``quantize_8bit(running_mean)`` from the current before the voltage
    integrates it, and the voltage takes ``int(current * s_scale)``: so the voltage gains
    ``-mean_mantissa << 6`` each step, Loihi's ``bias << 6``, with ``bias = -mean_mantissa``
    (the ``bias`` slayer's ``export_hdf5`` writes: ``norm.bias``). Eval mode is what the
    runner runs; in training mode the norm would update its running mean.
    """
    norm = neuron.norm
    if norm is None:
        return np.int64(0)
    if type(norm).__name__ != "MeanOnlyBatchNorm":
        raise hub.UnsupportedError(f"a {type(norm).__name__} norm is not mapped (slayer's "
                                   "MeanOnlyBatchNorm, a bias, is)", field="norm")
    with torch.no_grad():
        bias = norm.bias.detach().cpu().numpy().astype(np.float64)
    if not _integral(bias):
        raise hub.UnsupportedError("the norm's quantised mean is not an integer mantissa",
                                   field="norm")
    bias = bias.astype(np.int64)
    if bias.size == 1:
        return bias.reshape(())
    return bias.reshape(-1, 1, 1) if channels_first else bias


def _weights(synapse: Any, block: Any) -> np.ndarray:
    """A synapse's integer weight mantissas, as slayer's export_hdf5 computes them."""
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


def _first_input_shape(blocks: list[Any]) -> tuple[int, ...] | None:
    """The network's input shape, from the first block that says it."""
    for block in blocks:
        kind = type(block).__name__
        if kind in ("Dense", "KWTA"):
            return (int(block.synapse.in_channels),)
        if kind == "Recurrent":
            return (int(block.input_synapse.in_channels),)
        if kind == "Conv":
            return _conv_input_shape(block, _weights(block.synapse, block))
        if kind == "Input" and getattr(block, "input_shape", None) is not None:
            return tuple(int(n) for n in block.input_shape)
        if kind != "Input":
            return None
    return None


Imported = tuple[list[tuple[str, hub.Node]], list[tuple[str, hub.Node, str]]]


def _import_block(block: Any, keep_shift: bool, shape: tuple[int, ...]) -> Imported:
    """The canonical nodes of one slayer block (``shape``: its input's), and its recurrent
    synapses as ``(part, node, neuron part)``."""
    kind = type(block).__name__
    family = type(block).__module__.rsplit(".", 1)[-1]
    if family not in ("cuba", "alif"):
        raise hub.UnsupportedError(f"slayer.block.{family}.{kind}: only the cuba and alif "
                                   "blocks are mapped (to hub.LoihiCUBA and a fixed-point "
                                   "hub.ALIF)")
    if kind == "Flatten":
        return [("flatten", hub.Flatten())], []
    if kind in ("Affine", "KWTA", "Average", "ConvT", "Unpool", "TimeDecimation"):
        raise hub.UnsupportedError(f"slayer.block.{family}.{kind} is not mapped: "
                                   f"{UNMAPPED[kind]}")
    if kind not in ("Input", "Dense", "Conv", "Pool", "Recurrent"):
        raise hub.UnsupportedError(f"slayer.block.{family}.{kind} is not mapped (Input, Dense, "
                                   "Conv, Pool, Recurrent and Flatten are)")
    nodes: list[tuple[str, hub.Node]] = []
    loops: list[tuple[str, hub.Node, str]] = []
    if kind == "Input":
        if block.neuron is not None:
            nodes = _input_transform(block)
    elif kind == "Recurrent":
        if block.bias is not None:
            raise hub.UnsupportedError("a Recurrent block's bias is not mapped", field="bias")
        weight = _weights(block.input_synapse, block)
        nodes = [("synapse", hub.Linear(weight=weight.reshape(weight.shape[:2])))]
        rec = _weights(block.recurrent_synapse, block)
        loops = [("recurrent", hub.Linear(weight=rec.reshape(rec.shape[:2])), "neuron")]
    elif kind == "Dense":
        weight = _weights(block.synapse, block)
        nodes = [("synapse", hub.Linear(weight=weight.reshape(weight.shape[:2])))]
    elif kind == "Conv":
        weight = _weights(block.synapse, block)
        synapse = block.synapse
        if synapse.kernel_size[2] != 1 or synapse.stride[2] != 1 or synapse.padding[2] != 0:
            raise hub.UnsupportedError("a convolution over time is not mapped", field="synapse")
        nodes = [("synapse", hub.Conv2d(weight=weight[..., 0], stride=synapse.stride[:2],
                                        padding=synapse.padding[:2],
                                        dilation=synapse.dilation[:2], groups=synapse.groups))]
    else:
        nodes = [("synapse", _pool(block, shape))]
    if block.neuron is not None:
        try:
            read = _import_alif if family == "alif" else _import_neuron
            channels_first = kind in ("Conv", "Pool", "Input")
            neuron = read(block.neuron, channels_first, recurrent=kind == "Recurrent")
            if family == "alif" and block.neuron.norm is not None:
                if kind == "Input":
                    raise hub.UnsupportedError("a norm in an alif Input block is not mapped",
                                               field="norm")
                # alif's norm subtracts the quantised mean from the synaptic input
                bias = _norm_bias(block.neuron, channels_first)
                nodes.append(("bias", hub.Bias(bias=bias.astype(np.float32))))
        except hub.HubError as e:
            raise e.at(node="neuron") from None
        nodes.append(("neuron", neuron))
    delay = _block_delay(block, keep_shift, conv=kind in ("Conv", "Pool") or len(shape) == 3,
                         axonal=not _is_bootstrap(block))
    if delay is not None:
        nodes.append(("delay", delay))
    return nodes, loops


#: Why the cuba blocks that are not mapped are not.
UNMAPPED = {
    "Affine": "its output is the neuron's voltage, in slayer's float scale, not spikes",
    "KWTA": "its k-winners-take-all lateral inhibition has no canonical node",
    "Average": "it averages groups of neurons into non-spiking values that netx cannot run",
    "ConvT": "transposed convolutions have no canonical node",
    "Unpool": "unpooling has no canonical node",
    "TimeDecimation": "it averages bins of time steps, which changes the time axis",
}


def _input_transform(block: Any) -> list[tuple[str, hub.Node]]:
    """An Input block's ``z = x * weight + bias`` before its neuron, in Loihi's units.

    slayer quantises the input, the weight and the bias with ``quantize_8bit`` (steps of
    ``2 / w_scale``, clamped to ``[-256, 254] / w_scale``) and its neuron takes ``z`` in units
    of ``1 / w_scale`` of the synaptic input: so Loihi's input is ``z * w_scale``, an integer
    for binary (and small integer) inputs. Inputs beyond ``254 / w_scale`` would be clamped by
    slayer, which the graph does not model: feed spikes or small graded values.
    """
    neuron = block.neuron
    scale = int(neuron.w_scale)
    nodes: list[tuple[str, hub.Node]] = []

    def mantissa(parameter: Any, field: str) -> float:
        value = neuron.quantize_8bit(parameter.detach().cpu(), descale=True).reshape(-1)
        if value.numel() != 1:
            raise hub.UnsupportedError("one value per block is mapped", field=field)
        return float(value[0])

    nodes.append(("weight", hub.Scale(
        scale=mantissa(block.weight, "weight") if block.weight is not None else float(scale))))
    if block.bias is not None:
        nodes.append(("bias", hub.Bias(bias=mantissa(block.bias, "bias"))))
    return nodes


def _pool(block: Any, shape: tuple[int, ...]) -> hub.Node:
    """A Pool block's synapse: a depthwise convolution of the quantised pool weight.

    slayer's ``synapse.Pool`` convolves ``[N, 1, C * H, W, T]`` with a ``[kh, kw, 1]`` kernel
    (so windows stay within a channel only where they tile ``H``), after padding ``H`` and ``W``
    with their remainders; what is mapped is the case where that is plain per-channel pooling.
    """
    s = block.synapse
    kernel, stride = tuple(s.kernel_size[:2]), tuple(s.stride[:2])
    if len(shape) != 3:
        raise hub.UnsupportedError(f"a Pool block needs a [C, H, W] input, got {list(shape)}")
    if (stride != kernel or tuple(s.padding[:2]) != (0, 0) or tuple(s.dilation[:2]) != (1, 1)
            or shape[1] % kernel[0] or shape[2] % kernel[1]):
        raise hub.UnsupportedError(
            f"slayer pools over channels merged with rows; it is per-channel pooling only with "
            f"stride = kernel, no padding or dilation, and a kernel {list(kernel)} that tiles "
            f"the input {list(shape[1:])}", field="synapse")
    weight = _weights(s, block)
    if weight.size and not (weight == weight.reshape(-1)[0]).all():
        raise hub.UnsupportedError("a pool kernel of different weights", field="weight")
    channels = int(shape[0])
    return hub.Conv2d(weight=np.full((channels, 1, *kernel), weight.reshape(-1)[0],
                                     dtype=np.float32), stride=stride, groups=channels)


def _block_delay(block: Any, keep_shift: bool, conv: bool, axonal: bool = True
                 ) -> hub.Delay | None:
    """The block's timing after its neuron: ``delay_shift`` (one step) plus its axonal delays.

    slayer's forward applies ``step_delay`` (a shift by one step) where ``delay_shift is True``,
    then ``axon.Delay``, which clamps its learnable delays to ``[0, max_delay]`` and shifts
    each channel by ``int(delay)`` steps (``utils.time.shift``: truncation, the same as the
    floor that ``export_hdf5`` writes for non-negative delays).
    """
    shift = 1 if keep_shift and getattr(block, "delay_shift", False) is True else 0
    # a bootstrap block's SNN forward applies delay_shift but never its axon.Delay
    axon = getattr(block, "delay", None) if axonal else None
    if axon is None:
        return hub.Delay(delay=shift) if shift else None
    if not axon.init:
        raise hub.UnsupportedError("the axonal delays (delay=True) are drawn at random on the "
                                   "block's first forward: run the network once (or set "
                                   "block.delay.delay and block.delay.init) first", field="delay")
    values = axon.delay.detach().cpu().to(torch.float64)
    low, high = 0.0, np.inf if axon.max_delay is None else float(axon.max_delay)
    steps = np.trunc(values.clamp(low, high).numpy() / axon.sampling_time).astype(np.int64)
    steps = steps.reshape(-1) + shift
    if (steps == steps[0]).all():
        return hub.Delay(delay=int(steps[0])) if steps[0] else None
    return hub.Delay(delay=steps.reshape(-1, 1, 1) if conv else steps)


def _conv_input_shape(block: Any, weight: np.ndarray) -> tuple[int, ...] | None:
    """A convolution's input (C, H, W) from its output shape, where stride 1 makes it unique."""
    channels = weight.shape[1] * block.synapse.groups
    out = getattr(block.neuron, "shape", None)
    s = block.synapse
    if out is None or len(out) != 3 or tuple(s.stride[:2]) != (1, 1):
        return (channels, None, None)  # type: ignore[return-value]
    return (channels, *(int(o) - 2 * p + d * (k - 1) for o, p, d, k in
                        zip(out[1:], s.padding[:2], s.dilation[:2], weight.shape[2:4])))


def _chain(graph: hub.Graph) -> tuple[list[tuple[str, hub.Node]], dict[str, hub.Linear]]:
    """The graph's nodes in order, if it is one chain from its input to its output, and the
    recurrent ``Linear`` of each neuron that has one (a Recurrent block)."""
    flat = graph.flat()
    if len(flat.inputs) != 1 or len(flat.outputs) != 1:
        raise hub.UnsupportedError("slayer networks have one input and one output; the graph "
                                   f"has {len(flat.inputs)} and {len(flat.outputs)}")
    following: dict[str, list[str]] = {}
    preceding: dict[str, list[str]] = {}
    for a, b in flat.edges:
        following.setdefault(a, []).append(b)
        preceding.setdefault(b, []).append(a)
    rec: dict[str, hub.Linear] = {}
    for name, node in flat.nodes.items():
        ins, outs = preceding.get(name, []), following.get(name, [])
        if isinstance(node, hub.Linear) and ins == outs and len(ins) == 1 and \
                isinstance(flat.nodes[ins[0]], NEURONS):
            rec[ins[0]] = node
            following[ins[0]].remove(name)
            del following[name]
    order = [flat.inputs[0]]
    while following.get(order[-1]):
        nexts = following[order[-1]]
        if len(nexts) != 1 or nexts[0] in order:
            raise hub.UnsupportedError("slayer block networks are a chain of blocks: branches "
                                       "and recurrence are not mapped", node=order[-1])
        order.append(nexts[0])
    if len(order) != len(flat.nodes) - len(rec):
        raise hub.UnsupportedError("slayer block networks are a chain of blocks; this graph has "
                                   "nodes off the path from input to output")
    return [(name, flat.nodes[name]) for name in order], rec


def _export_input_delay(name: str, node: hub.Delay) -> Any:
    """A ``Delay`` before the first synapse: refused.

    The only slayer block that could hold it, an ``Input`` block without a neuron and with
    ``delay_shift=True``, does not run in lava-dl 0.6: its ``step_delay`` reads
    ``neuron.persistent_state`` of the missing neuron (AttributeError).
    """
    raise hub.UnsupportedError("slayer cannot delay the network's input: an Input block without "
                               "a neuron fails in its delay_shift (lava-dl 0.6 step_delay reads "
                               "the missing neuron); drop the Delay or put it after a neuron",
                               node=name, field="delay")


def _export_timing(neuron_name: str, neuron: hub.Node, delay: tuple[str, hub.Delay] | None,
                   conv: bool, count: int) -> tuple[bool, np.ndarray | None]:
    """A block's ``delay_shift`` and per-channel axonal delays (or ``None``) from the neuron's
    ``delay`` and the ``Delay`` node after it: one step of it is ``delay_shift`` where every
    channel is delayed at least that much."""
    name = delay[0] if delay else neuron_name
    steps = np.asarray(delay[1].delay if delay else 0, dtype=np.int64) + \
        int(getattr(neuron, "delay", 0))
    if conv:
        if steps.size > 1 and (steps.ndim != 3 or steps.shape[1:] != (1, 1)):
            raise hub.UnsupportedError("slayer's axonal delays in a convolution block are one per "
                                       "channel; this Delay varies over positions", node=name,
                                       field="delay")
    elif steps.ndim > 1:
        raise hub.UnsupportedError("a Dense block's axonal delays are one per neuron", node=name,
                                   field="delay")
    flat = np.broadcast_to(steps.reshape(-1), (count,)) if steps.size == 1 else steps.reshape(-1)
    shift = bool((flat >= 1).all())
    axonal = flat - 1 if shift else flat
    if axonal.max() > AXON_MAX_DELAY:
        raise hub.UnsupportedError(f"slayer's axonal delays are 0 to {AXON_MAX_DELAY} steps "
                                   "(its Delay clamps them)", node=name, field="delay")
    return shift, (axonal if axonal.any() else None)


def _export_input(chain: list[tuple[str, hub.Node]], i: int, shape: tuple[int, ...]
                  ) -> tuple[Any, int]:
    """An Input block with a neuron from ``[Scale] -> [Bias] -> LoihiCUBA -> [Delay]``."""
    factor, bias = float(DEFAULT_SCALE), None
    name, node = chain[i]
    if isinstance(node, hub.Scale):
        factor, i = _input_mantissa(name, node.scale, "scale"), i + 1
        name, node = chain[i]
    if isinstance(node, hub.Bias):
        bias, i = _input_mantissa(name, node.bias, "bias"), i + 1
        name, node = chain[i]
    if not isinstance(node, NEURONS):
        raise hub.UnsupportedError("slayer's Input block is a scale, a bias and a CUBA or ALIF "
                                   f"neuron; found {type(node).__name__}", node=name)
    alif = isinstance(node, hub.ALIF)
    decays = (node.alpha, node.beta, node.threshold_decay, node.refractory_decay) if alif \
        else (node.i_decay, node.v_decay)
    if any(d.size > 1 for d in decays):
        raise hub.UnsupportedError("per-neuron decays in an Input block are not written",
                                   node=name, field="alpha" if alif else "i_decay")
    after = chain[i + 1] if i + 1 < len(chain) else (None, None)
    delay = after if isinstance(after[1], hub.Delay) else None
    shift, axonal = _export_timing(name, node, delay, len(shape) == 3, int(shape[0]))
    if axonal is not None:
        raise hub.UnsupportedError("slayer's Input block has no axonal delays", node=name,
                                   field="delay")
    params = _neuron_params(name, node)
    family = _slayer().block.alif if alif else _slayer().block.cuba
    block = family.Input(
        params, weight=None if factor == DEFAULT_SCALE else factor / DEFAULT_SCALE,
        bias=None if bias is None else bias / DEFAULT_SCALE, delay_shift=shift)
    _set_decays(block.neuron, node, per_channel=False, count=1)
    return block, i + (2 if delay else 1)


def _input_mantissa(name: str, value: np.ndarray, field: str) -> float:
    value = np.asarray(value, dtype=np.float64).reshape(-1)
    low, high = WEIGHT_RANGE
    if value.size != 1 or value[0] != round(value[0]) or value[0] % 2 or not \
            low <= value[0] <= high:
        raise hub.UnsupportedError(f"slayer's Input block takes one {field} per block, an even "
                                   f"integer mantissa in [{low}, {high}] of 1/{DEFAULT_SCALE}",
                                   node=name, field=field)
    return float(value[0])


def _check_neuron_fields(neuron_name: str, neuron: hub.LoihiCUBA, bias: bool = False) -> None:
    for field, value in (("bias", not bias and np.any(neuron.bias != 0)),
                         ("refractory", neuron.refractory),
                         ("spike_mode", neuron.spike_mode != "binary")):
        if value:
            raise hub.UnsupportedError(f"slayer's CUBA neuron has no {field} of this kind "
                                       "(no refractory period, binary spikes, a bias only "
                                       "in Dense and Conv blocks)",
                                       node=neuron_name, field=field)
    if neuron.threshold.size != 1:
        raise hub.UnsupportedError("slayer's CUBA neuron has one threshold per block",
                                   node=neuron_name, field="threshold")


def _set_decays(neuron: Any, node: hub.Node, per_channel: bool, count: int) -> None:
    if isinstance(node, hub.ALIF):
        pairs = [(attr, DECAY_UNITY - np.round(np.asarray(value, np.float64) * DECAY_UNITY))
                 for attr, value in (("current_decay", node.alpha), ("voltage_decay", node.beta),
                                     ("threshold_decay", node.threshold_decay),
                                     ("refractory_decay", node.refractory_decay))]
    else:
        pairs = [("current_decay", node.i_decay), ("voltage_decay", node.v_decay)]
    with torch.no_grad():
        for attr, value in pairs:
            # slayer holds decays scaled by p_scale = 4096: exactly Loihi's 12-bit integers
            values = np.broadcast_to(value, (count,)) if per_channel else value.reshape(1)
            getattr(neuron, attr).data = torch.tensor(values.astype(np.float32))
    if per_channel:  # slayer draws random decays on the first forward unless these are gone
        for attr, _ in pairs:
            for end in ("_min", "_max"):
                if hasattr(neuron, attr + end):
                    delattr(neuron, attr + end)


def _neuron_params(name: str, node: hub.Node, bias: bool = False) -> dict[str, Any]:
    """The slayer neuron parameters of ``node`` (decays set afterwards by ``_set_decays``)."""
    if not isinstance(node, hub.ALIF):
        _check_neuron_fields(name, node, bias=bias)
        return {"threshold": float(node.threshold.reshape(())) / DEFAULT_SCALE,
                "current_decay": 0.0, "voltage_decay": 0.0}
    state_scale = DEFAULT_SCALE * DEFAULT_SCALE
    checks = [("arithmetic", node.arithmetic == "fixed", "it computes in Loihi's fixed point"),
              ("comparison", node.comparison == ">=", "it spikes where v >= theta + r"),
              ("reset", node.reset == "none", "its voltage is not reset (r does that)"),
              ("current_order", node.current_order == "new",
               "its voltage integrates this step's current"),
              ("gain", bool(np.all(node.gain == 1)), "its voltage adds the current unscaled"),
              ("current_gain", bool(np.all(node.current_gain == DEFAULT_SCALE)),
               f"its current takes {DEFAULT_SCALE} times the synaptic sum (scale 1 << 6)"),
              ("v_leak", not np.any(node.v_leak), "its voltage decays towards 0"),
              ("v_init", not np.any(node.v_init), "its voltage starts at 0"),
              ("refractory_scale", bool(np.all(node.refractory_scale == 2)),
               "its refractory state grows by twice the threshold")]
    for field, value in (("threshold", node.threshold), ("threshold_step", node.threshold_step)):
        flat = np.asarray(value, np.float64).reshape(-1)
        checks.append((field, flat.size == 1 or bool((flat == flat[0]).all()),
                       "it has one per block"))
        checks.append((field, bool(np.all(flat % DEFAULT_SCALE == 0) and np.all(flat >= 0)),
                       (f"it is a non-negative multiple of {DEFAULT_SCALE} (a mantissa of "
                        f"1/{DEFAULT_SCALE} at the state scale {state_scale})")))
    for field, ok, why in checks:
        if not ok:
            raise hub.UnsupportedError(f"slayer's alif neuron cannot hold this ALIF's {field}: "
                                       f"{why}", node=name, field=field)
    return {"threshold": float(node.threshold.reshape(-1)[0]) / state_scale,
            "threshold_step": float(node.threshold_step.reshape(-1)[0]) / state_scale,
            "current_decay": 0.0, "voltage_decay": 0.0, "threshold_decay": 0.0,
            "refractory_decay": 0.0}


def _export_block(name: str, synapse: hub.Node, neuron_name: str, neuron: hub.Node,
                  shape: tuple[int, ...], out_shape: tuple[int, ...],
                  delay: tuple[str, hub.Delay] | None = None,
                  recurrent: hub.Linear | None = None,
                  bias: tuple[str, hub.Bias] | None = None) -> Any:
    slayer = _slayer()
    if isinstance(synapse, (hub.Affine, hub.Conv2d)) and np.any(synapse.bias != 0):
        raise hub.UnsupportedError("slayer's CUBA synapses have no bias", node=name,
                                   field="bias")
    weight = _even_mantissas(name, synapse.weight)
    params = _neuron_params(neuron_name, neuron, bias=recurrent is None)
    alif = isinstance(neuron, hub.ALIF)
    family = slayer.block.alif if alif else slayer.block.cuba
    conv = isinstance(synapse, hub.Conv2d)
    if recurrent is not None and conv:
        raise hub.UnsupportedError("slayer's Recurrent block is dense: a convolution with a "
                                   "recurrent synapse is not written", node=neuron_name)
    shift, axonal = _export_timing(neuron_name, neuron, delay, conv, int(out_shape[0]))
    decays = (neuron.alpha, neuron.beta, neuron.threshold_decay, neuron.refractory_decay) \
        if alif else (neuron.i_decay, neuron.v_decay)
    per_channel = any(d.size > 1 for d in decays)
    if per_channel and (conv or len(shape) != 1):
        raise hub.UnsupportedError("per-channel decays map to slayer only in Dense blocks",
                                   node=neuron_name, field="alpha" if alif else "i_decay")
    if per_channel:
        params["shared_param"] = False
    if alif:
        mean = None if bias is None else _norm_mean(bias[0], bias[1].bias, int(out_shape[0]),
                                                    conv)
    else:
        if neuron.bias.any() and neuron.bias_exp != BIAS_EXP:
            raise hub.UnsupportedError(f"slayer's bias (a norm's mean) has bias_exp={BIAS_EXP}",
                                       node=neuron_name, field="bias_exp")
        mean = _norm_mean(neuron_name, neuron.bias, int(out_shape[0]), conv)
    if mean is not None:
        params["norm"] = slayer.neuron.norm.MeanOnlyBatchNorm
    timing = {"delay": axonal is not None, "delay_shift": shift}
    if conv:
        block = family.Conv(
            params, int(weight.shape[1] * synapse.groups), int(weight.shape[0]),
            tuple(int(k) for k in weight.shape[2:]), stride=tuple(synapse.stride),
            padding=tuple(synapse.padding), dilation=tuple(synapse.dilation),
            groups=synapse.groups, **timing)
        weights = [(block.synapse, weight[..., None])]
    elif recurrent is not None:
        block = family.Recurrent(params, int(weight.shape[1]), int(weight.shape[0]),
                                 **timing)
        rec = _even_mantissas(neuron_name, recurrent.weight)
        weights = [(block.input_synapse, weight[..., None, None, None]),
                   (block.recurrent_synapse, rec[..., None, None, None])]
    else:
        block = family.Dense(params, int(weight.shape[1]), int(weight.shape[0]), **timing)
        weights = [(block.synapse, weight[..., None, None, None])]
    with torch.no_grad():
        for target, value in weights:
            target.weight.copy_(torch.tensor(value / DEFAULT_SCALE, dtype=torch.float32))
    _set_decays(block.neuron, neuron, per_channel, int(weight.shape[0]))
    if mean is not None:
        block.neuron.norm.num_features = len(mean)
        block.neuron.norm.running_mean = torch.tensor(mean, dtype=torch.float32)
    if axonal is not None:  # whole steps: slayer's forward truncates them, its export floors
        block.delay.delay.data = torch.tensor(axonal.astype(np.float32))
        block.delay.init = True
    # slayer learns the neuron shape on the first forward; export_hdf5 needs it before that
    block.neuron.shape = torch.Size(out_shape)
    block.neuron.num_neurons = int(np.prod(out_shape))
    return block


def _norm_mean(name: str, value: np.ndarray, count: int, conv: bool) -> np.ndarray | None:
    """The running mean of the ``MeanOnlyBatchNorm`` that gives the neuron its bias."""
    if not np.any(value):
        return None
    if not _integral(np.asarray(value, dtype=np.float64)):
        raise hub.UnsupportedError("slayer's bias (a norm's mean) is an integer mantissa",
                                   node=name, field="bias")
    bias = np.asarray(value, dtype=np.int64)
    if conv and bias.size > 1:
        if bias.ndim != 3 or bias.shape[1:] != (1, 1):
            raise hub.UnsupportedError("a Conv block's bias is one per channel", node=name,
                                       field="bias")
    elif bias.ndim > 1:
        raise hub.UnsupportedError("a Dense block's bias is one per neuron", node=name,
                                   field="bias")
    mantissa = -np.broadcast_to(bias.reshape(-1) if bias.size > 1 else bias, (count,))
    low, high = WEIGHT_RANGE
    if np.any(mantissa % 2) or mantissa.min() < low or mantissa.max() > high:
        raise hub.UnsupportedError(f"slayer's bias is minus an even mantissa in [{low}, {high}] "
                                   "(its norm's quantize_8bit)", node=name, field="bias")
    return mantissa.astype(np.float64) / DEFAULT_SCALE


def _even_mantissas(name: str, value: np.ndarray) -> np.ndarray:
    weight = np.asarray(value, dtype=np.float64)
    low, high = WEIGHT_RANGE
    if not _integral(weight) or np.any(weight % 2) or weight.min() < low or weight.max() > high:
        raise hub.UnsupportedError(
            f"slayer's 8-bit weights are even integer mantissas in [{low}, {high}] (its "
            f"quantize_8bit keeps steps of 2/{DEFAULT_SCALE}); these are "
            f"{weight.min()}..{weight.max()}" + ("" if _integral(weight) else ", not integers"),
            node=name, field="weight")
    return weight


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
