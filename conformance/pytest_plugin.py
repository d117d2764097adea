"""The pytest plugin (entry point ``pytest11``): parametrises :class:`FormatTests` subclasses.

It is loaded in every pytest run where snn-hub is installed, so it imports nothing heavy until a
test class asks for the suite.
"""

from __future__ import annotations

from typing import Any


def pytest_generate_tests(metafunc: Any) -> None:
    if "conformance_run" not in metafunc.fixturenames or metafunc.cls is None:
        return
    from .testing import FormatTests, parameters

    if issubclass(metafunc.cls, FormatTests):
        metafunc.parametrize("conformance_run", parameters(metafunc.cls))
