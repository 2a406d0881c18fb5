"""xarray's private ``Variable._in_memory`` flag, probed once, with a safe fallback.

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

__all__ = ["in_memory", "known_lazy"]


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
