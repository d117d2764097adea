"""Abstract test classes: a format plugin gets the whole conformance suite by subclassing.

In the plugin's own tests::

    from hub_conformance.testing import FormatTests

    class TestMyFormat(FormatTests):
        format = "myformat"
        known_gaps = {"*/dense-lif-graded*": "graded spikes are not supported yet"}

With snn-hub installed, its pytest plugin (entry point ``pytest11``) turns that class into one
test per zoo case and route between ``myformat`` and its ``peers`` (the canonical format by
default): ``A->B``, ``A->B->A`` and through every file format, each run in its own runtime and
compared with the reference. A route the format cannot express is skipped with the converter's
reason. ``known_gaps`` maps fnmatch patterns, matched against the test's id
(``"exact/dense-lif-graded:hub->myformat"``) or its case (``"exact/dense-lif-graded"``), to the
reason; those tests are expected failures (strict: one that starts passing fails, so the
declaration cannot go stale). Where the format's framework is not installed, its tests are
skipped with the reason; a format name that no plugin registers is an error. A format may
also declare ``known_gaps`` on its ``Format`` class, which the command-line suite honours too.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

import hub

from . import zoo
from .paths import Route, routes, usable
from .suite import gaps_of, known_gap, run_case


class FormatTests:
    """The conformance suite for one format; subclass it as ``Test...`` and set ``format``."""

    #: The format under test (its registered name).
    format: ClassVar[str] = ""
    #: The formats it is paired with; ``None`` pairs it with every usable installed format.
    peers: ClassVar[tuple[str, ...] | None] = ("hub",)
    #: The zoo tiers to run.
    tiers: ClassVar[tuple[str, ...]] = ("exact", "float", "fixed")
    #: fnmatch pattern -> reason: tests expected to fail, and why.
    known_gaps: ClassVar[dict[str, str]] = {}

    def test_format_is_usable(self) -> None:
        fmt = hub.plugins().format(self.format)  # raises, naming what is missing
        assert fmt.capabilities, f"format {self.format!r} implements none of read, load, " \
                                 "write, export, run"

    def test_conformance(self, conformance_run: tuple[zoo.Case, Route]) -> None:
        case, route = conformance_run
        outcome = run_case(case, route, gaps={})  # the gaps are xfail marks here
        if outcome.status == "n/a":
            pytest.skip(f"not expressible: {outcome.detail}")
        if outcome.status == "unavailable":
            pytest.skip(f"runtime unavailable here: {outcome.detail}")
        if outcome.status not in ("pass", "tie"):
            pytest.fail(f"{outcome.id}: {outcome.status}: {outcome.detail}", pytrace=False)


def parameters(cls: type[FormatTests]) -> list[Any]:
    """One ``pytest.param((case, route))`` per zoo case and route involving ``cls.format``."""
    if not cls.format:
        raise TypeError(f"{cls.__name__} must set `format` to the name of the format to test")
    fmt = hub.plugins().format(cls.format, usable=False)  # an unknown name is an error
    reason = fmt.unavailable()
    if reason:  # its framework is not installed here: say so, once
        skip = pytest.mark.skip(reason=f"{fmt.name!r} is unavailable: {reason}")
        return [pytest.param(None, id="unavailable", marks=skip)]
    names = [cls.format] + [p for p in (cls.peers or ()) if p != cls.format]
    formats = usable(None if cls.peers is None else names)
    formats.setdefault(cls.format, hub.plugins().format(cls.format))
    mine = [r for r in routes(formats) if cls.format in r.formats]
    cases = [c for c in zoo.cases(tuple(cls.tiers)) if isinstance(c, zoo.Case)]
    params = []
    for route in mine:
        gaps = {**gaps_of(route), **cls.known_gaps}
        for case in cases:
            outcome_id = f"{case.id}:{route.label}"
            reason = known_gap(outcome_id, case.id, gaps)
            marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
            params.append(pytest.param((case, route), id=outcome_id, marks=marks))
    return params
