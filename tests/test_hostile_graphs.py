"""Hostile graphs: small files and calls that used to hang, exhaust memory or print tracebacks.

Each case is what an adversarial campaign found, built here from scratch: deep nesting whose
edges name inner nodes, huge chains, graphs nested past Python's stack, delay lines and
paddings that ask for gigabytes, markup in names reaching the command line, signals during a
write, and every misuse of the API edge. Each must end quickly in a clean :class:`hub.HubError`
(or, from the command, exit status 2 and one ``error:`` line). A case that could hang or
allocate without bound runs in a child process with a timeout and an address-space limit, so a
regression fails that case, not the whole run.
"""

from __future__ import annotations

import json
import math
import os
import resource
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import hub
from hub.limits import configure

#: Address space a child may use: enough for torch, far less than any bomb asks for.
CHILD_MEMORY = 6 << 30


@pytest.fixture(autouse=True)
def default_limits():
    configure()
    yield
    configure()


def isolated(code: str, *, timeout: float = 60, args: tuple[str, ...] = (),
             cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` in a child Python with a timeout and a memory limit; fail if it hangs."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))

    try:
        return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                              capture_output=True, text=True, timeout=timeout,
                              preexec_fn=limit, cwd=cwd, env=os.environ.copy())
    except subprocess.TimeoutExpired:
        pytest.fail(f"did not finish within {timeout} s")


# -- builders --------------------------------------------------------------------------------


def nested(depth: int) -> dict:
    """A .hub.json graph nested ``depth`` deep whose edges name inner nodes (``"sub.mid"``)."""
    graph = {"type": "Graph", "nodes": {"x": {"type": "Input", "shape": [2]},
                                        "mid": {"type": "Scale", "scale": 1.0},
                                        "y": {"type": "Output"}},
             "edges": [["x", "mid"], ["mid", "y"]], "metadata": {}}
    for _ in range(depth):
        graph = {"type": "Graph", "nodes": {"x": {"type": "Input", "shape": [2]}, "sub": graph,
                                            "mid": {"type": "Scale", "scale": 1.0},
                                            "y": {"type": "Output"}},
                 "edges": [["x", "sub"], ["sub.mid", "mid"], ["mid", "y"]], "metadata": {}}
    return graph


def chain(n: int) -> dict:
    """Input, ``n`` Scale nodes in a row, Output: ``n + 2`` nodes."""
    nodes = {"x": {"type": "Input", "shape": [1]}}
    edges, last = [], "x"
    for i in range(n):
        nodes[f"s{i}"] = {"type": "Scale", "scale": 1.0}
        edges.append([last, f"s{i}"])
        last = f"s{i}"
    nodes["y"] = {"type": "Output"}
    edges.append([last, "y"])
    return {"type": "Graph", "nodes": nodes, "edges": edges, "metadata": {}}


def deep(depth: int) -> hub.Graph:
    """A graph nested ``depth`` deep, built in memory (no file could hold it)."""
    graph = hub.Graph.chain(("x", hub.Input(shape=(1,))), ("y", hub.Output()))
    for _ in range(depth):
        graph = hub.Graph({"x": hub.Input(shape=(1,)), "sub": graph, "y": hub.Output()},
                          [("x", "sub"), ("sub", "y")])
    return graph


# -- 1. time linear in size: nesting, chains, limits ---------------------------------------


@pytest.mark.parametrize("depth", [20, 22, 25])
def test_deep_nesting_with_inner_node_edges_loads_in_linear_time(tmp_path, depth):
    path = tmp_path / "deep.hub.json"
    path.write_text(json.dumps(nested(depth)))
    assert path.stat().st_size < 6000  # a small file: the cost must be small too
    result = isolated("""
        import sys, time, hub
        start = time.perf_counter()
        graph = hub.load(sys.argv[1])
        plan = graph.plan()
        print(len(plan.order), time.perf_counter() - start)
    """, args=(str(path),), timeout=60)
    assert result.returncode == 0, result.stderr
    nodes, seconds = result.stdout.split()
    assert int(nodes) == 3 * depth + 3
    assert float(seconds) < 5  # about a millisecond when linear; minutes when exponential


def test_nesting_beyond_the_limit_is_refused_naming_the_limit(tmp_path):
    path = tmp_path / "deeper.hub.json"
    path.write_text(json.dumps(nested(hub.limits.limits().max_depth + 1)))
    result = isolated("""
        import sys, hub
        try:
            hub.load(sys.argv[1])
        except hub.GraphError as e:
            print(e)
    """, args=(str(path),), timeout=60)
    assert result.returncode == 0, result.stderr
    assert "nest more than 64 deep" in result.stdout and "HUB_MAX_DEPTH" in result.stdout
    assert str(path) in result.stdout


def test_a_raised_depth_limit_admits_deeper_nesting(tmp_path):
    path = tmp_path / "deeper.hub.json"
    path.write_text(json.dumps(nested(70)))
    result = isolated("""
        import sys, hub
        hub.limits.configure(max_depth=80)
        print(len(hub.load(sys.argv[1]).plan().order))
    """, args=(str(path),), timeout=60)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == 3 * 70 + 3


def test_a_chain_of_100k_nodes_plans_in_linear_time(tmp_path):
    path = tmp_path / "chain.hub.json"
    path.write_text(json.dumps(chain(100_000 - 2)))
    result = isolated("""
        import sys, time, hub
        start = time.perf_counter()
        graph = hub.load(sys.argv[1])
        print(len(graph.plan().order), time.perf_counter() - start)
    """, args=(str(path),), timeout=120)
    assert result.returncode == 0, result.stderr
    nodes, seconds = result.stdout.split()
    assert int(nodes) == 100_000
    assert float(seconds) < 60  # a few seconds when linear; hours when quadratic


def test_one_node_more_than_the_limit_is_refused_while_reading(tmp_path):
    path = tmp_path / "chain.hub.json"
    path.write_text(json.dumps(chain(100_000 - 1)))
    result = isolated("""
        import sys, hub
        try:
            hub.load(sys.argv[1])
        except hub.GraphError as e:
            print(e.file, e)
    """, args=(str(path),), timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{path} ") and "more than 100000 nodes" in result.stdout
    assert "HUB_MAX_NODES" in result.stdout


def test_a_graph_built_in_memory_beyond_the_node_limit_is_refused_by_plan():
    configure(max_nodes=50)
    graph = hub.Graph.from_dict(chain(10))
    graph.plan()
    for i in range(60):
        graph.add(f"extra{i}", hub.Scale(scale=1.0))
    with pytest.raises(hub.GraphError, match="more than 50; if the model is trusted"):
        graph.plan()


def test_a_subgraph_used_twice_per_level_is_refused_before_inlining():
    result = isolated("""
        import hub
        g = hub.Graph.chain(("x", hub.Input(shape=(1,))), ("y", hub.Output()))
        for _ in range(40):  # 2**40 nodes once inlined, from 120 objects
            g = hub.Graph({"x": hub.Input(shape=(1,)), "a": g, "b": g, "y": hub.Output()},
                          [("x", "a"), ("x", "b"), ("a", "y"), ("b", "y")])
        try:
            g.plan()
        except hub.GraphError as e:
            print(e)
    """, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "once subgraphs are inlined, more than 100000" in result.stdout


def test_1500_deep_nesting_is_refused_cleanly_not_a_recursion_error():
    graph = deep(1500)
    assert max(name.count(".") for name, _ in graph.walk()) == 1500
    for what in (graph.to_dict, graph.flat, graph.plan, graph.validate):
        with pytest.raises(hub.GraphError, match="nest more than 64 deep") as e:
            what()
        assert "HUB_MAX_DEPTH" in str(e.value) and len(str(e.value)) < 600
    with pytest.raises(hub.GraphError, match="nest more than 64 deep"):
        hub.save(graph, to="hub")


def test_1500_deep_nesting_round_trips_when_the_limit_allows_it():
    configure(max_depth=2000)
    graph = deep(1500)
    data = graph.to_dict()
    again = hub.Graph.from_dict(data)
    assert again == graph
    assert len(again.plan().order) == 2 + 2 * 1500


def test_a_graph_that_contains_itself_is_refused():
    graph = deep(1)
    graph.nodes["sub"].add("me", graph)
    for what in (graph.to_dict, graph.plan):
        with pytest.raises(hub.GraphError, match="nest more than 64 deep"):
            what()


def test_an_error_in_a_huge_graph_lists_a_few_names_not_all():
    data = chain(5000)
    data["edges"].append(["s1", "nowhere"])
    with pytest.raises(hub.GraphError, match="and 4982 more") as e:
        hub.Graph.from_dict(data).plan()
    assert len(str(e.value)) < 500


# -- 2. simulation memory: estimated before allocating ------------------------------------


MEMORY_BOMBS = {
    "lif-delay": ("hub.Graph.chain(hub.Input(shape=(4096,)), "
                  "('lif', hub.LIF(beta=0.5, delay=1_000_000)))", "[2, 1, 4096]", "lif",
                  "state 'line' of shape [1000000, 1, 4096]"),
    "delay-node": ("hub.Graph.chain(hub.Input(shape=(4096,)), "
                   "('delay', hub.Delay(delay=400_000)))", "[2, 1, 4096]", "delay",
                   "state 'state[0]' of shape [400001, 1, 4096]"),
    "conv-padding": ("hub.Graph.chain(('input', hub.Input(shape=(1, 2, 2))), ('conv', "
                     "hub.Conv2d(weight=np.ones((1, 1, 1, 1), np.float32), "
                     "padding=(20000, 20000))))", "[2, 1, 1, 2, 2]", "conv",
                     "output [1, 1, 40002, 40002]"),
    "long-sequence": ("hub.Graph.chain(hub.Input(shape=(1,)), ('wide', "
                      "hub.Linear(weight=np.ones((1 << 20, 1), np.float32))))",
                      "[2000, 1, 1]", "wide", "kept for 2000 steps"),
    "batch": ("hub.Graph.chain(hub.Input(shape=(1,)), ('wide', "
              "hub.Linear(weight=np.ones((1 << 20, 1), np.float32))))",
              "[1, 2000, 1]", "wide", "output [2000, 1048576] per step"),
}


@pytest.mark.parametrize("case", sorted(MEMORY_BOMBS))
def test_a_simulation_that_would_exhaust_memory_is_refused_up_front(case):
    graph, shape, node, why = MEMORY_BOMBS[case]
    result = isolated(f"""
        import numpy as np, torch, hub
        graph = {graph}
        graph.validate()
        try:
            hub.simulate(graph, torch.zeros({shape}))
        except hub.HubError as e:
            print(type(e).__name__, e.node, e)
    """, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"HubError {node} "), result.stdout
    assert "more than the limit of 4.3 GB" in result.stdout and why in result.stdout
    assert "HUB_MAX_STATE_BYTES" in result.stdout


def test_the_state_limit_applies_to_single_steps_and_can_be_raised():
    graph = hub.Graph.chain(hub.Input(shape=(64,)), ("lif", hub.LIF(beta=0.5, delay=100)))
    configure(max_state_bytes=10_000)
    sim = hub.Simulator(graph)
    with pytest.raises(hub.HubError, match="state 'line' of shape \\[100, 1, 64\\]") as e:
        sim.step(torch.zeros(1, 64))
    assert e.value.node == "lif"
    configure(max_state_bytes=1 << 20)
    assert sim.step(torch.zeros(1, 64)).shape == (1, 64)
    # the simulator works out what a kind of call needs once, and reads the limit every call
    assert sim(torch.zeros(3, 1, 64)).shape == (3, 1, 64)
    configure(max_state_bytes=10_000)
    sim.reset()
    for run in (lambda: sim.step(torch.zeros(1, 64)), lambda: sim(torch.zeros(3, 1, 64))):
        with pytest.raises(hub.HubError, match="more than the limit of 10.0 kB"):
            run()


# -- 3. the command line: literal text, one error line, exit 2 ------------------------------


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "hub.cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd, env=env)


def one_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def markup_graph(node: str = "lif", **metadata) -> hub.Graph:
    return hub.Graph.chain(("input", hub.Input(shape=(3,))), (node, hub.LIF(beta=0.5)),
                           metadata={"dt": 1e-3, **metadata})


@pytest.mark.parametrize("name", ["[/x].hub.json", "[bold]x[/bold].hub.json",
                                  "[red]x.hub.json", ":smile:[/].hub.json"])
def test_a_file_name_with_markup_is_printed_literally(tmp_path, name):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    text = one_error(cli("inspect", str(path), cwd=tmp_path))
    assert f"{path}: not a snn-hub JSON graph" in text


def test_markup_in_node_names_and_types_is_printed_literally(tmp_path):
    hub.save(markup_graph("li[/x]f\x1b[31m"), out=tmp_path / "g.hub.json")
    result = cli("inspect", "g.hub.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "li[/x]f\\x1b[31m" in result.stdout and "\x1b" not in result.stdout
    data = json.loads((tmp_path / "g.hub.json").read_text())
    data["nodes"]["li[/x]f\x1b[31m"]["type"] = "[/x]LIF"
    (tmp_path / "g.hub.json").write_text(json.dumps(data))
    text = one_error(cli("inspect", "g.hub.json", cwd=tmp_path))
    assert "unknown node type '[/x]LIF'" in text


@pytest.mark.parametrize("dt", ["[/x]", "[bold]1[/bold]"])
def test_markup_in_metadata_reaches_the_error_literally(tmp_path, dt):
    data = markup_graph().to_dict()
    data["metadata"]["dt"] = dt
    (tmp_path / "g.hub.json").write_text(json.dumps(data))
    text = one_error(cli("convert", "g.hub.json", "-o", "g.nir", cwd=tmp_path))
    assert f"field 'metadata.dt': dt must be a number of seconds, got {dt!r}" in text


def test_a_picture_with_an_unknown_suffix_is_one_error_and_no_file(tmp_path):
    hub.save(markup_graph(), out=tmp_path / "g.hub.json")
    text = one_error(cli("inspect", "g.hub.json", "--draw", "out.bogus", cwd=tmp_path))
    assert "out.bogus: cannot draw a picture as 'bogus'" in text and ".png" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.hub.json"]


def test_an_unexpected_failure_is_still_one_error_line(tmp_path, monkeypatch, capsys):
    from hub import cli as module

    def broken(args, out):
        raise ZeroDivisionError("a bug")

    monkeypatch.setitem(module._COMMANDS, "plugins", broken)
    assert module.main(["plugins"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "unexpected ZeroDivisionError: a bug" in err


# -- 4. signals during a write: no temporary file is left --------------------------------------


SLOW_WRITE = """
    import sys, time
    import hub_plugins.canonical as canonical
    from hub.cli import main

    def slow(self, graph, path):  # a large write, caught in the middle
        path.write_text("{ half a graph")
        print("writing", flush=True)
        # short sleeps, as a write returns to Python between chunks: a process-wide signal may
        # reach one of torch's threads, and Python runs its handler in the main thread only
        # when that thread next runs Python code (one long sleep would not wake for it)
        for _ in range(600):
            time.sleep(0.1)

    canonical.CanonicalFormat.write = slow
    sys.exit(main(sys.argv[1:]))
"""


def start_writing(tmp_path: Path) -> subprocess.Popen:
    hub.save(markup_graph(), out=tmp_path / "src.hub.json")
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(SLOW_WRITE), "convert",
                              "src.hub.json", "-o", "out.hub.json"], cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "writing\n"
    assert [p.name for p in tmp_path.glob(".out.hub.json.*.tmp")], "no temporary file seen"
    return child


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_sigterm_during_a_write_removes_the_temporary_file(tmp_path):
    child = start_writing(tmp_path)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 128 + signal.SIGTERM
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        "error: out.hub.json: terminated by SIGTERM; a file being written was removed, none "
        "was left half-written"]
    assert leftovers(tmp_path) == [] and not (tmp_path / "out.hub.json").exists()


def test_after_sigkill_the_next_write_removes_the_stale_temporary_file(tmp_path):
    child = start_writing(tmp_path)
    child.kill()
    child.communicate(timeout=60)
    stale = leftovers(tmp_path)
    assert len(stale) == 1 and f"-{child.pid}." in stale[0]
    hub.save(markup_graph(), out=tmp_path / "out.hub.json")
    assert leftovers(tmp_path) == []
    assert hub.load(tmp_path / "out.hub.json") == markup_graph()


def test_a_write_never_removes_the_temporary_file_of_a_live_writer(tmp_path):
    child = start_writing(tmp_path)
    try:
        live = leftovers(tmp_path)
        hub.save(markup_graph(), out=tmp_path / "out.hub.json")
        assert leftovers(tmp_path) == live
    finally:
        child.kill()
        child.communicate(timeout=60)


# -- 5. the API edge: every misuse is a HubError that says what was expected -------------------


@pytest.mark.parametrize("dt", [-1, 0, float("nan"), float("inf"), "abc", [1], True])
def test_a_bad_dt_in_hub_json_metadata_is_named(tmp_path, dt):
    data = markup_graph().to_dict()
    data["metadata"]["dt"] = dt
    path = tmp_path / "g.hub.json"
    path.write_text(json.dumps(data))
    with pytest.raises(hub.ParameterError, match="dt must be a (positive )?number") as e:
        hub.load(path)
    assert (e.value.file, e.value.field) == (str(path), "metadata.dt")


def small() -> hub.Graph:
    return hub.Graph.chain(("input", hub.Input(shape=(3,))), ("lif", hub.LIF(beta=0.5)))


MISUSES = {
    "T=0": (lambda: hub.simulate(small(), torch.zeros(0, 1, 3)), hub.ShapeError,
            "needs T >= 1"),
    "x=None": (lambda: hub.simulate(small(), None), hub.ParameterError,
               "expected a tensor, numpy array or nested lists of real numbers"),
    "x=str": (lambda: hub.simulate(small(), "abc"), hub.ParameterError, "got str"),
    "x=ragged": (lambda: hub.simulate(small(), [[[1, 2, 3]], [[1, 2]]]), hub.ParameterError,
                 "nested lists of real numbers"),
    "x=object-array": (lambda: hub.simulate(small(), np.array([object()])), hub.ParameterError,
                       "real numbers"),
    "x=complex": (lambda: hub.simulate(small(), torch.ones(2, 1, 3, dtype=torch.complex64)),
                  hub.ParameterError, "imaginary part would be lost"),
    "unknown-option": (lambda: hub.simulate(small(), torch.zeros(2, 1, 3), steps=3),
                       hub.ParameterError, "unknown option\\(s\\) 'steps'"),
    "dtype=str": (lambda: hub.simulate(small(), torch.zeros(2, 1, 3), dtype="float32"),
                  hub.ParameterError, "expected a torch floating-point dtype"),
    "dtype=int": (lambda: hub.simulate(small(), torch.zeros(2, 1, 3), dtype=torch.int32),
                  hub.ParameterError, "expected a torch floating-point dtype"),
    "device=bogus": (lambda: hub.simulate(small(), torch.zeros(2, 1, 3), device="bogus"),
                     hub.ParameterError, "device 'bogus' cannot be used here"),
    "trainable=str": (lambda: hub.simulate(small(), torch.zeros(2, 1, 3), trainable="yes"),
                      hub.ParameterError, "expected True or False, got 'yes'"),
    "graph=dict": (lambda: hub.simulate({"nodes": {}}, torch.zeros(2, 1, 3)), hub.HubError,
                   "runs a hub.Graph, got dict"),
    "save-out=int": (lambda: hub.save(small(), out=5), hub.ParameterError,
                     "expected the file to write, a str or os.PathLike; got int"),
    "save-to=int": (lambda: hub.save(small(), to=5), hub.ParameterError,
                    "expected a format name"),
    "check-x=str": (lambda: hub.check(small(), targets=["hub"], x="abc"), hub.ParameterError,
                    "got str"),
    "check-x=complex": (lambda: hub.check(small(), targets=["hub"], x=[[[1j, 0, 0]]]),
                        hub.ParameterError, "imaginary part"),
}
if not torch.cuda.is_available():
    MISUSES["device=cuda"] = (
        lambda: hub.simulate(small(), torch.zeros(2, 1, 3), device="cuda"), hub.ParameterError,
        "cannot be used here")


@pytest.mark.parametrize("case", sorted(MISUSES))
def test_every_misuse_of_the_api_is_a_hub_error_saying_what_was_expected(case):
    call, error, message = MISUSES[case]
    with pytest.raises(error, match=message):
        call()


def test_misuse_errors_keep_their_builtin_bases():
    with pytest.raises(ValueError):
        hub.simulate(small(), torch.zeros(0, 1, 3))
    with pytest.raises(ValueError):
        hub.simulate(small(), "abc")


def test_valid_inputs_of_every_real_kind_still_run():
    graph = small()
    expected = hub.simulate(graph, torch.ones(2, 1, 3))
    for x in (np.ones((2, 1, 3)), [[[1, 1, 1]], [[1, 1, 1]]],
              torch.ones(2, 1, 3, dtype=torch.int64), torch.ones(2, 1, 3, dtype=torch.bool)):
        assert torch.equal(hub.simulate(graph, x), expected)
    assert math.isclose(float(hub.simulate(graph, torch.ones(2, 1, 3), dtype=torch.float64)
                              .sum()), float(expected.sum()))
