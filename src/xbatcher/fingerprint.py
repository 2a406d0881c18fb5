"""A cheap fingerprint of a source's content, for resume states and cache keys.

It covers the structure, the coordinate labels and a bounded sample of the data
values, never the path the data were opened from (see ``docs/sampling.md``,
*Resuming*).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from ._xarray_private import in_memory
from .reader import BlockCache, read_region
from .sources import InMemorySource, Source, make_source

__all__ = ["source_fingerprint"]

_FP_POINTS = 4096  # values hashed per in-memory variable
_FP_CHUNKS = 16  # chunks read (in all) to hash lazily opened or dask variables
_FP_EDGE = 4  # points per dim read from each of those chunks


def _spread(n: int, k: int) -> NDArray[np.int64]:
    """Up to ``k`` evenly spaced integers in ``[0, n)`` (all of them when n <= k)."""
    if n <= k:
        return np.arange(n, dtype=np.int64)
    return np.unique(np.linspace(0, n - 1, k).astype(np.int64))


def _hash_values(h: Any, values: NDArray[Any]) -> None:
    values = np.ascontiguousarray(values)
    h.update(
        values.astype(str).tobytes() if values.dtype == object else values.tobytes()
    )


def _sample_values(src: Source, per_var: int, cache: BlockCache | None) -> Any:
    """A bounded sample of a source's values, in a fixed pattern."""
    if isinstance(src, InMemorySource):
        array = src.array
        if array.ndim == 0 or array.size <= _FP_POINTS:
            return array
        flat = _spread(array.size, _FP_POINTS)
        return array[np.unravel_index(flat, array.shape)]
    if src.bounds is None or not src.shape:
        return src.read(tuple(slice(0, n) for n in src.shape))
    nchunks = src.nchunks
    parts = []
    for flat in _spread(math.prod(nchunks), per_var).tolist():
        cid = np.unravel_index(flat, nchunks)
        region = tuple(
            slice(int(b[i]), min(int(b[i]) + _FP_EDGE, int(b[i + 1])))
            for b, i in zip(src.bounds, cid, strict=True)
        )
        parts.append(np.asarray(read_region(src, region, cache)).reshape(-1))
    return np.concatenate(parts)


def source_fingerprint(
    ds: xr.Dataset | xr.DataArray,
    sources: Mapping[Hashable, Source] | None = None,
    cache: BlockCache | None = None,
) -> str:
    """Cheap, stable hash of a source's structure, coordinate labels and a bounded
    sample of its data values (not its path).

    Covered: every variable's name, dims, shape and dtype; up to 4096 evenly spaced
    labels of each index and values of each in-memory coordinate; for each data
    variable, up to 4096 evenly spaced values when it is in memory, else the first
    ``4**ndim`` values of a few chunks spread over it (16 chunks in all, at least one
    per variable). Two copies of the same data at different paths agree; data that
    differ only outside the sampled points are not told apart.
    """
    h = hashlib.sha256()
    data = ds._to_temp_dataset() if isinstance(ds, xr.DataArray) else ds
    for name, var in sorted(data.variables.items(), key=lambda kv: str(kv[0])):
        h.update(f"{name}|{var.dims}|{var.shape}|{var.dtype}".encode())
    for name, index in sorted(data.indexes.items(), key=lambda kv: str(kv[0])):
        values = np.asarray(index.values)
        h.update(str(name).encode())
        _hash_values(h, values[_spread(values.size, _FP_POINTS)])
    for name in sorted(data.coords, key=str):
        var = data[name].variable
        if name not in data.indexes and in_memory(var):
            h.update(str(name).encode())
            _hash_values(h, _sample_values(InMemorySource(name, var.values), 0, None))
    names = sorted(data.data_vars, key=str)
    per_var = max(1, _FP_CHUNKS // max(1, len(names)))
    for name in names:
        src = (
            sources[name]
            if sources is not None and name in sources
            else make_source(name, data[name].variable)
        )
        h.update(str(name).encode())
        _hash_values(h, _sample_values(src, per_var, cache))
    return h.hexdigest()[:16]
