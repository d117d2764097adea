"""A NIR file's own parameters, kept through NIR -> hub -> NIR.

Import turns NIR's continuous parameters into the canonical node's float32 discrete ones
(``beta = 1 - dt/tau``) and export turns them back (``tau = dt/(1-beta)``), which moves them:
``tau`` 0.05 comes back as 0.05000064, ``r`` 1 as 0.99999944, and a float64 ``v_threshold``
as float32. Readers that check their parameters strictly (SpikingJelly's wants ``r`` equal to
1 or to ``tau/dt``) then refuse a file they accepted before it went through the hub.

So import keeps, for each node, the NIR fields that export would not give back bit for bit,
in the metadata of the graph that holds the node (``"nir_source"``, JSON-friendly, so it also
survives a ``.hub.json`` file), with the time step and a digest of the canonical node they were
read as. Export writes the kept values back as long as the node is unchanged (same digest),
the time step is the same and the values still mean the node's parameters (the plugin's own
metadata check); otherwise it writes what the discrete parameters give.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np

from hub.node import Node

KEY = "nir_source"
#: NIR node attributes that are not parameters.
NOT_PARAMETERS = ("metadata", "input_type", "output_type")
#: The array dtypes a kept value may have (what NIR files hold).
DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
          "float16", "float32", "float64")


def digest(node: Node) -> str:
    """A fingerprint of every parameter of ``node``, bit for bit."""
    h = hashlib.sha256(node.type.encode())
    for name, value in node.params().items():
        h.update(name.encode())
        if isinstance(value, np.ndarray):
            h.update(f"{value.dtype.str}{value.shape}".encode())
            h.update(memoryview(np.ascontiguousarray(value)).cast("B"))
        else:
            h.update(repr(value).encode())
    return h.hexdigest()


def parameters(nir_node: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(nir_node).items() if k not in NOT_PARAMETERS}


def same(a: Any, b: Any) -> bool:
    """Whether two NIR field values are identical, type, dtype, shape and bits (a tuple, list
    or number as the array a file holds it as)."""
    arrays, plain = (np.ndarray, np.generic), (tuple, list, int, float)
    sequence = isinstance(a, (tuple, list)) or isinstance(b, (tuple, list))
    mixed = (isinstance(a, arrays) and isinstance(b, plain)
             or isinstance(b, arrays) and isinstance(a, plain))
    if sequence or mixed:
        try:
            a, b = np.asarray(a), np.asarray(b)
        except (ValueError, TypeError):
            return False
    if isinstance(a, (np.ndarray, np.generic)) or isinstance(b, (np.ndarray, np.generic)):
        if type(a) is not type(b):
            return False
        a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
        return (a.dtype == b.dtype and a.shape == b.shape
                and bool((a.view(np.uint8) == b.view(np.uint8)).all()))
    return type(a) is type(b) and a == b


def _encode(value: Any) -> dict[str, Any] | None:
    """``value`` as JSON-friendly data, or ``None`` if it is nothing a NIR field holds."""
    if isinstance(value, (np.ndarray, np.generic)) and str(value.dtype) in DTYPES:
        kind = "array" if isinstance(value, np.ndarray) else "scalar"
        return {kind: np.asarray(value).ravel().tolist(), "dtype": str(value.dtype),
                "shape": list(np.shape(value))}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    if isinstance(value, (tuple, list)) and all(isinstance(v, (bool, int, float)) for v in value):
        return {"tuple" if isinstance(value, tuple) else "list": list(value)}
    return None


def _decode(data: Any) -> Any:
    """The value :func:`_encode` gave ``data`` for; ``ValueError`` or ``TypeError`` if
    ``data`` is not such."""
    if not isinstance(data, dict):
        raise TypeError(data)
    if "array" in data or "scalar" in data:
        if data.get("dtype") not in DTYPES:
            raise ValueError(data)
        values = np.asarray(data.get("array", data.get("scalar")), dtype=data["dtype"])
        shape = tuple(int(s) for s in data.get("shape", ()))
        values = values.reshape(shape)
        return values if "array" in data else values[()]
    if "tuple" in data:
        return tuple(data["tuple"])
    if "list" in data:
        return list(data["list"])
    return data["value"]


def keep(nir_node: Any, node: Node, again: Any, dt: float | None, kept: dict[str, Any],
         name: str, copied: tuple[str, ...] = ()) -> None:
    """Record in ``kept`` (a graph's ``metadata[KEY]``) the fields of the file's ``nir_node``
    that ``again``, the export of the canonical ``node`` it was read as, does not reproduce.
    The ``copied`` fields (weights) the node holds as float32 copies of the file's, so a
    float32 array there comes back as it was without comparing its bytes."""
    fields = {}
    for key, value in parameters(nir_node).items():
        if key in copied and isinstance(value, np.ndarray) and value.dtype == np.float32:
            continue
        if key in vars(again) and not same(value, getattr(again, key)):
            encoded = _encode(value)
            if encoded is None:
                return  # nothing to hold it in: the export's values stand
            fields[key] = encoded
    if fields:
        kept[name] = {"digest": digest(node), "dt": dt, "fields": fields}


def restore(nir_node: Any, node: Node, dt: float | None, record: Any,
            still_means: Callable[[Node, Any], bool]) -> Any:
    """``nir_node`` (just exported from ``node``) with the kept fields of ``record`` put back,
    if ``node`` is the one they were read as, at the same ``dt``, and ``still_means(node,
    restored)``; else ``nir_node`` as it is."""
    if not isinstance(record, dict) or record.get("dt") != dt or not isinstance(
            record.get("fields"), dict) or record.get("digest") != digest(node):
        return nir_node
    try:
        fields = {k: _decode(v) for k, v in record["fields"].items()}
    except (ValueError, TypeError, KeyError, OverflowError):
        return nir_node
    if not set(fields) <= set(parameters(nir_node)):
        return nir_node
    restored = type(nir_node).__new__(type(nir_node))
    restored.__dict__.update(vars(nir_node))
    restored.__dict__.update(fields)
    return restored if still_means(node, restored) else nir_node
