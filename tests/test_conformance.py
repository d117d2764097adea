"""The conformance suite: its zoo, its judgement, its report, and that it catches wrong plugins."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import hub
import hub_conformance
from hub import plugin_manager
from hub.cli import main
from hub.node import fields_of
from hub_conformance import compare, paths, report, zoo

from .conftest import THIRDPARTY

CASES = [c for c in zoo.cases(("exact", "float", "fixed")) if isinstance(c, zoo.Case)]
EXACT = [c for c in CASES if c.tier in compare.EXACT_TIERS]


# -- the zoo ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", EXACT, ids=lambda c: c.id)
def test_every_exact_case_is_exact_in_float32(case):
    """float32 and float64 runs agree bit for bit, so no evaluation order can round."""
    assert zoo.check_exact(case) is None


def test_fixed_tier_cases_are_integer_throughout():
    for case in (c for c in CASES if c.tier == "fixed"):
        assert np.array_equal(case.x, np.round(case.x)), case.id
        y = hub.simulate(case.graph, torch.as_tensor(case.x))
        assert torch.equal(y, y.round()), case.id
        for name, node in case.graph.walk():
            for field, value in node.params().items():
                decays = getattr(node, "_DECAYS", ())
                if getattr(node, "arithmetic", None) == "fixed" and field in decays:
                    value = value * 4096  # Loihi's 12-bit decays, integers over 4096
                if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                    assert np.array_equal(value, np.round(value)), f"{case.id} {name}.{field}"


BUILTIN = sorted(n for n, cls in hub.node_types().items() if cls.__module__.startswith("hub."))


@pytest.mark.parametrize("tier", ["exact", "float", "fixed"])
def test_every_tier_covers_every_topology(tier):
    names = {c.name for c in CASES if c.tier == tier}
    missing = set(zoo.TOPOLOGIES) - names
    assert missing == ({"conv2d-avgpool"} if tier == "fixed" else set())  # it divides


@pytest.mark.parametrize("type_name", BUILTIN)
def test_the_zoo_holds_every_node_type(type_name):
    # integer neurons (Loihi) live in the fixed tier; the quadratic and exponential neurons,
    # whose values never stay dyadic, in the float tier; every other type in the exact tier
    tiers = ("float",) if type_name in zoo.FLOAT_ONLY else ("exact", "fixed")
    assert any(node.type == type_name for c in CASES for _, node in c.graph.walk()
               if c.tier in tiers)


def _choice_values():
    for cls in (hub.LIF, hub.CubaLIF, hub.Threshold):
        for f in fields_of(cls):
            for value in f.metadata.get("options", ()):
                yield f.name, value


@pytest.mark.parametrize("field,value", sorted(set(_choice_values())))
def test_the_exact_tier_sweeps_every_convention(field, value):
    assert any(getattr(node, field, None) == value for c in EXACT if c.tier == "exact"
               for _, node in c.graph.walk())


@pytest.mark.parametrize("field", ["refractory", "delay", "v_leak", "v_reset", "v_init",
                                   "amplitude", "gain", "current_gain"])
def test_the_exact_tier_sets_every_numeric_convention(field):
    default = {"amplitude": 1, "gain": 1, "current_gain": 1}.get(field, 0)
    assert any(np.any(np.asarray(getattr(node, field, default)) != default)
               for c in EXACT if c.tier == "exact" for _, node in c.graph.walk()
               if isinstance(node, hub.Neuron))


def test_every_case_is_active():
    for case in CASES:
        y = hub.simulate(case.graph, torch.as_tensor(case.x))
        assert (y != 0).any(), case.id


def test_paper_graphs_join_the_zoo_and_unloadable_files_say_why(paper):
    items = list(zoo.paper_cases(paper))
    loaded = [i for i in items if isinstance(i, zoo.Case)]
    failed = dict(i for i in items if isinstance(i, tuple))
    assert len(loaded) + len(failed) == len(list(paper.glob("*.nir")))
    assert {c.name for c in loaded} >= {"paper_02_cnn_cnn_sinabs",
                                        "paper_03_rnn_braille_noDelay_bias_zero"}
    assert all("does not load" in reason for reason in failed.values())


def test_an_unknown_tier_is_refused():
    with pytest.raises(hub.HubError, match="unknown tier.*'?exat'?.*exact, float, fixed, paper"):
        zoo.cases(("exat",))


# -- routes -----------------------------------------------------------------------------------


def test_routes_between_two_formats():
    labels = {r.label for r in paths.routes(paths.usable(["hub", "nir"]))}
    assert {"hub->hub", "hub->nir", "nir->hub", "hub->nir->hub", "nir->hub->nir",
            "hub->nir file->hub", "nir->hub file->nir"} <= labels


def test_a_round_trip_that_changes_a_parameter_fails_naming_it():
    a = hub.Graph.chain(("input", hub.Input(shape=(2,))), ("lif", hub.LIF(beta=0.5)))
    b = hub.Graph.chain(("in", hub.Input(shape=(2,))),
                        ("x", hub.LIF(beta=np.nextafter(np.float32(0.5), np.float32(1)))))
    assert paths.different(a, a) is None
    assert paths.different(a, b) == ("node 'lif' field 'beta': float32[] [0.5] -> "
                                      "float32[] [0.5000000596046448]")


# -- judgement --------------------------------------------------------------------------------


def tie_graph(comparison: str) -> hub.Graph:
    """One IF neuron whose voltage lands exactly on its threshold at step 1."""
    return hub.Graph.chain(hub.Input(shape=(1,)), hub.IF(threshold=1.0, comparison=comparison))


def test_a_divergence_at_an_exact_tie_is_a_tie_in_the_float_tier():
    x = torch.full((3, 1, 1), 0.5)
    ref, got = (compare.flat(hub.simulate(tie_graph(c), x)) for c in (">=", ">"))
    result = compare.compare(tie_graph(">="), x, "float", ref, got)
    assert (result.agree, result.first, result.tie) == (False, (1, 0, 0), True)
    exact = compare.compare(tie_graph(">="), x, "exact", ref, got)
    assert (exact.agree, exact.first, exact.tie) == (False, (1, 0, 0), None)
    assert "first divergence at step 1, sample 0, output 0: 0 instead of 1" in exact.detail


def test_a_divergence_far_from_threshold_is_not_a_tie():
    graph = hub.Graph.chain(hub.Input(shape=(1,)), hub.IF(threshold=1.0, reset="subtract"))
    x = torch.full((4, 1, 1), 0.75)
    ref = compare.flat(hub.simulate(graph, x))  # v = 0.75, 1.5 (spike), 1.25 (spike), 1.0
    zero = compare.flat(hub.simulate(  # v = 0.75, 1.5 (spike), 0.75, 1.5 (spike)
        hub.Graph.chain(hub.Input(shape=(1,)), hub.IF(threshold=1.0)), x))
    result = compare.compare(graph, x, "float", ref, zero)
    assert (result.agree, result.first, result.tie) == (False, (2, 0, 0), False)
    assert "not a threshold tie" in result.detail


def test_readout_voltages_agree_within_rounding_in_the_float_tier_only():
    ref = torch.tensor([[[1.0]], [[0.3]]], dtype=torch.float64)
    got = ref.clone()
    got[1] = torch.tensor(np.nextafter(np.float32(0.3), np.float32(1)), dtype=torch.float64)
    graph = hub.Graph.chain(hub.Input(shape=(1,)), hub.LI(beta=0.5))
    assert compare.compare(graph, got, "float", ref, got).agree
    assert compare.compare(graph, ref, "float", ref, got).agree
    assert not compare.compare(graph, ref, "exact", ref, got).agree


def test_a_wrong_output_shape_fails():
    ref = torch.zeros(3, 1, 2, dtype=torch.float64)
    result = compare.compare(tie_graph(">"), ref, "exact", ref, torch.zeros(3, 1, 1))
    assert not result.agree and "output shape [3, 1, 1], expected [3, 1, 2]" in result.detail


# -- the hub and NIR rows ---------------------------------------------------------------------


def test_hub_and_nir_pass_every_tier(paper, tmp_path):
    suite = hub_conformance.run(["hub", "nir"], paper=paper)
    assert suite.ok, [(o.id, o.status, o.detail) for o in suite.failures]
    for tier in zoo.TIERS:
        for source in ("hub", "nir"):
            counts = suite.count(tier=tier, source=source)
            assert counts["pass"] + counts["tie"] > 0, (tier, source)
    # every runtime ran: the NIR rows ran in NIR's runtime, not the hub's simulator
    assert {o.route.runtime for o in suite.outcomes if o.status == "pass"} == {"hub", "nir"}
    not_expressible = {o.case.name for o in suite.outcomes if o.status == "n/a"}
    # NIR has no Loihi fixed-point neuron (layers NIR has no node for travel in its metadata),
    # and its runtime does not run the neuron families of hub.families that ride in metadata;
    # nor has it a sigma-delta neuron (graded changes, slayer's float or Lava's integers)
    assert not_expressible == {"dense-loihi", "dense-loihi-cuba",
                               *zoo.LOIHI_TOPOLOGIES, *zoo.LOIHI_SLAYER, *zoo.LOIHI_DELAYED,
                               *zoo.FAMILIES, *zoo.FLOAT_FAMILIES, *zoo.SIGMA_DELTA,
                               *zoo.RESONATOR_FAMILIES, *zoo.LOIHI_RESONATORS,
                               *zoo.MIXED_FAMILIES}
    path = report.write(suite, tmp_path)
    text = path.read_text()
    assert "## exact tier" in text and "| **nir** |" in text and "NIR has no LoihiCUBA" in text
    assert (tmp_path / "matrix.png").stat().st_size > 1000


# -- wrong plugins ----------------------------------------------------------------------------


@pytest.fixture
def wrong(site, monkeypatch):
    """The deliberately wrong plugin's formats, loaded beside the built-in ones."""
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("HUB_PLUGINS", "hub,nir,wrong")
    plugin_manager.reload()
    yield
    monkeypatch.undo()
    sys.modules.pop("hub_wrong_plugin", None)
    plugin_manager.reload()


def _ties_matter(case) -> bool:
    """Whether comparing with ``>`` instead of ``>=`` changes the case's output."""
    graph = copy.deepcopy(case.graph)
    for name, node in list(graph.nodes.items()):
        if getattr(node, "comparison", None) == ">=":
            graph.nodes[name] = node.replace(comparison=">")
    x = torch.as_tensor(case.x)
    return not torch.equal(hub.simulate(case.graph, x), hub.simulate(graph, x))


def test_the_exact_tier_catches_a_plugin_that_turns_ge_into_gt(wrong, tmp_path):
    suite = hub_conformance.run(["hub", "wrong"], tiers=["exact"])
    failed = {o.id for o in suite.failures}
    assert failed, "the wrong plugin was not caught"
    into_wrong = [o for o in suite.outcomes if o.route.runtime == "wrong"]
    for outcome in into_wrong:
        # the wrong plugin fails a case exactly where its inputs reach a tie at a ">=" threshold
        assert (outcome.status == "fail") == _ties_matter(outcome.case), (outcome.id,
                                                                          outcome.detail)
    # where it fails, the first divergence is a spike the reference emits at v == threshold
    outcome = next(o for o in suite.failures if o.id == "exact/dense-lif-ge:hub->wrong")
    t, n, k = outcome.comparison.first
    assert outcome.output[t, n, k] == 0 and suite.references[outcome.case.id][t, n, k] == 1
    report.write(suite, tmp_path)
    folder = tmp_path / "failures" / report._slug(outcome.id)
    assert (folder / "raster.png").stat().st_size > 1000
    assert f"step {t}" in (tmp_path / "report.md").read_text()


def test_in_the_float_tier_ge_versus_gt_is_only_ever_a_tie_but_a_wrong_reset_fails(wrong):
    suite = hub_conformance.run(["hub", "wrong", "wronger"], tiers=["float"],
                                match="float/dense-*subtract*")
    wrong_runs = [o for o in suite.outcomes if o.route.runtime == "wrong"
                  and "wronger" not in o.route.formats]
    assert wrong_runs and all(o.status in ("pass", "tie") for o in wrong_runs)
    wronger = [o for o in suite.outcomes if o.route.runtime == "wronger"]
    assert wronger and all(o.status == "fail" and "not a threshold tie" in o.detail
                           for o in wronger), [(o.id, o.status, o.detail) for o in wronger]


def test_the_reproducer_script_reproduces_the_failure(wrong, site, tmp_path):
    case = next(c for c in EXACT if c.name == "dense-lif-ge")
    outcome = hub_conformance.run_case(case, paths.Route("hub", "wrong", via="hub"))
    assert outcome.status == "fail"
    report.reproducer(outcome, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(site), "HUB_PLUGINS": "hub,nir,wrong"}
    result = subprocess.run([sys.executable, str(tmp_path / "reproduce.py")], env=env,
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    t, n, k = outcome.comparison.first
    assert f"first divergence at step {t}, sample {n}, output [{k}]: 0.0 instead of 1.0" \
        in result.stdout


def test_the_command_line_exits_1_on_a_failure_and_writes_the_report(wrong, tmp_path, capsys):
    code = main(["conformance", "--formats", "hub,wrong", "--tier", "exact",
                 "--cases", "exact/dense-lif*", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1
    assert "exact tier" in out and "fail of" in out and "exact/dense-lif-ge:hub->wrong" in out
    assert (tmp_path / "report.md").is_file() and (tmp_path / "matrix.png").is_file()
    assert list((tmp_path / "failures").glob("*/reproduce.py"))


def test_the_command_line_exits_0_when_all_pass(tmp_path, capsys):
    code = main(["conformance", "--formats", "hub,nir", "--tier", "fixed", "--cases",
                 "*/dense-if*"])
    assert code == 0, capsys.readouterr().out


# -- known gaps -------------------------------------------------------------------------------


def test_a_declared_gap_is_an_expected_failure_and_a_stale_one_fails(wrong):
    case = next(c for c in EXACT if c.name == "dense-lif-ge")
    route = paths.Route("hub", "wrong")
    gap = hub_conformance.run_case(case, route, gaps={"*dense-lif-ge*": "no >= yet"})
    assert (gap.status, gap.detail.startswith("known gap: no >= yet")) == ("xfail", True)
    stale = hub_conformance.run_case(next(c for c in EXACT if c.name == "dense-lif"), route,
                                     gaps={"exact/dense-lif": "no >= yet"})
    assert stale.status == "xpass" and not hub_conformance.Suite([stale], [], ()).ok


def test_a_third_party_plugin_gets_the_suite_by_subclassing(site, tmp_path):
    """The toy plugin's own test file: passes, skips what toy cannot express, xfails its gap."""
    env = {**os.environ, "PYTHONPATH": str(site), "HUB_PLUGINS": "hub,toy"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rxs", "-p", "no:cacheprovider",
         str(THIRDPARTY / "toy_plugin" / "test_toy_conformance.py")],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert " passed" in summary and " skipped" in summary and " xfailed" in summary, summary
    assert "toy spikes have no amplitude" in result.stdout  # the xfail's reason
    assert "not expressible: toy: node 'conv': toy models have no Conv2d" in result.stdout


# -- regression records -----------------------------------------------------------------------


def test_record_then_against_finds_nothing_until_an_output_changes(tmp_path, capsys):
    folder = tmp_path / "record"
    assert main(["conformance", "--formats", "hub,nir", "--tier", "exact", "--cases",
                 "exact/dense-lif-*", "--record", str(folder)]) == 0
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["versions"]["nir"] and manifest["formats"] == ["hub", "nir"]
    assert main(["conformance", "--against", str(folder)]) == 0
    assert "0 difference(s)" in capsys.readouterr().out
    entry = manifest["outputs"]["exact/dense-lif-ge:hub->nir"]
    saved = np.load(folder / entry["output"])
    saved[3, 1, 2] = 1 - saved[3, 1, 2]
    np.save(folder / entry["output"], saved)
    assert main(["conformance", "--against", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "changed exact/dense-lif-ge:hub->nir: 1 of" in out and "[3, 1, 2]" in out
    manifest["versions"]["nir"] = "0.0.1"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert main(["conformance", "--against", str(folder)]) == 1
    assert "version nir: 0.0.1 then, 1." in capsys.readouterr().out


def test_against_a_folder_without_a_record_says_how_to_make_one(tmp_path, capsys):
    assert main(["conformance", "--against", str(tmp_path)]) == 2
    assert "record one with `hub conformance --record" in capsys.readouterr().err


# -- hub.check --------------------------------------------------------------------------------


def test_hub_check_converts_a_model_to_each_target_and_compares(paper):
    suite = hub.check(paper / "paper_03_rnn_braille_noDelay_bias_zero.nir", targets=["nir"],
                      dt=1e-4)
    assert suite.ok and {o.route.label for o in suite.outcomes} == {
        "hub->nir", "hub->nir->hub", "hub->hub file->nir", "hub->nir file->hub",
        "hub->nir file->nir", "hub->hub file->hub"}
    assert all(o.status == "pass" for o in suite.outcomes)


def test_hub_check_reports_what_a_target_gets_wrong(wrong):
    graph = hub.Graph.chain(hub.Input(shape=(1,)), hub.IF(threshold=1.0, comparison=">="))
    suite = hub.check(graph, targets=["wrong"], x=np.full((3, 1, 1), 0.5, np.float32),
                      tier="exact")
    direct = next(o for o in suite.outcomes if o.route.label == "hub->wrong")
    assert not suite.ok and direct.status == "fail" and direct.comparison.first == (1, 0, 0)


def test_paper_routes_from_nir_start_from_the_original_file(paper, tmp_path):
    case = next(c for c in zoo.paper_cases(paper) if isinstance(c, zoo.Case)
                and c.name == "paper_03_rnn_braille_noDelay_bias_zero")
    assert case.originals["nir"] == (paper / f"{case.name}.nir", {"dt": zoo.PAPER_DT})
    assert hub_conformance.run_case(case, paths.Route("nir", "hub")).status == "pass"
    script = paths.script(paths.Route("nir", "hub"), "a paper route", case.originals)
    assert f"model_a = Path({str(paper / case.name)!r}" in script.replace(".nir'", "'")
    assert "hub.load(model_a, source='nir', dt=0.0001)" in script
    moved = zoo.Case(case.name, case.tier, case.graph, case.x,
                     originals={"nir": (tmp_path / "gone.nir", {"dt": zoo.PAPER_DT})})
    outcome = hub_conformance.run_case(moved, paths.Route("nir", "hub"))
    assert outcome.status == "error" and "no such file" in outcome.detail


def test_the_test_class_skips_a_format_whose_framework_is_missing(monkeypatch):
    from hub_conformance.testing import FormatTests, parameters

    class Needy(hub.Format):
        name = "needy"
        requires = ("a_framework_that_does_not_exist",)

    class Plugin:
        @hub.hookimpl
        def hub_register_formats(self, register):
            register(Needy())

    registry = plugin_manager.Plugins()
    registry.register(Plugin(), name="needy")
    monkeypatch.setattr(plugin_manager, "_plugins", registry)

    class TestNeedy(FormatTests):
        format = "needy"

    class TestTypo(FormatTests):
        format = "neddy"

    (param,) = parameters(TestNeedy)
    assert "'needy' is unavailable: needs a_framework_that_does_not_exist" in \
        param.marks[0].kwargs["reason"]
    with pytest.raises(hub.PluginError, match="no format 'neddy'"):
        parameters(TestTypo)


def test_a_tie_passes_in_the_float_tier_and_the_report_lists_it(wrong):
    case = zoo.Case("tie", "float", tie_graph(">="), np.full((3, 1, 1), 0.5, np.float32))
    outcome = hub_conformance.run_case(case, paths.Route("hub", "wrong"))
    assert outcome.status == "tie" and "(a threshold tie)" in outcome.detail
    suite = hub_conformance.Suite([outcome], ["hub", "wrong"], ("float",))
    assert suite.ok
    assert "## Threshold ties" in report.markdown(suite, [])
    assert "1 pass (1 tie)" in report.cell_text(suite.count(source="hub", target="wrong"))


# -- running the matrix on several processes or a cluster -------------------------------------


def _same(serial: hub_conformance.Suite, spread: hub_conformance.Suite) -> None:
    assert [o.id for o in spread.outcomes] == [o.id for o in serial.outcomes]
    for a, b in zip(serial.outcomes, spread.outcomes):
        assert (a.status, a.detail) == (b.status, b.detail), a.id
        assert (a.output is None) == (b.output is None), a.id
        assert a.output is None or torch.equal(a.output, b.output), a.id
    assert serial.references.keys() == spread.references.keys()
    assert all(torch.equal(serial.references[k], spread.references[k])
               for k in serial.references)


SPREAD = {"formats": ["hub", "nir", "snntorch"], "tiers": ["exact", "float"],
          "match": "*/dense-lif-v-*"}


@pytest.fixture(scope="module")
def serial():
    suite = hub_conformance.run(**SPREAD)
    assert len(suite.outcomes) > 20 and suite.count()["pass"] > 0
    return suite


def test_jobs_give_the_serial_results_and_progress_counts_every_run(serial):
    seen = []
    spread = hub_conformance.run(**SPREAD, jobs=2, progress=lambda d, t, w: seen.append((d, t)))
    _same(serial, spread)
    total = len(serial.outcomes)
    assert seen[-1] == (total, total) and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_a_local_dask_cluster_gives_the_serial_results(serial):
    distributed = pytest.importorskip("distributed", reason="the 'distributed' extra is not "
                                      "installed (pip install 'snn-hub[distributed]')")
    with distributed.LocalCluster(host="127.0.0.1", n_workers=2, threads_per_worker=1,
                                  processes=True, dashboard_address=None) as cluster:
        spread = hub_conformance.run(**SPREAD, cluster=cluster.scheduler_address)
    _same(serial, spread)


def test_an_unreachable_cluster_is_a_clear_error(monkeypatch):
    pytest.importorskip("distributed", reason="the 'distributed' extra is not installed")
    from hub_conformance import parallel
    monkeypatch.setattr(parallel, "CONNECT_TIMEOUT", "1s")
    with pytest.raises(hub.errors.HubError, match="cannot reach the Dask scheduler"):
        hub_conformance.run(formats=["hub"], tiers=["exact"], match="exact/dense-lif",
                            cluster="tcp://127.0.0.1:9")


def test_the_command_line_runs_jobs_and_refuses_a_bad_count(capsys):
    assert main(["conformance", "--formats", "hub,nir", "--tier", "exact", "--cases",
                 "exact/dense-lif-s*", "--jobs", "2"]) == 0
    assert "runs of" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["conformance", "--jobs", "0"])
    assert "at least 1" in capsys.readouterr().err


# -- what the report says about n/a -----------------------------------------------------------


def test_the_report_ranks_n_a_reasons_by_the_runs_they_block(tmp_path, capsys):
    suite = hub_conformance.run(["hub", "snntorch"], ("exact",), match="exact/dense-lif*")
    ranked = report.na_reasons(suite)
    assert ranked and sum(n for _, n, _ in ranked) == suite.count()["n/a"]
    assert [n for _, n, _ in ranked] == sorted((n for _, n, _ in ranked), reverse=True)
    assert not any("node '" in reason for reason, _, _ in ranked)  # one reason, any node
    text = (report.write(suite, tmp_path)).read_text()
    top, n, names = ranked[0]
    assert f"| {n} |" in text and top.replace("|", "/") in text and names[0] in text
    report.terminal(suite, __import__("rich.console").console.Console(width=200))
    assert "n/a reasons, most blocking first" in capsys.readouterr().out


def test_a_cell_shows_how_much_of_it_ran():
    counts = dict.fromkeys(hub_conformance.suite.STATUSES, 0)
    assert report.coverage(counts) is None
    few, many = dict(counts, **{"pass": 31, "n/a": 214}), dict(counts, **{"pass": 188, "n/a": 57})
    assert report.coverage(few) == pytest.approx(31 / 245)
    assert report.coverage(many) == pytest.approx(188 / 245)
    assert report.verdict(few) == report.verdict(many) == "pass"
