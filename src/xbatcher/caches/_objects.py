"""The in-process tier's entries: cached values kept as frozen objects, not bytes.

A :class:`~xbatcher.caches.MemoryCache` never leaves the process, so it needs no
serialisation: :func:`freeze` keeps a private, read-only copy of a value and
:func:`thaw` hands out a new object equal to it, in a fraction of the codec's time
(no JSON header, no checksum, no index rebuilt). Values are what the batch and chunk
layers store: a DataArray or Dataset, a dict ``{role: DataArray or Dataset}``
(``windows=``) and numpy chunks (``chunk_cache=``).

Copy semantics (no hit ever shares writable memory with the cache):

* :func:`freeze` copies every array (lazy data is loaded) and deep-copies attrs, so
  changing the value that was stored does not change the entry; the stored arrays
  are read-only.
* :func:`thaw` copies data variables, non-index coordinates and attrs, and shares
  what xarray never writes into: index coordinates (pandas-backed, immutable) and
  their :class:`xarray.Index` objects. A numpy chunk comes back as the entry's own
  read-only array (the engine only reads chunks), without a copy.

The same values are refused as by the codec (:func:`~xbatcher.caches._codec.
check_storable`), so a batch that one backend refuses is refused by all.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from ._codec import check_storable

__all__ = ["FrozenRoles", "FrozenXarray", "freeze", "frozen_nbytes", "thaw"]

# scalars a shallow copy of an attrs dict cannot leak (nothing in them to mutate)
_IMMUTABLE = (str, int, float, complex, bool, bytes, type(None), np.generic)


@dataclass(frozen=True, slots=True)
class _Var:
    """One stored variable: ``index`` ones are shared on thaw, the others copied."""

    name: Hashable
    var: xr.Variable
    index: bool
    flat_attrs: bool  # attrs hold only immutable scalars: a shallow copy suffices


@dataclass(frozen=True, slots=True)
class FrozenXarray:
    """A DataArray (``name`` and one data variable) or a Dataset, frozen."""

    is_dataarray: bool
    name: Hashable
    data_vars: tuple[_Var, ...]
    coords: tuple[_Var, ...]
    indexes: Mapping[Hashable, Any]
    dims: Mapping[Hashable, int]
    attrs: Mapping[Any, Any]
    flat_attrs: bool
    nbytes: int


@dataclass(frozen=True, slots=True)
class FrozenRoles:
    """A batch of several windows: ``(role, part)`` pairs in order."""

    parts: tuple[tuple[str, FrozenXarray], ...]
    nbytes: int


Frozen = FrozenXarray | FrozenRoles | NDArray[Any]

#: the direct (private) xarray constructors work; cleared the first time they fail
_DIRECT = [True]


def frozen_nbytes(entry: Any) -> int:
    """The bytes an entry holds (``len`` of a bytes entry): the LRU's ``sizeof``."""
    if isinstance(entry, bytes):
        return len(entry)
    return int(entry.nbytes)


def _is_flat(attrs: Mapping[Any, Any]) -> bool:
    return all(isinstance(v, _IMMUTABLE) for v in attrs.values())


def _attrs(attrs: Mapping[Any, Any], flat: bool) -> dict[Any, Any]:
    return dict(attrs) if flat else copy.deepcopy(dict(attrs))


def _variable(
    dims: tuple[Hashable, ...], data: NDArray[Any], attrs: dict[Any, Any]
) -> xr.Variable:
    """``xr.Variable`` of data that came out of an xarray variable (nothing for
    xarray to convert): ``fastpath`` where it works, else the public route."""
    if _DIRECT[0]:
        try:
            return xr.Variable(dims, data, attrs, fastpath=True)
        except TypeError:  # xarray changed
            _DIRECT[0] = False
    return xr.Variable(dims, data, attrs)


def _owned(var: xr.Variable) -> NDArray[Any]:
    """A read-only copy of ``var``'s values (lazy data loaded)."""
    data = np.array(var.values, copy=True)
    data.flags.writeable = False
    return data


def _freeze_var(name: Hashable, var: xr.Variable, index: bool) -> _Var:
    attrs = dict(var.attrs)
    flat = _is_flat(attrs)
    attrs = attrs if flat else copy.deepcopy(attrs)
    if index:  # pandas-backed and immutable: keep it, with attrs of its own
        kept = var.copy(deep=False)
        kept.attrs = attrs
        return _Var(name, kept, True, flat)
    return _Var(name, _variable(var.dims, _owned(var), attrs), False, flat)


def _freeze_xarray(obj: xr.DataArray | xr.Dataset) -> FrozenXarray:
    indexes = dict(obj.xindexes)
    variables = obj.coords.variables
    coords = tuple(  # pandas-backed index coords are shared, any other copied
        _freeze_var(n, v, n in indexes and isinstance(v, xr.IndexVariable))
        for n, v in variables.items()
    )
    if isinstance(obj, xr.DataArray):
        data_vars: tuple[_Var, ...] = (_freeze_var(None, obj.variable, False),)
        name = obj.name
    else:
        data_vars = tuple(
            _freeze_var(n, v, False)
            for n, v in obj.variables.items()
            if n not in variables
        )
        name = None
    attrs = copy.deepcopy(dict(obj.attrs))
    nbytes = sum(int(v.var.nbytes) for v in (*data_vars, *coords))
    return FrozenXarray(
        is_dataarray=isinstance(obj, xr.DataArray),
        name=name,
        data_vars=data_vars,
        coords=coords,
        indexes=indexes,
        dims=dict(obj.sizes),
        attrs=attrs,
        flat_attrs=_is_flat(attrs),
        nbytes=nbytes,
    )


def freeze(value: Any) -> Frozen:
    """A private, read-only copy of ``value`` (numpy array, DataArray, Dataset or
    dict ``{role: DataArray or Dataset}``), to keep in an in-process cache.

    Raises
    ------
    CacheEncodeError
        ``value`` holds something the codec would refuse (the same message).
    """
    check_storable(value)
    if isinstance(value, np.ndarray):
        data = np.array(value, copy=True)
        data.flags.writeable = False
        return data
    if isinstance(value, dict):
        parts = tuple((role, _freeze_xarray(part)) for role, part in value.items())
        return FrozenRoles(parts, sum(p.nbytes for _, p in parts))
    return _freeze_xarray(value)


def _thaw_var(v: _Var) -> xr.Variable:
    var = v.var
    if v.index:
        if _DIRECT[0]:
            try:  # shares the pandas-backed data (immutable), not the attrs
                return xr.IndexVariable(  # type: ignore[no-untyped-call]
                    var.dims,
                    var._data,
                    _attrs(var.attrs, v.flat_attrs),
                    fastpath=True,
                )
            except (AttributeError, TypeError):  # xarray changed
                _DIRECT[0] = False
        out = var.copy(deep=False)
        out.attrs = _attrs(var.attrs, v.flat_attrs)
        return out
    return _variable(var.dims, var.values.copy(), _attrs(var.attrs, v.flat_attrs))


def _build(f: FrozenXarray, direct: bool) -> xr.DataArray | xr.Dataset:
    coords = {v.name: _thaw_var(v) for v in f.coords}
    indexes = dict(f.indexes)
    if f.is_dataarray:
        var = _thaw_var(f.data_vars[0])
        if direct:
            return xr.DataArray(
                var, coords=coords, name=f.name, indexes=indexes, fastpath=True
            )
        return xr.DataArray(
            var, coords=xr.Coordinates(coords, indexes=indexes), name=f.name
        )
    data_vars = {v.name: _thaw_var(v) for v in f.data_vars}
    attrs = _attrs(f.attrs, f.flat_attrs)
    if direct:
        return xr.Dataset._construct_direct(
            {**data_vars, **coords},
            coord_names=set(coords),
            dims=dict(f.dims),
            attrs=attrs,
            indexes=indexes,
        )
    return xr.Dataset(
        data_vars, coords=xr.Coordinates(coords, indexes=indexes), attrs=attrs
    )


def _thaw_xarray(f: FrozenXarray) -> xr.DataArray | xr.Dataset:
    if _DIRECT[0]:
        try:
            return _build(f, direct=True)
        except (AttributeError, TypeError):  # xarray changed
            _DIRECT[0] = False
    return _build(f, direct=False)


def thaw(entry: Frozen) -> Any:
    """A new object equal to what :func:`freeze` was given: its data variables,
    non-index coordinates and attrs are its own; index coordinates are shared
    (immutable); a numpy chunk is the entry's read-only array itself."""
    if isinstance(entry, np.ndarray):
        return entry
    if isinstance(entry, FrozenRoles):
        return {role: _thaw_xarray(part) for role, part in entry.parts}
    return _thaw_xarray(entry)
