"""Fused neuron kernels: the whole time loop of a neuron layer in one call.

``cpu`` runs compiled C++ on the CPU (``backend="fused"``), ``cupy`` runs CUDA kernels through
CuPy (``backend="cupy"``). Both perform the float operations of :meth:`hub.Neuron.step` in the
same order, so their results are bit-identical to it; the reference stays the semantics, and
:class:`hub.Simulator` picks the kernels with its ``backend`` option. The CPU kernels are tested
against the reference on every convention; the CUDA source is tested the same way compiled for
the CPU, and on a GPU only where one is present.
"""

from __future__ import annotations
