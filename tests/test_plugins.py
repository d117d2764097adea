"""Plugins: built-ins and third-party packages load the same way; a broken one breaks nothing."""

from __future__ import annotations

import inspect

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import hub
from hub import plugin_manager as plugin_module
from hub.hookspecs import hub_register_formats, hub_register_nodes
from hub.node import _REGISTRY


@pytest.fixture
def installed(site, monkeypatch):
    """Plugins reloaded with the throwaway packages importable, restored afterwards."""
    monkeypatch.syspath_prepend(str(site))
    with pytest.warns(plugin_module.PluginWarning) as caught:
        registry = plugin_module.reload()
    yield registry, [str(w.message) for w in caught]
    monkeypatch.undo()
    for name in ("hub_toy_plugin", "hub_broken_plugin", "hub_misbehaving_plugin",
                 "hub_wrong_plugin"):
        sys.modules.pop(name, None)
    _REGISTRY.pop("Clip", None)
    plugin_module.reload()


def test_builtin_plugins_are_entry_points_like_any_other():
    registry = hub.plugins()
    assert {"hub", "nir"} <= set(registry.info)
    assert registry.info["nir"].status == "loaded"
    assert registry.info["nir"].module == "hub_plugins.nir"
    assert registry.format("nir").name == "nir"
    assert registry.format("canonical").name == "hub"


def test_a_third_party_plugin_is_listed_and_usable(installed, tmp_path):
    registry, _ = installed
    info = registry.info["toy"]
    assert (info.status, info.version, info.formats, info.nodes) == ("loaded", "1.2.3", ["toy"],
                                                                     ["Clip"])
    clip = hub.node_type("Clip")(low=0.0, high=0.5)
    graph = hub.Graph.chain(hub.Input(shape=(2,)), hub.Linear(weight=np.eye(2)), clip)
    hub.save(graph, out=tmp_path / "g.toy")  # format from the suffix
    assert (tmp_path / "g.toy").read_text().startswith("TOY 1\n")
    assert hub.load(tmp_path / "g.toy") == graph
    native = hub.convert(graph, to="toyformat")
    assert hub.detect(native).name == "toy"
    x = torch.tensor([[[1.0, 0.25]]])
    assert registry.format("toy").run(native, x).tolist() == [[[0.5, 0.25]]]


def test_a_broken_plugin_is_reported_and_the_rest_keep_working(installed, tmp_path):
    registry, messages = installed
    broken = registry.info["broken"]
    assert broken.status == "failed"
    assert ("ModuleNotFoundError" in broken.reason
            and "a_framework_that_does_not_exist" in broken.reason)
    assert any("'broken'" in m and "failed to load" in m for m in messages)
    misbehaving = registry.info["misbehaving"]
    assert misbehaving.status == "failed"
    assert "register() takes a hub.Format instance, got 'nir'" in misbehaving.reason
    assert registry.format("nir").name == "nir"  # untouched
    graph = hub.Graph.chain(hub.Input(shape=(1,)), hub.LIF(beta=0.5))
    hub.save(graph, to="nir", out=tmp_path / "g.nir", dt=1e-3)
    assert hub.load(tmp_path / "g.nir") == graph


def run_cli(site: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "200", **env}
    return subprocess.run([sys.executable, "-m", "hub.cli", *args], capture_output=True,
                          text=True, env=environ, timeout=120)


def test_hub_plugins_lists_third_party_and_broken_plugins(site):
    result = run_cli(site, "plugins")
    assert result.returncode == 0, result.stderr
    lines = {line.split("│")[1].strip(): line for line in result.stdout.splitlines()
             if line.count("│") > 4 and line.split("│")[1].strip()}
    assert "loaded" in lines["nir"] and "nir: read, load, write, export" in lines["nir"]
    assert "1.2.3" in lines["toy"] and "loaded" in lines["toy"] and "Clip" in lines["toy"]
    assert "failed" in lines["broken"] and "a_framework_that_does_not_exist" in lines["broken"]
    assert "failed" in lines["misbehaving"]
    assert "plugin 'broken'" in result.stderr  # the warning, on stderr


def test_plugins_can_be_allow_listed_and_blocked(site):
    only = run_cli(site, "plugins", HUB_PLUGINS="nir,hub")
    assert "disabled by HUB_PLUGINS" in only.stdout and "failed" not in only.stdout
    blocked = run_cli(site, "plugins", HUB_DISABLE_PLUGINS="broken,misbehaving")
    assert "disabled by HUB_DISABLE_PLUGINS" in blocked.stdout
    assert "warning" not in blocked.stderr


def test_a_format_name_cannot_be_taken_twice():
    class Impostor(hub.Format):
        name = "nir"

    class Impostor2(hub.Format):
        name = "other"
        aliases = ("hub",)

    class Plugin:
        @hub.hookimpl
        def hub_register_formats(self, register):
            register(Impostor())
            register(Impostor2())

    registry = plugin_module.Plugins()
    with pytest.warns(plugin_module.PluginWarning, match="'nir' is already taken"):
        with pytest.warns(plugin_module.PluginWarning, match="'hub' is already taken"):
            registry.register(Plugin(), name="impostor")
    assert type(registry.formats["nir"]).__name__ == "NIRFormat"
    assert registry.info["impostor"].formats == []


def test_an_unknown_format_says_what_exists():
    with pytest.raises(hub.PluginError, match="no format 'nirr'; known formats: ") as e:
        hub.plugins().format("nirr")
    assert {"hub", "nir"} <= set(str(e.value).split("known formats: ")[1].split(", "))


def test_a_format_whose_framework_is_missing_is_unavailable_with_a_hint():
    class Needy(hub.Format):
        name = "needy"
        requires = ("a_framework_that_does_not_exist",)
        install_hint = "needy-framework"

    assert "pip install needy-framework" in Needy().unavailable()


def test_the_format_methods_are_declared_on_the_base_class_with_a_clear_error():
    class ReadOnly(hub.Format):
        name = "readonly"

        def read(self, path):
            return hub.Graph.chain(hub.Input(shape=(1,)))

    fmt = ReadOnly()
    assert fmt.capabilities == ("read",)
    for method, args in [("load", (object(),)), ("write", (None, "x")), ("export", (None,)),
                         ("run", (None, None))]:
        assert getattr(hub.Format, method).__doc__, method
        with pytest.raises(hub.PluginError, match=rf"'readonly' cannot .*does not implement "
                                                  rf"{method}\(\); it can: read"):
            getattr(fmt, method)(*args)


@pytest.mark.parametrize("name", sorted(hub.plugins().formats))
def test_every_format_implements_the_base_class_methods_with_their_parameters(name):
    """Each override takes the base method's positional parameters, and its other parameters
    are the options the format declares."""
    fmt = hub.plugins().formats[name]
    assert fmt.capabilities, name
    for method in fmt.capabilities:
        base = inspect.signature(getattr(hub.Format, method))
        mine = inspect.signature(getattr(type(fmt), method))
        positional = [p for p in base.parameters.values() if p.kind == p.POSITIONAL_OR_KEYWORD]
        assert list(mine.parameters)[:len(positional)] == [p.name for p in positional], method
        extra = set(mine.parameters) - set(base.parameters)
        if method == "run":  # the suite runs a native model with no options
            assert all(mine.parameters[p].default is not inspect.Parameter.empty
                       for p in extra), method
            continue
        declared = set(fmt.load_options if method in ("read", "load") else fmt.save_options)
        assert extra <= declared, (method, extra - declared)


#: Python as if Norse, snnTorch and SpikingJelly were not installed: importing them fails and
#: ``importlib.util.find_spec`` (which ``Format.unavailable`` asks) does not find them.
_WITHOUT_FRAMEWORKS = """
import importlib.abc, importlib.util, sys
GONE = ("norse", "snntorch", "spikingjelly")
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in GONE:
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, Missing())
found = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name.split(".")[0] in GONE else found(name, *a)
import hub
registry = hub.plugins()
for name in ("snntorch", "norse", "spikingjelly", "ann", "nir"):
    print(name, registry.info[name].status, bool(registry.formats[name].unavailable()))
"""


def test_the_framework_plugins_load_without_their_frameworks():
    """A plugin package imports its framework lazily: without it the plugin loads and its
    format says it is unavailable (not a failed plugin)."""
    result = subprocess.run([sys.executable, "-c", _WITHOUT_FRAMEWORKS], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:5] == [
        "snntorch loaded True", "norse loaded True", "spikingjelly loaded True",
        "ann loaded False", "nir loaded False"], result.stdout + result.stderr


def test_every_hook_is_documented():
    for spec in (hub_register_formats, hub_register_nodes):
        assert spec.__doc__ and "register(" in spec.__doc__
    assert "entry-point group" in plugin_module.__doc__ or "entry points" in plugin_module.__doc__
