"""Exact, pickle-free serialisation of arrays and xarray batches for caches.

An entry is ``MAGIC | digest | header length | header | payload``:

* ``MAGIC`` (``b"XBC"`` + the format version byte) and a little-endian ``uint32``
  header length;
* ``digest``: blake2b (16 bytes) over everything after it, so a corrupt or
  truncated entry is detected before anything is decoded;
* ``header``: UTF-8 JSON describing the object (kind, names, dims, coords, attrs,
  the ``sample`` MultiIndex levels) and, for each array, its dtype, shape and
  place in the payload; a batch of several windows (``windows=``), a dict
  ``{role: DataArray or Dataset}``, is one entry of kind ``roles`` holding one such
  description per role, in order, over one payload;
* ``payload``: the arrays' raw bytes, little-endian, C order (a big-endian
  array's header keeps its dtype, so it decodes big-endian again).

Only numeric, bool, complex, ``datetime64``/``timedelta64`` and fixed-width
string/bytes dtypes are stored; attrs may hold JSON scalars, lists, tuples, dicts
with ``str`` keys, numpy scalars and arrays. Anything else raises
:class:`~xbatcher.errors.CacheEncodeError`: nothing is ever pickled, so a shared
cache cannot run code in a reader.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Hashable, Iterable
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from numpy.typing import NDArray

from ..errors import CacheCorruptError, CacheEncodeError

__all__ = ["FORMAT_VERSION", "check_storable", "decode", "encode"]

FORMAT_VERSION = 1
_MAGIC = b"XBC" + bytes([FORMAT_VERSION])
_DIGEST = 16
_PREFIX = len(_MAGIC) + _DIGEST + 4
_DA_NAME = "__xbatcher_dataarray__"


def _digest(body: bytes | memoryview) -> bytes:
    return hashlib.blake2b(body, digest_size=_DIGEST).digest()


def _check_dtype(dtype: np.dtype[Any], where: str) -> None:
    if dtype.kind not in "biufcmMSUV" or dtype.hasobject:
        raise CacheEncodeError(
            f"cannot cache {where}: dtype {dtype} is not stored exactly "
            "(allowed: numeric, bool, complex, datetime64, timedelta64, fixed-width "
            "str/bytes). Convert it (e.g. .astype(str)) or drop it before caching; "
            "xbatcher never pickles."
        )


class _Writer:
    """Collects arrays into one payload and names them in the header."""

    def __init__(self) -> None:
        self.buffers: list[bytes | memoryview] = []
        self.specs: list[dict[str, Any]] = []
        self.offset = 0

    def array(self, values: Any, where: str) -> int:
        arr = np.asarray(values)
        _check_dtype(arr.dtype, where)
        dtype = arr.dtype.str  # big-endian ones too: decode restores them
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        arr = arr if arr.flags.c_contiguous else arr.copy(order="C")
        data = arr.reshape(-1).view(np.uint8).data if arr.size else b""
        self.specs.append(
            {
                "dtype": dtype,
                "shape": list(arr.shape),
                "offset": self.offset,
                "nbytes": arr.nbytes,
            }
        )
        self.buffers.append(data)
        self.offset += arr.nbytes
        return len(self.specs) - 1

    def value(self, value: Any, where: str) -> Any:
        """A JSON form of an attribute or a name (tagged when JSON would lose it)."""
        if value is None or isinstance(value, bool | str):
            return value
        if isinstance(value, int | float) and type(value) in (int, float):
            return value
        if isinstance(value, np.generic):
            return {"__np__": self.array(np.asarray(value), where)}
        if isinstance(value, np.ndarray):
            return {"__nd__": self.array(value, where)}
        if isinstance(value, tuple):
            return {"__tuple__": [self.value(v, where) for v in value]}
        if isinstance(value, list):
            return [self.value(v, where) for v in value]
        if isinstance(value, dict):
            if not all(isinstance(k, str) for k in value):
                raise CacheEncodeError(
                    f"cannot cache {where}: a dict with non-str keys; got keys "
                    f"{list(value)!r}. Use str keys."
                )
            return {"__dict__": {k: self.value(v, where) for k, v in value.items()}}
        raise CacheEncodeError(
            f"cannot cache {where}: values of type {type(value).__name__} are not "
            "stored exactly (allowed: None, bool, int, float, str, numpy scalars and "
            "arrays, and lists/tuples/str-keyed dicts of those); xbatcher never pickles."
        )

    def variable(self, var: xr.Variable, where: str) -> dict[str, Any]:
        return {
            "dims": [self.value(d, f"{where} dims") for d in var.dims],
            "data": self.array(var.values, where),
            "attrs": self.value(dict(var.attrs), f"{where} attrs"),
        }


def _label(name: Any) -> str:
    """How a message names a data variable (a DataArray's own values included)."""
    return "the DataArray's values" if name == _DA_NAME else f"variable {name!r}"


def _dataset_header(ds: xr.Dataset, w: _Writer) -> dict[str, Any]:
    # the coordinates' and indexes' order, which reset_index below changes
    order = [w.value(n, "a coord name") for n in ds.coords]
    index_order = [w.value(n, "a coord name") for n in ds.xindexes]
    stacked: list[Any] = []
    for dim in list(ds.dims):
        index = ds.indexes.get(dim)
        if index is not None and index.nlevels > 1:
            stacked.append(
                [
                    w.value(dim, "a dim name"),
                    [w.value(n, "a level") for n in index.names],
                ]
            )
            ds = ds.reset_index(dim)
    return {
        "data_vars": [
            [w.value(n, "a variable name"), w.variable(v.variable, _label(n))]
            for n, v in ds.data_vars.items()
        ],
        "coords": [
            [w.value(n, "a coord name"), w.variable(v.variable, f"coord {n!r}")]
            for n, v in ds.coords.items()
        ],
        "attrs": w.value(dict(ds.attrs), "the attrs"),
        "stacked": stacked,
        "order": order,
        "index_order": index_order,
    }


def _xarray_header(obj: xr.DataArray | xr.Dataset, w: _Writer) -> dict[str, Any]:
    if isinstance(obj, xr.DataArray):
        header = {"kind": "dataarray", "name": w.value(obj.name, "the name")}
        header.update(_dataset_header(obj.to_dataset(name=_DA_NAME), w))
        return header
    return {"kind": "dataset", **_dataset_header(obj, w)}


def _check_role(role: Any, part: Any) -> None:
    if not isinstance(role, str) or not isinstance(part, xr.DataArray | xr.Dataset):
        raise CacheEncodeError(
            f"a cache entry of several windows must be a dict of str role -> "
            f"DataArray or Dataset; got role {role!r} holding "
            f"{type(part).__name__}. Return such a dict from cache_preprocess."
        )


def _not_an_entry(obj: Any) -> CacheEncodeError:
    return CacheEncodeError(
        f"a cache entry must be a numpy array, DataArray or Dataset, or a dict "
        f"of str role -> DataArray or Dataset; got {type(obj).__name__}."
    )


def _roles_header(obj: dict[Any, Any], w: _Writer) -> dict[str, Any]:
    """The header of a batch of several windows: ``[role, header]`` pairs."""
    roles = []
    for role, part in obj.items():
        _check_role(role, part)
        roles.append([role, _xarray_header(part, w)])
    return {"kind": "roles", "roles": roles}


class _Checker(_Writer):
    """A :class:`_Writer` that only checks (dtypes, attrs, names), reading and
    copying no data: what :func:`check_storable` runs."""

    def array(self, values: Any, where: str) -> int:
        dtype = values.dtype if hasattr(values, "dtype") else np.asarray(values).dtype
        _check_dtype(np.dtype(dtype), where)
        return 0

    def variable(self, var: xr.Variable, where: str) -> dict[str, Any]:
        for d in var.dims:
            self.value(d, f"{where} dims")
        self.array(var, where)
        self.value(dict(var.attrs), f"{where} attrs")
        return {}


def _check_xarray(obj: xr.DataArray | xr.Dataset, c: _Checker) -> None:
    coords = obj.coords.variables
    if isinstance(obj, xr.DataArray):
        c.value(obj.name, "the name")
        c.variable(obj.variable, _label(_DA_NAME))
    else:
        for name, var in obj.variables.items():
            if name not in coords:
                c.value(name, "a variable name")
                c.variable(var, f"variable {name!r}")
    indexes = obj.xindexes
    for name, var in coords.items():
        c.value(name, "a coord name")
        if (
            var.dtype.hasobject
            and name in indexes
            and isinstance(indexes[name].to_pandas_index(), pd.MultiIndex)
        ):  # a stacked dim: encode stores its levels (checked as coords)
            c.value(dict(var.attrs), f"coord {name!r} attrs")
            continue
        c.variable(var, f"coord {name!r}")
    c.value(dict(obj.attrs), "the attrs")


def check_storable(obj: Any) -> None:
    """Raise :class:`~xbatcher.errors.CacheEncodeError` where :func:`encode` would
    (the same rules and messages), without encoding: the in-process tier's check,
    so that a value one backend refuses is refused by all."""
    c = _Checker()
    if isinstance(obj, xr.DataArray | xr.Dataset):
        _check_xarray(obj, c)
    elif isinstance(obj, np.ndarray):
        c.array(obj, "the array")
    elif type(obj) is dict:
        for role, part in obj.items():
            _check_role(role, part)
            _check_xarray(part, c)
    else:
        raise _not_an_entry(obj)


def encode(
    obj: xr.DataArray
    | xr.Dataset
    | NDArray[Any]
    | dict[str, xr.DataArray | xr.Dataset],
) -> bytes:
    """One cache entry holding ``obj`` (a numpy array, DataArray or Dataset, or the
    dict ``{role: DataArray or Dataset}`` of a batch of several windows).

    Raises
    ------
    CacheEncodeError
        ``obj`` holds something that cannot be stored exactly without pickle.
    """
    w = _Writer()
    header: dict[str, Any]
    if isinstance(obj, xr.DataArray | xr.Dataset):
        header = _xarray_header(obj, w)
    elif isinstance(obj, np.ndarray):
        header = {"kind": "array", "data": w.array(obj, "the array")}
    elif type(obj) is dict:
        header = _roles_header(obj, w)
    else:
        raise _not_an_entry(obj)
    header["arrays"] = w.specs
    text = json.dumps(header, separators=(",", ":")).encode()
    body = b"".join([struct.pack("<I", len(text)), text, *w.buffers])
    return _MAGIC + _digest(body) + body


class _Reader:
    def __init__(self, header: dict[str, Any], payload: memoryview) -> None:
        self.specs = header["arrays"]
        self.payload = payload

    def array(self, i: int) -> NDArray[Any]:
        spec = self.specs[i]
        dtype = np.dtype(spec["dtype"])
        stored = dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype
        count = spec["nbytes"] // dtype.itemsize if dtype.itemsize else 0
        flat = np.frombuffer(self.payload, stored, count, spec["offset"])
        if stored is not dtype:  # the payload is little-endian
            flat = flat.astype(dtype)
        return flat.reshape(tuple(spec["shape"]))

    def value(self, v: Any) -> Any:
        if isinstance(v, list):
            return [self.value(x) for x in v]
        if isinstance(v, dict):
            if "__np__" in v:
                return self.array(v["__np__"])[()]
            if "__nd__" in v:
                return self.array(v["__nd__"])
            if "__tuple__" in v:
                return tuple(self.value(x) for x in v["__tuple__"])
            return {k: self.value(x) for k, x in v["__dict__"].items()}
        return v

    def variable(self, spec: dict[str, Any]) -> xr.Variable:
        dims = tuple(self.value(d) for d in spec["dims"])
        data, attrs = self.array(spec["data"]), self.value(spec["attrs"])
        if _DIRECT[0] and data.dtype.kind not in "mM":
            try:  # numpy data of a plain dtype: nothing for xarray to convert
                return xr.Variable(dims, data, attrs, fastpath=True)
            except TypeError:  # xarray changed
                _DIRECT[0] = False
        return xr.Variable(dims, data, attrs)


def _coord_parts(
    header: dict[str, Any], r: _Reader
) -> tuple[dict[Hashable, xr.Variable], dict[Hashable, Any]]:
    """The coordinate variables and their indexes (PandasIndex per dimension
    coordinate, a MultiIndex per stacked dim), built directly."""
    from xarray.indexes import PandasIndex

    variables: dict[Hashable, xr.Variable] = {}
    out: dict[Hashable, xr.Variable] = {}
    indexes: dict[Hashable, Any] = {}
    pending: dict[tuple[str, bytes], Hashable] = {}
    stacked = {n for _, levels in header["stacked"] for n in levels}
    for name, spec in header["coords"]:
        key = None
        if len(spec["dims"]) == 1 and spec["dims"][0] == name and name not in stacked:
            # batches of one generator repeat the same index coords: build once
            array = r.specs[spec["data"]]
            view = r.payload[array["offset"] : array["offset"] + array["nbytes"]]
            key = (json.dumps([name, spec["attrs"], array["dtype"]]), bytes(view))
            known = _INDEX_MEMO.get(key)
            if known is not None:
                hashable = _hashable(r.value(name))
                # a shallow copy: its own attrs dict, the values shared (read-only)
                variables[hashable] = out[hashable] = known[0].copy(deep=False)
                indexes[hashable] = known[1]
                continue
        variables[_hashable(r.value(name))] = r.variable(spec)
        if key is not None:
            pending[key] = _hashable(r.value(name))
    levels_of: set[Hashable] = set()
    for dim, levels in header["stacked"]:
        dim, names = _hashable(r.value(dim)), [_hashable(r.value(v)) for v in levels]
        midx = pd.MultiIndex.from_arrays(
            [variables[n].values for n in names], names=names
        )
        multi = xr.Coordinates.from_pandas_multiindex(midx, dim)
        for name, var in multi.variables.items():
            if name in variables:
                var.attrs = dict(variables[name].attrs)
            out[name] = var
            indexes[name] = multi.xindexes[name]
        levels_of.update(names)
    for name, var in variables.items():
        if name in levels_of:
            continue
        if name in out:  # from the memo
            continue
        if var.ndim == 1 and var.dims[0] == name:
            index = PandasIndex(pd.Index(var.values, name=name), name)
            out[name] = index.create_variables({name: var})[name]
            indexes[name] = index
        else:
            out[name] = var
    for key, name in pending.items():
        if len(_INDEX_MEMO) >= _INDEX_MEMO_SIZE:
            _INDEX_MEMO.clear()
        _INDEX_MEMO[key] = (out[name], indexes[name])
    if "order" in header:
        order = _ordered(out, [_hashable(r.value(n)) for n in header["order"]])
        wanted = [_hashable(r.value(n)) for n in header["index_order"]]
        indexes = {n: indexes[n] for n in _ordered(indexes, wanted)}
    else:  # an entry written before the order was stored
        order = [n for n in variables if n in out]
        order += [n for n in out if n not in variables]
    return {n: out[n] for n in order}, indexes


def _ordered(names: Iterable[Hashable], wanted: list[Hashable]) -> list[Hashable]:
    """``names`` in the order of ``wanted``, any others after them."""
    have = list(names)
    known = set(have)
    first = [n for n in wanted if n in known]
    chosen = set(first)
    return first + [n for n in have if n not in chosen]


def _build(header: dict[str, Any], r: _Reader, direct: bool) -> Any:
    """The decoded DataArray or Dataset. ``direct`` skips xarray's index inference,
    merge and alignment (the parts are consistent by construction) through the
    private constructors layout.py also uses; ``False`` is the public path."""
    coords, indexes = _coord_parts(header, r)
    data_vars: dict[Hashable, xr.Variable] = {}
    for name, spec in header["data_vars"]:
        data_vars[_hashable(r.value(name))] = r.variable(spec)
    attrs = r.value(header["attrs"])
    if header["kind"] == "dataarray":
        (var,) = data_vars.values()
        name = r.value(header["name"])
        if direct:
            return xr.DataArray(
                var, coords=coords, name=name, indexes=indexes, fastpath=True
            )
        return xr.DataArray(
            var, coords=xr.Coordinates(coords, indexes=indexes), name=name
        )
    if direct:
        from xarray.core.variable import calculate_dimensions

        variables = {**data_vars, **coords}
        return xr.Dataset._construct_direct(
            variables,
            coord_names=set(coords),
            dims=calculate_dimensions(variables),
            attrs=attrs,
            indexes=indexes,
        )
    return xr.Dataset(
        data_vars, coords=xr.Coordinates(coords, indexes=indexes), attrs=attrs
    )


# index coordinates already built, by (name, attrs, dtype) and values; shared by
# the batches that carry them (xarray never writes into an index variable)
_INDEX_MEMO: dict[tuple[str, bytes], tuple[xr.Variable, Any]] = {}
_INDEX_MEMO_SIZE = 4096

_DIRECT = [True]  # the direct constructors work (cleared the first time they fail)


def _hashable(name: Any) -> Hashable:
    return tuple(name) if isinstance(name, list) else name


def decode(data: bytes | bytearray | memoryview) -> Any:
    """The object held by a cache entry made by :func:`encode` (its arrays are
    writable and own their memory).

    Raises
    ------
    CacheCorruptError
        The entry is truncated, corrupt or of another format version.
    """
    view = memoryview(data)
    if len(view) < _PREFIX or bytes(view[: len(_MAGIC)]) != _MAGIC:
        raise CacheCorruptError(
            f"not an xbatcher cache entry of format {FORMAT_VERSION} "
            f"({len(view)} bytes, starting {bytes(view[:4])!r})"
        )
    digest = bytes(view[len(_MAGIC) : len(_MAGIC) + _DIGEST])
    body = view[len(_MAGIC) + _DIGEST :]
    if _digest(body) != digest:
        raise CacheCorruptError(
            f"cache entry of {len(view)} bytes fails its checksum (corrupt or truncated)"
        )
    (size,) = struct.unpack("<I", body[:4])
    header = json.loads(bytes(body[4 : 4 + size]))
    payload = memoryview(bytearray(body[4 + size :]))  # one copy: writable arrays
    r = _Reader(header, payload)
    if header["kind"] == "array":
        return r.array(header["data"])
    if header["kind"] == "roles":
        return {role: _build_any(part, r) for role, part in header["roles"]}
    return _build_any(header, r)


def _build_any(header: dict[str, Any], r: _Reader) -> Any:
    if _DIRECT[0]:
        try:
            return _build(header, r, direct=True)
        except (AttributeError, TypeError, ImportError):  # xarray changed
            _DIRECT[0] = False
    return _build(header, r, direct=False)
