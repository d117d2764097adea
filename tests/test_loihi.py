"""hub.LoihiCUBA: Loihi's fixed-point CUBA neuron, integer-exact as Lava's PyLifModelBitAcc."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hub
from hub.loihi import LoihiCUBA, shift_toward_zero


def _run(node: LoihiCUBA, a: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    """Step ``node`` over ``a`` ([T, N, *]); the outputs and the state after each step."""
    p = {k: torch.as_tensor(np.array(v)) for k, v in node.params().items()
         if isinstance(v, np.ndarray)}
    x = torch.as_tensor(np.asarray(a, dtype=np.float32))
    state = node.initial_state(tuple(x.shape[1:]), x[0])
    outs, states = [], []
    for xt in x:
        out, state = node.step(p, xt, state)
        outs.append(out)
        states.append({k: v.clone() for k, v in state.items()})
    return torch.stack(outs).numpy(), states


def test_shift_rounds_toward_zero_not_down():
    p = torch.tensor([-5, -4, -3, 3, 5, -8191, 8191])
    assert shift_toward_zero(p, 1).tolist() == [-2, -2, -1, 1, 2, -4095, 4095]
    assert (p >> 1).tolist()[0] == -3  # an arithmetic shift alone would round down


def test_negative_current_decays_toward_zero():
    node = LoihiCUBA(i_decay=2048, v_decay=4096, threshold=100)
    _, states = _run(node, np.array([[[-3]], [[0]]]))
    assert states[0]["u"].item() == -192  # -3 << 6
    assert states[1]["u"].item() == -96  # -192 * 2048 / 4096
    node = LoihiCUBA(i_decay=1, v_decay=4096, threshold=100)
    _, states = _run(node, np.array([[[-1]], [[0]]]))
    # -64 * 4095 / 4096 = -63.98: toward zero gives -63, floor would give -64
    assert states[1]["u"].item() == -63


def test_decay_zero_keeps_and_4096_clears():
    keep = LoihiCUBA(i_decay=0, v_decay=0, threshold=1000)
    _, states = _run(keep, np.array([[[2]], [[0]], [[0]]]))
    assert [s["u"].item() for s in states] == [128, 128, 128]
    assert [s["v"].item() for s in states] == [128, 256, 384]
    clear = LoihiCUBA(i_decay=4096, v_decay=4096, threshold=1000)
    _, states = _run(clear, np.array([[[2]], [[0]]]))
    assert [s["u"].item() for s in states] == [128, 0]
    assert [s["v"].item() for s in states] == [128, 0]


def test_threshold_is_strict_and_resets_to_zero():
    node = LoihiCUBA(i_decay=4096, v_decay=0, threshold=2)
    out, states = _run(node, np.array([[[2]], [[1]], [[0]]]))
    # v = 128 == 2 << 6 does not spike; 192 does, and v returns to 0
    assert out.ravel().tolist() == [0, 1, 0]
    assert [s["v"].item() for s in states] == [128, 0, 0]


def test_bias_adds_to_voltage_with_its_exponent():
    node = LoihiCUBA(i_decay=4096, v_decay=0, threshold=10, bias=3, bias_exp=6)
    _, states = _run(node, np.zeros((2, 1, 1)))
    assert [s["v"].item() for s in states] == [192, 384]


def test_refractory_holds_voltage_and_current_integrates():
    node = LoihiCUBA(i_decay=0, v_decay=0, threshold=1, refractory=2)
    out, states = _run(node, np.array([[[2]], [[0]], [[0]], [[0]], [[0]]]))
    assert out.ravel().tolist() == [1, 0, 0, 1, 0]
    assert [s["v"].item() for s in states[:3]] == [0, 0, 0]
    assert all(s["u"].item() == 128 for s in states)


def test_graded_spike_is_voltage_in_mantissa_units():
    node = LoihiCUBA(i_decay=4096, v_decay=4096, threshold=1, spike_mode="graded")
    out, _ = _run(node, np.array([[[5]], [[1]]]))
    assert out.ravel().tolist() == [5.0, 0.0]


def test_voltage_readout_is_the_voltage_every_step():
    """spike_mode="voltage" emits v / 64 whether it spikes or not; spiking still resets."""
    node = LoihiCUBA(i_decay=4096, v_decay=2048, threshold=3, spike_mode="voltage")
    out, states = _run(node, np.array([[[2]], [[1]], [[3]], [[0]]]))
    # v = 128, 64 + 64 = 128, 64 + 192 = 256 (> 192: spikes, emitted, then reset), 0
    assert out.ravel().tolist() == [2.0, 2.0, 4.0, 0.0]
    assert states[2]["v"].item() == 0
    never = LoihiCUBA(i_decay=0, v_decay=0, threshold=1 << 17, spike_mode="voltage")
    out, _ = _run(never, np.array([[[-3]], [[5]], [[1]]]))
    # u = -192, -192 + 320, 128 + 64; v = -192, -192 + 128, -64 + 192; over 64
    assert out.ravel().tolist() == [-3.0, -1.0, 2.0]


def test_axonal_delay():
    node = LoihiCUBA(i_decay=4096, v_decay=4096, threshold=0, delay=2)
    out, _ = _run(node, np.array([[[1]], [[0]], [[0]], [[1]]]))
    assert out.ravel().tolist() == [0, 0, 1, 0]


def test_24_bit_wrap_and_clip():
    node = LoihiCUBA(i_decay=0, v_decay=0, threshold=1 << 17)  # never reached
    _, states = _run(node, np.full((2, 1, 1), 2 ** 16, dtype=np.float32))
    # u = 2**22 then 2**23 (kept: Lava wraps only above 2**23); v clips at 2**23 - 1
    assert states[0]["u"].item() == 2 ** 22 and states[1]["u"].item() == 2 ** 23
    assert states[1]["v"].item() == 2 ** 23 - 1
    _, states = _run(node, np.full((3, 1, 1), 2 ** 16, dtype=np.float32))
    assert states[2]["u"].item() == 2 ** 23 + 2 ** 22 - 2 ** 24


def test_non_integer_input_is_refused():
    g = hub.Graph.chain(("input", hub.Input(shape=(2,))),
                        ("n", LoihiCUBA(i_decay=0, v_decay=0, threshold=1)))
    with pytest.raises(hub.HubError, match="non-integer input"):
        hub.simulate(g, torch.full((2, 1, 2), 0.5))


@pytest.mark.parametrize("field, value", [("i_decay", 4097), ("v_decay", -1),
                                          ("threshold", -3), ("i_decay", 0.5)])
def test_bad_parameters_name_the_field(field, value):
    params = {"i_decay": 0, "v_decay": 0, "threshold": 1, field: value}
    with pytest.raises(hub.ParameterError) as e:
        LoihiCUBA(**params)
    assert e.value.field == field


def test_registered_and_serialisable():
    assert hub.node_types()["LoihiCUBA"] is LoihiCUBA
    node = LoihiCUBA(i_decay=[1, 2], v_decay=3, threshold=4, bias=[-1, 1], refractory=1)
    assert hub.node_from_dict(node.to_dict()) == node
    assert "LoihiCUBA" in hub.plugins().format("hub").exports


def test_fused_backend_steps_it_with_the_reference():
    from hub.kernels import cpu

    ok, why = cpu.available()
    if not ok:
        pytest.skip(f"the fused CPU kernels cannot build here: {why}")
    g = hub.Graph.chain(("input", hub.Input(shape=(4,))),
                        ("fc", hub.Linear(weight=np.float32([[1, -2, 3, 1]] * 3))),
                        ("n", LoihiCUBA(i_decay=700, v_decay=300, threshold=2)),
                        ("fc2", hub.Linear(weight=np.float32([[2, 1, -1]]))),
                        ("n2", hub.IF(threshold=1.0)))
    x = torch.as_tensor(np.random.default_rng(3).integers(0, 2, (20, 2, 4)).astype(np.float32))
    assert torch.equal(hub.simulate(g, x, backend="fused"), hub.simulate(g, x))
    readout = hub.Graph.chain(("input", hub.Input(shape=(4,))),
                              ("fc", hub.Linear(weight=np.float32([[1, -2, 3, 1]] * 3))),
                              ("n", LoihiCUBA(i_decay=700, v_decay=300, threshold=[2, 5, 1 << 17],
                                              spike_mode="voltage")))
    want = hub.simulate(readout, x, backend="torch")
    assert want.abs().sum() > 0 and not torch.equal(want, want.round())
    assert torch.equal(hub.simulate(readout, x, backend="fused"), want)


def _lava_reference(a: np.ndarray, i_decay, v_decay, vth, bias, bias_exp=6) -> np.ndarray:
    """An independent numpy transcription of lava.proc.lif.models.PyLifModelBitAcc.run_spk."""
    u = np.zeros(a.shape[1:], dtype=np.int32)
    v = np.zeros(a.shape[1:], dtype=np.int32)
    du, dv = i_decay - 1, v_decay  # as netx passes them
    ds_offset, dm_offset = 1, 0
    max_uv = 2 ** 23
    effective_bias = np.left_shift(np.asarray(bias, dtype=np.int32), bias_exp)
    spikes = []
    for act in a.astype(np.int16):
        d = np.int64(u) * (4096 - (du + ds_offset))
        d = np.int32(np.sign(d) * np.right_shift(np.abs(d), 12))
        d = d + np.left_shift(act.astype(np.int32), 6)
        w = np.where(d > max_uv, d - 2 * max_uv, d)
        w = np.where(w <= -max_uv, d + 2 * max_uv, w)
        u = w.astype(np.int32)
        dvv = np.int64(v) * (4096 - (dv + dm_offset))
        dvv = np.int32(np.sign(dvv) * np.right_shift(np.abs(dvv), 12))
        v = np.clip(dvv + u + effective_bias, -max_uv + 1, max_uv - 1).astype(np.int32)
        s = v > np.left_shift(vth, 6)
        v[s] = 0
        spikes.append(s)
    return np.array(spikes, dtype=np.float32)


@pytest.mark.parametrize("seed", range(12))
def test_matches_a_numpy_transcription_of_lava(seed):
    rng = np.random.default_rng(seed)
    i_decay, v_decay = (int(v) for v in rng.choice([0, 1, 7, 1024, 2048, 4000, 4095, 4096], 2))
    vth = int(rng.integers(0, 200))
    bias = rng.integers(-20, 20, size=5)
    a = rng.integers(-300, 300, size=(50, 3, 5))
    node = LoihiCUBA(i_decay=i_decay, v_decay=v_decay, threshold=vth, bias=bias)
    g = hub.Graph.chain(("input", hub.Input(shape=(5,))), ("n", node))
    got = hub.simulate(g, torch.as_tensor(a.astype(np.float32))).numpy()
    want = _lava_reference(a, i_decay, v_decay, vth, bias)
    assert np.array_equal(got, want)
