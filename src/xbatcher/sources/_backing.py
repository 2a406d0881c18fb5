"""What a lazily opened Zarr variable is underneath xarray's lazy wrappers.

:func:`find_backing` unwraps xarray's lazy layers (a basic index, CF decoding
functions, copy-on-write and memory-cache shells) down to the ``zarr.Array``; the
direct reader (:mod:`xbatcher.sources._zarr`) decodes its chunks, and any source can
ask whether the store it reads lives in this process's memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import xarray as xr

__all__ = ["Backing", "find_backing", "store_in_memory"]


@dataclass(frozen=True)
class Backing:
    """What a lazily opened variable is, underneath: ``funcs(array[offsets...])``."""

    array: Any  # zarr.Array
    offsets: tuple[int, ...]
    funcs: tuple[Callable[[Any], Any], ...]  # innermost first


def find_backing(variable: xr.Variable) -> Backing | None:
    """Unwrap xarray's lazy layers down to a ``zarr.Array``; ``None`` when some layer
    is not one this module can reproduce exactly."""
    try:
        from xarray.backends.zarr import ZarrArrayWrapper
        from xarray.coding.common import _ElementwiseFunctionArray
        from xarray.core.indexing import (
            BasicIndexer,
            CopyOnWriteArray,
            LazilyIndexedArray,
            MemoryCachedArray,
        )
    except ImportError:  # xarray reorganised its internals: use the generic path
        return None
    data: Any = variable._data
    funcs: list[Callable[[Any], Any]] = []
    # slices from the outside in; composed once the inner shape is known
    views: list[tuple[slice, ...]] = []
    while True:
        if isinstance(data, MemoryCachedArray | CopyOnWriteArray):
            data = data.array
        elif isinstance(data, _ElementwiseFunctionArray):
            funcs.append(data.func)
            data = data.array
        elif isinstance(data, LazilyIndexedArray):
            key = data.key
            if type(key) is not BasicIndexer or not all(
                isinstance(k, slice) and k.step in (None, 1) for k in key.tuple
            ):
                return None
            views.append(key.tuple)
            data = data.array
        elif isinstance(data, ZarrArrayWrapper):
            array = data.get_array()  # type: ignore[no-untyped-call]
            break
        else:
            return None
    offsets = [0] * len(array.shape)
    shape = list(array.shape)
    for view in reversed(views):  # the innermost index applies first
        if len(view) != len(shape):
            return None
        for axis, k in enumerate(view):
            start, stop, _ = k.indices(shape[axis])
            offsets[axis] += start
            shape[axis] = max(0, stop - start)
    if tuple(shape) != tuple(variable.shape):
        return None
    return Backing(array, tuple(offsets), tuple(reversed(funcs)))


def store_in_memory(backing: Backing) -> bool:
    """True when the array's store is held in this process's memory (zarr's
    ``MemoryStore``): pickling the array then pickles its data."""
    try:
        from zarr.storage import MemoryStore
    except ImportError:
        return False
    store = getattr(getattr(backing.array, "store_path", None), "store", None)
    return isinstance(store, MemoryStore)
