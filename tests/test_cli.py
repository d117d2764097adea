"""The hub command: convert, inspect, plugins; complete help; errors as messages, exit 2."""

from __future__ import annotations

import pytest

import hub
from hub.cli import main

from .conftest import EXAMPLES, single


@pytest.fixture
def cli(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err
    return run


@pytest.mark.parametrize("command", [[], ["convert"], ["inspect"], ["plugins"]])
def test_help_is_complete(capsys, command):
    with pytest.raises(SystemExit) as e:
        main([*command, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    words = {(): ["convert", "inspect", "plugins", "examples:"],
             ("convert",): ["--to", "--out", "--from", "--dt", "--force", "atomically"],
             ("inspect",): ["--draw", "--dt", "--from", "execution order"],
             ("plugins",): ["HUB_PLUGINS", "HUB_DISABLE_PLUGINS", "--support-table"]}
    for word in words[tuple(command)]:
        assert word in text


def test_convert_writes_and_refuses_to_overwrite(cli, tmp_path):
    graph = single(EXAMPLES["CubaLIF"][0], (3,))
    hub.save(graph, out=tmp_path / "g.hub.json")
    code, out, _ = cli("convert", str(tmp_path / "g.hub.json"), "--to", "nir", "-o",
                       str(tmp_path / "g.nir"), "--dt", "0.001")
    assert code == 0 and "wrote" in out
    assert hub.load(tmp_path / "g.nir") == graph
    before = (tmp_path / "g.nir").read_bytes()
    code, _, err = cli("convert", str(tmp_path / "g.hub.json"), "-o", str(tmp_path / "g.nir"),
                       "--dt", "0.001")
    assert code == 2 and "the file exists; pass force=True (or --force)" in err
    assert (tmp_path / "g.nir").read_bytes() == before
    code, _, _ = cli("convert", str(tmp_path / "g.hub.json"), "-o", str(tmp_path / "g.nir"),
                     "--dt", "0.002", "--force")
    assert code == 0
    assert hub.load(tmp_path / "g.nir").metadata["dt"] == 0.002


def test_convert_reports_bad_input_without_a_traceback(cli, tmp_path):
    (tmp_path / "junk.nir").write_bytes(b"not hdf5 at all")
    code, out, err = cli("convert", str(tmp_path / "junk.nir"), "-o", str(tmp_path / "x.hub.json"))
    assert code == 2
    assert "junk.nir" in err and "not an HDF5 file" in err and "Traceback" not in err
    code, _, err = cli("convert", str(tmp_path / "junk.nir"), "--to", "onnx", "-o", "x.onnx")
    assert code == 2 and "no format 'onnx'" in err


def test_inspect_prints_a_table_and_draws(cli, tmp_path, paper):
    code, out, err = cli("inspect", str(paper / "paper_02_cnn_cnn_sinabs.nir"), "--dt", "1",
                         "--draw", str(tmp_path / "cnn.png"))
    assert code == 0, err
    for text in ("Conv2d", "SumPool2d", "[2, 34, 34]", "[16, 16, 16]", "[128]", "Flatten"):
        assert text in out
    assert (tmp_path / "cnn.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = cli("inspect", str(paper / "paper_02_cnn_cnn_sinabs.nir"), "--dt", "1",
                       "--draw", str(tmp_path / "cnn.png"))
    assert code == 2 and "exists" in err


def test_inspect_says_which_path_each_neuron_layer_takes(cli, tmp_path):
    graph = single(EXAMPLES["CubaLIF"][0], (3,))
    hub.save(graph, out=tmp_path / "g.hub.json")
    neuron = next(name for name, node in graph.nodes.items() if isinstance(node, hub.Neuron))
    code, out, err = cli("inspect", str(tmp_path / "g.hub.json"))
    simulator = hub.Simulator(graph)
    simulator(__import__("torch").zeros(2, 1, 3))
    assert code == 0, err
    assert f"{neuron} runs on {simulator.paths[neuron]}" in out


def test_convert_reads_a_nir_cubalif_with_the_current_order_asked_for(cli, paper, tmp_path):
    braille = paper / "paper_03_rnn_braille_noDelay_bias_zero.nir"
    for order in ("new", "previous"):
        code, _, err = cli("convert", str(braille), "--dt", "1e-4", "--current-order", order,
                           "-o", str(tmp_path / f"{order}.hub.json"))
        assert code == 0, err
        assert hub.load(tmp_path / f"{order}.hub.json") == \
            hub.load(braille, dt=1e-4, current_order=order)
    assert hub.load(tmp_path / "new.hub.json") != hub.load(tmp_path / "previous.hub.json")
    code, _, err = cli("convert", str(tmp_path / "new.hub.json"), "--current-order", "new",
                       "-o", str(tmp_path / "again.nir"))
    assert code == 2 and "current_order" in err  # the hub's own files take no such option


def test_inspect_names_missing_dt(cli, paper):
    code, _, err = cli("inspect", str(paper / "paper_02_cnn_cnn_sinabs.nir"))
    assert code == 2 and "node '1', field 'dt'" in err and "--dt" in err


def test_plugins_lists_the_builtin_formats(cli):
    code, out, _ = cli("plugins")
    assert code == 0
    assert "nir: read, load, write, export" in out
    assert "hub (also canonical, graph)" in out


def test_warnings_reach_the_user(cli, paper, tmp_path):
    code, _, err = cli("convert", str(paper / "paper_01_lif_lif_rockpool.nir"), "--dt", "1e-4",
                       "-o", str(tmp_path / "r.hub.json"))
    assert code == 0
    assert "warning:" in err and "declares shape [1, 1, 1]" in err
