"""Property: any valid graph survives hub -> NIR file -> hub with identical parameters and
spikes."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hub

floats = st.floats(-4, 4, width=32, allow_nan=False)
decays = st.floats(0, 0.984375, width=32)


def arrays(draw, n: int, elements=floats) -> np.ndarray:
    """A scalar or a per-neuron array."""
    if draw(st.booleans()):
        return np.float32(draw(elements))
    return np.array(draw(st.lists(elements, min_size=n, max_size=n)), dtype=np.float32)


def spiking(draw, n: int) -> dict:
    return {
        "threshold": arrays(draw, n, st.floats(0.125, 4, width=32)),
        "comparison": draw(st.sampled_from([">", ">="])),
        "reset": draw(st.sampled_from(["zero", "subtract", "none"])),
        "v_reset": arrays(draw, n),
        "spike_mode": draw(st.sampled_from(["binary", "multi", "graded"])),
        "amplitude": arrays(draw, n),
        "delay": draw(st.integers(0, 3)),
        "v_init": arrays(draw, n),
        **draw(st.sampled_from([{"reset_timing": "next"},
                                {"reset_timing": "same", "refractory": draw(st.integers(0, 2))}])),
    }


def neuron(draw, n: int) -> hub.Node:
    kind = draw(st.sampled_from(["IF", "LIF", "CubaLIF", "LI", "Integrator", "CubaLI"]))
    leak = {"beta": arrays(draw, n, decays), "v_leak": arrays(draw, n)}
    current = {"alpha": arrays(draw, n, decays), "current_gain": arrays(draw, n),
               "current_order": draw(st.sampled_from(["new", "previous"]))}
    gain = {"gain": arrays(draw, n)}
    return {
        "IF": lambda: hub.IF(**gain, **spiking(draw, n)),
        "LIF": lambda: hub.LIF(**gain, **leak, **spiking(draw, n)),
        "CubaLIF": lambda: hub.CubaLIF(**gain, **leak, **current, **spiking(draw, n)),
        "LI": lambda: hub.LI(**gain, **leak, v_init=arrays(draw, n)),
        "Integrator": lambda: hub.Integrator(**gain, v_init=arrays(draw, n)),
        "CubaLI": lambda: hub.CubaLI(**gain, **leak, **current),
    }[kind]()


@st.composite
def graphs(draw) -> hub.Graph:
    width = draw(st.integers(1, 5))
    graph = hub.Graph({"input": hub.Input(shape=(width,))})
    last = "input"
    for index in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["dense", "neuron", "neuron", "scale", "delay",
                                     "threshold", "recurrent"]))
        name = f"n{index}"
        if kind == "dense":
            out = draw(st.integers(1, 5))
            weight = np.array(draw(st.lists(floats, min_size=out * width, max_size=out * width)),
                              dtype=np.float32).reshape(out, width)
            node = (hub.Affine(weight=weight, bias=arrays(draw, out)) if draw(st.booleans())
                    else hub.Linear(weight=weight))
            width = out
        elif kind == "scale":
            node = hub.Scale(scale=arrays(draw, width))
        elif kind == "delay":
            node = hub.Delay(delay=draw(st.lists(st.integers(0, 3), min_size=width,
                                                 max_size=width)))
        elif kind == "threshold":
            node = hub.Threshold(threshold=arrays(draw, width),
                                 comparison=draw(st.sampled_from([">", ">="])))
        else:
            node = neuron(draw, width)
        graph.add(name, node).connect(last, name)
        if kind == "recurrent":
            weight = np.array(draw(st.lists(floats, min_size=width * width,
                                            max_size=width * width)),
                              dtype=np.float32).reshape(width, width)
            graph.add(f"{name}_rec", hub.Linear(weight=weight))
            graph.connect(name, f"{name}_rec").connect(f"{name}_rec", name)
        last = name
    graph.add("output", hub.Output()).connect(last, "output")
    return graph


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graph=graphs(), dt=st.sampled_from([1e-4, 1e-3, 0.5, 1.0]), seed=st.integers(0, 2**16))
def test_hub_nir_file_hub_is_parameter_and_spike_identical(graph, dt, seed):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "g.nir"
        hub.save(graph, to="nir", out=path, dt=dt)
        again = hub.load(path)
    assert again == graph
    width = graph.nodes["input"].shape
    x = torch.rand(12, 3, *width, generator=torch.Generator().manual_seed(seed)) * 2 - 0.5
    assert torch.equal(hub.simulate(again, x), hub.simulate(graph, x))


@settings(max_examples=40, deadline=None)
@given(graph=graphs())
def test_hub_json_file_round_trip_is_identical(graph):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "g.hub.json"
        hub.save(graph, out=path)
        assert hub.load(path) == graph


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(graph=graphs(), edits=st.lists(st.tuples(st.integers(0, 2**32), st.text(max_size=8)),
                                      min_size=1, max_size=4), cut=st.integers(0, 2**32))
def test_any_corruption_of_a_hub_json_file_gives_a_graph_or_a_hub_error(graph, edits, cut):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "g.hub.json"
        hub.save(graph, out=path)
        text = path.read_text(encoding="utf-8")
        for offset, chunk in edits:
            start = offset % len(text)
            text = text[:start] + chunk + text[start + len(chunk):]
        if cut % 3 == 0:
            text = text[:cut % len(text)]
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            again = hub.load(path)
        except hub.HubError as e:
            assert e.file == str(path)
        else:
            assert isinstance(again, hub.Graph)
