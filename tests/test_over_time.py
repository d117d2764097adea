"""Stateless layers over all time steps in one call: the bits of stepping for values and input
gradients, float-equivalent parameter gradients.

Graphs of random float32 values (where the order of a sum shows in the last bit) run through
:class:`hub.Simulator` stepping every node (``backend="torch"``) and node by node with the
stateless layers over all steps at once (``"auto"``). Outputs and the input's gradient must be
equal with ``torch.equal``; every trainable weight's gradient, which one call over all steps sums
in another order than stepping, must be within float rounding of stepping's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hub
from hub import over_time
from hub.kernels import cpu
from hub.node import _REGISTRY, Node

from .conftest import rng

ok, reason = cpu.available()
pytestmark = pytest.mark.skipif(not ok, reason=f"fused CPU kernels unavailable: {reason}")


def normal(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def skips_branches_delays() -> hub.Graph:
    """A skip connection, a delay, two branches joined by a product and by a concatenation."""
    nodes = {
        "in": hub.Input(shape=(2, 8, 8)),
        "conv": hub.Conv2d(weight=normal(4, 2, 3, 3, scale=0.5), bias=normal(4), padding=(1, 1)),
        "bn": hub.BatchNorm(mean=normal(4), var=np.abs(normal(4)) + 0.5, weight=normal(4),
                            bias=normal(4)),
        "lif": hub.LIF(beta=0.75, threshold=0.5),
        "conv2": hub.Conv2d(weight=normal(4, 4, 3, 3, scale=0.5), padding=(1, 1)),
        "skip": hub.Add(),
        "if": hub.IF(threshold=0.5, reset="subtract"),
        "pool": hub.MaxPool2d(kernel_size=(2, 2), stride=(2, 2)),
        "avg": hub.AvgPool2d(kernel_size=(2, 2), stride=(2, 2)),
        "both": hub.Add(),
        "flat": hub.Flatten(),
        "aff": hub.Affine(weight=normal(16, 64, scale=0.3), bias=normal(16)),
        "delay": hub.Delay(delay=np.array(2)),
        "cuba": hub.CubaLIF(alpha=0.5, beta=0.75, threshold=0.25),
        "left": hub.Affine(weight=normal(5, 16), bias=normal(5)),
        "right": hub.Linear(weight=normal(5, 16)),
        "mul": hub.Mul(),
        "cat": hub.Concat(dim=0),
        "li": hub.LI(beta=0.875),
        "out": hub.Output(),
    }
    edges = [("in", "conv"), ("conv", "bn"), ("bn", "lif"), ("lif", "conv2"), ("conv2", "skip"),
             ("lif", "skip"), ("skip", "if"), ("if", "pool"), ("if", "avg"), ("pool", "both"),
             ("avg", "both"), ("both", "flat"), ("flat", "aff"),
             ("aff", "delay"), ("delay", "cuba"), ("cuba", "left"), ("cuba", "right"),
             ("left", "mul"), ("right", "mul"), ("mul", "cat"), ("left", "cat"), ("cat", "li"),
             ("li", "out")]
    return hub.Graph(nodes, edges)


def with_recurrence() -> hub.Graph:
    """A recurrent edge: the cycle it closes (lif, rec) steps, whatever the backend; the
    layers before and after it run over all steps as in a graph without one."""
    nodes = {"in": hub.Input(shape=(6,)), "aff": hub.Affine(weight=normal(8, 6)),
             "lif": hub.LIF(beta=0.75, threshold=0.25), "rec": hub.Linear(weight=normal(8, 8)),
             "read": hub.Affine(weight=normal(3, 8), bias=normal(3)), "li": hub.LI(beta=0.5),
             "out": hub.Output()}
    edges = [("in", "aff"), ("aff", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "read"),
             ("read", "li"), ("li", "out")]
    return hub.Graph(nodes, edges)


def weights_train(sim: hub.Simulator) -> None:
    """Weights train; the neurons' own parameters and batch-norm statistics stay fixed, so that
    the neurons run in the kernels."""
    for name, param in sim.named_parameters():
        node = sim.graph.nodes[sim.plan.order[int(name.split(".")[1][1:])]]
        param.requires_grad_(not isinstance(node, hub.Neuron)
                             and not name.endswith((".mean", ".var")))


def runs(graph: hub.Graph, x: torch.Tensor, backend: str, train: bool) -> tuple:
    sim = hub.Simulator(graph, backend=backend, trainable=train)
    if train:
        weights_train(sim)
    xg = x.clone().requires_grad_()
    out = sim(xg)
    # the same output gradient for every backend
    seed = torch.Generator().manual_seed(0)
    out.backward(torch.randn(out.shape, generator=seed))
    grads = {n: q.grad for n, q in sim.named_parameters() if q.grad is not None}
    return out.detach(), xg.grad, grads


def assert_float_equivalent(got: torch.Tensor, want: torch.Tensor, steps: int) -> None:
    """Parameter gradients summed in another order: equal up to rounding, measured against the
    largest element (the simulator's own check, :func:`hub.over_time.equivalent`, is per
    element against the summed terms' magnitudes, which a whole network's run does not expose)."""
    eps = torch.finfo(want.dtype).eps
    assert got.shape == want.shape
    assert (got - want).abs().max() <= 64 * steps * eps * want.abs().max()


def whole_sequence_layers(monkeypatch) -> list[str]:
    """The types of the layers the simulator runs over all steps at once, as it runs them."""
    ran: list[str] = []
    verified = over_time.verified

    def spy(node, *args):
        ok = verified(node, *args)
        if ok:
            ran.append(node.type)
        return ok
    monkeypatch.setattr(over_time, "verified", spy)
    return ran


@pytest.mark.parametrize("train", [False, True], ids=["frozen", "trainable"])
@pytest.mark.parametrize("build", [skips_branches_delays, with_recurrence])
def test_the_whole_sequence_schedule_gives_stepping_bits_and_gradients(build, train,
                                                                       monkeypatch):
    graph = build()
    shape = graph.plan().output_shapes[graph.inputs[0]]
    x = torch.tensor(normal(7, 16, *shape))
    want = runs(graph, x, "torch", train)
    ran = whole_sequence_layers(monkeypatch)
    got = runs(graph, x, "auto", train)
    assert want[0].any() and want[1].abs().sum() > 0  # spikes, and gradients reach the input
    assert torch.equal(got[0], want[0])
    assert torch.equal(got[1], want[1])
    assert got[2].keys() == want[2].keys() and (bool(got[2]) == train)
    order = hub.Simulator(graph).plan.order
    for name in want[2]:
        node = order[int(name.split(".")[1][1:])]
        if build is with_recurrence and node == "rec":  # it steps, so in stepping's order
            assert torch.equal(got[2][name], want[2][name]), name
        else:
            assert_float_equivalent(got[2][name], want[2][name], x.shape[0])
    if build is with_recurrence:  # the layers off the cycle only
        assert set(ran) <= {"Affine"} and (set(ran) == {"Affine"} or not train)
    else:  # layers that compute elementwise or compare give the same bits in any batch
        assert {"BatchNorm", "MaxPool2d", "AvgPool2d", "Flatten", "Mul", "Concat"} <= set(ran)
        assert "Delay" not in ran  # a layer with state steps
        if train:  # with their weights' gradients from the one call's backward
            assert {"Conv2d", "Affine", "Linear"} <= set(ran)


@pytest.mark.parametrize("layer", [
    lambda: hub.Conv1d(weight=normal(3, 2, 3), bias=normal(3), padding=(1,)),
    lambda: hub.Affine(weight=normal(3, 2 * 6), bias=normal(3)),
    lambda: hub.Linear(weight=normal(3, 2 * 6)),
    lambda: hub.Scale(scale=normal(2, 6)),
    lambda: hub.Bias(bias=normal(2, 6)),
], ids=["Conv1d", "Affine", "Linear", "Scale", "Bias"])
def test_parameter_gradients_over_all_steps_are_float_equivalent_to_stepping(layer,
                                                                             monkeypatch):
    """One call's backward over all steps, as a batched framework computes it: spikes and the
    input's gradient keep stepping's bits, the weights' gradients are stepping's up to the order
    of the sum."""
    node = layer()
    flat = isinstance(node, (hub.Affine, hub.Linear))
    nodes = [hub.Input(shape=(2, 6))] + ([hub.Flatten()] if flat else []) + [
        node, hub.Flatten(), hub.LIF(beta=0.5, threshold=0.5)]
    graph = hub.Graph.chain(*nodes)
    x = torch.tensor(normal(9, 32, 2, 6))
    want = runs(graph, x, "torch", True)
    ran = whole_sequence_layers(monkeypatch)
    got = runs(graph, x, "auto", True)
    assert node.type in ran
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert want[2] and got[2].keys() == want[2].keys()
    for k in want[2]:
        assert_float_equivalent(got[2][k], want[2][k], x.shape[0])


@pytest.fixture
def mean_gradient():
    """A plugin's layer ``x * w`` whose weight gradient is, wrongly, the batch's mean of
    ``x * g`` instead of its sum: right on one step, off by a factor T over all steps."""

    class MeanGradient(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w):
            ctx.save_for_backward(x, w)
            return x * w

        @staticmethod
        def backward(ctx, g):
            x, w = ctx.saved_tensors
            return g * w, (g * x).mean(0)

    class WrongGradient(Node):
        def params(self):
            return {"w": np.ones(4, dtype=np.float32)}

        def step(self, p, x, state):
            return MeanGradient.apply(x, p["w"]), state

    yield WrongGradient
    _REGISTRY.pop("WrongGradient", None)


def test_a_wrong_parameter_gradient_fails_the_check_and_the_layer_steps(mean_gradient,
                                                                        monkeypatch):
    node = mean_gradient()
    x = torch.tensor(normal(6, 5, 4))
    p = {"w": torch.tensor(normal(4), requires_grad=True)}
    monkeypatch.setattr(over_time, "_verdicts", {})
    with torch.enable_grad():
        assert not over_time.verified(node, p, x, None)
    assert over_time.verified(node, {"w": p["w"].detach()}, x, None)  # its values are right
    graph = hub.Graph.chain(hub.Input(shape=(4,)), node, hub.LIF(beta=0.5, threshold=0.25))
    want = runs(graph, x, "torch", True)
    got = runs(graph, x, "auto", True)
    assert all(torch.equal(got[2][k], want[2][k]) for k in want[2]) and want[2]


def test_the_float_equivalence_check_takes_a_reordered_sum_and_not_a_wrong_one():
    terms = torch.tensor(normal(8, 1000, 50))
    want = terms[-1].sum(0)
    for t in reversed(range(7)):  # each step's sum, added last step first
        want = want + terms[t].sum(0)
    got = terms.flatten(0, 1).sum(0)
    scale = terms.abs().flatten(0, 1).sum(0)
    assert not torch.equal(got, want) and over_time.equivalent(got, want, scale, 8)
    wrong = got.clone()
    wrong[7] += 1e-3 * scale[7]
    assert not over_time.equivalent(wrong, want, scale, 8)


@pytest.fixture
def batch_centred():
    """A plugin's stateless node whose value depends on the rest of the batch."""

    class BatchCentred(Node):
        def step(self, p, x, state):
            return x - x.mean(0), state

    yield BatchCentred
    _REGISTRY.pop("BatchCentred", None)


def test_a_layer_whose_values_depend_on_the_batch_keeps_stepping(batch_centred, monkeypatch):
    graph = hub.Graph.chain(hub.Input(shape=(5,)), batch_centred(),
                            hub.LIF(beta=0.5, threshold=0.25))
    x = torch.tensor(normal(6, 4, 5))
    ran = whole_sequence_layers(monkeypatch)
    sim = hub.Simulator(graph)
    assert torch.equal(sim(x), hub.simulate(graph, x, backend="torch"))
    assert sim.paths["lif2"] == cpu.PATH and not ran


def test_each_kind_of_call_is_verified_once(monkeypatch):
    graph = hub.Graph.chain(hub.Input(shape=(3, 6, 6)), hub.AvgPool2d(kernel_size=(3, 3),
                            stride=(3, 3)), hub.IF(threshold=0.5))
    x = torch.tensor(normal(5, 4, 3, 6, 6))
    compared = []
    compare = over_time._compare
    monkeypatch.setattr(over_time, "_compare", lambda *a: compared.append(1) or compare(*a))
    monkeypatch.setattr(over_time, "_verdicts", {})
    first = hub.simulate(graph, x)
    assert torch.equal(hub.simulate(graph, x), first) and len(compared) == 1
    hub.simulate(graph, x[:, :2])  # another batch size is another kind of call
    assert len(compared) == 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("fields", [
    {"kernel_size": (2, 2), "stride": (2, 2)},
    {"kernel_size": (3, 3), "stride": (2, 2), "padding": (1, 1)},
    {"kernel_size": (3, 2), "stride": (1, 2), "padding": (1, 0)},
], ids=["2x2", "3x3-padded", "3x2-overlapping"])
def test_the_max_pooling_kernel_picks_torch_s_maximum_and_index(fields, dtype):
    """Ties (spikes), signed zeros, infinities and NaNs: the same value, and the gradient sent
    where torch's own max pooling sends it."""
    node = hub.MaxPool2d(**fields)
    x = torch.tensor(rng.integers(0, 2, size=(6, 3, 9, 8)), dtype=dtype)
    x[0, 0] = -0.0
    x[0, 1, ::2] = 0.0
    x[1, 0] = -float("inf")
    x[1, 1, 2:4, 1:5] = float("nan")
    x[2] = torch.tensor(normal(3, 9, 8))
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    want = torch.nn.functional.max_pool2d(xa, node.kernel_size, node.stride, node.padding)
    got = cpu.max_pool2d(node, xb)
    assert torch.equal(got.isnan(), want.isnan()) and torch.equal(
        torch.nan_to_num(got),
        torch.nan_to_num(want))
    assert torch.equal(torch.signbit(got), torch.signbit(want))
    g = torch.tensor(normal(*want.shape), dtype=dtype)
    want.backward(g)
    got.backward(g)
    assert torch.equal(xb.grad, xa.grad)


def test_a_neuron_kernel_is_rebuilt_when_its_parameters_change_in_place():
    """The kernel keeps its parameters between calls; a change made in place (an optimiser's
    step, or a write through ``.data`` that no version counter sees) is seen at the next call."""
    def layer(threshold: float) -> hub.Graph:
        return hub.Graph.chain(hub.Input(shape=(6,)), hub.LIF(beta=0.5, threshold=threshold))
    graph = layer(0.25)
    x = torch.tensor(normal(8, 3, 6))
    sim = hub.Simulator(graph)
    first = sim(x)
    sim.reset()
    assert torch.equal(sim(x), first)
    threshold = sim.params[sim._keys["lif1"]].threshold
    for value, through_data in ((0.75, True), (0.125, False)):
        with torch.no_grad():
            (threshold.data if through_data else threshold).fill_(value)
        sim.reset()
        want = hub.simulate(layer(value), x, backend="torch")
        assert not torch.equal(want, first) and torch.equal(sim(x), want)


def test_the_kernels_parameter_check_compares_bits():
    """The check behind the rebuild above: bytes on the CPU (a -0.0 for a 0.0 and a NaN's payload
    count, a NaN equals its own bits), the general comparison for a strided parameter."""
    _same_bits = cpu._same_bits
    t = torch.tensor([0.0, 1.5, float("nan"), -2.0])
    assert _same_bits(t, t.clone())
    other_nan = t.clone()
    other_nan.view(torch.int32)[2] += 1
    assert other_nan.isnan()[2]
    for changed in (torch.tensor([-0.0, 1.5, float("nan"), -2.0]),
                    torch.tensor([0.0, 1.5, float("nan"), -2.0000002]), other_nan,
                    t.double(), t[:3]):
        assert not _same_bits(changed, t.clone())
    strided = torch.tensor([[0.0, 2.0], [1.0, -0.0]]).t()
    assert not strided.is_contiguous()
    assert _same_bits(strided, strided.contiguous())
    assert not _same_bits(strided, strided.abs().contiguous())
    assert _same_bits(torch.empty(0), torch.empty(0))


@pytest.mark.parametrize("backend", ["torch", "auto"])
@pytest.mark.parametrize("inputs,outputs,batch", [(7, 5, 3), (33, 17, 5), (64, 64, 8)])
def test_a_sequence_gives_the_bits_of_single_steps_whatever_the_layer_sizes(backend, inputs,
                                                                            outputs, batch):
    """A step of a [T, N, F] sequence starts wherever the step before ended; where N x F is not
    a multiple of 16 floats it is off the 64-byte boundary a tensor of its own starts on, and
    sgemm rounds differently there. A sequence must still give single steps' bits."""
    graph = hub.Graph.chain(("in", hub.Input(shape=(inputs,))),
                            ("fc1", hub.Linear(weight=normal(inputs, inputs))),
                            ("lif", hub.LIF(beta=0.875, threshold=0.5)),
                            ("fc2", hub.Linear(weight=normal(outputs, inputs))))
    x = torch.tensor(normal(20, batch, inputs))
    got = hub.simulate(graph, x, backend=backend)
    sim = hub.Simulator(graph, backend="torch")
    want = torch.stack([sim.step(xt.clone()) for xt in x])
    assert torch.equal(got, want)


def bits(t: torch.Tensor) -> torch.Tensor:
    """The bits of a float tensor (``torch.equal`` takes -0.0 for 0.0 and never NaN for NaN)."""
    return t.contiguous().view({4: torch.int32, 8: torch.int64}[t.element_size()])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_an_affine_with_zero_weights_outputs_its_bias_with_the_product_s_bits(dtype,
                                                                              monkeypatch):
    """snnTorch's recurrent bias imports as an Affine with zero weights: over all steps without
    gradients it skips the product, and gives its bits, signed zeros included, wherever it does
    (and the product wherever it would not: a non-finite input, a -0.0 in the bias)."""
    weight = np.zeros((6, 5), np.float32)
    weight[1, 2] = -0.0
    bias = normal(6)
    bias[3] = 0.0
    bias[4] = 1e-42  # subnormal in float32
    node = hub.Affine(weight=weight, bias=bias)
    p = {k: torch.tensor(v, dtype=dtype) for k, v in node.params().items()}
    x = torch.tensor(normal(4, 3, 5, scale=1e30), dtype=dtype)
    x[0, 0, 0], x[1, 1, 1] = -0.0, -1e-40
    want = torch.stack([node.step(p, xt, None)[0] for xt in x])
    products, linear = [], torch.nn.functional.linear
    monkeypatch.setattr(torch.nn.functional, "linear",
                        lambda *a: products.append(1) or linear(*a))
    with torch.no_grad():
        got = over_time.run(node, p, x, None)
    assert not products and torch.equal(bits(got), bits(want))
    # where it would not give the product's bits, it takes the product
    cases = {"inf": (x.clone().index_fill_(2, torch.tensor([1]), float("inf")), p),
             "nan": (x.clone().index_fill_(2, torch.tensor([4]), float("nan")), p),
             "-0.0 in the bias": (x, p | {"bias": p["bias"].clone().index_fill_(
                 0, torch.tensor([3]), -0.0)})}
    for case, (xs, ps) in cases.items():
        want = torch.stack([node.step(ps, xt, None)[0] for xt in xs])
        products.clear()
        with torch.no_grad():
            got = over_time.run(node, ps, xs, None)
        assert products, case
        assert torch.equal(bits(got), bits(want)), case
    # a call that records gradients takes the product, whose backward it is
    xg = x.clone().requires_grad_()
    products.clear()
    over_time.run(node, p, xg, None).sum().backward()
    assert products and xg.grad is not None
