"""Train a small snnTorch network on scikit-learn's digits, convert it to Norse and back.

Run it from the repository root::

    .venv/bin/python examples/snntorch_digits.py

The network is what an snnTorch user writes: ``nn.Sequential`` of ``nn.Linear`` layers and
``snn.Leaky`` neurons (``init_hidden=True``), trained for a few seconds with a surrogate gradient
on the spike counts. The digits (8x8 images, pixel values 0..16) enter as rate-coded spikes. After
training, the weights are rounded to multiples of 1/64: with spike inputs, ``beta = 0.5`` and 8
steps every membrane value then has few enough bits that float32 computes it exactly in any
order, so snnTorch, the hub and Norse, which write the same update as different float
expressions, must produce the very same spikes (the conformance suite's exact tier, on a trained
model). The script converts the model to Norse with ``hub.convert``, back to snnTorch, runs each
in its own framework, and prints the three test accuracies, which are identical.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn

import hub

#: Weights are rounded to multiples of this after training (see the module docstring).
QUANTUM = 2.0 ** -6


def encode(images: np.ndarray, steps: int, seed: int) -> torch.Tensor:
    """Rate-coded spikes ``[T, N, 64]``: pixel value / 16 is the firing probability per step."""
    generator = torch.Generator().manual_seed(seed)
    p = torch.as_tensor(images / 16.0, dtype=torch.float32)
    return (torch.rand((steps, *p.shape), generator=generator) < p).float()


def build(hidden: int) -> nn.Sequential:
    import snntorch as snn

    def leaky(**options: Any) -> nn.Module:
        # reset to zero in the spiking step: Norse's LIF resets the same way
        return snn.Leaky(beta=0.5, reset_mechanism="zero", reset_delay=False, init_hidden=True,
                         **options)

    return nn.Sequential(nn.Linear(64, hidden), leaky(), nn.Linear(hidden, 10),
                         leaky(output=True))


def counts(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Spike counts per class of an snnTorch model over ``x`` ``[T, N, 64]`` (with gradients)."""
    for module in model.modules():
        if hasattr(module, "reset_mem"):
            module.reset_mem()
    return torch.stack([model(xt)[0] for xt in x]).sum(0)


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> None:
    torch.manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(epochs):
        for batch in torch.randperm(x.shape[1]).split(128):
            loss = nn.functional.cross_entropy(counts(model, x[:, batch]), y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.round(p / QUANTUM) * QUANTUM)


def predict(fmt: str, model: Any, x: torch.Tensor) -> torch.Tensor:
    """Class predictions (most output spikes; ties go to the lower class) of a model run in its
    own framework through the format's runtime."""
    spikes = torch.as_tensor(hub.plugins().format(fmt).run(model, x))
    return spikes.sum(0).argmax(1)


def convert_and_score(epochs: int = 4, steps: int = 8, hidden: int = 64,
                      seed: int = 0) -> dict[str, Any]:
    """Train, convert snnTorch -> Norse -> snnTorch, and score each in its own framework."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    train_x, test_x, train_y, test_y = train_test_split(
        digits.data, digits.target, test_size=0.25, random_state=seed)
    x_train, x_test = encode(train_x, steps, seed), encode(test_x, steps, seed + 1)
    y_train, y_test = torch.as_tensor(train_y), torch.as_tensor(test_y)

    torch.manual_seed(seed)
    model = build(hidden)
    start = time.perf_counter()
    train(model, x_train, y_train, epochs, seed)
    seconds = time.perf_counter() - start

    norse_model = hub.convert(model, to="norse")  # snnTorch -> canonical graph -> Norse
    back = hub.convert(norse_model, to="snntorch")  # and back

    predictions = {"original": predict("snntorch", model, x_test),
                   "norse": predict("norse", norse_model, x_test),
                   "back": predict("snntorch", back, x_test)}
    accuracy = {k: float((v == y_test).float().mean()) for k, v in predictions.items()}
    return {"train_seconds": seconds, "original": accuracy["original"],
            "converted": accuracy["norse"], "back": accuracy["back"],
            "identical_predictions": all(torch.equal(predictions["original"], v)
                                         for v in predictions.values()),
            "norse_model": norse_model, "back_model": back}


def main() -> None:
    result = convert_and_score()
    print(f"trained in {result['train_seconds']:.1f} s")
    print(f"test accuracy, snnTorch (original):      {result['original']:.4f}")
    print(f"test accuracy, Norse (converted):        {result['converted']:.4f}")
    print(f"test accuracy, snnTorch (brought back):  {result['back']:.4f}")
    print(f"identical predictions on every test digit: {result['identical_predictions']}")


if __name__ == "__main__":
    main()
