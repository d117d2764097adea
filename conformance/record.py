"""Pinning behaviour across framework versions: record a run, compare a later one against it.

``hub conformance --record DIR`` saves every case (canonical graph and input) and every route's
output with the versions of the packages involved; ``--against DIR`` runs the recorded cases
again along the same routes and reports every output that changed, bit for bit, so a lab can
pin "snnTorch x.y behaves like before" in its own CI.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
from pathlib import Path

import numpy as np

import hub

from . import zoo
from .report import _slug
from .suite import Suite, as_numpy, run

MANIFEST = "manifest.json"
#: Distributions whose versions a record notes, when installed.
PACKAGES = ("snn-hub", "torch", "numpy", "nir", "nirtorch", "snntorch", "norse", "spikingjelly",
            "lava-dl", "lava-nc")


@dataclasses.dataclass
class Change:
    """A difference between a recorded run and the current one."""

    id: str
    kind: str  # "changed", "status" (these fail), "missing", "new", "version" (these inform)
    detail: str


def versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def record(suite: Suite, folder: Path) -> Path:
    """Save ``suite``'s cases and outputs under ``folder``; returns the manifest's path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cases").mkdir(exist_ok=True)
    (folder / "outputs").mkdir(exist_ok=True)
    cases, outputs = {}, {}
    for case in {o.case.id: o.case for o in suite.outcomes}.values():
        stem = _slug(case.id)
        hub.save(case.graph, to="hub", out=folder / "cases" / f"{stem}.hub.json", force=True)
        np.save(folder / "cases" / f"{stem}.x.npy", np.asarray(case.x), allow_pickle=False)
        cases[case.id] = {"name": case.name, "tier": case.tier,
                          "graph": f"cases/{stem}.hub.json", "x": f"cases/{stem}.x.npy"}
    for outcome in suite.outcomes:
        entry = {"status": outcome.status, "output": None}
        if outcome.output is not None:
            entry["output"] = f"outputs/{_slug(outcome.id)}.npy"
            np.save(folder / entry["output"], as_numpy(outcome.output), allow_pickle=False)
        outputs[outcome.id] = entry
    manifest = {"versions": versions(), "formats": suite.formats, "tiers": list(suite.tiers),
                "cases": cases, "outputs": outputs}
    path = folder / MANIFEST
    path.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return path


def load_cases(folder: Path) -> tuple[dict, list[zoo.Case]]:
    """The manifest and the cases recorded in ``folder``."""
    path = folder / MANIFEST
    if not path.is_file():
        raise hub.HubError(f"no {MANIFEST} here: record one with `hub conformance --record "
                           f"{folder}` first", file=folder)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        cases = [zoo.Case(c["name"], c["tier"], hub.load(folder / c["graph"]),
                          np.load(folder / c["x"], allow_pickle=False))
                 for c in manifest["cases"].values()]
    except (KeyError, TypeError, ValueError, OSError) as e:
        raise hub.HubError(f"not a conformance record: {type(e).__name__}: {e}",
                           file=path) from None
    return manifest, cases


def against(folder: Path, formats: list[str] | None = None, **options) -> tuple[Suite,
                                                                               list[Change]]:
    """Run the cases recorded in ``folder`` again and list what changed."""
    manifest, cases = load_cases(folder)
    present = set(hub.formats())
    if formats is None:
        formats = [f for f in manifest["formats"] if f in present
                   and hub.plugins().format(f, usable=False).unavailable() is None]
    suite = run(formats, tiers=manifest["tiers"], cases=cases, **options)
    recorded = manifest["outputs"]
    changes = []
    then, now = manifest.get("versions", {}), versions()
    for package in sorted(set(then) | set(now)):
        if then.get(package) != now.get(package):
            changes.append(Change(package, "version", f"{then.get(package, 'absent')} then, "
                                                      f"{now.get(package, 'absent')} now"))
    seen = set()
    for outcome in suite.outcomes:
        seen.add(outcome.id)
        before = recorded.get(outcome.id)
        if before is None:
            changes.append(Change(outcome.id, "new", f"not in the record; now {outcome.status}"))
            continue
        if before["status"] != outcome.status:
            changes.append(Change(outcome.id, "status",
                                  f"{before['status']} then, {outcome.status} now: "
                                  f"{outcome.detail}"))
        if before["output"] is not None and outcome.output is not None:
            old = np.load(folder / before["output"], allow_pickle=False)
            new = as_numpy(outcome.output)
            if old.shape != new.shape:
                changes.append(Change(outcome.id, "changed", f"output shape {list(old.shape)} "
                                                             f"then, {list(new.shape)} now"))
            elif not np.array_equal(old, new, equal_nan=True):
                where = tuple(int(i) for i in np.argwhere(
                    ~((old == new) | (np.isnan(old) & np.isnan(new))))[0])
                changes.append(Change(
                    outcome.id, "changed",
                    f"{int((old != new).sum())} of {old.size} output entries differ, first at "
                    f"[t, n, k] = {list(where)}: {old[where]:g} then, {new[where]:g} now"))
    for missing in sorted(set(recorded) - seen):
        changes.append(Change(missing, "missing", "recorded, but not run now (a format or "
                              "tier is missing here)"))
    return suite, changes
