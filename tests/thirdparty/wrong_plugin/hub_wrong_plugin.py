"""A deliberately wrong snn-hub plugin: the conformance suite must catch both of its bugs.

Format ``wrong`` exports a canonical graph as a dict, but its exporter turns every ``>=`` into
``>`` (a bug the exact tier catches at the first threshold tie), and format ``wronger`` also
turns every subtract reset into a reset to zero (a bug no rounding explains, caught in every
tier). Their runtimes are snn-hub's simulator, as for the toy plugin.
"""

from __future__ import annotations

import hub


def _damage(graph: hub.Graph, subtract: bool) -> hub.Graph:
    out = hub.Graph(metadata=dict(graph.metadata))
    for name, node in graph.flat().nodes.items():
        if getattr(node, "comparison", None) == ">=":
            node = node.replace(comparison=">")
        if subtract and getattr(node, "reset", None) == "subtract":
            node = node.replace(reset="zero")
        out.add(name, node)
    for source, target in graph.flat().edges:
        out.connect(source, target)
    return out


class WrongFormat(hub.Format):
    name = "wrong"
    description = "turns >= into > on export (deliberately)"
    subtract = False

    def recognizes(self, obj):
        return isinstance(obj, dict) and obj.get("format") == self.name

    def load(self, obj):
        return hub.Graph.from_dict(obj["graph"])

    def export(self, graph):
        return {"format": self.name, "graph": _damage(graph, self.subtract).to_dict()}

    def run(self, native, x):
        return hub.simulate(self.load(native), x)


class WrongerFormat(WrongFormat):
    name = "wronger"
    description = "turns >= into > and subtract resets into resets to zero (deliberately)"
    subtract = True


@hub.hookimpl
def hub_register_formats(register):
    register(WrongFormat())
    register(WrongerFormat())
