"""Lava: the bridge to Lava's Loihi fixed-point simulator, and the ``slayer`` format.

lava-dl 0.6 needs Python 3.10 and torch < 2.4, so it lives in its own environment,
``.venv-lava`` at the repository root (``scripts/setup-lava`` creates it). This module works
from any environment:

- :func:`run_netx` runs a netx hdf5 file (``lava.lib.dl.netx.hdf5.Network``) in Lava's CPU
  simulator with ``Loihi2SimCfg(select_tag="fixed_pt")``, bit-accurate to Loihi's fixed-point
  neurons. The work happens in ``plugins/lava/worker.py`` under the Lava environment's Python,
  one long-lived process per session that serves every request (Lava takes seconds to import),
  exchanging ``.npy`` files (never pickles) over JSON lines. The output is aligned step for step
  with the network without Lava's synaptic latency: see the worker's docstring and
  ``docs/lava.md``.
- The ``slayer`` format reads and writes lava-dl slayer CUBA, ALIF, sigma-delta and resonator
  (``rf``, ``rf_iz``, ``adrf``) block networks (and reads lava-dl's bootstrap blocks in their SNN
  mode, and ``KWTA`` blocks); it is usable where
  lava-dl is importable (in ``.venv-lava``) and reports itself unavailable elsewhere.

Which Python runs Lava: ``HUB_LAVA_PYTHON`` if set; else this interpreter when it can import
lava-dl; else ``.venv-lava/bin/python`` in the repository (or the current directory). Where none
is found, :func:`run_netx` raises :class:`LavaUnavailable` saying to run ``scripts/setup-lava``.

The package: :mod:`.bridge` (the worker process and :func:`run_netx`), ``worker.py`` (what runs
under Lava's Python, never imported here), :mod:`.slayer` (the format), :mod:`.slayer_import`
and :mod:`.slayer_export` (blocks to nodes and back) over :mod:`.slayer_common`, with the
resonator families in :mod:`.slayer_resonators` and ``KWTA`` in :mod:`.slayer_kwta`.
"""

from __future__ import annotations

import hub
from hub_plugins.lava.bridge import (
    PYTHON_ENV, SETUP_HINT, TIMEOUT, WORKER, LavaUnavailable, _lava_here, lava_python, run_netx,
    shutdown, timings, unavailable, worker_versions)
from hub_plugins.lava.slayer import SlayerFormat, SlayerNetwork
from hub_plugins.lava.slayer_common import _slayer_here

__all__ = ["PYTHON_ENV", "SETUP_HINT", "TIMEOUT", "WORKER", "LavaUnavailable", "SlayerFormat",
           "SlayerNetwork", "_lava_here", "_slayer_here", "hub_register_formats", "lava_python",
           "run_netx", "shutdown", "timings", "unavailable", "worker_versions"]


@hub.hookimpl
def hub_register_formats(register) -> None:
    register(SlayerFormat())
