"""The neuron-family rows of bench/neurons.py: each family against a peer's own neuron.

Each case is a peer framework's neuron layer (Norse's LSNN, Izhikevich and LIFAdEx, SpikingJelly's
EIF, QIF, Izhikevich and SynapseFilter, snnTorch's Alpha), run as its users run it (the format's
own way), and the same layer imported with ``hub.load`` and run by the hub: on its default path
(the family's fused kernel) and on the reference (``backend="torch"``). Here the peer and the hub
compute the same neuron, so the rows compare like with like.

    .venv/bin/python bench/family_cases.py     # only these rows, at T=100, batch 32, 4096
"""

from __future__ import annotations

import sys
from typing import Callable

import torch

import hub


def _lsnn():
    import norse.torch as norse
    from norse.torch.functional.lsnn import LSNNParameters

    return norse.LSNN(LSNNParameters(v_th=torch.tensor(0.5)), dt=1e-3)


def _norse_izhikevich():
    import norse.torch as norse

    return norse.Izhikevich(norse.tonic_spiking)


def _adex():
    import norse.torch as norse

    return norse.LIFAdEx(norse.LIFAdExParameters())


def _sj(name: str, **fields):
    def build():
        from spikingjelly.activation_based import layer, neuron

        module = getattr(neuron, name, None) or getattr(layer, name)
        return module(step_mode="m", **fields)
    return build


def _alpha():
    import snntorch

    return snntorch.Alpha(alpha=0.8, beta=0.6, threshold=0.5, init_hidden=True)


#: case name -> (peer format, the peer's layer, input scale): the input is uniform in
#: [0, scale), enough to make each neuron fire.
CASES: dict[str, tuple[str, Callable[[], torch.nn.Module], float]] = {
    "ALIF: Norse LSNN": ("norse", _lsnn, 2.0),
    "Izhikevich: Norse Izhikevich": ("norse", _norse_izhikevich, 20.0),
    "AdExLIF: Norse LIFAdEx": ("norse", _adex, 2.0),
    "EIF: SpikingJelly EIFNode": ("spikingjelly", _sj("EIFNode", tau=2.0, delta_T=0.5,
                                                      theta_rh=0.75, v_reset=-0.125), 2.0),
    "QIF: SpikingJelly QIFNode": ("spikingjelly", _sj("QIFNode", tau=4.0, v_c=0.5, a0=0.5,
                                                      v_reset=-0.125), 2.0),
    "QIF: SpikingJelly IzhikevichNode": ("spikingjelly", _sj(
        "IzhikevichNode", tau=2.0, a0=0.5, v_c=0.5, v_rest=-0.125, tau_w=4.0, a=0.25, b=0.5),
        2.0),
    "SynapseFilter: SpikingJelly SynapseFilter": ("spikingjelly", _sj("SynapseFilter", tau=2.0),
                                                  1.0),
    "AlphaLIF: snnTorch Alpha": ("snntorch", _alpha, 1.0),
}

def peer_runner(peer: str, model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The peer's layer over a sequence as its users run it, with gradients (the formats'
    runners run without them)."""
    if peer == "norse":  # Norse's time-looping modules take the sequence, return (out, state)
        return lambda x: model(x)[0]
    if peer == "spikingjelly":
        from spikingjelly.activation_based import functional

        def run_sj(x: torch.Tensor) -> torch.Tensor:
            functional.reset_net(model)
            return model(x)
        return run_sj

    def run_snntorch(x: torch.Tensor) -> torch.Tensor:
        model.reset_mem()
        return torch.stack([model(xt) for xt in x.unbind(0)])
    return run_snntorch


HEADER = ("family: peer neuron", "impl", "path", "fwd ms", "fwd+bwd ms", "fwd vs peer",
          "fwd vs reference")


def _hub_runner(graph: hub.Graph, backend: str) -> tuple[Callable, hub.Simulator]:
    sim = hub.Simulator(graph, backend=backend)

    def run(x: torch.Tensor) -> torch.Tensor:
        sim.reset()
        return sim(x)
    return run, sim


def measure(steps: int, batch: int, width: int, repeat: int,
            best: Callable[[Callable[[], object], int], float]) -> list[dict]:
    """Forward and forward+backward times of each case's peer, hub default and hub reference."""
    from neurons import train_step  # bench/ is on the path; neurons imports this module

    rows = []
    for name, (peer, build, scale) in CASES.items():
        print(f"  family {name} ...", file=sys.stderr)
        try:
            model = build()
            graph = hub.load(model, input_shape=(width,))
        except Exception as error:  # a peer missing or changed must not stop the others
            print(f"  {name}: skipped ({type(error).__name__}: {error})", file=sys.stderr)
            continue
        torch.manual_seed(0)
        x = torch.rand(steps, batch, width) * scale
        default, sim = _hub_runner(graph, "auto")
        reference, _ = _hub_runner(graph, "torch")
        runners = {"hub default": default, "hub reference": reference,
                   peer: peer_runner(peer, model)}
        case = []
        for impl, run in runners.items():
            with torch.no_grad():
                forward = best(lambda run=run: run(x), repeat)
            backward = best(train_step(run, x), max(1, repeat - 1))
            path = (next(iter(sim.paths.values()), "-") if impl == "hub default"
                    else "reference" if impl == "hub reference" else "-")
            case.append({"case": name, "impl": impl, "path": path, "forward": forward,
                         "backward": backward})
        by = {r["impl"]: r for r in case}
        for row in case:
            row["vs_peer"] = by[peer]["forward"] / row["forward"]
            row["vs_reference"] = by["hub reference"]["forward"] / row["forward"]
        rows += case
    return rows


def cells(row: dict) -> list[str]:
    return [row["case"], row["impl"], row["path"], f"{row['forward'] * 1e3:.1f}",
            f"{row['backward'] * 1e3:.1f}", f"{row['vs_peer']:.1f}x",
            f"{row['vs_reference']:.1f}x"]


def markdown(rows: list[dict], size: tuple[int, int, int]) -> str:
    if not rows:
        return ""
    out = ["", "## Neuron families", "",
           f"Each family at T={size[0]}, batch {size[1]}, {size[2]} neurons, float32: a peer's "
           "own neuron layer (run as its users run it), and the same "
           "layer imported with `hub.load` and run by the hub's default path (the family's "
           "fused kernel, bit-identical to the reference) and by the reference "
           "(`backend=\"torch\"`). Cases from `bench/family_cases.py`. Forward+backward "
           "(the gradient of `out.sum()` with respect to the input) gains less than forward: the "
           "fused path saves every state of every step for the backward pass.",
           "",
           "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    out += ["| " + " | ".join(cells(r)) + " |" for r in rows]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    from neurons import best, table

    found = measure(100, 32, 4096, 3, best)
    print(table(found, HEADER, cells))
