"""The README promises what the code does: commands that exist, a support table that is true."""

from __future__ import annotations

import os
import re

import pytest

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


# -- every python block of the README runs as written -------------------------------------------

BLOCKS = re.findall(r"```python\n(.*?)```", README, re.DOTALL)


def _given(block: str, paper, tmp_path) -> dict:
    """What a block takes as given, prepared small: its input ``x``, the model it starts from.
    Names a block defines itself are left to it."""
    import shutil

    import numpy as np
    import torch

    import hub

    given: dict = {"hub": hub}  # imported by the README's first block
    if "paper_01_lif_lif_norse.nir" in block:
        shutil.copy(paper / "paper_01_lif_lif_norse.nir", tmp_path)
        given["x"] = torch.from_numpy((np.random.default_rng(0).uniform(size=(10, 2, 1)) < 0.5)
                                      .astype(np.float32))
    if "relu_net" in block:
        from torch import nn

        torch.manual_seed(0)
        given["relu_net"] = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
        data = torch.rand(16, 8)
        given["train_loader"] = [(data[i:i + 4], torch.zeros(4)) for i in range(0, 16, 4)]
        given["x"] = torch.rand(2, 8)
    if "float_graph" in block:
        rng = np.random.default_rng(0)
        given["float_graph"] = hub.Graph.chain(
            ("input", hub.Input(shape=(4,))),
            ("fc", hub.Linear(weight=rng.uniform(-1, 1, (3, 4)).astype(np.float32))),
            ("lif", hub.LIF(beta=0.75, threshold=0.5)))
        given["sample"] = given["x"] = torch.from_numpy(
            (rng.uniform(size=(8, 2, 4)) < 0.5).astype(np.float32))
    return given


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i + 1}" for i in range(len(BLOCKS))])
def test_every_python_block_of_the_readme_runs(block, paper, tmp_path, monkeypatch):
    """Each block runs as written, in a fresh folder, given only the inputs it names but does
    not make (``x``, a trained network to start from) and ``hub``, which the first imports."""
    import hub

    if "netx" in block and hub.plugins().format("netx").unavailable():
        pytest.skip(f"netx: {hub.plugins().format('netx').unavailable()}")
    monkeypatch.chdir(tmp_path)
    namespace = _given(block, paper, tmp_path)
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102  (our own README)
