"""The toy plugin's conformance tests: the whole suite, by subclassing snn-hub's test class."""

from hub_conformance.testing import FormatTests


class TestToy(FormatTests):
    format = "toy"
    tiers = ("exact",)
    known_gaps = {"exact/dense-lif-amplitude:*toy": "toy spikes have no amplitude"}
