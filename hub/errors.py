"""The errors snn-hub raises: one hierarchy, each error names where it happened.

Every error a user can provoke with bad input is a :class:`HubError`. It carries the file, the node
path and the field it is about, so the message reads like ``net.nir: node 'lif1', field
'v_threshold': NaN in 3 of 128 values``. Code that reads a file adds the file name on the way
out with :meth:`HubError.at`, code that walks a graph adds the node name, so the place is complete
without every raise site knowing all of it.
"""

from __future__ import annotations

import os


class HubError(Exception):
    """Base of every error snn-hub raises for bad input, a bad model or a bad request."""

    def __init__(
        self,
        message: str,
        *,
        file: str | os.PathLike | None = None,
        node: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = os.fspath(file) if file is not None else None
        self.node = node
        self.field = field

    def at(
        self, *, file: str | os.PathLike | None = None, node: str | None = None
    ) -> HubError:
        """Add where the error happened (outer names prefix inner node paths); returns self."""
        if file is not None and self.file is None:
            self.file = os.fspath(file)
        if node is not None:
            self.node = node if self.node is None else f"{node}.{self.node}"
        self.args = (str(self),)
        return self

    def __str__(self) -> str:
        where = []
        if self.file is not None:
            where.append(self.file)
        if self.node is not None:
            where.append(f"node {self.node!r}")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        return f"{', '.join(where)}: {self.message}" if where else self.message


class ParameterError(HubError, ValueError):
    """A node parameter has the wrong type, shape or value (NaN, infinite, out of range)."""


class ShapeError(HubError, ValueError):
    """Shapes do not fit: a node's input disagrees with what its parameters expect."""


class GraphError(HubError, ValueError):
    """The graph's structure is wrong: unknown node in an edge, no input, a cycle without state."""


class UnknownNodeError(HubError, KeyError):
    """A node type name is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return HubError.__str__(self)


class FormatError(HubError, ValueError):
    """A file or object cannot be read: not the format it claims, truncated, or malformed."""


class UnsupportedError(HubError):
    """The target format cannot express something the model needs (strict conversion)."""


class PluginError(HubError):
    """A plugin is missing, unavailable, or gave the core something it cannot use."""


class RuntimeUnavailable(PluginError):
    """A format's runtime cannot run on this machine (an environment it needs is missing).

    Nothing is wrong with the model: the conformance suite reports such a run as not run, with
    this message, never as a pass or as "not expressible".
    """


class FileExistsHubError(HubError, FileExistsError):
    """The output file exists and overwriting was not asked for."""
