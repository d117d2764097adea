"""Hostile model files: each is built here with h5py and must give a clean HubError naming the
file and the dataset, in bounded time and memory, before the hostile data is read.

The cases are parametrised by ``kind`` (and format), so ``pytest --collect-only -q`` counts them
by kind. Each in-process case is bounded by construction: every read of a dataset of the file
under test or of any other file is refused by the fixture :func:`reads` (so the reader can only
fail fast), and its time is measured. Cases whose failure before the fix was a hang or a huge
allocation also run in their own subprocess, under ``RLIMIT_AS`` and a timeout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable

import h5py
import nir
import numpy as np
import pytest

import hub
import hub.limits
from hub import LoihiCUBA

ROOT = Path(__file__).resolve().parents[1]
DT = 1e-3
SECRET = b"root:x:0:0:this is a secret from outside the model file\n"
#: Seconds any hostile case may take in this process.
SECONDS = 10.0
#: Bytes of address space a subprocess case may add to what importing hub takes.
HEADROOM = 1 << 30

#: The weight dataset of each format's base file, which the cases replace.
WEIGHT = {"nir": "node/nodes/fc/weight", "netx": "layer/1/weight"}
SUFFIX = {"nir": ".nir", "netx": ".net"}
FORMATS = ("nir", "netx")
#: What hub.load needs besides the file (netx files need no time step).
OPTIONS = {"nir": {"dt": DT}, "netx": {}}


@pytest.fixture(autouse=True)
def _default_limits():
    hub.limits.configure()
    yield
    hub.limits.configure()


def base_graph(fmt: str) -> hub.Graph:
    weight = np.array([[1, 2, -1, 0], [0, 1, 1, 2], [2, 0, 1, -2]], np.float32)
    neuron = hub.LIF(beta=0.5, threshold=0.5) if fmt == "nir" else LoihiCUBA(
        i_decay=1024, v_decay=256, threshold=3)
    fc = "fc" if fmt == "nir" else "fc1"  # as the netx reader names a layer's synapse
    return hub.Graph.chain(("input", hub.Input(shape=(4,))), (fc, hub.Linear(weight=weight)),
                           ("n1", neuron), metadata={"dt": DT})


def base_file(tmp_path: Path, fmt: str) -> Path:
    path = tmp_path / f"model{SUFFIX[fmt]}"
    hub.save(base_graph(fmt), out=path)
    return path


@pytest.fixture
def outside(tmp_path: Path) -> dict[str, Path]:
    """Files elsewhere on the machine that a hostile model points at."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    secret = folder / "passwd"
    secret.write_bytes(SECRET)
    other = folder / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("weight", data=np.full((3, 4), 7, np.float32))
    return {"secret": secret, "h5": other}


class Reads:
    """The datasets read while a test runs; reading one of ``hostile`` raises AssertionError."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.hostile: set[str] = set()


@pytest.fixture
def reads(monkeypatch) -> Reads:
    """Bound a case by construction: a reader that reads a hostile dataset, or any dataset
    whose bytes live outside the file, fails at once (AssertionError, which no reader catches)."""
    seen = Reads()

    def guard(method: Callable) -> Callable:
        def wrapper(self, *args, **kwargs):
            seen.names.append(self.name)
            if self.name in seen.hostile or self.is_virtual or self.external:
                raise AssertionError(f"the reader read hostile dataset {self.name!r}")
            return method(self, *args, **kwargs)
        return wrapper

    for name in ("__getitem__", "read_direct", "__array__"):
        monkeypatch.setattr(h5py.Dataset, name, guard(getattr(h5py.Dataset, name)))
    return seen


def load_refused(path: Path, match: str, **options) -> hub.HubError:
    start = time.perf_counter()
    with pytest.raises(hub.HubError, match=match) as e:
        hub.load(path, **options)
    assert time.perf_counter() - start < SECONDS
    assert e.value.file == str(path) and str(path) in str(e.value)
    return e.value


def replace(path: Path, key: str, make: Callable[[h5py.File, str], None]) -> None:
    with h5py.File(path, "a") as f:
        del f[key]
        make(f, key)


# -- 1. nothing outside the file ---------------------------------------------------------------


def external_storage(out):
    return lambda f, key: f.create_dataset(key, shape=(3, 4), dtype="f4",
                                           external=[(str(out["secret"]), 0, 48)])


def external_link(out):
    return lambda f, key: f.__setitem__(key, h5py.ExternalLink(str(out["h5"]), "/weight"))


def soft_link(out):
    def make(f, key):
        f.create_dataset(key + "_elsewhere", data=np.ones((3, 4), np.float32))
        f[key] = h5py.SoftLink("/" + key + "_elsewhere")
    return make


def dangling_soft_link(out):
    return lambda f, key: f.__setitem__(key, h5py.SoftLink("/nowhere/weight"))


def virtual(out):
    def make(f, key):
        layout = h5py.VirtualLayout(shape=(3, 4), dtype="f4")
        layout[:] = h5py.VirtualSource(str(out["h5"]), "weight", shape=(3, 4))
        f.create_virtual_dataset(key, layout)
    return make


OUTSIDE = {"external_storage": (external_storage, "external storage"),
           "external_link": (external_link, "ExternalLink"),
           "soft_link": (soft_link, "SoftLink"),
           "dangling_soft_link": (dangling_soft_link, "SoftLink"),
           "virtual_dataset": (virtual, "virtual dataset")}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", sorted(OUTSIDE))
def test_a_file_that_reaches_outside_itself_is_refused_before_reading(
        tmp_path, outside, reads, kind, fmt):
    path = base_file(tmp_path, fmt)
    make, message = OUTSIDE[kind]
    replace(path, WEIGHT[fmt], make(outside))
    reads.hostile.add("/" + WEIGHT[fmt])
    e = load_refused(path, message)
    assert isinstance(e, hub.FormatError)
    node, _, field = WEIGHT[fmt].rpartition("/")
    assert (e.node, e.field) == (node, field)
    assert SECRET.decode() not in str(e)
    assert reads.names == []  # refused before reading a byte of anything


def test_converting_a_file_with_external_storage_copies_nothing(tmp_path, outside):
    path = base_file(tmp_path, "nir")
    replace(path, WEIGHT["nir"], external_storage(outside))
    out = tmp_path / "out.hub.json"
    with pytest.raises(hub.FormatError, match="external storage"):
        hub.convert(path, out=out)
    assert not out.exists()


# -- 3. declared sizes -------------------------------------------------------------------------


BOMBS = {"bomb_2**28": (1 << 14, 1 << 14), "bomb_2**31": (1 << 16, 1 << 15),
         "bomb_10**12": (10**6, 10**6)}


def bomb(shape: tuple[int, int]) -> Callable[[h5py.File, str], None]:
    """A chunked float32 dataset of ``shape`` with no chunk written: the file stays tiny."""
    return lambda f, key: f.create_dataset(key, shape=shape, dtype="f4", chunks=(64, 64))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", sorted(BOMBS))
def test_a_declared_size_bomb_is_refused_before_allocating(tmp_path, reads, kind, fmt):
    path = base_file(tmp_path, fmt)
    replace(path, WEIGHT[fmt], bomb(BOMBS[kind]))
    assert path.stat().st_size < 100_000
    reads.hostile.add("/" + WEIGHT[fmt])
    declared = 4 * BOMBS[kind][0] * BOMBS[kind][1]
    e = load_refused(path, f"declares {declared} bytes")
    node, _, field = WEIGHT[fmt].rpartition("/")
    assert (e.node, e.field) == (node, field)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", ["contiguous_bomb", "compressed_bomb"])
def test_data_declared_far_beyond_what_is_stored_is_refused(tmp_path, kind, fmt):
    path = base_file(tmp_path, fmt)
    if kind == "contiguous_bomb":  # contiguous, never written: reads as fill values
        make = lambda f, key: f.create_dataset(key, shape=(1 << 14, 1 << 14), dtype="f4")  # noqa: E731
    else:  # one zero chunk compressed, repeated: beyond what deflate can compress
        def make(f, key):
            f.create_dataset(key, shape=(1 << 13, 1 << 13), dtype="f4", chunks=(1 << 13, 64),
                             compression="gzip")[:, :64] = 0
    replace(path, WEIGHT[fmt], make)
    load_refused(path, "declares 268435456 bytes|declares 1073741824 bytes")


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_sum_of_declared_sizes_is_checked_against_max_bytes(tmp_path, fmt):
    path = base_file(tmp_path, fmt)
    hub.limits.configure(max_bytes=64)
    e = load_refused(path, r"declares \d+ bytes of data .*more than max_bytes=64.*HUB_MAX_BYTES")
    assert "largest" in str(e)
    hub.limits.configure(max_bytes=1 << 20)
    assert hub.load(path) == base_graph(fmt)


# -- 2. nesting and width ----------------------------------------------------------------------


def nested_nir(depth: int) -> nir.NIRGraph:
    """``depth`` subgraphs inside each other, each passing its input through."""
    graph = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([2])}),
                                "output": nir.Output(output_type={"output": np.array([2])})},
                         edges=[("input", "output")], type_check=False)
    for _ in range(depth):
        graph = nir.NIRGraph(
            nodes={"input": nir.Input(input_type={"input": np.array([2])}), "sub": graph,
                   "output": nir.Output(output_type={"output": np.array([2])})},
            edges=[("input", "sub"), ("sub", "output")], type_check=False)
    return graph


def deep_file(tmp_path: Path, fmt: str, depth: int) -> Path:
    path = tmp_path / f"deep{SUFFIX[fmt]}"
    if fmt == "nir":
        nir.write(path, nested_nir(depth))
    else:
        path = base_file(tmp_path, fmt)
        with h5py.File(path, "a") as f:
            group = f["layer/1"]
            for _ in range(depth):
                group = group.create_group("g")
    return path


def test_deep_groups_in_a_netx_file_are_refused_quickly(tmp_path):
    """(A deep NIR file hung for minutes before the fix: it runs only in a subprocess, below.)"""
    load_refused(deep_file(tmp_path, "netx", 300), "groups nested more than .*HUB_MAX_DEPTH")


def test_deep_nesting_within_a_raised_limit_loads_in_linear_time(tmp_path):
    """nir checks types once per level unless told not to at every level: a 60-deep file took
    seconds before, and each level added more."""
    path = deep_file(tmp_path, "nir", 60)
    start = time.perf_counter()
    graph = hub.load(path, dt=DT)
    assert time.perf_counter() - start < 5
    assert len(list(graph.walk())) == 2 * 61


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_wide_graph_beyond_max_nodes_is_refused(tmp_path, fmt):
    hub.limits.configure(max_nodes=1000)
    path = base_file(tmp_path, fmt)
    with h5py.File(path, "a") as f:
        nodes = f["node/nodes" if fmt == "nir" else "layer"]
        for i in range(1001):
            nodes.create_group(f"extra{i}" if fmt == "nir" else str(i + 2))
    e = load_refused(path, "more than max_nodes=1000 nodes.*HUB_MAX_NODES", **OPTIONS[fmt])
    assert e.node == ("node/nodes" if fmt == "nir" else "layer")


# -- subprocess bounds: what used to hang or allocate gigabytes ----------------------------------


CHILD = textwrap.dedent("""
    import resource, sys
    import hub
    vm = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + int(sys.argv[2]), vm + int(sys.argv[2])))
    try:
        hub.load(sys.argv[1], **({"dt": 1e-3} if sys.argv[1].endswith(".nir") else {}))
    except hub.HubError as e:
        print("HubError:", e)
    else:
        print("loaded")
""")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", ["nesting_300", *sorted(BOMBS)])
def test_in_a_subprocess_with_bounded_memory_and_time(tmp_path, kind, fmt):
    if kind == "nesting_300":
        path = deep_file(tmp_path, fmt, 300)
    else:
        path = base_file(tmp_path, fmt)
        replace(path, WEIGHT[fmt], bomb(BOMBS[kind]))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run([sys.executable, "-c", CHILD, str(path), str(HEADROOM)],
                         capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("HubError:") and str(path) in run.stdout
    assert ("max_depth" if kind == "nesting_300" else "declares") in run.stdout, run.stdout


# -- 4. what the hub writes, it reads back -----------------------------------------------------


def subgraph_edge_graph(*edges: tuple[str, str]) -> hub.Graph:
    block = hub.Graph({"x": hub.Input(shape=(2,)), "lif": hub.LIF(beta=0.5, threshold=0.5),
                       "y": hub.Output()}, [("x", "lif"), ("lif", "y")])
    outer = hub.Graph({"in": hub.Input(shape=(2,)), "block": block, "out": hub.Output()},
                      [*edges, ("block", "out")])
    return hub.Graph({"in": hub.Input(shape=(2,)), "outer": outer, "out": hub.Output()},
                     [("in", "outer"), ("outer", "out")], metadata={"dt": DT})


@pytest.mark.parametrize("kind, graph, node, field", [
    ("slash_in_name", lambda: hub.Graph.chain(("input", hub.Input(shape=(2,))),
                                              ("a/b", hub.LIF(beta=0.5)), metadata={"dt": DT}),
     "a/b", "name"),
    ("edge_into_subgraph", lambda: subgraph_edge_graph(("in", "block"), ("in", "block.lif")),
     "outer.block", "edges"),
    ("duplicate_edge", lambda: subgraph_edge_graph(("in", "block"), ("in", "block.x")),
     "outer.block", "edges"),
    ("dt_1e308", lambda: hub.Graph.chain(("input", hub.Input(shape=(2,))),
                                         ("lif", hub.LIF(beta=0.5)), metadata={"dt": 1e308}),
     "lif", "tau"),
])
def test_a_nir_file_the_hub_could_not_read_back_is_never_written(tmp_path, kind, graph, node,
                                                                 field):
    out = tmp_path / "g.nir"
    with pytest.raises(hub.HubError) as e:
        hub.save(graph(), out=out)
    assert (e.value.file, e.value.node, e.value.field) == (str(out), node, field)
    assert not out.exists()


def test_an_edge_to_a_subgraphs_only_input_is_written_as_nir_holds_it(tmp_path):
    graph = subgraph_edge_graph(("in", "block.x"))
    hub.save(graph, out=tmp_path / "g.nir")
    again = hub.load(tmp_path / "g.nir")
    assert sorted(again.nodes["outer"].edges) == [("block", "out"), ("in", "block")]
    assert sorted(n for n, _ in again.walk()) == sorted(n for n, _ in graph.walk())


def test_a_slash_in_a_netx_graphs_node_name_is_harmless(tmp_path):
    """netx files name layers by index, so node names never reach the file."""
    graph = base_graph("netx")
    graph.nodes["a/b"] = graph.nodes.pop("n1")
    graph.edges = [(a, "a/b" if b == "n1" else b) for a, b in graph.edges]
    graph.edges = [("a/b" if a == "n1" else a, b) for a, b in graph.edges]
    hub.save(graph, out=tmp_path / "g.net")
    assert hub.load(tmp_path / "g.net") == base_graph("netx")


# -- 5. shapes are integers --------------------------------------------------------------------


@pytest.mark.parametrize("fmt, key, value", [
    ("nir", "node/nodes/output/shape", np.array([3.5])),
    ("nir", "node/nodes/input/shape", np.array([4.5])),
    ("netx", "layer/0/shape", np.array([4.5])),
])
def test_a_non_integer_shape_is_refused_not_truncated(tmp_path, fmt, key, value):
    path = base_file(tmp_path, fmt)
    replace(path, key, lambda f, k: f.create_dataset(k, data=value))
    e = load_refused(path, "integer", **OPTIONS[fmt])
    assert e.field == "shape"
    assert e.node == {"nir": key.split("/")[2], "netx": "layer/0"}[fmt]


# -- 6. errors name the node and the field -----------------------------------------------------


@pytest.mark.parametrize("fmt, key, node, field", [
    ("nir", "node/nodes/fc/weight", "fc", "weight"),
    ("nir", "node/nodes/n1/tau", "n1", "tau"),
    ("netx", "layer/1/weight", "layer/1", "weight"),
    ("netx", "layer/1/neuron/vDecay", "layer/1/neuron", "vDecay"),
])
def test_a_missing_dataset_is_named_by_node_and_field(tmp_path, fmt, key, node, field):
    path = base_file(tmp_path, fmt)
    with h5py.File(path, "a") as f:
        del f[key]
    e = load_refused(path, ".", **OPTIONS[fmt])
    assert (e.node, e.field) == (node, field)
