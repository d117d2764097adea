"""The reference simulator: runs any canonical graph in torch, step by step.

It is the semantics every exporter is checked against, so it is plain: each time step walks the
nodes in order, a node's input is the sum of its incoming edges (recurrent ones from the step
before), and each node's ``step`` does the rest. Multi-step calls loop over single steps (or,
below, take faster paths proven to give the same bits), so the two modes agree bit for bit.
Spikes carry surrogate gradients, so a :class:`Simulator` trains like any ``torch.nn.Module``
(``trainable=True`` makes the float parameters ``nn.Parameter`` s).

``backend`` picks how neuron layers run in multi-step calls. ``"auto"`` (the default) takes, layer
by layer, the fastest path that gives the reference's bits: the fused C++ kernel for CPU tensors,
the CuPy kernel for CUDA tensors where CuPy is installed, and the reference step otherwise (a
neuron whose own parameters need gradients, a dtype the kernels lack, a neuron type that
overrides the built-in step, no C++ compiler). ``"torch"`` always steps the reference;
``"fused"`` (compiled CPU kernels) and ``"cupy"`` (CUDA kernels) force one kernel. Kernels run a
neuron layer over all time steps in one call, with bit-identical results, so a sequence runs node
by node, each node once over all its time steps after the nodes feeding it. A recurrent edge
closes a cycle (the nodes that reach one another through it: a strongly connected component of
the graph), whose nodes need each other's previous step: they step together, ``t = 0 .. T-1``,
as :meth:`Simulator.step` steps them (their inputs from outside the cycle sliced from sequences
already computed, each step on memory of its own): a neuron the CPU kernel takes on one compiled
call per step (:class:`hub.kernels.cpu.Stepper`, the reference's bits; a readout, whose output is
its state, only without gradients), the other nodes on the reference step. The sequences read
after the cycle are stacked from their steps, or, without gradients, written in place by the
kernel. The nodes before and after a cycle run over all time steps as in a graph without one. A
neuron a kernel cannot take (see :func:`hub.kernels.cpu.unsupported`) steps on its own sequence.
With ``"auto"``, a graph in which no neuron takes a kernel (over all steps off a cycle, step by
step on one) steps whole, one time step at a time (as fast, and it keeps less memory), as does
one whose sequences node by node would exceed ``max_state_bytes``.
Running node by node, each stateless layer (convolution, matrix product, pooling, ...) runs once
on all ``T x N`` samples where that is verified to give stepping's bits for values and input
gradients, and float-equivalent parameter gradients (one call's backward sums them in its own
order; :mod:`hub.over_time`), and steps otherwise. ``"torch"`` keeps stepping's order for
parameter gradients too, as the nodes on a cycle do for theirs.
:attr:`Simulator.paths` says which path each neuron layer took (for one on a cycle, the cycle's
nodes that step with it), and the ``hub.simulate`` logger says it at debug level. The kernels
give first derivatives; for second derivatives (``create_graph=True``) use ``backend="torch"``.
"""

from __future__ import annotations

import heapq
import logging
import math
import warnings
from typing import Any, Mapping, NamedTuple

import numpy as np
import torch

from . import over_time
from .errors import HubError, ParameterError, ShapeError
from .families import Family
from .graph import Graph
from .layout import as_input
from .limits import how_to_raise, limits
from .loihi import LoihiCUBA
from .neurons import Neuron
from .node import Node

BACKENDS = ("auto", "torch", "fused", "cupy")
#: The keyword options of :func:`simulate`, those of :class:`Simulator`.
OPTIONS = ("dtype", "device", "trainable", "backend")


#: Node types the kernels may run (each kernel module says which nodes it takes).
KERNEL_NODES = (Neuron, LoihiCUBA, Family)


class Unit(NamedTuple):
    """What running node by node runs at once: one node over all time steps, or a cycle's nodes
    stepped together."""

    names: tuple[str, ...]
    #: those of ``names`` whose sequences are read after them (or are outputs)
    stacked: tuple[str, ...]
    #: the sequences to let go once they have run
    done: tuple[str, ...]


class KernelWarning(UserWarning):
    """A fused backend was asked for but cannot run here; the reference steps instead."""

Tensors = torch.Tensor | dict[str, torch.Tensor]
log = logging.getLogger(__name__)


class Simulator(torch.nn.Module):
    """A canonical graph as a stateful torch module.

    ``sim(x)`` runs a whole sequence ``[T, N, *in]`` from the current state and returns
    ``[T, N, *out]``; ``sim.step(x)`` runs one step ``[N, *in]``. Both keep the state between
    calls until :meth:`reset`. With several inputs or outputs, pass and get dicts by node name.
    ``backend`` is ``"auto"`` (the default), ``"torch"``, ``"fused"`` or ``"cupy"`` (module
    docstring).
    """

    def __init__(self, graph: Graph, *, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None, trainable: bool = False,
                 backend: str = "auto") -> None:
        super().__init__()
        if not isinstance(graph, Graph):
            raise HubError(f"the simulator runs a hub.Graph, got {type(graph).__name__}; "
                           "hub.load() imports other models")
        dtype, device = _dtype(dtype), _device(device)
        if not isinstance(trainable, bool):
            raise ParameterError(f"expected True or False, got {trainable!r}", field="trainable")
        self.backend = backend
        self._kernels = _kernels(backend)
        #: The path each neuron layer took in the last multi-step call (module docstring).
        self.paths: dict[str, str] = {}
        self.graph = graph.flat()
        self.plan = graph.plan()
        # looked up on every call, and fixed with the plan
        self._inputs, self._outputs = self.graph.inputs, self.graph.outputs
        self.dtype = dtype
        self._state_bytes: dict[tuple, dict[str, tuple[int, str]]] = {}
        self._needs: dict[tuple, tuple[int, dict]] = {}
        self._schedule: list[Unit] | None = None
        self._cycles: dict[str, tuple[str, ...]] | None = None
        self._keys = {name: f"n{index}" for index, name in enumerate(self.plan.order)}
        self.params = torch.nn.ModuleDict()
        for name in self.plan.order:
            holder = torch.nn.Module()
            for field, value in self.graph.nodes[name].params().items():
                if not isinstance(value, np.ndarray):
                    continue
                tensor = torch.as_tensor(np.array(value), device=device)
                if tensor.is_floating_point():
                    holder.register_parameter(field, torch.nn.Parameter(
                        tensor.to(dtype), requires_grad=trainable))
                else:
                    holder.register_buffer(field, tensor)
            self.params[self._keys[name]] = holder
        self._p = {name: dict(self.params[key].named_parameters(recurse=False))
                   | dict(self.params[key].named_buffers(recurse=False))
                   for name, key in self._keys.items()}
        self.reset()

    def __getstate__(self) -> dict[str, Any]:
        # kernel modules do not pickle: a copy (deepcopy, torch.save) looks them up again
        state = self.__dict__.copy()
        state["_kernels"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._kernels = _kernels(self.backend)
        # what is worked out once per simulator is worked out again (older copies lack it)
        self._needs, self._schedule, self._cycles = {}, None, None
        self._inputs, self._outputs = self.graph.inputs, self.graph.outputs

    @property
    def values(self) -> dict[str, torch.Tensor]:
        """Every node's output in the last step (by flat node name), to compare layer by
        layer with another run."""
        return dict(self._last)

    def reset(self) -> None:
        """Forget all state: the next step is the first."""
        self._state: dict[str, Any] | None = None
        self._last: dict[str, torch.Tensor] = {}

    def _start(self, batch: int, like: torch.Tensor, *, last: bool = True) -> None:
        """The first step's state, and (``last``, for recurrent edges) zeros as the values of
        the step before it."""
        self._state = {}
        for name in self.plan.order:
            shape = (batch, *self.plan.output_shapes[name])
            node = self.graph.nodes[name]
            self._state[name] = node.initial_state(shape, like) if node.stateful else None
            if last:
                self._last[name] = like.new_zeros(shape)

    def step(self, x: Tensors) -> Tensors:
        """Advance one time step; ``x`` is ``[N, *in]`` (or a dict of them by input name)."""
        inputs = self._named(x, time=False)
        batch = next(iter(inputs.values())).shape[0]
        like = next(iter(inputs.values()))
        if self._state is None:
            self._check_memory(batch, None, like)
            self._start(batch, like)
        values: dict[str, torch.Tensor] = {}
        for name in self.plan.order:
            node = self.graph.nodes[name]
            total = inputs[name] if name in inputs else self._gather(name, values)
            values[name], self._state[name] = node.step(self._p[name], total, self._state[name])
        self._last = values
        outputs = {name: values[name] for name in self._outputs}
        return outputs if len(outputs) > 1 else next(iter(outputs.values()))

    def _gather(self, name: str, values: dict[Any, torch.Tensor],
                forward: tuple[Any, ...] | None = None) -> torch.Tensor | None:
        """A node's input: the sum of its forward edges' values (of ``forward``, if given, in
        their place), then its recurrent edges' last ones (in that order, so every backend adds
        in the same order)."""
        forward = self.plan.forward[name] if forward is None else forward
        if self.graph.nodes[name].operands:
            return tuple(values[source] for source in forward)
        total = None
        for source in forward:
            total = values[source] if total is None else total + values[source]
        for source in self.plan.recurrent[name]:
            total = self._last[source] if total is None else total + self._last[source]
        return total

    def forward(self, x: Tensors) -> Tensors:
        """Run a sequence ``[T, N, *in]`` (or a dict of them) and return ``[T, N, *out]``."""
        inputs = self._named(x, time=True)
        like = next(iter(inputs.values()))
        steps = like.shape[0]
        if steps == 0:
            raise ShapeError(f"the input has no time steps (shape {list(like.shape)}); a "
                             "sequence [T, N, *in] needs T >= 1", node=next(iter(inputs)))
        stepped = self._stepped(like)
        if stepped is None and self._kernels is _auto:
            try:
                self._check_memory(like.shape[1], steps, like, layered=True)
            except HubError:  # stepping may fit where node by node does not
                stepped = {name: "reference (running node by node would exceed "
                                 "max_state_bytes)" for name, node in self.graph.nodes.items()
                           if isinstance(node, KERNEL_NODES)}
        self._check_memory(like.shape[1], steps, like, layered=stepped is None)
        if stepped is None:
            return self._layers(inputs)
        self._note(stepped)
        # unbind, not v[t]: the backward of T selects would add T full-size gradients
        slices = {k: v.unbind(0) for k, v in inputs.items()}
        # each step on memory of its own, as a single step's input is (over_time.standalone)
        results = [self.step({k: over_time.standalone(v[t]) for k, v in slices.items()})
                   for t in range(steps)]
        if isinstance(results[0], dict):
            return {k: torch.stack([r[k] for r in results]) for k in results[0]}
        return torch.stack(results)

    def _stepped(self, like: torch.Tensor) -> dict[str, str] | None:
        """None if a sequence like ``like`` runs node by node, each node off a cycle over all time
        steps and each cycle's nodes stepped together (with a kernel and, for ``"auto"``, some
        neuron that a kernel takes, over all steps off a cycle or step by step on one: else
        stepping is as fast and keeps less memory); otherwise why each neuron layer steps."""
        neurons = {name: node for name, node in self.graph.nodes.items()
                   if isinstance(node, KERNEL_NODES)}
        if self._kernels is None:
            return dict.fromkeys(neurons, "reference")
        if self._kernels is not _auto:
            return None
        cycles = self._cycled()
        probe = like[:1, :1]
        why = {}
        for name, node in neurons.items():
            if name in cycles:
                if self._kernel_steps(name, probe):
                    return None
                why[name] = _on_cycle(cycles[name])
                continue
            why[name] = _auto.unsupported(node, self._p[name], probe)
            if why[name] is None:  # one is enough
                return None
        return {name: reason if name in cycles else f"reference ({reason})"
                for name, reason in why.items()}

    def _cycled(self) -> dict[str, tuple[str, ...]]:
        """The nodes on a cycle (recurrent edges close every cycle), each with its cycle's nodes
        in order: a strongly connected component, those of its nodes reach one another."""
        if self._cycles is None:
            ahead: dict[str, list[str]] = {name: [] for name in self.plan.order}
            behind: dict[str, list[str]] = {name: [] for name in self.plan.order}
            for name in self.plan.order:
                for source in (*self.plan.forward[name], *self.plan.recurrent[name]):
                    ahead[source].append(name)
                    behind[name].append(source)
            index = {name: i for i, name in enumerate(self.plan.order)}
            cycles: dict[str, tuple[str, ...]] = {}
            for name in self.plan.order:
                # the target of a recurrent edge reaches its source: both lie on the cycle
                if self.plan.recurrent[name] and name not in cycles:
                    members = _reach(name, ahead) & _reach(name, behind)
                    cycle = tuple(sorted(members, key=index.__getitem__))
                    cycles.update(dict.fromkeys(cycle, cycle))
            self._cycles = cycles
        return self._cycles

    def _note(self, paths: dict[str, str]) -> None:
        if paths != self.paths:
            self.paths = paths
            for name, path in paths.items():
                log.debug("backend %r: %s runs %s", self.backend, name, path)

    def _layers(self, inputs: dict[str, torch.Tensor]) -> Tensors:
        """Run node by node, each over all time steps (neurons through the backend's kernel),
        and the nodes of each cycle together, step by step (:meth:`_cycle`).

        A node's sequence is let go once every node it feeds has run, and only its last step is
        kept (a copy), so that memory holds a few sequences at a time, not one per node.
        """
        like = next(iter(inputs.values()))
        cycles = self._cycled()
        if self._state is None:
            # recurrent edges read the last values; the others' are replaced at the end
            self._start(like.shape[1], like[0], last=bool(cycles))
        values: dict[str, torch.Tensor] = {}
        last: dict[str, torch.Tensor] = {}
        paths: dict[str, str] = {}
        for names, stacked, done in self._releases():
            if names[0] in cycles:
                self._cycle(names, stacked, like.shape[0], values, last, paths, like)
            else:
                name = names[0]
                total = inputs[name] if name in inputs else self._gather(name, values)
                value = values[name] = self._layer(name, total, paths)
                # a junction passing its source's sequence on shares its source's last step
                same = [s for s in self.plan.forward[name] if values.get(s) is value]
                last[name] = last[same[0]] if same else value[-1].clone()
            for source in done:
                del values[source]
        self._last = last
        self._note(paths)
        given = {id(v) for v in inputs.values()}
        # an output that is an input passed through is copied, as stepping would stack a copy
        outputs = {name: values[name].clone() if id(values[name]) in given else values[name]
                   for name in self._outputs}
        return outputs if len(outputs) > 1 else next(iter(outputs.values()))

    def _cycle(self, names: tuple[str, ...], stacked: tuple[str, ...], steps: int,
               values: dict[str, torch.Tensor], last: dict[str, torch.Tensor],
               paths: dict[str, str], like: torch.Tensor) -> None:
        """The nodes of one cycle, stepped together through the time steps as :meth:`step` steps
        them; their inputs from outside it are whole sequences by now (``like`` is one of the
        graph's inputs). The sequences of ``stacked`` (those read after the cycle) go into
        ``values``, each node's last step into ``last``.

        A neuron the CPU kernel takes steps on it, one compiled call per step
        (:class:`hub.kernels.cpu.Stepper`, the reference's bits); without gradients it writes
        each step's output straight into its sequence if that is read after the cycle. The other
        nodes take the reference step, each input on memory of its own as stepping gives it.
        """
        members = set(names)
        # a node's first inputs from outside the cycle are added over all steps at once, before
        # the steps: the same additions in the same order, element by element
        forward: dict[str, tuple[Any, ...]] = {}
        sums: dict[Any, torch.Tensor] = {}
        for name in names:
            sources = self.plan.forward[name]
            head = next((i for i, s in enumerate(sources) if s in members), len(sources))
            if head < 2 or self.graph.nodes[name].operands:
                forward[name] = sources
                continue
            total = values[sources[0]]
            for source in sources[1:head]:
                total = total + values[source]
            sums[("sum", name)] = total  # a key no node's name can be
            forward[name] = (("sum", name), *sources[head:])
        outside = list(dict.fromkeys(s for name in names for s in forward[name]
                                     if s not in members))
        # unbind, not v[t]: the backward of T selects would add T full-size gradients
        slices = {source: (sums[source] if source in sums else values[source]).unbind(0)
                  for source in outside}
        steppers = self._steppers(names, paths, like)
        # without gradients, a stepped neuron's sequence is written in place: no stack
        sequences = {} if torch.is_grad_enabled() else {
            name: like.new_empty((steps, like.shape[1], *self.plan.output_shapes[name]))
            for name in stacked if name in steppers}
        results: dict[str, list[torch.Tensor]] = {
            name: [] for name in stacked if name not in sequences}
        # the steps of each sequence as views made once, not one indexing per step
        nodes = [(name, self.graph.nodes[name], self._p[name], steppers.get(name),
                  sequences[name].unbind(0) if name in sequences else None, forward[name])
                 for name in names]
        standalone = over_time.standalone
        for t in range(steps):
            # each step on memory of its own, as a single step's input is
            now = {source: standalone(slices[source][t]) for source in outside}
            for name, node, p, stepper, sequence, sources in nodes:
                total = self._gather(name, now, sources)
                if stepper is not None:
                    now[name] = stepper(total, None if sequence is None else sequence[t])
                    continue
                # what a node reads here is a tensor of its own (as in stepping), not a view of
                # a sequence that may start off the alignment the libraries round by
                total = (tuple(map(standalone, total)) if isinstance(total, tuple)
                         else standalone(total) if isinstance(total, torch.Tensor) else total)
                now[name], self._state[name] = node.step(p, total, self._state[name])
            for name in names:  # the next step's recurrent edges read these
                self._last[name] = now[name]
            for name, steps_of in results.items():
                steps_of.append(now[name])
        for name, stepper in steppers.items():
            self._state[name] = stepper.state()
        for name in names:
            # a step of a sequence written in place is copied: it must not keep the sequence
            last[name] = self._last[name] = (self._last[name].clone() if name in sequences
                                             else self._last[name])
        for name in stacked:
            values[name] = sequences[name] if name in sequences else torch.stack(results[name])

    def _steppers(self, names: tuple[str, ...], paths: dict[str, str],
                  like: torch.Tensor) -> dict[str, Any]:
        """A kernel stepper for each neuron of a cycle that one takes (:meth:`_cycle`), and
        each neuron's path; ``like`` is one of the graph's input sequences."""
        from .kernels import cpu

        steppers = {}
        for name in names:
            node = self.graph.nodes[name]
            if not isinstance(node, KERNEL_NODES):
                continue
            if self._kernel_steps(name, like):
                one = like.new_empty((like.shape[1], *self.plan.output_shapes[name]))
                steppers[name] = cpu.Stepper(node, self._p[name], self._state[name], one)
                paths[name] = _on_cycle(names, f"{cpu.PATH}, one step at a time")
            else:
                paths[name] = _on_cycle(names)
        return steppers

    def _kernel_steps(self, name: str, like: torch.Tensor) -> bool:
        """Whether the neuron ``name``, on a cycle, steps on the CPU kernel
        (:class:`hub.kernels.cpu.Stepper`) for inputs like ``like``."""
        from .kernels import cpu

        node = self.graph.nodes[name]
        if isinstance(node, Neuron) and not node.spiking and torch.is_grad_enabled():
            # a readout's output is its state: the reference adds the gradients of its readers
            # and of its next step in autograd's order, the kernel's backward in its own
            return False
        kernels = self._kernels.pick(like) if self._kernels is _auto else self._kernels
        return (kernels is cpu and cpu.steppable(node)
                and self._kernels.unsupported(node, self._p[name], like) is None)

    def _releases(self) -> list[Unit]:
        """The nodes in an order that runs each cycle's nodes together: each node off a cycle
        alone, each cycle's nodes together, with those of their sequences that are read after
        them (kept: a cycle's nodes read among themselves step by step) and the sequences to let
        go once they have run (those they are the last to read, outputs excepted). The same for
        every call, so found once."""
        if self._schedule is None:
            cycles = self._cycled()
            units = _units(self.plan.order, self.plan.forward, cycles)
            last_reader: dict[str, int] = {}
            for i, names in enumerate(units):
                for name in names:
                    for source in self.plan.forward[name]:
                        if source not in names:
                            last_reader[source] = i
            outputs = set(self._outputs)
            self._schedule = []
            for i, names in enumerate(units):
                if names[0] in cycles:
                    log.debug("%s step together, one time step at a time: a recurrent edge "
                              "closes the cycle they lie on", ", ".join(names))
                read = dict.fromkeys(s for name in names for s in self.plan.forward[name]
                                     if s not in names)
                self._schedule.append(Unit(
                    names, tuple(n for n in names if n in last_reader or n in outputs),
                    tuple(s for s in read if last_reader[s] == i and s not in outputs)))
        return self._schedule

    def _layer(self, name: str, total: Any, paths: dict[str, str]) -> torch.Tensor:
        """One node over all time steps of its input ``total``; updates its state."""
        node, p, state = self.graph.nodes[name], self._p[name], self._state[name]
        if isinstance(node, KERNEL_NODES):
            why = self._kernels.unsupported(node, p, total)
            if why is None:
                kernels = self._kernels.pick(total) if self._kernels is _auto else self._kernels
                paths[name] = kernels.PATH
                value, self._state[name] = kernels.run(node, p, total, state)
                return value
            paths[name] = f"reference ({why})"
        if not node.stateful and type(node).step is Node.step:
            return total  # a junction passes its input through
        if over_time.verified(node, p, total, state):
            return over_time.run(node, p, total, state)
        out, self._state[name] = over_time.step(node, p, total, state)
        return out

    def _named(self, x: Tensors, *, time: bool) -> dict[str, torch.Tensor]:
        names = self._inputs
        if isinstance(x, Mapping):
            missing, extra = set(names) - set(x), set(x) - set(names)
            if missing or extra:
                raise HubError(f"the graph's inputs are {', '.join(names)}; got "
                               f"{', '.join(map(str, x))}")
            given = dict(x)
        elif len(names) == 1:
            given = {names[0]: x}
        else:
            raise HubError(f"the graph has {len(names)} inputs ({', '.join(names)}); "
                           "pass a dict of tensors by input name")
        out = {}
        batch = None
        for name, value in given.items():
            try:
                value = as_input(value, self.dtype)
            except HubError as e:
                raise e.at(node=name)
            want = self.plan.output_shapes[name]
            lead = 2 if time else 1
            if tuple(value.shape[lead:]) != tuple(want) or value.dim() != lead + len(want):
                layout = "[T, N, " if time else "[N, "
                raise ShapeError(f"expected input of shape {layout}{', '.join(map(str, want))}]"
                                 f", got {list(value.shape)}", node=name)
            if batch is not None and value.shape[:lead] != batch:
                raise ShapeError("inputs disagree on the time or batch size", node=name)
            batch = value.shape[:lead]
            out[name] = value
        return out

    def _check_memory(self, batch: int, steps: int | None, like: torch.Tensor, *,
                      layered: bool = False) -> None:
        """Refuse, before allocating, a run needing more than ``limits().max_state_bytes``.

        Per node: its state (neuron state, delay lines: measured by building it on torch's
        ``meta`` device, which allocates nothing), this step's and the last step's output, and
        for a sequence of ``steps`` the outputs kept for every step: of every node when gradients
        are recorded; else of the outputs when the graph steps, and when it runs node by node
        (``layered``) of every node off a cycle and of a cycle's nodes read after it. A sequence
        stepped and then stacked (an output, or a cycle's node read after it) counts twice.
        """
        grad = torch.is_grad_enabled() and (
            like.requires_grad or any(p.requires_grad for p in self.parameters()))
        key = (batch, steps, like.dtype, grad, layered)
        if key not in self._needs:  # the same for every call of a kind: worked out once
            self._needs[key] = self._memory_need(batch, steps, like, grad, layered)
        need, parts = self._needs[key]
        most = limits().max_state_bytes
        if need > most:
            name = max(parts, key=lambda n: parts[n][0])
            total, reasons = parts[name]
            why = max(reasons, key=reasons.__getitem__)
            raise HubError(f"simulating this needs about {_bytes(need)} of state and "
                           f"activations, more than the limit of {_bytes(most)}; this node "
                           f"takes the most, {_bytes(total)}, mostly for {why} "
                           f"(batch {batch}, {like.dtype}); " + how_to_raise("max_state_bytes"),
                           node=name)

    def _memory_need(self, batch: int, steps: int | None, like: torch.Tensor, grad: bool,
                     layered: bool) -> tuple[int, dict[str, tuple[int, dict[str, int]]]]:
        """Bytes :meth:`_check_memory` counts, in all and by the node they are charged to."""
        size = like.element_size()
        outputs = set(self._outputs)
        # the nodes that step, and those of them whose steps are stacked into a sequence
        stepping = set(self._cycled() if layered else self.plan.order)
        stacked = outputs | ({n for unit in self._releases() for n in unit.stacked}
                             if layered else set())
        parts: dict[str, tuple[int, dict[str, int]]] = {}
        for name, (state, why) in self._state_sizes(batch, like.dtype).items():
            shape = [batch, *self.plan.output_shapes[name]]
            per_step = math.prod(shape) * size
            node = self.graph.nodes[name]
            # a junction passes its input on (no new tensor) unless it adds several
            junction = (not node.stateful and type(node).step is Node.step
                        and len(self.plan.forward[name]) + len(self.plan.recurrent[name]) < 2)
            costs = {why: state, f"its output {shape} per step": per_step * (1 if junction else 2)}
            if steps and (grad or name in stacked or name not in stepping):
                costs[f"its output {shape} kept for {steps} steps"] = steps * per_step * (
                    2 if name in outputs or name in stacked and name in stepping else 1)
            # what a junction costs is charged to the node that computes its value
            owner = name
            while self.plan.forward.get(owner) and _passes(self.graph.nodes[owner]):
                owner = self.plan.forward[owner][0]
            total, reasons = parts.get(owner, (0, {}))
            for reason, cost in costs.items():
                reasons[reason] = reasons.get(reason, 0) + cost
            parts[owner] = total + sum(costs.values()), reasons
        return sum(total for total, _ in parts.values()), parts

    def _state_sizes(self, batch: int, dtype: torch.dtype) -> dict[str, tuple[int, str]]:
        """Bytes of each node's state for ``batch`` samples, and its largest part."""
        key = (batch, dtype)
        if key not in self._state_bytes:
            meta = torch.empty(0, dtype=dtype, device="meta")
            sizes = {}
            for name in self.plan.order:
                node, shape = self.graph.nodes[name], (batch, *self.plan.output_shapes[name])
                try:
                    state = node.initial_state(shape, meta) if node.stateful else None
                except HubError as e:
                    raise e.at(node=name)
                except Exception:  # a node type whose state cannot be built on 'meta'
                    state = None
                tensors = _tensors(state)
                total = sum(t.numel() * t.element_size() for t in tensors.values())
                part = max(tensors, key=lambda k: tensors[k].numel(), default=None)
                why = (f"its state {part!r} of shape {list(tensors[part].shape)}"
                       if part is not None else "nothing")
                sizes[name] = (total, why)
            self._state_bytes[key] = sizes
        return self._state_bytes[key]


def _tensors(state: Any, key: str = "state") -> dict[str, torch.Tensor]:
    """The tensors in a node's state (a tensor, or dicts and tuples of them) by name."""
    if isinstance(state, torch.Tensor):
        return {key: state}
    items = (state.items() if isinstance(state, Mapping)
             else enumerate(state) if isinstance(state, (tuple, list)) else ())
    out: dict[str, torch.Tensor] = {}
    for k, v in items:
        out.update(_tensors(v, str(k) if isinstance(state, Mapping) else f"{key}[{k}]"))
    return out


def _reach(start: str, edges: dict[str, list[str]]) -> set[str]:
    """The nodes ``edges`` lead to from ``start`` (itself included)."""
    seen, todo = {start}, [start]
    while todo:
        for nxt in edges[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _units(order: tuple[str, ...], forward: dict[str, tuple[str, ...]],
           cycles: dict[str, tuple[str, ...]]) -> list[tuple[str, ...]]:
    """Each node off a cycle alone and each cycle's nodes together, in an order where every unit
    comes after those feeding it (recurrent edges lie within a cycle), otherwise as in
    ``order``."""
    index = {name: i for i, name in enumerate(order)}
    unit = {name: cycles.get(name, (name,)) for name in order}
    waits = {names: {unit[s] for name in names for s in forward[name]} - {names}
             for names in unit.values()}
    feeds: dict[tuple[str, ...], list[tuple[str, ...]]] = {names: [] for names in waits}
    for names, sources in waits.items():
        for source in sources:
            feeds[source].append(names)
    ready = [(index[names[0]], names) for names, sources in waits.items() if not sources]
    heapq.heapify(ready)
    out = []
    while ready:
        _, names = heapq.heappop(ready)
        out.append(names)
        for later in feeds[names]:
            waits[later].discard(names)
            if not waits[later]:
                heapq.heappush(ready, (index[later[0]], later))
    return out


def _on_cycle(names: tuple[str, ...], path: str = "reference") -> str:
    """Why a node on a cycle steps, and on what, as :attr:`Simulator.paths` says it."""
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    return f"{path} (on a cycle a recurrent edge closes: steps with {shown})"


def _passes(node: Node) -> bool:
    """Whether a node's value is its input's (a junction: Output, Add of one edge)."""
    return not node.stateful and type(node).step is Node.step


def _bytes(n: int) -> str:
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit} ({n} bytes)"
    return f"{n} bytes"


def _dtype(dtype: Any) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ParameterError(f"expected a torch floating-point dtype such as torch.float32 or "
                             f"torch.float64, got {dtype!r}", field="dtype")
    return dtype


def _device(device: Any) -> torch.device | None:
    if device is None:
        return None
    try:
        device = torch.device(device)
        torch.empty(0, device=device)  # a device this torch cannot use fails here, not later
    except (TypeError, ValueError, RuntimeError, AssertionError) as e:
        raise ParameterError(f"device {device!r} cannot be used here: {e}; use 'cpu', or "
                             "'cuda' on a machine with a CUDA GPU", field="device") from None
    return device


def _kernels(name: str) -> Any:
    """The kernel module for a backend name (None for the reference), or why it cannot run."""
    if name not in BACKENDS:
        raise HubError(f"unknown backend {name!r}; the backends are "
                       f"{', '.join(map(repr, BACKENDS))}")
    if name == "torch":
        return None
    if name == "auto":
        return _auto
    if name == "cupy":
        from .kernels import cupy

        ok, why = cupy.available()
        if not ok:
            raise HubError(f"backend 'cupy' cannot run here: {why}; use backend='fused' on the "
                           "CPU or backend='torch'")
        return cupy
    from .kernels import cpu

    ok, why = cpu.available()
    if not ok:
        warnings.warn(f"backend 'fused' cannot run here, using the reference: {why}",
                      KernelWarning, stacklevel=3)
        return None
    return cpu


class _Auto:
    """``backend="auto"``: per layer, the kernel for the input's device, if it can take it.

    Whether a kernel can run here is found out on first need (the CPU one compiles then) and
    kept; a kernel that cannot run leaves its layers to the reference, without a warning.
    """

    PATH = "auto"

    def __init__(self) -> None:
        self._found: dict[str, tuple[Any, str]] = {}

    def _kernels(self, device: str) -> tuple[Any, str]:
        if device not in self._found:
            if device == "cpu":
                from .kernels import cpu as module
            elif device == "cuda":
                from .kernels import cupy as module
            else:
                self._found[device] = None, f"no kernel for {device} tensors"
                return self._found[device]
            ok, why = module.available()
            self._found[device] = (module, "") if ok else (None, why)
            if not ok:
                log.debug("backend 'auto': no kernel for %s tensors: %s", device, why)
        return self._found[device]

    def pick(self, x: torch.Tensor) -> Any:
        return self._kernels(x.device.type)[0]

    def unsupported(self, node: Node, p: dict, x: torch.Tensor) -> str | None:
        if not isinstance(node, KERNEL_NODES):
            return f"{type(node).__name__} is not a neuron"
        module, why = self._kernels(x.device.type)
        return why if module is None else module.unsupported(node, p, x)


_auto = _Auto()


def simulate(graph: Graph, x: Tensors, **options: Any) -> Tensors:
    """Run ``graph`` on ``x`` (``[T, N, *in]``, time-major) from a fresh state.

    Returns ``[T, N, *out]``, or a dict by output name when the graph has several outputs.
    Options go to :class:`Simulator` (``dtype``, ``device``, ``trainable``, ``backend``).
    """
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ParameterError(f"unknown option(s) {', '.join(map(repr, unknown))}; simulate takes "
                             f"{', '.join(OPTIONS)}", field=unknown[0])
    return Simulator(graph, **options)(x)
