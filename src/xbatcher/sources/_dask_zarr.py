"""Dask arrays that only read a Zarr array (``xr.open_zarr``), read directly.

``xr.open_zarr`` (and ``open_dataset(..., chunks={})``) wraps the lazily opened
``zarr.Array`` in xarray's lazy layers, as a lazy open without dask does, and hands
that to ``dask.array.from_array``. When the variable's dask graph does nothing but
read that array, possibly behind ``isel`` slices and a rechunk
(:func:`~xbatcher.sources._dask_graph.read_view` tells), and the lazy layers are
ones the direct reader reproduces (a basic index, CF mask/scale and time decoding),
the variable's values are exactly those of a lazy open (without dask) of the same
box. :class:`DaskZarrSource` then reads that lazy variable's storage chunks directly,
as :class:`~xbatcher.sources.ZarrSource` does for a lazy open, instead of computing
dask tasks: the same values for about 20-25 % less CPU per batch. Any other graph
(arithmetic, ``where``, ``astype``, a user's ``map_blocks``, fancy indexing, a
persisted array) stays with :class:`~xbatcher.sources.DaskSource`.

xarray's wrapper around the array it hands to dask is private; :func:`roots_work`
checks once that ``Variable.chunk`` still wraps a lazy array the way this module
unwraps it, and when it does not, every dask variable is read through dask.
"""

from __future__ import annotations

import functools
import threading
import weakref
from typing import Any

import numpy as np
import xarray as xr

from ._backing import Backing
from ._dask_graph import View, read_view
from ._zarr import ZarrSource, _Fetch, direct_decoders

__all__ = ["DaskZarrSource", "dask_zarr_decoders", "lazy_equivalent"]


class DaskZarrSource(ZarrSource):
    """A dask variable whose graph only reads a Zarr array (``xr.open_zarr``): its
    storage chunks are read and decoded directly, as :class:`ZarrSource` reads a
    lazily opened one (see the module docstring).

    It holds the lazy variable the dask graph reads (:func:`lazy_equivalent`), not
    the graph: its chunks are the storage chunks inside the variable's view, whatever
    dask chunks were asked for, region reads (``read``) go through xarray's lazy
    indexing, and a pickle holds how to reopen the store.
    """


def _adapter_class() -> type | None:
    try:
        from xarray.core.indexing import ImplicitToExplicitIndexingAdapter
    except ImportError:
        return None
    return ImplicitToExplicitIndexingAdapter


_views_lock = threading.Lock()
#: the walk of each live dask array: id -> (a weak reference to it, its view). A graph
#: of many chunks behind a slice or rechunk takes microseconds per chunk to walk, and
#: make_source asks twice per variable (accepts, then the factory), and again for
#: every generator built over the same data (split, shard, a new epoch's generator):
#: once per array is enough. An entry goes when its array does; it is checked
#: against the array's name, which changes if the array is modified in place.
_views: dict[int, tuple[weakref.ref[Any], str, View | None]] = {}


def _forget(key: int, ref: weakref.ref[Any]) -> None:
    with _views_lock:
        entry = _views.get(key)
        if entry is not None and entry[0] is ref:
            del _views[key]


def _view_of(data: Any) -> View | None:
    key = id(data)
    with _views_lock:
        entry = _views.get(key)
    name = str(getattr(data, "name", ""))
    if entry is not None and entry[0]() is data and entry[1] == name:
        return entry[2]
    view = read_view(data)
    ref = weakref.ref(data, functools.partial(_forget, key))
    with _views_lock:
        _views[key] = (ref, name, view)
    return view


def lazy_equivalent(variable: xr.Variable) -> xr.Variable | None:
    """The lazily indexed variable (no dask) whose values a dask-backed ``variable``
    are, when its graph only reads, slices and rechunks what xarray handed to
    ``from_array``; ``None`` otherwise."""
    try:
        from dask.array import Array
    except ImportError:
        return None
    data = variable.data
    if not isinstance(data, Array) or not roots_work():
        return None
    view = _view_of(data)
    adapter = _adapter_class()
    if view is None or adapter is None or type(view.root) is not adapter:
        return None
    root: Any = view.root
    lazy = xr.Variable(variable.dims, root.array, variable.attrs, variable.encoding)
    region = tuple(
        slice(o, o + n) for o, n in zip(view.offsets, variable.shape, strict=True)
    )
    return lazy[region]


def dask_zarr_decoders(
    variable: xr.Variable,
) -> tuple[xr.Variable, Backing, list[Any], _Fetch] | None:
    """The lazy equivalent of ``variable`` and what :class:`DaskZarrSource` needs to
    read it directly, or ``None`` (then :class:`~xbatcher.sources.DaskSource` reads
    it)."""
    lazy = lazy_equivalent(variable)
    if lazy is None:
        return None
    direct = direct_decoders(lazy)
    if direct is None:
        return None
    return (lazy, *direct)


class _NeverRead:
    """A backend array for the probe; reading it is a bug."""

    shape = (6, 4)
    dtype = np.dtype(np.float64)

    def __getitem__(self, key: Any) -> Any:
        raise AssertionError("the xarray dask-root probe must not read data")


@functools.cache
def roots_work() -> bool:
    """Whether ``Variable.chunk`` of a lazily indexed array still hands dask an
    ``ImplicitToExplicitIndexingAdapter`` around the lazy array (what
    :func:`dask_zarr_backing` unwraps), and the dask side
    (:func:`~xbatcher.sources._dask_graph.views_work`) works. Checked once."""
    try:
        from xarray.backends import BackendArray
        from xarray.core.indexing import CopyOnWriteArray, LazilyIndexedArray

        class Probe(_NeverRead, BackendArray):
            pass

        lazy = LazilyIndexedArray(Probe())
        chunked = xr.Variable(("x", "y"), lazy).chunk({"x": 4})[1:5, 1:]
        view = read_view(chunked.data)
        adapter = _adapter_class()
        if view is None or adapter is None or type(view.root) is not adapter:
            return False
        root: Any = view.root
        inner = root.array
        while isinstance(inner, CopyOnWriteArray):
            inner = inner.array
        return inner is lazy and view.offsets == (1, 1)
    except Exception:  # xarray changed beyond what the unwrapping knows
        return False
