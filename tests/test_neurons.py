"""The neuron family's discrete-time semantics, pinned down step by step (hub/neurons.py).

Every expectation is written out by hand (dyadic numbers, exact in float32) or computed by a
small numpy loop in this file, never by the code under test. Read each test as a worked example
of one line of the module docstring of ``hub.neurons``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hub
from hub.surrogate import SLOPE

#: A graded neuron that always fires and never resets emits its voltage after integration: a
#: probe for the voltage of a spiking neuron type.
PROBE = dict(spike_mode="graded", threshold=-64.0, reset="none")


def graph_of(node: hub.Node, n: int) -> hub.Graph:
    return hub.Graph.chain(hub.Input(shape=(n,)), node)


def run(node: hub.Node, x) -> list:
    """Simulate ``node`` on ``x``, a list of steps (a number, or a list with one per neuron).

    Batch size 1. Returns one value per step, or one list per step for several neurons.
    """
    x = torch.tensor(x, dtype=torch.float32)
    single = x.dim() == 1
    if single:
        x = x[:, None]
    y = hub.simulate(graph_of(node, x.shape[1]), x[:, None, :])[:, 0]
    return y[:, 0].tolist() if single else y.tolist()


def dyadic(rng: np.random.Generator, *shape: int, scale: int = 8, low: int = -1,
           high: int = 1) -> np.ndarray:
    """Random multiples of 1/scale in [low, high], exact in float32."""
    return (rng.integers(low * scale, high * scale + 1, size=shape) / scale).astype(np.float32)


# -- 5. spike: the comparison ---------------------------------------------------------------------


@pytest.mark.parametrize("comparison, expected", [
    (">", [0, 1, 0, 1]),   # v: 0.5 (not > 0.5), 0.75 -> reset, 0.25, 1.0
    (">=", [1, 0, 1, 1]),  # v: 0.5 -> reset, 0.25, 0.5 -> reset, 0.75
])
def test_comparison_at_exactly_threshold(comparison, expected):
    """``v == threshold`` spikes only with ``comparison=">="``."""
    node = hub.IF(threshold=0.5, comparison=comparison)
    assert run(node, [0.5, 0.25, 0.25, 0.75]) == expected


# -- 6. reset in the spiking step -----------------------------------------------------------------


@pytest.mark.parametrize("reset, expected", [
    ("zero", [1, 0, 0, 0]),      # v: 1.5 -> 0, 0.75, 1.0, 1.0
    ("subtract", [1, 1, 0, 0]),  # v: 1.5 -> 0.5, 1.25 -> 0.25, 0.5, 0.5
    ("none", [1, 1, 1, 1]),      # v: 1.5, 2.25, 2.5, 2.5 (stays above threshold)
])
def test_reset_modes(reset, expected):
    """``zero`` sets v to v_reset, ``subtract`` removes the threshold, ``none`` leaves v."""
    node = hub.IF(threshold=1.0, reset=reset)
    assert run(node, [1.5, 0.75, 0.25, 0.0]) == expected


@pytest.mark.parametrize("v_reset, expected", [
    (0.0, [1, 0, 1, 0]),    # v: 1.5 -> 0, 0.75, 1.5 -> 0, 0.75
    (-0.5, [1, 0, 0, 1]),   # v: 1.5 -> -0.5, 0.25, 1.0, 1.75
    (0.5, [1, 1, 1, 1]),    # v: 1.5 -> 0.5, 1.25 -> 0.5, 1.25 -> 0.5, 1.25
])
def test_reset_zero_sets_v_reset(v_reset, expected):
    """``reset="zero"`` puts the voltage at ``v_reset`` (not necessarily 0) after a spike."""
    node = hub.IF(threshold=1.0, reset="zero", v_reset=v_reset)
    assert run(node, [1.5, 0.75, 0.75, 0.75]) == expected


def test_graded_probe_shows_the_voltage_before_the_reset():
    """A graded spike carries the voltage of step 5, before step 6 resets it."""
    node = hub.LIF(beta=0.5, threshold=1.0, reset="zero", v_reset=0.25, spike_mode="graded")
    # v: 1.5 -> 0.25, 0.125 + 0.5 = 0.625, 0.3125 + 1.0 = 1.3125 -> 0.25
    assert run(node, [1.5, 0.5, 1.0]) == [1.5, 0.0, 1.3125]


# -- 2 and 4. reset_timing="next" (snnTorch's reset_delay) ----------------------------------------


@pytest.mark.parametrize("timing, spikes, graded", [
    # same: v 2 -> 1; 0.5 + 1 = 1.5 -> 0.5; 0.25 + 1 = 1.25 -> 0.25; 0.125
    ("same", [1, 1, 1, 0], [2.0, 1.5, 1.25, 0.0]),
    # next: v 2; 1 + 1 - 1 = 1 (no spike); 0.5 + 1 = 1.5; 0.75 - 1 = -0.25
    ("next", [1, 0, 1, 0], [2.0, 0.0, 1.5, 0.0]),
])
def test_reset_next_subtracts_the_threshold_undecayed_in_the_next_step(timing, spikes, graded):
    """``next`` + ``subtract``: ``v = beta * v + x - threshold * s_prev``; ``same`` decays it."""
    x = [2.0, 1.0, 1.0, 0.0]
    common = dict(beta=0.5, threshold=1.0, reset="subtract", reset_timing=timing)
    assert run(hub.LIF(**common), x) == spikes
    assert run(hub.LIF(**common, spike_mode="graded"), x) == graded


@pytest.mark.parametrize("timing", ["same", "next"])
def test_reset_zero_next_gives_the_same_spikes_as_same(timing):
    """``zero`` applied before the next decay or right away: the same spikes and spike voltages."""
    x = [2.0, 1.0, 0.75, 1.5]
    common = dict(beta=0.5, threshold=1.0, reset="zero", v_reset=0.25, reset_timing=timing)
    # v: 2 -> 0.25; 0.125 + 1 = 1.125 -> 0.25; 0.125 + 0.75 = 0.875; 0.4375 + 1.5 = 1.9375
    assert run(hub.LIF(**common), x) == [1, 1, 0, 1]
    assert run(hub.LIF(**common, spike_mode="graded"), x) == [2.0, 1.125, 0.0, 1.9375]


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_reset_next_is_snntorch_reset_delay(reset):
    """``reset_timing="next"`` is snnTorch's ``Leaky`` with ``reset_delay=True``, bit for bit."""
    rng = np.random.default_rng(1)
    x = dyadic(rng, 40, 3, low=0, high=2)
    beta, threshold = np.float32(0.75), np.float32(1.0)
    mem, reset_now, expected = np.zeros(3, np.float32), np.zeros(3, np.float32), []
    for xt in x:  # snnTorch: the reset is the previous step's spike, applied before/after decay
        if reset == "zero":
            mem = (1 - reset_now) * mem
            mem = beta * mem + xt
        else:
            mem = beta * mem + xt - reset_now * threshold
        spk = (mem > threshold).astype(np.float32)
        expected.append(spk)
        reset_now = spk
    node = hub.LIF(beta=0.75, threshold=1.0, reset=reset, reset_timing="next")
    got = np.array(run(node, x.tolist()), np.float32)
    assert np.array_equal(got, np.array(expected))
    assert got.sum() > 5  # the comparison is not vacuous


# -- 5. spike modes and amplitude -----------------------------------------------------------------


@pytest.mark.parametrize("options, expected", [
    # v: 1.25 -> 2 spikes, 1.25 - 2 * 0.5 = 0.25; 0.25; 0.5 -> 1, 0; 2.0 -> 4, 0
    (dict(reset="subtract"), [2, 0, 1, 4]),
    # v: 1.25 -> 2 spikes, 0; 0; 0.25; 2.25 -> floor(4.5) = 4
    (dict(reset="zero"), [2, 0, 0, 4]),
    # next: v 1.25 -> 2; 1.25 - 2 * 0.5 = 0.25 (subtracting one threshold would give 0.75 -> spike);
    # 0.5 -> 1; 0.5 + 2 - 0.5 = 2.0 -> 4
    (dict(reset="subtract", reset_timing="next"), [2, 0, 1, 4]),
])
def test_multi_spike_emits_floor_of_v_over_threshold(options, expected):
    """``spike_mode="multi"``: ``n = floor(v / threshold)`` spikes; ``subtract`` removes n
    thresholds (also one step later, with ``reset_timing="next"``)."""
    node = hub.IF(threshold=0.5, comparison=">=", spike_mode="multi", **options)
    assert run(node, [1.25, 0.0, 0.25, 2.0]) == expected


@pytest.mark.parametrize("comparison, expected", [
    (">=", [2, 0, 0]),  # v = 1.0 = 2 * 0.5 -> 2 spikes, v = 0
    (">", [1, 0, 0]),   # v = 1.0 strictly exceeds only 1 * 0.5 -> 1 spike, v = 0.5 (not > 0.5)
])
def test_multi_spike_on_an_exact_multiple_follows_the_comparison(comparison, expected):
    """With ``">"`` a voltage of exactly ``k * threshold`` gives k - 1 spikes, not floor's k.

    The comparison applies to every multiple, so a multi-spike neuron fires as many spikes as
    the binary neuron with ``reset="subtract"`` would over the following steps without input.
    """
    node = hub.IF(threshold=0.5, comparison=comparison, spike_mode="multi", reset="subtract")
    assert run(node, [1.0, 0.0, 0.0]) == expected
    binary = hub.IF(threshold=0.5, comparison=comparison, reset="subtract")
    assert sum(run(binary, [1.0, 0.0, 0.0])) == sum(expected)


@pytest.mark.parametrize("reset, expected", [
    ("zero", [1.5, 0.0, 1.25]),       # v: 1.5 -> 0; 0.5; 0.25 + 1 = 1.25
    ("subtract", [1.5, 0.0, 1.375]),  # v: 1.5 -> 0.5; 0.25 + 0.5 = 0.75; 0.375 + 1 = 1.375
])
def test_graded_spike_emits_the_voltage(reset, expected):
    """``spike_mode="graded"`` emits ``v`` where it spikes (and 0 elsewhere) instead of 1."""
    node = hub.LIF(beta=0.5, threshold=1.0, reset=reset, spike_mode="graded")
    assert run(node, [1.5, 0.5, 1.0]) == expected


@pytest.mark.parametrize("spike_mode, expected", [
    ("binary", [0.25, 0.25, 0.0]),   # spikes 1, 1, 0: v 1.25 -> 0.75; 1.0 -> 0.5; 0.5
    ("multi", [0.5, 0.0, 0.0]),      # spikes 2, 0, 0: v 1.25 -> 0.25; 0.5; 0.5
    ("graded", [0.3125, 0.25, 0.0]),  # v 1.25 -> 0.75; 1.0 -> 0.5; 0.5, times 0.25
])
def test_amplitude_scales_every_output_but_not_the_reset(spike_mode, expected):
    """Outputs are multiplied by ``amplitude``; ``subtract`` still removes one threshold per
    spike."""
    node = hub.IF(threshold=0.5, reset="subtract", spike_mode=spike_mode, amplitude=0.25)
    assert run(node, [1.25, 0.25, 0.0]) == expected


def test_amplitude_does_not_scale_the_next_step_reset():
    """With ``reset_timing="next"`` the subtracted amount is ``threshold`` per spike, too."""
    node = hub.IF(threshold=0.5, reset="subtract", reset_timing="next", amplitude=-2.0)
    # v: 0.75 -> spike; 0.75 + 0.25 - 0.5 = 0.5 (not > 0.5); 0.75 -> spike
    assert run(node, [0.75, 0.25, 0.25]) == [-2.0, 0.0, -2.0]


# -- 7. refractory period -------------------------------------------------------------------------


@pytest.mark.parametrize("refractory, expected", [
    (0, [1, 1, 1, 1, 1]),
    (1, [1, 0, 1, 0, 1]),
    (2, [1, 0, 0, 1, 0]),
])
def test_refractory_steps_emit_no_spike(refractory, expected):
    """After a spike, the next ``refractory`` steps are silent whatever the input."""
    node = hub.IF(threshold=1.0, refractory=refractory)
    assert run(node, [1.5] * 5) == expected


def test_refractory_holds_the_voltage():
    """During the refractory period the voltage is held: input is not integrated, no decay."""
    node = hub.LIF(beta=0.5, threshold=1.0, reset="none", refractory=1, spike_mode="graded")
    # v: 1.5 -> spike; held at 1.5 (the input 1 is lost); 0.75 + 1 = 1.75 -> spike;
    # held at 1.75; 0.875 + 0.25 = 1.125 -> spike
    assert run(node, [1.5, 1.0, 1.0, 8.0, 0.25]) == [1.5, 0.0, 1.75, 0.0, 1.125]


def test_refractory_current_keeps_integrating():
    """A refractory ``CubaLIF`` holds its voltage but its current still decays and takes input."""
    node = hub.CubaLIF(alpha=0.5, beta=0.5, threshold=1.0, comparison=">=", refractory=1,
                       spike_mode="graded")
    # t0: i = 4, v = 4 -> spike, v = 0; t1: i = 2 + 2 = 4, v held at 0; t2: i = 2, v = 0 + 2
    assert run(node, [4.0, 2.0, 0.0]) == [4.0, 0.0, 2.0]


# -- 8. axonal delay ------------------------------------------------------------------------------


@pytest.mark.parametrize("delay, expected", [
    (0, [0.5, 0, 0.5, 0, 0, 0]),
    (1, [0, 0.5, 0, 0.5, 0, 0]),
    (2, [0, 0, 0.5, 0, 0.5, 0]),
    (3, [0, 0, 0, 0.5, 0, 0.5]),
])
def test_axonal_delay_shifts_the_output(delay, expected):
    """The output (amplitude included) leaves ``delay`` steps later; zeros before that."""
    node = hub.IF(threshold=0.5, amplitude=0.5, delay=delay)
    assert run(node, [1.0, 0.0, 1.0, 0.0, 0.0, 0.0]) == expected


# -- 1. current-based neurons ---------------------------------------------------------------------

CUBA = dict(alpha=0.5, beta=0.5, current_gain=2.0, gain=0.25)


@pytest.mark.parametrize("kind", ["CubaLI", "CubaLIF"])
@pytest.mark.parametrize("order, expected", [
    # i = 2, 1, 0.5, 0.25; v = 0.25 * i, 0.5 * 0.5 + 0.25 * 1, 0.25 + 0.125, 0.1875 + 0.0625
    ("new", [0.5, 0.5, 0.375, 0.25]),
    # the voltage sees i from before this step: 0, 2, 1, 0.5 (forward Euler, one step later)
    ("previous", [0.0, 0.5, 0.5, 0.375]),
])
def test_cuba_current_order(kind, order, expected):
    """``i = alpha * i + current_gain * x``; v is driven by the new or the previous current."""
    node = (hub.CubaLI(**CUBA, current_order=order) if kind == "CubaLI"
            else hub.CubaLIF(**CUBA, current_order=order, **PROBE))
    assert run(node, [1.0, 0.0, 0.0, 0.0]) == expected


@pytest.mark.parametrize("order, expected", [("new", [1, 0, 0, 0]), ("previous", [0, 1, 0, 0])])
def test_cuba_lif_previous_current_order_spikes_a_step_later(order, expected):
    """The voltages of the test above against a threshold of 0.375: 0.5 crosses it."""
    node = hub.CubaLIF(**CUBA, current_order=order, threshold=0.375)
    assert run(node, [1.0, 0.0, 0.0, 0.0]) == expected


@pytest.mark.parametrize("alpha, beta, expected", [
    (0.0, 0.0, [0.5, 0.25, -0.5]),   # i = 2 x; v = 0.25 i
    (1.0, 0.0, [0.5, 0.75, 0.25]),   # i = 2, 3, 1 (integrates); v = 0.25 i
    (0.0, 0.5, [0.5, 0.5, -0.25]),   # i = 2, 1, -2; v = 0.5 v + 0.25 i
])
def test_cuba_gains(alpha, beta, expected):
    """``current_gain`` scales the input into the current, ``gain`` the current into v."""
    node = hub.CubaLI(alpha=alpha, beta=beta, current_gain=2.0, gain=0.25)
    assert run(node, [1.0, 0.5, -1.0]) == expected


# -- 3. leak, rest potential and initial voltage --------------------------------------------------


@pytest.mark.parametrize("kind", ["LI", "LIF"])
@pytest.mark.parametrize("v_init, gain, x, expected", [
    (0.0, 1.0, [0, 0, 0, 0], [0.5, 0.75, 0.875, 0.9375]),   # up towards v_leak = 1
    (2.0, 1.0, [0, 0, 0, 0], [1.5, 1.25, 1.125, 1.0625]),   # down towards v_leak = 1
    (0.0, 2.0, [0.5, 0, 0, 0], [1.5, 1.25, 1.125, 1.0625]),  # 1 + 0.5 * (0 - 1) + 2 * 0.5
])
def test_voltage_decays_towards_v_leak(kind, v_init, gain, x, expected):
    """``v = v_leak + beta * (v - v_leak) + gain * x``, starting from ``v_init``."""
    common = dict(beta=0.5, v_leak=1.0, gain=gain, v_init=v_init)
    node = hub.LI(**common) if kind == "LI" else hub.LIF(**common, **PROBE)
    assert run(node, x) == expected


def test_rest_potential_above_threshold_fires_without_input():
    """A LIF whose ``v_leak`` is above threshold climbs back and fires periodically."""
    node = hub.LIF(beta=0.5, v_leak=2.0, threshold=1.0)
    # v: 2 + 0.5 * (0 - 2) = 1 (not > 1); 1.5 -> 0; 1; 1.5 -> 0
    assert run(node, [0.0] * 4) == [0, 1, 0, 1]


@pytest.mark.parametrize("v_init, expected", [
    (0.0, [0, 0, 1, 0]),    # v: 0.5, 1.0, 1.5 -> 0, 0.5
    (0.75, [1, 0, 0, 1]),   # v: 1.25 -> 0, 0.5, 1.0, 1.5 (the reset goes to 0, not to v_init)
])
def test_v_init_is_the_voltage_before_the_first_step(v_init, expected):
    node = hub.IF(threshold=1.0, v_init=v_init)
    assert run(node, [0.5] * 4) == expected


def test_if_integrates_without_leak():
    """``IF``: ``v = v + gain * x``; the voltage waits through steps without input."""
    node = hub.IF(threshold=1.0, gain=0.5, reset="subtract")
    # v: 0.5, 0.5, 0.5, 1.0 (not > 1), 1.5 -> 0.5
    assert run(node, [1.0, 0.0, 0.0, 1.0, 1.0]) == [0, 0, 0, 0, 1]


@pytest.mark.parametrize("node, expected", [
    (hub.LI(beta=0.5, gain=2.0), [2.0, 0.0, 32.0, 16.0]),  # 2; 1 - 1; 0 + 32; 16
    (hub.Integrator(gain=0.5, v_init=1.0), [1.5, 1.25, 9.25, 9.25]),
    # i = 1, 0.5 - 0.5 = 0, 16, 8; v = 1, 0.5 + 0, 0.25 + 16, 8.125 + 8
    (hub.CubaLI(alpha=0.5, beta=0.5), [1.0, 0.5, 16.25, 16.125]),
], ids=["LI", "Integrator", "CubaLI"])
def test_readouts_output_the_voltage_and_never_spike(node, expected):
    """``LI``, ``Integrator`` and ``CubaLI`` emit v after integration, however large."""
    assert run(node, [1.0, -0.5, 16.0, 0.0]) == expected


# -- the layer nodes Threshold and Delay ----------------------------------------------------------


@pytest.mark.parametrize("comparison, scalar, per_element", [
    (">", [0, 1, 0, 0], [1, 0, 0, 0]),
    (">=", [1, 1, 0, 0], [1, 0, 1, 1]),
])
def test_threshold_node_is_a_stateless_heaviside(comparison, scalar, per_element):
    """``Threshold``: ``y = x > threshold`` (or ``>=``), per element, the same at every step."""
    x = [[0.5, 0.75, 0.25, -1.0]] * 2
    assert run(hub.Threshold(threshold=0.5, comparison=comparison), x) == [scalar] * 2
    node = hub.Threshold(threshold=[0.25, 1.0, 0.25, -1.0], comparison=comparison)
    assert run(node, x) == [per_element] * 2


def test_delay_node_shifts_each_element_by_its_delay():
    """``Delay``: ``y[t] = x[t - delay]`` per element, zeros before the first input."""
    x = [[t + 1.0] * 3 for t in range(5)]  # 1, 2, 3, 4, 5 in every element
    y = run(hub.Delay(delay=[0, 1, 3]), x)
    assert [row[0] for row in y] == [1, 2, 3, 4, 5]
    assert [row[1] for row in y] == [0, 1, 2, 3, 4]
    assert [row[2] for row in y] == [0, 0, 0, 1, 2]
    assert run(hub.Delay(delay=2), [1.0, 2.0, 3.0, 4.0]) == [0, 0, 1, 2]


# -- per-neuron parameters ------------------------------------------------------------------------

SPIKING = dict(threshold=[0.5, 0.25, 1.0], v_reset=[0.0, -0.25, 0.125],
               amplitude=[1.0, 2.0, -0.5], v_init=[0.0, 0.5, -0.25])
PER_NEURON = {
    "IF": hub.IF(gain=[1.0, 0.5, 2.0], reset="subtract", **SPIKING),
    "LIF": hub.LIF(beta=[0.5, 0.75, 0.875], gain=[1.0, 0.5, 2.0], v_leak=[0.0, 0.25, -0.5],
                   **SPIKING),
    "CubaLIF": hub.CubaLIF(alpha=[0.25, 0.5, 0.75], beta=[0.5, 0.75, 0.875],
                           current_gain=[1.0, 2.0, 0.5], gain=[1.0, 0.5, 2.0],
                           v_leak=[0.0, 0.25, -0.5], reset_timing="next", **SPIKING),
    "LI": hub.LI(beta=[0.5, 0.75, 0.875], gain=[1.0, 0.5, 2.0], v_leak=[0.0, 0.25, -0.5],
                 v_init=[0.0, 0.5, -0.25]),
    "Integrator": hub.Integrator(gain=[1.0, 0.5, 2.0], v_init=[0.0, 0.5, -0.25]),
    "CubaLI": hub.CubaLI(alpha=[0.25, 0.5, 0.75], beta=[0.5, 0.75, 0.875],
                         current_gain=[1.0, 2.0, 0.5], gain=[1.0, 0.5, 2.0],
                         v_leak=[0.0, 0.25, -0.5], v_init=[0.0, 0.5, -0.25]),
}


@pytest.mark.parametrize("kind", sorted(PER_NEURON))
def test_per_neuron_parameters_equal_separate_neurons(kind):
    """An array parameter gives each neuron its own value: as if each were its own layer."""
    layer = PER_NEURON[kind]
    x = torch.tensor(dyadic(np.random.default_rng(2), 12, 2, 3, low=-1, high=2))
    together = hub.simulate(graph_of(layer, 3), x)
    for j in range(3):
        values = {name: (value[j] if isinstance(value, np.ndarray) and value.ndim else value)
                  for name, value in layer.params().items()}
        alone = hub.simulate(graph_of(type(layer)(**values), 1), x[:, :, j:j + 1])
        assert torch.equal(together[:, :, j:j + 1], alone), f"neuron {j}"


# -- every option against an independent transcription of the docstring, and the step API ---------

CONFIGS = {
    "IF": hub.IF(threshold=0.5, reset="subtract", comparison=">="),
    "IF-multi-next": hub.IF(threshold=0.25, gain=0.5, spike_mode="multi", reset="subtract",
                            reset_timing="next"),
    "LIF": hub.LIF(beta=0.75, threshold=0.5),
    "LIF-leak-refractory-delay": hub.LIF(beta=0.875, v_leak=0.25, v_reset=-0.125, gain=0.5,
                                         threshold=0.25, refractory=2, delay=1, v_init=0.5),
    "LIF-graded-next-zero": hub.LIF(beta=0.5, spike_mode="graded", amplitude=-2.0,
                                    reset_timing="next", v_reset=0.125, threshold=0.375),
    "LIF-multi-strict": hub.LIF(beta=0.5, spike_mode="multi", threshold=0.25, reset="subtract"),
    "LIF-none-refractory": hub.LIF(beta=0.5, reset="none", refractory=1, threshold=0.5,
                                   comparison=">="),
    "CubaLIF-new": hub.CubaLIF(alpha=0.5, beta=0.75, current_gain=2.0, gain=0.5, threshold=0.5,
                               refractory=1, delay=2),
    "CubaLIF-previous": hub.CubaLIF(alpha=[0.5, 0.25, 0.75], beta=0.875, current_order="previous",
                                    reset="subtract", reset_timing="next", spike_mode="multi",
                                    threshold=0.5),
    "LI": hub.LI(beta=0.5, gain=0.25, v_leak=0.5, v_init=1.0),
    "Integrator": hub.Integrator(gain=[0.5, -1.0, 2.0], v_init=0.25),
    "CubaLI": hub.CubaLI(alpha=0.5, beta=0.25, gain=2.0, current_order="previous"),
}


def reference(node: hub.Node, x: np.ndarray) -> np.ndarray:
    """The module docstring of ``hub.neurons``, step by step, in numpy float32 (x: [T, N, n])."""
    f = {k: np.asarray(v, np.float32) for k, v in node.params().items()
         if isinstance(v, np.ndarray)}
    g = node.params()
    readout = not isinstance(node, (hub.IF, hub.LIF, hub.CubaLIF))
    current = isinstance(node, (hub.CubaLIF, hub.CubaLI))
    leaky = not isinstance(node, (hub.IF, hub.Integrator))
    shape = x.shape[1:]
    v = np.broadcast_to(f["v_init"], shape).astype(np.float32)
    i = s_prev = np.zeros(shape, np.float32)
    r = np.zeros(shape, int)
    line = [np.zeros(shape, np.float32)] * g.get("delay", 0)
    out = []

    def integrate(v, u):  # step 3
        if leaky:
            return f["v_leak"] + f["beta"] * (v - f["v_leak"]) + f["gain"] * u
        return v + f["gain"] * u

    for xt in x:
        u = xt
        if current:  # step 1
            i_new = f["alpha"] * i + f["current_gain"] * xt
            u = i_new if g["current_order"] == "new" else i
            i = i_new
        if readout:
            v = integrate(v, u)
            out.append(v)
            continue
        next_ = g["reset_timing"] == "next"
        w = v
        if next_ and g["reset"] == "zero":  # step 2
            w = np.where(s_prev > 0, f["v_reset"], w)
        w = integrate(w, u)
        if next_ and g["reset"] == "subtract":  # step 4
            w = w - f["threshold"] * s_prev
        resting = r > 0  # step 7
        v = np.where(resting, v, w).astype(np.float32)
        above = v > f["threshold"] if g["comparison"] == ">" else v >= f["threshold"]  # step 5
        s = (above & ~resting).astype(np.float32)
        count = s
        if g["spike_mode"] == "multi":  # the multiples of threshold that v reaches (or exceeds)
            n = np.floor(v / f["threshold"])
            if g["comparison"] == ">":
                n = np.where(n * f["threshold"] == v, n - 1, n)
            count = np.where(s > 0, np.maximum(n, 1), 0).astype(np.float32)
        y = (count * v if g["spike_mode"] == "graded" else count) * f["amplitude"]
        if next_:
            s_prev = count
        elif g["reset"] == "subtract":  # step 6
            v = v - f["threshold"] * count
        elif g["reset"] == "zero":
            v = np.where(s > 0, f["v_reset"], v).astype(np.float32)
        r = np.where(s > 0, g["refractory"], np.maximum(r - 1, 0))
        line = line + [y]  # step 8
        out.append(line.pop(0))
    return np.stack(out)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_random_input_matches_a_numpy_transcription_of_the_docstring(name):
    """Every option combined, 24 steps of random input: bit for bit the documented update."""
    node = CONFIGS[name]
    x = dyadic(np.random.default_rng(3), 24, 2, 3, low=-1, high=2)
    got = hub.simulate(graph_of(node, 3), torch.tensor(x)).numpy()
    assert np.array_equal(got, reference(node, x))
    if node.spiking:
        assert (got != 0).any() and (got == 0).any()  # it fires, but not always


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_single_step_equals_multi_step(name):
    """``Simulator.step`` in a loop and a whole-sequence call agree bit for bit."""
    graph = graph_of(CONFIGS[name], 3)
    x = torch.tensor(dyadic(np.random.default_rng(4), 20, 2, 3, low=-1, high=2))
    x = x + torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) / 3  # not dyadic
    sim = hub.Simulator(graph)
    stepped = torch.stack([sim.step(x[t]) for t in range(x.shape[0])])
    assert torch.equal(stepped, hub.simulate(graph, x))


# -- the surrogate gradient -----------------------------------------------------------------------


def test_surrogate_gradient_is_the_fast_sigmoid_derivative():
    """Forward: an exact step. Backward: ``1 / (1 + SLOPE * |v - threshold|)**2``."""
    x = torch.tensor([[[0.5, 0.75, 0.25, 1.5]]], requires_grad=True)
    y = hub.simulate(graph_of(hub.Threshold(threshold=0.5), 4), x)
    assert y.tolist() == [[[0, 1, 0, 1]]]
    y.sum().backward()
    expected = [1 / (1 + SLOPE * d) ** 2 for d in (0.0, 0.25, 0.25, 1.0)]
    assert x.grad[0, 0].tolist() == pytest.approx(expected)


def test_surrogate_gradient_reaches_the_input():
    """A loss on the spikes of a LIF gives every input step a positive gradient.

    With ``reset="zero"`` a spike cuts the voltage's dependence on the past, so each input
    reaches the loss only through voltages, which it raises.
    """
    x = torch.tensor(dyadic(np.random.default_rng(5), 16, 2, 3, low=0, high=1),
                     requires_grad=True)
    spikes = hub.simulate(graph_of(hub.LIF(beta=0.75, threshold=0.5), 3), x)
    assert spikes.sum() > 0
    spikes.sum().backward()
    assert (x.grad > 0).all()


@pytest.mark.parametrize("node", [
    hub.LIF(beta=0.75, threshold=0.5),
    hub.CubaLIF(alpha=0.5, beta=0.75, threshold=0.5),
], ids=["LIF", "CubaLIF"])
def test_surrogate_gradient_reaches_the_parameters(node):
    """``trainable=True``: beta raises the voltage (positive input), a threshold lowers spikes."""
    sim = hub.Simulator(graph_of(node, 3), trainable=True)
    x = torch.tensor(dyadic(np.random.default_rng(6), 16, 2, 3, low=0, high=1))
    sim(x).sum().backward()
    grads = {name.rsplit(".", 1)[1]: p.grad for name, p in sim.named_parameters()}
    assert grads["beta"] > 0
    assert grads["threshold"] < 0
    if "alpha" in grads:
        assert grads["alpha"] > 0


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_requiring_grad_does_not_change_the_forward_pass(name):
    """Surrogates change gradients only: trainable parameters and an input needing grad give the
    same outputs."""
    graph = graph_of(CONFIGS[name], 3)
    x = torch.tensor(dyadic(np.random.default_rng(7), 16, 2, 3, low=-1, high=2))
    plain = hub.simulate(graph, x)
    trained = hub.Simulator(graph, trainable=True)(x.clone().requires_grad_())
    assert trained.requires_grad
    assert torch.equal(trained.detach(), plain)


# -- combinations the model refuses ---------------------------------------------------------------


def test_contradictory_fields_are_refused():
    """Multi-spikes need a positive threshold; a refractory period needs ``reset_timing="same"``."""
    with pytest.raises(hub.ParameterError, match="positive threshold"):
        hub.IF(threshold=0.0, spike_mode="multi")
    with pytest.raises(hub.ParameterError, match="reset_timing='same'"):
        hub.LIF(beta=0.5, refractory=1, reset_timing="next")


def test_multi_spike_count_is_settled_by_products_not_the_rounded_division():
    """float32(0.9) / float32(0.1) rounds to 9.0, but 9 * 0.1 exceeds 0.9: only 8 multiples fit."""
    graph = hub.Graph.chain(hub.Input(shape=(1,)),
                            hub.IF(threshold=0.1, spike_mode="multi", reset="subtract"))
    v = torch.tensor(0.9, dtype=torch.float32)
    y = hub.simulate(graph, v.reshape(1, 1, 1))
    assert y.item() == 8.0
