"""A third-party snn-hub plugin: the 'toy' format and a 'Clip' node type.

A .toy file is a line "TOY 1" followed by the canonical graph as JSON. Its native model is a
dict, and its runtime runs that dict with snn-hub's reference simulator (a real plugin would
run its own framework here), except that toy spikes have no amplitude: a known gap, which
test_toy_conformance.py declares. Toy models hold only the node types in ``exports``.
"""

from __future__ import annotations

import json

import numpy as np

import hub
from hub.node import array


class Clip(hub.Node):
    """Clip the input to [low, high]."""

    low: np.ndarray = array(0.0)
    high: np.ndarray = array(1.0)

    def step(self, p, x, state):
        return x.clamp(p["low"], p["high"]), state


class ToyFormat(hub.Format):
    name = "toy"
    aliases = ("toyformat",)
    description = "a throwaway format for tests"
    suffixes = (".toy",)
    imports = exports = frozenset({"Input", "Output", "Linear", "Affine", "LIF", "Clip"})

    def recognizes(self, obj):
        return isinstance(obj, dict) and obj.get("toy") == 1

    def load(self, obj):
        return hub.Graph.from_dict(obj["graph"])

    def export(self, graph):
        for name, node in graph.walk():
            if node.type not in self.exports:
                raise hub.UnsupportedError(f"toy models have no {node.type}", node=name)
        return {"toy": 1, "graph": graph.to_dict()}

    def read(self, path):
        header, _, body = path.read_text().partition("\n")
        if header != "TOY 1":
            raise hub.FormatError("not a toy file: the first line must be 'TOY 1'")
        return hub.Graph.from_dict(json.loads(body))

    def write(self, graph, path):
        path.write_text("TOY 1\n" + json.dumps(graph.to_dict()))

    def run(self, native, x):
        graph = self.load(native).flat()
        for name, node in graph.walk():
            if hasattr(node, "amplitude"):  # the toy runtime's known gap
                graph.nodes[name] = node.replace(amplitude=1.0)
        return hub.simulate(graph, x)


@hub.hookimpl
def hub_register_formats(register):
    register(ToyFormat())


@hub.hookimpl
def hub_register_nodes(register):
    register(Clip)
