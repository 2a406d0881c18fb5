"""xarray's private parts this package leans on, each probed once, with a safe
fallback: the ``Variable._in_memory`` flag, and the slots of a ``Variable``.

Whether xarray holds a variable's values in memory decides how it is read: an
in-memory variable is gathered straight from its array, a lazily opened one (Zarr,
NetCDF) one storage chunk at a time. xarray has no public spelling of that flag, so
this module probes the private one once, on first use, against a variable known to be
in memory and one known to be lazy. Should xarray rename or change it, every variable
counts as lazy: still read correctly (a lazy read of in-memory data is only slower),
and never a lazily opened store loaded whole by mistake. Index coordinates (a pandas
index) are always in memory.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import xarray as xr

__all__ = ["in_memory", "known_lazy", "own_variable", "own_variables"]


class _NeverRead:
    """A backend array for the probe; reading it is a bug."""

    shape = (2,)
    dtype = np.dtype(np.float64)

    def __getitem__(self, key: Any) -> Any:
        raise AssertionError("the _in_memory probe must not read data")


@functools.cache
def flag_works() -> bool:
    """Whether ``Variable._in_memory`` exists and tells in-memory from lazy data."""
    try:
        from xarray.backends import BackendArray
        from xarray.core.indexing import LazilyIndexedArray

        class Probe(_NeverRead, BackendArray):
            pass

        eager = xr.Variable(("x",), np.zeros(2))
        lazy = xr.Variable(("x",), LazilyIndexedArray(Probe()))
        flags = (eager._in_memory, lazy._in_memory)
    except Exception:  # renamed, moved or broken: take the safe path
        return False
    return flags == (True, False)


def in_memory(variable: xr.Variable) -> bool:
    """True when xarray holds ``variable``'s values in memory; False when it reads
    them lazily, and also when that cannot be told (then reading it lazily is the
    safe choice)."""
    if not flag_works():
        return isinstance(variable, xr.IndexVariable)
    return bool(variable._in_memory)


def known_lazy(variable: xr.Variable) -> bool:
    """True only when ``variable`` is known to be read lazily (not held in memory)."""
    return flag_works() and not variable._in_memory


# --------------------------------------------------------------------------- own copies
_SLOTS = ("_dims", "_data", "_attrs", "_encoding")


def _shallow(var: Any) -> Any:
    new = object.__new__(type(var))
    new._dims = var._dims
    new._data = var._data
    new._attrs = None if var._attrs is None else dict(var._attrs)
    new._encoding = None if var._encoding is None else dict(var._encoding)
    return new


@functools.cache
def slots_work() -> bool:
    """Whether a ``Variable`` (and an ``IndexVariable``) is made of exactly the
    slots :func:`own_variable` copies, and such a copy equals the public one."""
    try:
        if tuple(sorted(xr.Variable.__slots__)) != tuple(sorted(_SLOTS)):
            return False
        if xr.IndexVariable.__slots__ != ():
            return False
        for var in (
            xr.Variable(("x",), np.arange(2.0), {"a": [1]}, {"e": 1}),
            xr.IndexVariable(("x",), np.arange(2.0), {"a": 1}),  # type: ignore[no-untyped-call]
        ):
            copy = _shallow(var)
            if not (
                type(copy) is type(var)
                and copy.identical(var.copy(deep=False))  # type: ignore[no-untyped-call]
                and copy.attrs is not var.attrs
                and copy.encoding is not var.encoding
            ):
                return False
    except Exception:  # renamed or changed: take the public route
        return False
    return True


def own_variable(var: xr.Variable) -> xr.Variable:
    """``var`` as a new Variable object over the same data with its own ``attrs``
    and ``encoding`` dicts, as ``isel`` hands out: a batch's coordinates are the
    user's to change, and cached coordinates are shared by many batches. About 1 us
    (``var.copy(deep=False)``, the fallback, takes 3-4 us)."""
    if slots_work():
        return _shallow(var)  # type: ignore[no-any-return]
    return var.copy(deep=False)


def own_variables(variables: dict[Any, xr.Variable]) -> dict[Any, xr.Variable]:
    """A new dict of :func:`own_variable` copies."""
    if slots_work():
        return {k: _shallow(v) for k, v in variables.items()}
    return {k: v.copy(deep=False) for k, v in variables.items()}
