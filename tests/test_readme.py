"""The README promises what the code does: commands that exist, a support table that is true."""

from __future__ import annotations

import os
import re

from hub.show import support_table

from .conftest import ROOT

README = (ROOT / "README.md").read_text()


def test_the_support_table_matches_the_registry():
    table = re.search(r"<!-- support-table -->\n(.*?)<!-- /support-table -->", README, re.S)
    assert table, "README lost its support table markers"
    assert table.group(1).strip() == support_table().strip(), (
        "README's support table is stale: paste `hub plugins --support-table` into it")


def test_the_readme_commands_exist_and_ci_runs_the_test_command():
    for script in ("scripts/demo", "scripts/test"):
        assert f"{script} " in README
        assert os.access(ROOT / script, os.X_OK)
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()
