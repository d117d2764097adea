"""Running the conformance matrix on several processes, or on a Dask distributed cluster.

A case is the unit of work: a worker runs the reference simulation of one case and carries it
along every route, exactly as :func:`hub_conformance.suite.run_routes` does in a serial run, and
sends back the judged outcomes without the case (the caller holds it). Results are put back in
the serial order, so a parallel run's :class:`~hub_conformance.suite.Suite` equals a serial
one's. Each local worker runs torch on its share of the machine's threads.

Dask distributed was chosen over Ray for the cluster: it is pure Python and a small install
(no daemon or native wheels), a scheduler address is all it needs, and ``LocalCluster`` starts
a real multi-process cluster on 127.0.0.1 for the tests.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import warnings
from collections.abc import Callable
from typing import Any

import torch

from hub.errors import HubError

from . import zoo
from .paths import Route
from .suite import Outcome, run_routes

#: What a worker sends back for one case: its reference output and, per route in order, the
#: outcome's (status, detail, comparison, output).
Judged = tuple[torch.Tensor, list[tuple[Any, ...]]]

#: How long to wait for a Dask scheduler to answer.
CONNECT_TIMEOUT = "20s"


def work(case: zoo.Case, all_routes: list[Route], filters: list[tuple]) -> Judged:
    """One case along every route, in a worker, under the caller's warning filters (a warning
    that is an error in the caller's run is one in the worker's)."""
    with warnings.catch_warnings():
        warnings.filters[:] = filters
        reference, outcomes = run_routes(case, all_routes)
    return reference, [(o.status, o.detail, o.comparison, o.output) for o in outcomes]


def _threads(count: int) -> None:
    torch.set_num_threads(count)


def run_cases(cases: list[zoo.Case], all_routes: list[Route], *, jobs: int = 1,
              cluster: str | None = None,
              progress: Callable[[int, int, str], None] | None = None
              ) -> list[tuple[torch.Tensor, list[Outcome]]]:
    """``run_routes`` for each of ``cases``, on ``jobs`` local processes or on ``cluster``."""
    total = len(cases) * len(all_routes)
    results: list[Judged | None] = [None] * len(cases)
    done = 0
    if progress:
        progress(0, total, f"{len(cases)} cases on " + (cluster or f"{jobs} processes"))
    for index, judged in (_on_cluster(cases, all_routes, cluster) if cluster
                          else _on_processes(cases, all_routes, jobs)):
        results[index] = judged
        done += len(all_routes)
        if progress:
            progress(done, total, cases[index].id)
    return [(reference, [Outcome(case, route, *fields)
                         for route, fields in zip(all_routes, judged)])
            for case, (reference, judged) in zip(cases, results)]  # type: ignore[misc]


def _on_processes(cases: list[zoo.Case], all_routes: list[Route], jobs: int):
    # spawn, not fork: a forked child of a process whose OpenMP pool has run can hang
    context = multiprocessing.get_context("spawn")
    threads = max(1, torch.get_num_threads() // jobs)
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context, initializer=_threads,
                                                initargs=(threads,)) as pool:
        futures = {pool.submit(work, case, all_routes, warnings.filters[:]): i
                   for i, case in enumerate(cases)}
        for future in concurrent.futures.as_completed(futures):
            yield futures[future], future.result()


def _on_cluster(cases: list[zoo.Case], all_routes: list[Route], address: str):
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise HubError("running the conformance matrix on a cluster needs Dask distributed: "
                       "pip install 'snn-hub[distributed]'") from None
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT)
    except OSError as e:
        raise HubError(f"cannot reach the Dask scheduler at {address!r} ({e}); start one with "
                       "`dask scheduler` and workers with `dask worker ADDRESS`, or pass "
                       "jobs=N to run on local processes") from None
    with client:
        futures = {client.submit(work, case, all_routes, warnings.filters[:], pure=False): i
                   for i, case in enumerate(cases)}
        for future in as_completed(futures):
            yield futures[future], future.result()
