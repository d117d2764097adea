"""The node base class and the registry of node types.

A node type is one frozen, keyword-only dataclass that subclasses :class:`Node`. Its fields are
its parameters; the helpers :func:`array`, :func:`integer` and :func:`choice` declare how each is
coerced and checked, so that construction either gives a valid node or raises a
:class:`~hub.errors.ParameterError` that names the field. Subclassing registers the type under
its class name; everything else (serialisation, equality, the support table, the NIR plugin's
metadata) walks ``dataclasses.fields`` and needs no per-type code.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import math
from typing import Any, ClassVar, Iterator

import numpy as np

from .errors import ParameterError, ShapeError, UnknownNodeError

Shape = tuple[int, ...]

#: Largest number of elements a single parameter or activation may have: beyond this a file is
#: more likely hostile or corrupt than a model, and allocating it would exhaust memory.
MAX_ELEMENTS = 1 << 31
#: Longest delay or refractory period in steps: state is allocated per step of it.
MAX_STEPS = 1_000_000
#: :meth:`Node.to_dict` lists an array of up to this many values as numbers, and keeps a larger
#: one as its bytes (little-endian, base64): exact either way, but a listed float takes about 20
#: characters of JSON and a Python object each, so a 100M-parameter model listed took minutes and
#: gigabytes; as bytes it takes 4/3 of its size and a fraction of a second per 100 MB.
LISTED_MAX = 64

_REGISTRY: dict[str, type[Node]] = {}


def array(default: Any = dataclasses.MISSING, *, dtype: str = "float32", doc: str = "") -> Any:
    """A numeric array parameter; scalars are kept as 0-d arrays and broadcast where used."""
    meta = {"kind": "array", "dtype": dtype, "doc": doc}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default_factory=lambda: np.asarray(default, dtype), metadata=meta)


def integer(default: Any = dataclasses.MISSING, *, minimum: int | None = 0,
            maximum: int | None = None, doc: str = "") -> Any:
    """A non-negative (unless ``minimum`` says otherwise) integer parameter."""
    meta = {"kind": "int", "minimum": minimum, "maximum": maximum, "doc": doc}
    return dataclasses.field(default=default, metadata=meta)


def ints(default: Any = dataclasses.MISSING, *, length: int | None = None, doc: str = "") -> Any:
    """A tuple of integers (a shape, a kernel size, a stride)."""
    meta = {"kind": "ints", "length": length, "doc": doc}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default=tuple(default), metadata=meta)


def number(default: Any = dataclasses.MISSING, *, doc: str = "") -> Any:
    """A finite real number parameter (a float, not an array)."""
    meta = {"kind": "float", "doc": doc}
    return dataclasses.field(default=default, metadata=meta)


def choice(default: str, options: tuple[str, ...], *, doc: str = "") -> Any:
    """A string parameter that must be one of ``options``."""
    meta = {"kind": "choice", "options": options, "doc": doc}
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class Node:
    """Base of every node type: parameters as fields, shape inference, checks, reference step.

    Subclasses override :meth:`output_shape` (given the input shape, without batch and time
    axes), :meth:`check` for checks across fields, and :meth:`step` (one time step in torch).
    Stateful nodes set ``stateful = True`` and implement :meth:`initial_state`.
    """

    stateful: ClassVar[bool] = False
    #: Whether the node reads input edges; ``Input`` nodes do not.
    takes_input: ClassVar[bool] = True
    #: Whether its input edges are separate operands in edge order (``Mul``, ``Concat``): then
    #: :meth:`output_shape` and :meth:`step` get tuples, one entry per edge, instead of a sum.
    operands: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Every node type is a frozen keyword-only dataclass without writing the decorator.
        dataclasses.dataclass(frozen=True, kw_only=True, eq=False, repr=False)(cls)
        if cls.__dict__.get("abstract", False):
            return
        register_node(cls)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _coerce(f, getattr(self, f.name)))
        self.check()

    # -- what subclasses provide ------------------------------------------------------------

    def check(self) -> None:
        """Raise :class:`ParameterError` if fields disagree with each other."""

    def output_shape(self, input_shape: Shape | None) -> Shape:
        """The shape of one output sample, given that of one input sample."""
        return _required(input_shape, self)

    def initial_state(self, shape: tuple[int, ...], like: Any) -> Any:
        """The state before the first step, for a batch of outputs of ``shape``."""
        return None

    def step(self, p: dict, x: Any, state: Any) -> tuple[Any, Any]:
        """Advance one time step: input ``[N, *in]`` and state in, output and new state out.

        ``p`` holds the node's array parameters as torch tensors. The default passes the input
        through unchanged, which is what junctions (``Add``, ``Output``) do.
        """
        return x, state  # a junction: what flows in flows out

    # -- generic behaviour ------------------------------------------------------------------

    @property
    def type(self) -> str:
        return type(self).__name__

    def params(self) -> dict[str, Any]:
        """The fields and their values, in declaration order."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def replace(self, **changes: Any) -> Node:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, numbers, strings): the inverse of :func:`node_from_dict`. An array
        is ``{"dtype", "shape", "data": [numbers]}``, or beyond :data:`LISTED_MAX` values
        ``{"dtype", "shape", "base64": its little-endian bytes}``."""
        out: dict[str, Any] = {"type": self.type}
        for name, value in self.params().items():
            if isinstance(value, np.ndarray):
                out[name] = {"dtype": str(value.dtype), "shape": list(value.shape)}
                if value.size <= LISTED_MAX:
                    out[name]["data"] = value.ravel().tolist()
                else:
                    little = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<"))
                    out[name]["base64"] = base64.b64encode(little.data).decode("ascii")
            elif isinstance(value, tuple):
                out[name] = list(value)
            else:
                out[name] = value
        return out

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(_same(a, b) for a, b in zip(self.params().values(), other.params().values()))

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        parts = []
        for name, value in self.params().items():
            if isinstance(value, np.ndarray):
                value = value.item() if value.size == 1 else f"<{value.dtype}{list(value.shape)}>"
            parts.append(f"{name}={value!r}")
        return f"{self.type}({', '.join(parts)})"


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
    return a == b


def _required(shape: Shape | None, node: Node) -> Shape:
    if shape is None:
        raise ShapeError(f"{node.type} needs an input, but nothing is connected to it")
    return shape


def _coerce(f: dataclasses.Field, value: Any) -> Any:
    """Turn ``value`` into the type that field ``f`` declares, or raise naming the field."""
    meta = f.metadata
    kind = meta.get("kind")
    if kind == "array":
        return _coerce_array(f.name, value, meta["dtype"])
    if kind == "int":
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            if isinstance(value, (float, np.floating)) and float(value).is_integer():
                value = int(value)
            else:
                raise ParameterError(f"expected an integer, got {value!r}", field=f.name)
        value = int(value)
        if meta["minimum"] is not None and value < meta["minimum"]:
            raise ParameterError(f"must be at least {meta['minimum']}, got {value}", field=f.name)
        if meta["maximum"] is not None and value > meta["maximum"]:
            raise ParameterError(f"must be at most {meta['maximum']}, got {value}", field=f.name)
        if abs(value) > MAX_ELEMENTS:
            raise ParameterError(f"{value} is beyond 2**31, which no model needs", field=f.name)
        return value
    if kind == "ints":
        try:
            listed = np.asarray(value).reshape(-1).tolist()
            items = tuple(int(v) for v in listed)
        except (TypeError, ValueError, OverflowError):
            raise ParameterError(f"expected integers, got {value!r}", field=f.name) from None
        if items != tuple(listed):  # 2.5 or "3" are not integers, even if int() takes them
            raise ParameterError(f"expected integers, got {value!r}", field=f.name)
        if any(v < 0 for v in items):
            raise ParameterError(f"must not be negative, got {items}", field=f.name)
        if meta["length"] is not None and len(items) != meta["length"]:
            raise ParameterError(f"expected {meta['length']} integers, got {items}", field=f.name)
        if math.prod(items) > MAX_ELEMENTS:
            raise ParameterError(f"{items} has more than 2**31 elements", field=f.name)
        return items
    if kind == "float":
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                        np.floating)):
            raise ParameterError(f"expected a number, got {value!r}", field=f.name)
        if not math.isfinite(float(value)):
            raise ParameterError(f"must be finite, got {value!r}", field=f.name)
        return float(value)
    if kind == "choice":
        if value not in meta["options"]:
            raise ParameterError(
                f"must be one of {', '.join(map(repr, meta['options']))}, got {value!r}",
                field=f.name,
            )
        return value
    return value


def _from_bytes(name: str, value: dict[str, Any]) -> np.ndarray:
    """The array of a ``{"dtype", "shape", "base64"}`` entry (:meth:`Node.to_dict`), checked as
    untrusted input: a numeric dtype, a shape of at most :data:`MAX_ELEMENTS` values, and
    exactly the bytes that shape needs."""
    try:
        kind = np.dtype(value["dtype"])
    except (TypeError, ValueError) as e:
        raise ParameterError(f"malformed array: dtype {value['dtype']!r}: {e}",
                             field=name) from None
    if kind.kind not in "biuf":
        raise ParameterError(f"expected numbers, got dtype {kind}", field=name)
    shape = value["shape"]
    if not isinstance(shape, list) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise ParameterError(f"malformed array: shape {shape!r} is not a list of sizes",
                             field=name)
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        raise ParameterError(f"{count} values is more than 2**31", field=name)
    text = value["base64"]
    if not isinstance(text, str) or len(text) != 4 * -(-count * kind.itemsize // 3):
        raise ParameterError(f"malformed array: shape {shape} of {kind} needs "
                             f"{count * kind.itemsize} bytes, which the base64 text does not "
                             "hold", field=name)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ParameterError(f"malformed array: base64: {e}", field=name) from None
    if len(data) != count * kind.itemsize:
        raise ParameterError(f"malformed array: {len(data)} bytes for shape {shape} of {kind}",
                             field=name)
    return np.frombuffer(data, dtype=kind.newbyteorder("<")).reshape(shape)


def _coerce_array(name: str, value: Any, dtype: str) -> np.ndarray:
    if isinstance(value, dict) and {"dtype", "shape", "base64"} <= value.keys():
        value = _from_bytes(name, value)
    elif isinstance(value, dict) and {"dtype", "shape", "data"} <= value.keys():
        try:
            with np.errstate(over="raise", invalid="raise"):
                value = np.asarray(value["data"], dtype=value["dtype"]).reshape(value["shape"])
        except FloatingPointError:
            raise ParameterError(f"values that do not fit {value['dtype']} (NaN, or beyond its "
                                 "range)", field=name) from None
        except (TypeError, ValueError, OverflowError) as e:
            raise ParameterError(f"malformed array: {e}", field=name) from None
    try:
        raw = np.asarray(value)
    except (TypeError, ValueError, OverflowError) as e:
        raise ParameterError(f"not an array of numbers: {e}", field=name) from None
    if raw.dtype.kind not in "biuf":
        raise ParameterError(f"expected numbers, got dtype {raw.dtype}", field=name)
    if raw.size > MAX_ELEMENTS:
        raise ParameterError(f"{raw.size} values is more than 2**31", field=name)
    if raw.dtype.kind == "f":
        bad = ~np.isfinite(raw)
        if bad.any():
            what = "NaN" if np.isnan(raw).any() else "infinite value"
            raise ParameterError(f"{what} in {int(bad.sum())} of {raw.size} values", field=name)
    target = np.dtype(dtype)
    if target.kind in "iu" and raw.size:
        if raw.dtype.kind == "f" and not np.array_equal(raw, np.round(raw)):
            raise ParameterError("expected integers, got fractional values", field=name)
        info = np.iinfo(target)
        if raw.min() < info.min or raw.max() > info.max:
            raise ParameterError(f"values from {raw.min()} to {raw.max()} do not fit {dtype}",
                                 field=name)
    with np.errstate(over="ignore"):  # checked below: a silent inf would be worse than an error
        out = raw.astype(target, copy=True)
    if target.kind == "f" and not np.isfinite(out).all():
        raise ParameterError(f"values up to {np.abs(raw).max()} are beyond the range of {dtype}",
                             field=name)
    out.flags.writeable = False
    return out


def register_node(cls: type[Node], *, replace: bool = False) -> type[Node]:
    """Add a node type to the registry under its class name; refuse silent overwrites."""
    name = cls.__name__
    if not replace and name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(
            f"node type {name!r} is already registered by {_REGISTRY[name].__module__}; "
            "choose another class name"
        )
    _REGISTRY[name] = cls
    return cls


def node_types() -> dict[str, type[Node]]:
    """Every registered node type by name (a copy)."""
    return dict(sorted(_REGISTRY.items()))


def node_type(name: str) -> type[Node]:
    """The node class registered as ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise UnknownNodeError(
            f"unknown node type {name!r}; known types: {known}. A plugin may add more "
            "(see `hub plugins`)",
            field="type",
        ) from None


def node_from_dict(data: dict[str, Any]) -> Node:
    """Build a node from :meth:`Node.to_dict` output, with errors that name the field."""
    if not isinstance(data, dict) or "type" not in data:
        raise ParameterError(f"expected a mapping with a 'type' key, got {type(data).__name__}")
    cls = node_type(str(data["type"]))
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names - {"type"}
    if unknown:
        raise ParameterError(
            f"{cls.__name__} has no field(s) {', '.join(sorted(unknown))}; "
            f"its fields are {', '.join(sorted(names))}",
            field=sorted(unknown)[0],
        )
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ParameterError(f"{cls.__name__} needs field(s) {', '.join(missing)}, which are "
                             "missing", field=missing[0])
    try:
        return cls(**{k: v for k, v in data.items() if k != "type"})
    except TypeError as e:  # a type's own check() choking on a value of the wrong kind
        raise ParameterError(f"cannot build {cls.__name__}: {e}") from None


def fields_of(cls: type[Node]) -> Iterator[dataclasses.Field]:
    return iter(dataclasses.fields(cls))
