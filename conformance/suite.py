"""Running the zoo along every route and collecting what happened."""

from __future__ import annotations

import dataclasses
import fnmatch
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

import hub
from hub.legalise import FLOAT

from . import zoo
from .compare import EXACT_TIERS, Comparison, compare, flat
from .paths import ParameterMismatch, Route, Unsupported, execute, routes, usable

#: What an outcome can be. ``tie`` passes (a float-tier divergence at a threshold tie);
#: ``xfail`` is a failure its format declared as a known gap; ``xpass`` a declared gap that
#: passed (the declaration is stale); ``n/a`` a model the route cannot express;
#: ``unavailable`` a run this machine cannot do (``hub.errors.RuntimeUnavailable``: a runtime's
#: environment is missing), which neither passes nor fails.
STATUSES = ("pass", "tie", "fail", "error", "xfail", "xpass", "n/a", "unavailable")
FAILING = ("fail", "error", "xpass")


@dataclasses.dataclass
class Outcome:
    """One case carried along one route."""

    case: zoo.Case
    route: Route
    status: str
    detail: str = ""
    comparison: Comparison | None = None
    output: torch.Tensor | None = None  # the runtime's output, flat [T, N, K]

    @property
    def id(self) -> str:
        return f"{self.case.id}:{self.route.label}"


@dataclasses.dataclass
class Suite:
    """The outcomes of a run, the cases that could not be built, and what it covered."""

    outcomes: list[Outcome]
    formats: list[str]
    tiers: tuple[str, ...]
    unloadable: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    references: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status in FAILING]

    @property
    def ok(self) -> bool:
        return not self.failures

    def count(self, **where: Any) -> dict[str, int]:
        """Outcomes by status among those whose route/case attributes match ``where``."""
        counts = dict.fromkeys(STATUSES, 0)
        for o in self.outcomes:
            if all(getattr(o.route, k, getattr(o.case, k, None)) == v for k, v in where.items()):
                counts[o.status] += 1
        return counts


def known_gap(outcome_id: str, case_id: str, gaps: dict[str, str]) -> str | None:
    """The reason of the first gap pattern (fnmatch) that matches the outcome or its case."""
    for pattern, reason in gaps.items():
        if fnmatch.fnmatchcase(outcome_id, pattern) or fnmatch.fnmatchcase(case_id, pattern):
            return reason
    return None


def gaps_of(route: Route) -> dict[str, str]:
    """The known gaps the formats on ``route`` declare (``Format.known_gaps``)."""
    out: dict[str, str] = {}
    for name in route.formats:
        out.update(getattr(hub.plugins().format(name, usable=False), "known_gaps", {}) or {})
    return out


def run_case(case: zoo.Case, route: Route, reference: torch.Tensor | None = None,
             gaps: dict[str, str] | None = None) -> Outcome:
    """Carry ``case`` along ``route``, run it in the route's runtime and judge the output."""
    x = torch.as_tensor(case.x)
    if reference is None:
        reference = flat(hub.simulate(case.graph, x))
    outcome = Outcome(case, route, "pass")
    try:
        output = flat(execute(route, case.graph, x, originals=case.originals,
                              rewrites="exact" if case.tier in EXACT_TIERS else FLOAT))
    except Unsupported as e:
        outcome.status, outcome.detail = "n/a", str(e)
    except ParameterMismatch as e:
        outcome.status, outcome.detail = "fail", str(e)
    except hub.errors.RuntimeUnavailable as e:
        outcome.status, outcome.detail = "unavailable", str(e)
    except Exception as e:  # a plugin crashed on a model it claims to express: a bug
        outcome.status, outcome.detail = "error", f"{type(e).__name__}: {e}"
    else:
        outcome.output = output
        outcome.comparison = compare(case.graph, x, case.tier, reference, output)
        if not outcome.comparison.agree:
            outcome.status = "tie" if outcome.comparison.tie else "fail"
            outcome.detail = outcome.comparison.detail
        elif case.tier not in EXACT_TIERS and outcome.comparison.agreement < 1:
            outcome.detail = f"{outcome.comparison.agreement:.2%} of entries agree"
    reason = known_gap(outcome.id, case.id, gaps if gaps is not None else gaps_of(route))
    if reason is not None:
        if outcome.status in ("fail", "error"):
            outcome.status, outcome.detail = "xfail", f"known gap: {reason} ({outcome.detail})"
        elif outcome.status in ("pass", "tie"):
            outcome.status = "xpass"
            outcome.detail = f"declared a known gap ({reason}) but passes: remove the declaration"
    return outcome


def run_routes(case: zoo.Case, all_routes: list[Route],
               tick: Callable[[str], None] | None = None) -> tuple[torch.Tensor, list[Outcome]]:
    """The reference run of ``case`` and its outcomes along each of ``all_routes``, in order."""
    reference = flat(hub.simulate(case.graph, torch.as_tensor(case.x)))
    outcomes = []
    for route in all_routes:
        if tick:
            tick(f"{case.id} {route.label}")
        outcomes.append(run_case(case, route, reference))
    return reference, outcomes


def run(formats: Iterable[str] | None = None, tiers: Iterable[str] = zoo.TIERS,
        match: str | None = None, paper: Path | None = None,
        cases: list[zoo.Case] | None = None,
        progress: Callable[[int, int, str], None] | None = None,
        jobs: int = 1, cluster: str | None = None) -> Suite:
    """Run the conformance suite: every case of ``tiers`` along every route between ``formats``.

    ``formats`` defaults to every usable installed format; ``match`` keeps the cases whose id
    matches the fnmatch pattern; ``cases`` replaces the zoo (used by ``--against``).
    ``progress(done, total, what)`` is called as it goes.

    ``jobs`` > 1 runs the cases on that many local processes; ``cluster`` (a Dask distributed
    scheduler address such as ``"tcp://10.0.0.5:8786"``, needs the ``distributed`` extra) runs
    them on that cluster's workers, which need snn-hub and the same frameworks installed. Either
    way a case is the unit of work and the outcomes come back in the serial order, identical to
    a serial run's.
    """
    start = time.perf_counter()
    tiers = tuple(tiers)
    chosen = usable(formats)
    unloadable: list[tuple[str, str]] = []
    if cases is None:
        cases = []
        for item in zoo.cases(tiers, paper):
            if isinstance(item, tuple):
                unloadable.append(item)
            else:
                cases.append(item)
    if match:
        cases = [c for c in cases if fnmatch.fnmatchcase(c.id, match)
                 or fnmatch.fnmatchcase(c.name, match)]
    all_routes = routes(chosen)
    total = len(cases) * len(all_routes)
    outcomes: list[Outcome] = []
    references: dict[str, torch.Tensor] = {}

    done = 0

    def tick(what: str) -> None:
        nonlocal done
        if progress:
            progress(done, total, what)
        done += 1

    if jobs > 1 or cluster:
        from .parallel import run_cases
        results = run_cases(cases, all_routes, jobs=jobs, cluster=cluster, progress=progress)
    else:
        results = (run_routes(case, all_routes, tick) for case in cases)
    for case, (reference, judged) in zip(cases, results):
        references[case.id] = reference
        outcomes += judged
    if progress:
        progress(total, total, "done")
    return Suite(outcomes, list(chosen), tiers, unloadable, time.perf_counter() - start,
                 references)


def as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _reference(model: Any, source: str | None, graph: hub.Graph, x: torch.Tensor
               ) -> torch.Tensor:
    """What every target must reproduce: a live torch model's own run in its framework, not
    the hub's reading of it; for files and graphs, the reference simulation."""
    if not isinstance(model, torch.nn.Module):
        return flat(hub.simulate(graph, x))
    fmt = hub.detect(model, source)
    if "run" not in fmt.capabilities:
        return flat(hub.simulate(graph, x))
    return flat(fmt.run(model, x))


def check(model: Any, targets: Iterable[str] | None = None, x: Any = None, *,
          steps: int = 20, tier: str = "float", source: str | None = None,
          dt: float | None = None, seed: int = 0) -> Suite:
    """Whether ``model`` (any format) converts spike-identically to each of ``targets``.

    The model is imported, then carried to each target (directly, there and back, and through
    each file format) and run in the target's runtime on ``x`` (``[T, N, *in]``; by default
    ``steps`` steps of random spikes for one sample). ``tier`` says how to compare: ``"exact"``
    demands bit-identical outputs, ``"float"`` allows threshold ties. ``targets`` defaults to
    every usable format. Every target is compared with the original model's own run (a live
    model's, in its framework), so a wrong reading of the model fails every target. Returns the
    :class:`Suite`; ``suite.ok`` is the verdict.
    """
    options = {}
    if x is not None and isinstance(model, torch.nn.Module) and \
            "input_shape" in hub.detect(model, source).load_options:
        options["input_shape"] = tuple(np.shape(x)[2:])  # a live model's input, from x
    graph = hub.load(model, source=source, dt=dt, **options)
    if x is None:
        shape = graph.plan().output_shapes[graph.inputs[0]]
        x = (np.random.default_rng(seed).random((steps, 1, *shape)) < 0.3).astype(np.float32)
    case = zoo.Case("model", tier, graph, np.asarray(x, dtype=np.float32))
    names = ["hub", *(t for t in (targets or usable()) if t != "hub")]
    chosen = usable(names)
    start = time.perf_counter()
    reference = _reference(model, source, graph, torch.as_tensor(case.x))
    picked = [r for r in routes(chosen) if r.source == "hub" and (r.target != "hub" or r.via)]
    outcomes = [run_case(case, route, reference) for route in picked]
    return Suite(outcomes, list(chosen), (tier,), seconds=time.perf_counter() - start,
                 references={case.id: reference})
