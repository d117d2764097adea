"""snn-hub's conformance suite: spike-identical verification across every conversion path.

It converts every model of the zoo (:mod:`hub_conformance.zoo`) along every route between the
installed formats (:mod:`hub_conformance.paths`: ``A->B``, ``A->B->A``, ``A->file->B``), runs each
result in its own format's runtime (the format's ``run`` hook, never the hub's simulator), and
compares with the reference simulation (:mod:`hub_conformance.compare`)::

    import hub_conformance
    suite = hub_conformance.run(formats=["hub", "nir"], tiers=["exact"])
    assert suite.ok, suite.failures

From the shell: ``hub conformance``. Plugin authors get the whole suite in their own pytest run
by subclassing :class:`hub_conformance.testing.FormatTests`.
"""

from __future__ import annotations

from .compare import Comparison
from .paths import Route, routes
from .suite import Outcome, Suite, check, run, run_case
from .zoo import TIERS, Case, cases

__all__ = ["TIERS", "Case", "Comparison", "Outcome", "Route", "Suite", "cases", "check", "routes",
           "run", "run_case"]
