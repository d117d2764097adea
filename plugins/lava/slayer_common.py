"""What the slayer import and export share: slayer's constants and how a block network looks."""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import torch

import hub


#: slayer's CUBA neuron keeps its state scaled by ``scale`` (``w_scale``, 1 << 6 by default)
#: relative to the hardware's threshold mantissa, and its weights on a grid of ``2 / scale``.
DEFAULT_SCALE = 1 << 6
#: slayer's ``quantize_8bit`` keeps even weight mantissas in [-256, 254].
WEIGHT_RANGE = (-256, 254)
#: The bias exponent of slayer's CUBA neuron's bias (its norm's mean, in threshold units).
BIAS_EXP = 6
#: The ``max_delay`` of the axonal delays of slayer's CUBA blocks (``block.cuba``).
AXON_MAX_DELAY = 62
#: Loihi's (and slayer's ``p_scale``) unit decay: decays are integers 0 to 4096.
DECAY_UNITY = 1 << 12
#: The canonical neurons of slayer's mapped block families: cuba, alif.
NEURONS = (hub.LoihiCUBA, hub.ALIF)
#: A slayer neuron's persistent state buffers (cuba has the first two, alif all four).
STATES = ("current_state", "voltage_state", "threshold_state", "refractory_state")


def _slayer_here() -> bool:
    try:
        return importlib.util.find_spec("lava.lib.dl.slayer") is not None
    except (ImportError, ValueError):
        return False


def _is_slayer_block(module: Any) -> bool:
    return type(module).__module__.startswith(("lava.lib.dl.slayer.block",
                                               "lava.lib.dl.bootstrap.block"))


def _is_bootstrap(block: Any) -> bool:
    """A lava-dl bootstrap block (``bootstrap.block.cuba``): a slayer cuba block whose forward
    takes a ``mode`` (ANN by default); its SNN mode is the slayer block's forward."""
    return type(block).__module__.startswith("lava.lib.dl.bootstrap.block")


def _blocks(obj: Any) -> list[Any] | None:
    """The blocks of a slayer network: a ModuleList/Sequential of blocks, or ``obj.blocks``."""
    if isinstance(obj, (torch.nn.ModuleList, torch.nn.Sequential)):
        blocks = list(obj)
    elif isinstance(getattr(obj, "blocks", None), torch.nn.ModuleList):
        blocks = list(obj.blocks)
    else:
        return None
    if not blocks or not all(_is_slayer_block(b) for b in blocks):
        return None
    return blocks


def _integral(values: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(values)) and np.all(values == np.round(values)))



def _slayer() -> Any:
    from lava.lib.dl import slayer

    return slayer


def expect_neuron(neuron: Any, family: str, label: str) -> None:
    """Refuse a neuron that is not slayer's ``neuron.<family>.Neuron``, naming the field."""
    if type(neuron).__name__ != "Neuron" or \
            not type(neuron).__module__.endswith(f"neuron.{family}"):
        raise hub.UnsupportedError(f"{type(neuron).__module__}.{type(neuron).__name__} is not "
                                   f"slayer's {label} neuron", field="neuron")
