"""Train a convolutional SNN for Loihi on scikit-learn's digits, then run it in Lava.

Run it from the repository root::

    .venv/bin/python examples/loihi_digits.py     # 50 epochs: about a minute of training

The model is built from ``hub.qat`` blocks in plain torch: a convolution, sum pooling, a second
convolution and a dense readout, each followed by Loihi's CUBA neuron. Their forward computes
Loihi's integer arithmetic (8-bit weight mantissas, 12-bit decays, 24-bit state), and surrogate
gradients with straight-through weight rounding train them. (snnTorch or SpikingJelly could
host the blocks, but would add nothing here: their own neurons compute in float, not as Loihi
does, and the blocks bring their own surrogate and state handling.)

The digits (8x8 images, pixel values 0..16) enter as deterministic rate-coded spikes: pixel
``p`` spikes in step ``t`` when ``floor((t + 1) * p / 16)`` steps up, so every run sees the same
input. The class is the output neuron with most spikes. After training, the script exports the
model with ``hub.qat.to_graph`` and ``hub.save(graph, to="netx")``, and prints the test accuracy
of (a) the trained model's own forward, (b) ``hub.simulate`` of the exported graph, (c) Lava's
netx run on its Loihi fixed-point simulator (``hub_plugins.lava.run_netx``, the whole test set
in one batched simulation), which are identical, and the wall time of the Lava run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import hub
from hub import qat

#: The input's size: one channel of 8x8 pixels.
SHAPE = (1, 8, 8)
#: Adam's learning rate, for weights whose mantissa is ``64 * weight``: ~0.13 mantissa steps.
LR = 2e-3


def encode(images: np.ndarray, steps: int) -> torch.Tensor:
    """Deterministic rate code ``[T, N, 1, 8, 8]``: pixel ``p`` (0..16) spikes ``p * T / 16``
    times, evenly spread."""
    p = torch.as_tensor(images, dtype=torch.float64).reshape(-1, *SHAPE)
    t = torch.arange(steps + 1, dtype=torch.float64).reshape(-1, 1, 1, 1, 1)
    level = torch.floor(t * p / 16)
    return (level[1:] - level[:-1]).float()


def build(channels: int = 8) -> nn.Sequential:
    """conv 3x3 -> pool 2x2 -> conv 3x3 -> dense, each into a Loihi neuron."""
    return nn.Sequential(
        qat.LoihiConv2d(1, channels, 3, padding=1, init_gain=2.0),
        qat.LoihiNeuron(i_decay=4096, v_decay=1024, threshold=48),
        qat.SumPool2d(2),
        # any spike of the four below passes: a max pool of binary spikes
        qat.LoihiNeuron(i_decay=4096, v_decay=4096, threshold=0),
        qat.LoihiConv2d(channels, 2 * channels, 3, padding=1, init_gain=2.0),
        qat.LoihiNeuron(i_decay=4096, v_decay=1024, threshold=48),
        qat.Flatten(),
        qat.LoihiDense(2 * channels * 16, 10, init_gain=2.0),
        qat.LoihiNeuron(i_decay=4096, v_decay=512, threshold=32),
    )


def accuracy(spikes: Any, labels: np.ndarray) -> float:
    """The fraction of samples whose most-spiking output is the label (``spikes``: [T, N, 10])."""
    counts = torch.as_tensor(np.asarray(spikes)).sum(0)
    return float((counts.argmax(1).numpy() == labels).mean())


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: float, seconds: float,
          batch: int = 64, lr: float = LR, seed: int = 0) -> float:
    """Adam on the cross-entropy of the spike counts for ``epochs``, or until ``seconds`` have
    passed (at least one batch); returns the epochs run."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    start, batches = time.perf_counter(), 0
    order = torch.randperm(x.shape[1], generator=generator).split(batch)
    while not batches or (batches < epochs * len(order)
                          and time.perf_counter() - start < seconds):
        if batches and batches % len(order) == 0:
            order = torch.randperm(x.shape[1], generator=generator).split(batch)
        index = order[batches % len(order)]
        counts = model(x[:, index]).sum(0)
        loss = nn.functional.cross_entropy(counts * 0.5, y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        batches += 1
    return batches / len(order)


def run(epochs: float = 50, seconds: float = 90.0, steps: int = 16, channels: int = 8,
        lava: bool = True, out: Path | None = None, limit: int | None = None,
        seed: int = 0) -> dict[str, Any]:
    """Train, export, run; the accuracies and timings as a dict (``limit``: samples per split,
    for a quick run)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    torch.manual_seed(seed)
    digits = load_digits()
    train_images, test_images, train_labels, test_labels = train_test_split(
        digits.data, digits.target, test_size=0.25, random_state=seed, stratify=digits.target)
    if limit:
        train_images, train_labels = train_images[:limit], train_labels[:limit]
        test_images, test_labels = test_images[:limit], test_labels[:limit]
    x_train, x_test = encode(train_images, steps), encode(test_images, steps)
    y_train = torch.as_tensor(train_labels)

    model = build(channels)
    started = time.perf_counter()
    ran = train(model, x_train, y_train, epochs, seconds, seed=seed)
    result: dict[str, Any] = {"epochs": ran, "train_s": time.perf_counter() - started,
                              "train_samples": len(train_labels),
                              "test_samples": len(test_labels), "steps": steps}

    with torch.no_grad():
        own = model(x_test)
    graph = qat.to_graph(model, SHAPE)
    simulated = hub.simulate(graph, x_test)
    path = Path(out or tempfile.mkdtemp()) / "digits.net"
    hub.save(graph, to="netx", out=path, force=True)
    result.update(path=str(path), model=accuracy(own, test_labels),
                  hub=accuracy(simulated, test_labels),
                  hub_identical=bool(torch.equal(own, simulated)))
    if lava:
        from hub_plugins.lava import run_netx

        run_netx(path, x_test[:, :1])  # start the worker, so the timing is the run alone
        started = time.perf_counter()
        in_lava = run_netx(path, x_test)
        result.update(lava=accuracy(in_lava, test_labels),
                      lava_s=time.perf_counter() - started,
                      lava_identical=bool(np.array_equal(np.asarray(in_lava), own.numpy())))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=float, default=50, help="training epochs")
    parser.add_argument("--seconds", type=float, default=90.0,
                        help="stop training earlier than that after this long")
    parser.add_argument("--steps", type=int, default=16, help="time steps per sample")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (the network is small: one thread is about as fast "
                        "as several, and far faster than two on shared cores)")
    parser.add_argument("--no-lava", action="store_true", help="skip the Lava run")
    parser.add_argument("--out", type=Path, help="directory for digits.net (default: temporary)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    r = run(args.epochs, args.seconds, args.steps, lava=not args.no_lava, out=args.out)
    print(f"trained {r['epochs']:.1f} epochs in {r['train_s']:.0f} s on {r['train_samples']} "
          f"digits ({r['steps']} steps each); test set: {r['test_samples']} digits")
    print(f"(a) the trained model's forward:  {r['model']:.2%}")
    print(f"(b) hub.simulate of the graph:    {r['hub']:.2%}  (same spikes: {r['hub_identical']})")
    if "lava" in r:
        print(f"(c) Lava netx, Loihi simulator:   {r['lava']:.2%}  (same spikes: "
              f"{r['lava_identical']}; {r['lava_s']:.1f} s for the test set)")
    print(f"netx file: {r['path']}")


if __name__ == "__main__":
    main()
