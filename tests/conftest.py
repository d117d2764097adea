"""Shared fixtures: the NIR paper's files, and one example of every node type."""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

import hub

ROOT = Path(__file__).resolve().parents[1]
PAPER = Path(os.environ.get("HUB_EXTERNAL", ROOT.parent / "shared" / "external")) / "nir-paper"

THIRDPARTY = Path(__file__).parent / "thirdparty"
#: The third-party packages' own tests run in their own pytest process, with the package installed.
collect_ignore = ["thirdparty"]
#: Throwaway third-party plugin packages: a good one, broken ones, and a deliberately wrong one.
PACKAGES = ("toy_plugin", "broken_plugin", "misbehaving_plugin", "wrong_plugin")

rng = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _reseed(request):
    """Each test draws the same values from :func:`dyadic` however the suite is ordered or
    selected: the shared generator restarts from a seed derived from the test's id."""
    seed = zlib.crc32(request.node.nodeid.encode())
    rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state


def dyadic(*shape: int, scale: int = 8) -> np.ndarray:
    """Random multiples of 1/scale in [-1, 1]: exact in float32 under any summation order."""
    return (rng.integers(-scale, scale + 1, size=shape) / scale).astype(np.float32)


#: One instance of every registered node type, with the input shape it expects.
EXAMPLES: dict[str, tuple[hub.Node, tuple[int, ...]]] = {
    "Input": (hub.Input(shape=(3,)), (3,)),
    "Output": (hub.Output(), (3,)),
    "Add": (hub.Add(), (3,)),
    "Affine": (hub.Affine(weight=dyadic(4, 3), bias=dyadic(4)), (3,)),
    "Linear": (hub.Linear(weight=dyadic(4, 3)), (3,)),
    "Conv1d": (hub.Conv1d(weight=dyadic(4, 2, 3), bias=dyadic(4), stride=(2,), padding=(1,)),
               (2, 9)),
    "Conv2d": (hub.Conv2d(weight=dyadic(4, 1, 3, 3), bias=dyadic(4), padding=(1, 1),
                          dilation=(1, 2), groups=2), (2, 6, 6)),
    "ConvTranspose2d": (hub.ConvTranspose2d(weight=dyadic(2, 2, 3, 3), bias=dyadic(4),
                                            stride=(2, 2), padding=(1, 1), output_padding=(1, 0),
                                            groups=2), (2, 3, 4)),
    "SumPool2d": (hub.SumPool2d(kernel_size=(2, 2), stride=(2, 2)), (2, 4, 4)),
    "AvgPool2d": (hub.AvgPool2d(kernel_size=(2, 2), stride=(1, 1), padding=(1, 1)), (2, 4, 4)),
    "MaxPool2d": (hub.MaxPool2d(kernel_size=(3, 3), stride=(2, 2), padding=(1, 1)), (2, 5, 5)),
    "Flatten": (hub.Flatten(start_dim=1), (2, 3, 4)),
    "Scale": (hub.Scale(scale=dyadic(3)), (3,)),
    "Delay": (hub.Delay(delay=np.array([0, 1, 3])), (3,)),
    "Threshold": (hub.Threshold(threshold=dyadic(3), comparison=">="), (3,)),
    "IF": (hub.IF(threshold=0.5, gain=dyadic(3), reset="subtract", comparison=">="), (3,)),
    "LIF": (hub.LIF(beta=0.75, gain=0.5, v_leak=0.125, threshold=0.25, v_reset=-0.125,
                    reset_timing="same", refractory=2, delay=1), (3,)),
    "CubaLIF": (hub.CubaLIF(alpha=np.array([0.5, 0.25, 0.75]), beta=0.875, current_gain=2.0,
                            threshold=0.5, reset="subtract", reset_timing="next",
                            current_order="previous", spike_mode="multi"), (3,)),
    "LI": (hub.LI(beta=0.5, gain=0.25, v_leak=0.5, v_init=1.0), (3,)),
    "Integrator": (hub.Integrator(gain=dyadic(3)), (3,)),
    "CubaLI": (hub.CubaLI(alpha=0.5, beta=0.25, gain=2.0), (3,)),
    "Bias": (hub.Bias(bias=dyadic(3)), (3,)),
    "ReLU": (hub.ReLU(), (3,)),
    "Reshape": (hub.Reshape(shape=(3, 2)), (2, 3)),
    "BatchNorm": (hub.BatchNorm(mean=dyadic(2), var=np.array([0.25, 1.0], np.float32),
                                weight=dyadic(2), bias=dyadic(2), eps=0.0), (2, 3)),
    "AdaptiveAvgPool2d": (hub.AdaptiveAvgPool2d(output_size=(2, 3)), (2, 4, 6)),
    "Vote": (hub.Vote(size=2), (6,)),
    "Mul": (hub.Mul(), (3,)),
    "Concat": (hub.Concat(dim=1), (2, 3)),
    "LoihiCUBA": (hub.LoihiCUBA(i_decay=[0, 1024, 4096], v_decay=256, threshold=3, bias=1,
                                refractory=1), (3,)),
    "ALIF": (hub.ALIF(alpha=0.5, beta=0.75, gain=0.25, threshold=0.5, threshold_decay=0.875,
                      threshold_step=0.25, current_order="previous", v_reset=-0.125), (3,)),
    "Izhikevich": (hub.Izhikevich(rate=0.25, recovery_rate=0.005, coupling=0.2, u_jump=6.0),
                   (3,)),
    "QIF": (hub.QIF(tau=2.0, coupling=0.25, w_jump=0.5, tau_w=4.0, reset="subtract"), (3,)),
    "AlphaLIF": (hub.AlphaLIF(alpha=0.75, beta=0.5, scale=np.float32(2.7095113), threshold=0.5),
                 (3,)),
    "SynapseFilter": (hub.SynapseFilter(rate=np.array([0.5, 0.25, 0.125])), (3,)),
    "AdExLIF": (hub.AdExLIF(rate=0.25, syn_rate=0.5, ada_rate=0.125, coupling=0.5, jump=0.25),
                (3,)),
    "EIF": (hub.EIF(tau=2.0, reset="subtract", v_init=-0.25), (3,)),
    "SigmaDelta": (hub.SigmaDelta(threshold=0.25, bias=dyadic(3), activation="identity"), (3,)),
    "Delta": (hub.Delta(threshold=[0.25, 0.5, 0.75], cum_error="on", resolution=1 / 64), (3,)),
    "Sigma": (hub.Sigma(), (3,)),
    "Quantize": (hub.Quantize(grid=0.25, low=-1.0, high=1.5), (3,)),
    "Resonator": (hub.Resonator(sin_decay=np.array([0.5, 0.25, -0.125]), cos_decay=0.75,
                                threshold=0.25, spike_rule="imag", reset="imag",
                                imag_reset=0.125, threshold_step=0.25, threshold_decay=0.5,
                                refractory_decay=0.5, refractory_scale=2.0), (6,)),
}


def single(node: hub.Node, shape: tuple[int, ...]) -> hub.Graph:
    """A graph that feeds ``node`` from an input of ``shape`` (twice, for an operand node such
    as ``Mul``: the input and its negation)."""
    if isinstance(node, hub.Input):
        return hub.Graph.chain(("input", node))
    graph = hub.Graph.chain(("input", hub.Input(shape=shape)), ("node", node))
    if node.operands:
        graph.add("negate", hub.Scale(scale=-1.0)).connect("input", "negate")
        graph.connect("negate", "node")
    return graph


@pytest.fixture
def one_step_gradients(monkeypatch) -> list[bool]:
    """Per backward pass of a fused kernel (canonical or family): whether it was handed one
    step's output gradient rather than one per step (recorded off ``cpu._gradient``)."""
    from hub.kernels import cpu

    taken: list[bool] = []
    gradient = cpu._gradient

    def recording(gout, like, kernel):
        handed = gradient(gout, like, kernel)
        taken.append(handed.dim() < like.dim())
        return handed
    monkeypatch.setattr(cpu, "_gradient", recording)
    return taken


@pytest.fixture
def paper() -> Path:
    if not PAPER.is_dir():
        pytest.skip(f"the NIR paper's files are not at {PAPER} (shared/external beside the "
                    "checkout, or set HUB_EXTERNAL)")
    return PAPER


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    """The throwaway plugin packages, pip-installed into a directory of their own."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(target), *(str(THIRDPARTY / p) for p in PACKAGES)],
        check=True, capture_output=True, cwd=tmp_path_factory.getbasetemp())
    return target
