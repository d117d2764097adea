"""snn-hub: spike-exact conversion of spiking neural networks between frameworks.

>>> import hub
>>> graph = hub.load("net.nir", dt=1e-4)          # any format to the canonical graph
>>> spikes = hub.simulate(graph, x)               # x: [T, N, *in], time-major
>>> hub.convert("net.nir", to="hub", out="net.hub.json", dt=1e-4)
"""

from __future__ import annotations

from .api import check, convert, detect, formats, load, save
from .errors import (
    FileExistsHubError,
    FormatError,
    GraphError,
    HubError,
    ParameterError,
    PluginError,
    RuntimeUnavailable,
    ShapeError,
    UnknownNodeError,
    UnsupportedError,
)
from .formats import Format
from .graph import Graph
from .hookspecs import hookimpl
from .layout import from_lava, to_lava
from .families import EIF, QIF, AdExLIF, ALIF, AlphaLIF, Family, Izhikevich, SynapseFilter
from .loihi import LoihiCUBA
from .resonators import Resonator
from .neurons import IF, LI, LIF, CubaLI, CubaLIF, Integrator, Neuron
from .node import Node, node_from_dict, node_type, node_types, register_node
from .nodes import (
    AdaptiveAvgPool2d,
    Add,
    Affine,
    AvgPool2d,
    BatchNorm,
    Bias,
    Concat,
    Conv1d,
    Conv2d,
    ConvTranspose2d,
    Delay,
    Flatten,
    Input,
    Linear,
    MaxPool2d,
    Mul,
    Output,
    ReLU,
    Reshape,
    Scale,
    SumPool2d,
    Threshold,
    Vote,
)
from .plugin_manager import PluginWarning, plugins
from .sigma_delta import Delta, Quantize, Sigma, SigmaDelta
from .simulate import KernelWarning, Simulator, simulate
from . import limits as limits, qat as qat

__version__ = "0.1.0"

__all__ = [
    "AdaptiveAvgPool2d", "Add", "Affine", "AvgPool2d", "BatchNorm", "Bias", "Concat", "Conv1d",
    "Conv2d", "ConvTranspose2d", "CubaLI", "CubaLIF", "Delay",
    "FileExistsHubError", "Flatten", "Format", "FormatError", "Graph", "GraphError", "HubError",
    "IF", "Input", "Integrator", "KernelWarning", "LI", "LIF", "Linear", "LoihiCUBA", "MaxPool2d",
    "Mul", "Neuron", "Node", "Output", "ParameterError", "PluginError", "PluginWarning",
    "ReLU", "Reshape", "Resonator", "RuntimeUnavailable", "Scale", "ShapeError", "Simulator",
    "SumPool2d",
    "Threshold", "UnknownNodeError", "UnsupportedError", "Vote", "check", "convert", "detect",
    "formats", "from_lava",
    "hookimpl", "load", "node_from_dict", "node_type", "node_types", "plugins", "register_node",
    "save", "simulate", "to_lava",
    "ALIF", "AdExLIF", "AlphaLIF", "EIF", "Family", "Izhikevich", "QIF", "SynapseFilter",
    "Delta", "Quantize", "Sigma", "SigmaDelta",
]
