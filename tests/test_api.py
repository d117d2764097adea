"""hub.load, hub.save, hub.convert: detection, options, files, and no side effects."""

from __future__ import annotations

import json

import numpy as np
import pytest

import hub

from .conftest import EXAMPLES, single


@pytest.fixture
def graph() -> hub.Graph:
    return single(EXAMPLES["LIF"][0], (3,))


def test_formats_are_detected_from_objects_and_suffixes(graph, tmp_path):
    assert hub.detect(graph).name == "hub"
    assert hub.detect(hub.convert(graph, to="nir", dt=1e-3)).name == "nir"
    assert hub.detect(tmp_path / "a.nir").name == "nir"
    assert hub.detect(str(tmp_path / "a.HUB.JSON")).name == "hub"
    with pytest.raises(hub.FormatError, match="known suffixes: ") as e:
        hub.detect(tmp_path / "a.onnx")
    assert ".hub.json" in str(e.value) and ".nir" in str(e.value)
    assert e.value.file == str(tmp_path / "a.onnx")
    with pytest.raises(hub.FormatError, match="no installed format recognises a builtins.list"):
        hub.detect([1, 2])


def test_source_overrides_detection(graph, tmp_path):
    hub.save(graph, to="nir", out=tmp_path / "model.bin", dt=1e-3)
    with pytest.raises(hub.FormatError):
        hub.load(tmp_path / "model.bin")
    assert hub.load(tmp_path / "model.bin", source="nir") == graph


def test_save_takes_the_format_from_the_suffix(graph, tmp_path):
    path = hub.save(graph, out=tmp_path / "g.hub.json")
    assert json.loads(path.read_text())["type"] == "Graph"
    with pytest.raises(hub.HubError, match="needs to=<format> or out=<file>"):
        hub.save(graph)


def test_unknown_options_are_refused_naming_what_is_accepted(graph):
    with pytest.raises(hub.HubError, match=r"unknown option\(s\) 'd_t': 'hub' takes none; "
                                           r"'nir' takes dt"):
        hub.convert(graph, to="nir", d_t=1e-3)


def test_objects_in_objects_out_and_files_in_files_out(graph, tmp_path):
    nir_graph = hub.convert(graph, to="nir", dt=1e-3)
    assert type(nir_graph).__name__ == "NIRGraph"
    out = hub.convert(nir_graph, out=tmp_path / "g.hub.json")
    assert out == tmp_path / "g.hub.json"
    assert hub.convert(out, to="hub") == graph


def test_converting_never_mutates_or_shares_the_source(graph):
    before = graph.to_dict()
    copy = hub.convert(graph, to="hub")
    copy.nodes["node"] = hub.LIF(beta=0.25)
    assert graph.to_dict() == before


def test_the_nir_writer_needs_a_dt_for_neurons(graph, tmp_path):
    with pytest.raises(hub.HubError, match="needs a time step") as e:
        hub.save(graph, to="nir", out=tmp_path / "g.nir")
    assert e.value.node == "node" and e.value.file == str(tmp_path / "g.nir")
    assert not (tmp_path / "g.nir").exists()
    stateless = single(EXAMPLES["Conv2d"][0], (2, 6, 6))
    hub.save(stateless, to="nir", out=tmp_path / "conv.nir")  # no neuron, no dt needed
    assert hub.load(tmp_path / "conv.nir") == stateless


def test_a_format_without_a_capability_says_what_it_can_do(graph, monkeypatch):
    fmt = hub.plugins().format("hub")
    monkeypatch.setattr(type(fmt), "export", None)
    with pytest.raises(hub.PluginError, match="cannot export to an in-memory model"):
        hub.convert(graph, to="hub")


def test_the_graph_dt_is_kept(graph, tmp_path):
    graph.metadata["dt"] = 5e-4
    hub.save(graph, to="nir", out=tmp_path / "g.nir")
    assert hub.load(tmp_path / "g.nir").metadata["dt"] == 5e-4
    assert np.isclose(hub.convert(graph, to="nir").nodes["node"].tau[0], 5e-4 / 0.25)


def test_the_target_format_and_the_file_name_must_agree(graph, tmp_path):
    with pytest.raises(hub.HubError, match="the file name says format 'hub' but 'nir'") as e:
        hub.convert(graph, to="nir", out=tmp_path / "g.hub.json", dt=1e-3)
    assert e.value.file == str(tmp_path / "g.hub.json")
    assert hub.save(graph, to="nir", out=tmp_path / "g.bin", dt=1e-3).exists()  # unknown: fine
    with pytest.raises(hub.HubError, match="needs to=<format> or out=<file>"):
        hub.convert(graph)
