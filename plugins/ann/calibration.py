"""Data-based normalisation: each ReLU's activation scale ``lambda`` from the calibration data
(the maximum or a percentile), and the plan of which scale divides which layer."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from hub.errors import HubError, UnsupportedError
from hub_plugins.ann.tracing import _Net

MODES_HELP = ("mode='max', a percentile string like '99.9%', or a fraction of the maximum in "
              "(0, 1] like 0.5")
#: At most this many positive activations per layer are kept for a percentile; beyond it a
#: uniform random sample of them is kept (the maximum is always exact).
MAX_SAMPLES = 1 << 24


_DST = ""  # the unit of a value already scaled for the neurons it feeds


@dataclass
class _Plan:
    """Which ReLUs become IF layers, and in whose units each value is (module docstring).

    ``unit[key]`` is the key of the neuron layer (or ``"input"``) whose rate the value is in,
    before any weight layer: values there are the ANN's divided by that layer's scale; or
    ``_DST``, the units of the one destination ``dest[key]`` it feeds: a neuron layer, or
    ``"output"``."""

    neurons: list[str]
    dropped: set[str]
    unit: dict[str, str]
    dest: dict[str, str]
    spiking_output: bool


def _plan(net: _Net, readout: str) -> _Plan:
    unit, weight = {"input": "input"}, {"input": None}
    neurons: list[str] = []
    dropped: set[str] = set()
    for key, step in net.steps.items():
        first = step.inputs[0]
        if step.kind == "relu":
            if unit[first] == _DST:
                neurons.append(key)
                unit[key], weight[key] = key, None
            elif unit[first] != "input":  # relu(pool(relu(x))) = pool(relu(x)): signs kept
                dropped.add(key)
                unit[key], weight[key] = unit[first], None
            else:
                raise UnsupportedError(f"no convolution or linear layer comes before "
                                       f"{step.name!r}; a ReLU straight on the input cannot be "
                                       "converted", node=step.name)
        elif step.kind == "weight":
            if weight[first] is not None:
                raise UnsupportedError(f"{weight[first]!r} and {step.name!r} follow each other "
                                       "with no ReLU between; each spiking layer holds one "
                                       "weight layer on each path. Merge them or put a ReLU "
                                       "between", node=step.name)
            unit[key], weight[key] = _DST, step.name
        elif step.kind == "add":
            units = {unit[source] for source in step.inputs}
            unit[key] = units.pop() if len(units) == 1 else _DST
            weight[key] = next((weight[i] for i in step.inputs if weight[i] is not None), None)
        else:
            unit[key], weight[key] = unit[first], weight[first]
    if not neurons:
        raise UnsupportedError("the network has no ReLU after a weight layer, so it is not a "
                               "ReLU network; only ReLU activations have a rate-coded IF "
                               "equivalent")

    users = net.consumers()
    reach: dict[str, set[str]] = {}
    for key in reversed(list(net.steps)):
        found = {"output"} if key == net.output else set()
        for user in users[key]:
            found |= {user} if user in neurons else reach[user]
        reach[key] = found
    dest = {}
    for key, step in net.steps.items():
        if unit[key] != _DST:
            continue
        if len(reach[key]) > 1:
            names = sorted("the output" if d == "output" else repr(net.steps[d].name)
                           for d in reach[key])
            raise UnsupportedError(
                f"the output of {step.name!r} feeds {' and '.join(names)} with no ReLU between: "
                "a weighted sum can be scaled for one spiking layer only. Put a ReLU after it "
                "(only a neuron's spikes fan out to layers of different scales)", node=step.name)
        dest[key] = reach[key].pop()
    spiking_output = readout == "spikes" and unit[net.output] == _DST
    if readout == "spikes" and unit[net.output] != _DST and net.output not in neurons:
        raise UnsupportedError("readout='spikes' needs the network to end with a weight layer "
                               f"or a ReLU, not with {net.steps[net.output].name!r}; use "
                               "readout='integrate'", node=net.steps[net.output].name)
    return _Plan(neurons, dropped, unit, dest, spiking_output)


def _scale_name(net: _Net, key: str) -> str:
    return net.steps[net.output if key == "output" else key].name


# -- calibration ---------------------------------------------------------------------------------


def _as_batch(item: Any, where: str) -> Any:
    import torch

    if isinstance(item, (tuple, list)):
        if not item:
            raise HubError(f"{where} is an empty tuple; expected a batch or (x, y)")
        item = item[0]
    if isinstance(item, np.ndarray):
        item = torch.from_numpy(item)
    if not isinstance(item, torch.Tensor):
        raise HubError(f"{where} is a {type(item).__name__}; expected a tensor [N, *in] or an "
                       "(x, y) tuple")
    if item.dim() < 2 or item.shape[0] == 0:
        raise HubError(f"{where} has shape {list(item.shape)}; expected a batch [N, *in] with "
                       "N >= 1 (add the batch axis)")
    if not item.is_floating_point():
        item = item.float()
    if not bool(torch.isfinite(item).all()):
        raise HubError(f"{where} contains NaN or infinite values")
    return item.float()


def _batches(calibration: Any) -> Iterable[Any]:
    import torch

    if isinstance(calibration, (torch.Tensor, np.ndarray)):
        calibration = [calibration]
    try:
        items = iter(calibration)
    except TypeError:
        raise HubError(f"calibration: a {type(calibration).__name__} is not iterable; give a "
                       "DataLoader, a list of batches, or one tensor") from None
    return (_as_batch(item, f"calibration batch {i}") for i, item in enumerate(items))


class _Stats:
    """The largest activation of a layer, and a uniform sample of its positive ones."""

    def __init__(self, keep: bool, seed: int) -> None:
        self.max = 0.0
        self.count = 0
        self.keep = keep
        self.samples: list[Any] = []
        self.kept = 0
        self.level = 0  # each value is kept with probability 2**-level
        self.seed = seed
        self.gen = None

    def add(self, y: Any) -> None:
        positive = y[y > 0].detach().float().flatten()
        if not positive.numel():
            return
        self.count += positive.numel()
        self.max = max(self.max, float(positive.max()))
        if not self.keep:
            return
        positive = positive.cpu()
        if self.level:
            positive = positive[self._coins(positive.numel(), self.level)]
        self.samples.append(positive)
        self.kept += positive.numel()
        while self.kept > MAX_SAMPLES:  # halve: every value now kept with probability 2**-level
            self.level += 1
            self.samples = [s[self._coins(s.numel(), 1)] for s in self.samples]
            self.kept = sum(s.numel() for s in self.samples)

    def _coins(self, n: int, level: int) -> Any:
        import torch

        if self.gen is None:
            self.gen = torch.Generator().manual_seed(self.seed)
        return torch.rand(n, generator=self.gen) < 0.5 ** level

    def scale(self, fraction: float | None, percentile: float | None, name: str) -> float:
        if self.count == 0:
            raise HubError(f"layer {name!r} is never active on the calibration data (every "
                           "output is <= 0), so no scale can be derived; the layer is dead or the "
                           "calibration data does not reach it", node=name)
        if percentile is not None:
            values = np.concatenate([s.numpy() for s in self.samples]).astype(np.float64)
            value = float(np.percentile(values, percentile)) if values.size else self.max
            return value if value > 0 else self.max
        return self.max * fraction


def _samples(calibration: Any) -> int | None:
    """How many samples a DataLoader (or one batch) holds, if it says; for the progress bar."""
    dataset = getattr(calibration, "dataset", None)
    try:
        return len(dataset) if dataset is not None else int(calibration.shape[0])
    except (TypeError, AttributeError, IndexError):
        return None


def _calibrate(net: _Net, plan: _Plan, first: Any, rest: Iterable[Any], *, percentile: bool,
               show: bool | None, total: int | None) -> dict[str, _Stats]:
    """Run the folded network over the calibration data; statistics per neuron layer (and of
    ``relu`` of the output for a spiking readout, under ``"output"``)."""
    import torch

    keys = plan.neurons + (["output"] if plan.spiking_output else [])
    stats = {key: _Stats(percentile, seed=i) for i, key in enumerate(keys)}
    device = next(s.module.weight.device for s in net.steps.values() if s.kind == "weight")
    shape = tuple(first.shape[1:])

    def seen(key: str, y: Any) -> None:
        if not bool(torch.isfinite(y).all()):
            raise HubError(f"the output of {net.steps[key].name!r} has NaN or infinite values on "
                           f"calibration batch {index}; check the weights and the input",
                           node=net.steps[key].name)
        if key in stats:
            stats[key].add(y)

    with _Progress(show, total) as bar, torch.no_grad():
        for index, x in enumerate(_chain([first], rest)):
            if tuple(x.shape[1:]) != shape:
                raise HubError(f"calibration batch {index} has samples of shape "
                               f"{list(x.shape[1:])}, the first had {list(shape)}")
            y = net.run(x.to(device), seen)
            if plan.spiking_output:
                stats["output"].add(torch.relu(y))
            bar(x.shape[0])
    return stats


def _chain(*parts: Iterable[Any]) -> Iterable[Any]:
    for part in parts:
        yield from part


class _Progress:
    """A rich progress bar over the calibration samples, on stderr: shown on a terminal, or
    wherever ``show`` is true; a finished bar stays only where it cannot be redrawn."""

    def __init__(self, show: bool | None, total: int | None) -> None:
        self.show = show
        self.total = total
        self.bar = None

    def __enter__(self) -> Any:
        from rich.console import Console

        console = Console(stderr=True)
        show = console.is_terminal if self.show is None else bool(self.show)
        if not show:
            return lambda n: None
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("calibrating"), BarColumn(),
                            TextColumn("{task.completed} samples"), TimeElapsedColumn(),
                            console=console, transient=console.is_terminal)
        self.bar.start()
        task = self.bar.add_task("calibrating", total=self.total)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()


# -- building the graph ------------------------------------------------------------------------


def _parse_mode(mode: Any) -> tuple[float | None, float | None]:
    """``(fraction of the max, None)`` or ``(None, percentile)``."""
    if isinstance(mode, str):
        text = mode.strip().lower()
        if text == "max":
            return 1.0, None
        match = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*%", text)
        if match:
            p = float(match.group(1))
            if 0 < p <= 100:
                return None, p
        raise HubError(f"mode={mode!r}: expected {MODES_HELP}")
    if isinstance(mode, (int, float)) and not isinstance(mode, bool) \
            and math.isfinite(mode) and 0 < mode <= 1:
        return float(mode), None
    raise HubError(f"mode={mode!r}: expected {MODES_HELP}")
