"""Which :class:`~xbatcher.sources.Source` reads a variable: a registry of
``(accepts, factory)`` pairs, tried in order."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable

import numpy as np
import xarray as xr

from .._xarray_private import in_memory
from ..errors import InputTypeError
from ._base import Source
from ._dask import DaskSource
from ._dask_zarr import DaskZarrSource, dask_zarr_decoders
from ._lazy import LazySource
from ._memory import InMemorySource
from ._zarr import ZarrSource, direct_decoders

__all__ = [
    "Accepts",
    "SourceFactory",
    "make_source",
    "register_source",
    "unregister_source",
]

#: tells whether a factory can read a variable; must not read its data
Accepts = Callable[[xr.Variable], bool]
#: builds the source of one variable from its key and the variable
SourceFactory = Callable[[Hashable, xr.Variable], Source]

_lock = threading.Lock()
#: user registrations, tried before the defaults, in the order they were registered
_registered: list[tuple[Accepts, SourceFactory]] = []


def _is_dask(variable: xr.Variable) -> bool:
    return variable.chunks is not None


def _dask(key: Hashable, variable: xr.Variable) -> Source:
    return DaskSource(key, variable.data)


def _is_dask_zarr(variable: xr.Variable) -> bool:
    return variable.chunks is not None and dask_zarr_decoders(variable) is not None


def _dask_zarr(key: Hashable, variable: xr.Variable) -> Source:
    direct = dask_zarr_decoders(variable)
    if direct is None:  # (accepted a moment ago: only a changing store gets here)
        return DaskSource(key, variable.data)
    lazy, backing, decoders, fetch = direct
    return DaskZarrSource(key, lazy, backing, decoders, fetch)


def _memory(key: Hashable, variable: xr.Variable) -> Source:
    return InMemorySource(key, np.asarray(variable.values))


def _is_direct_zarr(variable: xr.Variable) -> bool:
    return direct_decoders(variable) is not None


def _zarr(key: Hashable, variable: xr.Variable) -> Source:
    direct = direct_decoders(variable)
    if direct is None:  # (accepted a moment ago: only a changing store gets here)
        return LazySource(key, variable)
    return ZarrSource(key, variable, *direct)


def _anything(variable: xr.Variable) -> bool:
    return True


#: the package's own sources, after the registered ones. A dask graph that only
#: reads a Zarr array is read directly; any other dask graph through dask. The last
#: accepts every variable: reading through xarray is always correct, and never loads
#: more than the chunks asked for. A variable counts as in memory only when xarray says so for
#: sure (see :mod:`xbatcher._xarray_private`).
_DEFAULTS: tuple[tuple[Accepts, SourceFactory], ...] = (
    (_is_dask_zarr, _dask_zarr),
    (_is_dask, _dask),
    (in_memory, _memory),
    (_is_direct_zarr, _zarr),
    (_anything, LazySource),
)


def register_source(accepts: Accepts, factory: SourceFactory) -> None:
    """Read the variables that ``accepts`` with the sources ``factory`` builds.

    :func:`make_source` tries the registered pairs in the order they were
    registered, then the package's own (direct Zarr under dask, dask, in memory,
    direct Zarr, lazy xarray);
    the first whose ``accepts(variable)`` is true builds the source with
    ``factory(key, variable)``.

    Parameters
    ----------
    accepts : callable
        ``accepts(variable) -> bool`` for an :class:`xarray.Variable`. It must not
        read the variable's data (look at its type, encoding or backing array).
    factory : callable
        ``factory(key, variable) -> Source``; usually the source class itself.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> from xbatcher.sources import InMemorySource, make_source
    >>> class HalfSource(InMemorySource):
    ...     pass
    >>> def is_half(variable):
    ...     return variable.dtype == np.float16
    >>> def half(key, variable):
    ...     return HalfSource(key, np.asarray(variable.values))
    >>> register_source(is_half, half)
    >>> type(make_source("t", xr.Variable("x", np.zeros(3, np.float16)))).__name__
    'HalfSource'
    >>> unregister_source(is_half, half)
    True
    >>> type(make_source("t", xr.Variable("x", np.zeros(3, np.float16)))).__name__
    'InMemorySource'
    """
    for name, value in (("accepts", accepts), ("factory", factory)):
        if not callable(value):
            raise InputTypeError(
                f"register_source: {name} must be a callable "
                f"({'variable -> bool' if name == 'accepts' else '(key, variable) -> Source'}); "
                f"got {value!r} of type {type(value).__name__}."
            )
    with _lock:
        _registered.append((accepts, factory))


def unregister_source(accepts: Accepts, factory: SourceFactory) -> bool:
    """Forget a pair given to :func:`register_source` (the same two objects);
    returns whether it was registered."""
    with _lock:
        for i, (a, f) in enumerate(_registered):
            if a is accepts and f is factory:
                del _registered[i]
                return True
    return False


def make_source(key: Hashable, variable: xr.Variable) -> Source:
    """Wrap an xarray variable in the right :class:`~xbatcher.sources.Source` for
    its backing array: the first registered ``(accepts, factory)`` pair that accepts
    it (see :func:`register_source`), else the package's own choice."""
    with _lock:
        pairs = [*_registered, *_DEFAULTS]
    for accepts, factory in pairs:
        if not accepts(variable):
            continue
        source = factory(key, variable)
        if not isinstance(source, Source):
            raise InputTypeError(
                f"the source factory {factory!r} returned {type(source).__name__} for "
                f"variable {key!r}; it must return an xbatcher.sources.Source "
                "subclass instance. Fix the factory passed to register_source."
            )
        return source
    raise AssertionError("unreachable: the last default accepts every variable")
