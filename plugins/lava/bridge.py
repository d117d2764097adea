"""The bridge to Lava's Loihi fixed-point simulator: :func:`run_netx` and its worker process.

lava-dl 0.6 needs Python 3.10 and torch < 2.4, so it lives in its own environment
(``.venv-lava``); this module starts ``worker.py`` under that environment's Python and talks to
it over JSON lines (``docs/lava.md``).
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

import hub
import hub.hdf5
from hub.errors import FormatError, PluginError, RuntimeUnavailable

#: Environment variable naming the Python that has lava-dl.
PYTHON_ENV = "HUB_LAVA_PYTHON"
#: Seconds one request may take before the worker is considered hung; ``HUB_LAVA_TIMEOUT``
#: overrides it.
TIMEOUT = 600.0
WORKER = Path(__file__).with_name("worker.py")
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
    candidates = [Path(__file__).resolve().parents[2] / ".venv-lava" / "bin" / "python",
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
    """One ``worker.py`` process serving requests over JSON lines."""

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
