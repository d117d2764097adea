"""Fused neuron kernels: the whole time loop of a neuron layer in one call.

``cpu`` runs compiled C++ on the CPU (``backend="fused"``), ``cupy`` runs CUDA kernels through
CuPy (``backend="cupy"``). Both perform the float operations of :meth:`hub.Neuron.step` in the
same order, so their results are bit-identical to it; the reference stays the semantics, and
:class:`hub.Simulator` picks the kernels with its ``backend`` option. The CPU kernels are tested
against the reference on every convention; the CUDA source is tested the same way compiled for
the CPU, and on a GPU only where one is present.

The neuron families of :mod:`hub.families` have kernels of their own, in the same two forms:
``families`` (C++, ``families.cpp``) and ``cupy_families``; ``cpu`` and ``cupy`` hand a family
node to them, and :attr:`hub.Family.kernel` names the kernel a family type's step has.
"""

from __future__ import annotations
