"""Checks that run in the Lava environment, where lava-dl's slayer lives, for the tests here.

lava-dl runs only in ``.venv-lava`` (Python 3.10), so a test module holds its slayer checks as
a script's source: each check a function under ``@check``, the script ending in
``run_checks()``. :func:`run_in_lava` runs the script once in that environment, with this
checkout first on its path, and returns each check's result; the module then has one test per
check (:func:`names`) that asserts it passed (:func:`assert_passed`). Where the Lava
environment is missing, those tests skip, saying so.

This module is imported on both sides: by the script in the Lava environment (:func:`check`,
:func:`forward`, :func:`cuba_params`, :func:`run_checks`; it imports torch and the hub only
there, lazily) and by the test modules (the rest).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import traceback
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
#: The modules a check imports and the folders of this checkout they are.
PACKAGES = (("hub", "hub"), ("hub_plugins", "plugins"), ("hub_conformance", "conformance"))
#: The checks the running script has declared, in order.
CHECKS: dict[str, Callable[[], None]] = {}


# -- in the Lava environment ----------------------------------------------------------------


def check(fn: Callable[[], None]) -> Callable[[], None]:
    """Declares ``fn`` a check: it passes by returning, fails by raising."""
    CHECKS[fn.__name__] = fn
    return fn


def forward(blocks: Any, x: Any) -> Any:
    """slayer's forward as its users call it: ``[T, N, *]`` to ``[N, *, T]``, the blocks in
    eval mode in order, and back to time-major."""
    import torch

    import hub

    y = hub.to_lava(x).contiguous()
    with torch.no_grad():
        for b in blocks:
            b.eval()
            y = b(y)
    return hub.from_lava(y)


def cuba_params(rng: Any) -> dict[str, float]:
    """Random parameters of slayer's CUBA neuron on the grids slayer keeps them on: the
    threshold on 1/64, the decays on 1/4096."""
    return dict(threshold=int(rng.integers(16, 160)) / 64,
                current_decay=int(rng.integers(0, 4097)) / 4096,
                voltage_decay=int(rng.integers(0, 4097)) / 4096)


def run_checks() -> None:
    """Runs every declared check, printing one ``CHECK {"check", "ok", "detail"}`` line each."""
    for name, fn in CHECKS.items():
        try:
            fn()
            result = {"check": name, "ok": True, "detail": ""}
        except Exception:
            result = {"check": name, "ok": False, "detail": traceback.format_exc()[-3000:]}
        print("CHECK " + json.dumps(result), flush=True)


# -- in the test modules --------------------------------------------------------------------


def names(source: str) -> list[str]:
    """The checks a script declares, in order (one test each)."""
    return re.findall(r"^@check\ndef (\w+)\(", source, flags=re.M)


def lava_python() -> Path:
    """The Lava environment's Python; skips the test, saying why, where there is none."""
    import pytest

    from hub_plugins import lava

    try:
        return lava.lava_python()
    except lava.LavaUnavailable as e:
        pytest.skip(f"the Lava environment is missing ({e.message})")


def checkout_view(folder: Path) -> Path:
    """``folder`` made a view of this checkout (``hub``, ``hub_plugins``, ``hub_conformance``
    and this module, linked), to put first on the Lava environment's path: its installed copy
    of the hub may be another one."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, target in PACKAGES:
        (folder / name).symlink_to(ROOT / target, target_is_directory=True)
    (folder / "slayer_harness.py").symlink_to(Path(__file__).resolve())
    return folder


def run_in_lava(source: str, view: Path, *args: Any, timeout: int = 600) -> dict[str, dict]:
    """Runs the checks script ``source`` once in the Lava environment, ``sys.argv[1]`` the
    checkout view (first on its path) and ``args`` after it; each check's result by name."""
    python = lava_python()
    script = "import sys\nsys.path.insert(0, sys.argv[1])\n" + source
    done = subprocess.run([str(python), "-I", "-c", script, str(view), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)
    results = {}
    for line in done.stdout.splitlines():
        if line.startswith("CHECK "):
            result = json.loads(line[len("CHECK "):])
            results[result["check"]] = result
    assert done.returncode == 0 and results, done.stderr[-3000:]
    return results


def conformance_in_lava(folder: Path, *args: str, timeout: int = 900) -> str:
    """``hub conformance *args`` run in the Lava environment on this checkout (its report in
    ``folder / "out"``); its output, once it has exited with 0."""
    python = lava_python()
    view = checkout_view(folder / "checkout")
    result = subprocess.run(
        [str(python), "-m", "hub.cli", "conformance", *args, "--out", str(folder / "out")],
        capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(view)})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return result.stdout


def assert_passed(results: dict[str, dict], name: str) -> None:
    assert name in results, f"check {name!r} did not run"
    assert results[name]["ok"], results[name]["detail"]
