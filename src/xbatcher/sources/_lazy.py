"""Lazily opened variables (Zarr, NetCDF... without dask), read through xarray."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from .._xarray_private import known_lazy
from ._backing import find_backing, store_in_memory
from ._base import Source, _bounds

__all__ = ["LazySource"]

_DEFAULT_BLOCK_BYTES = 16 * 2**20


class LazySource(Source):
    """A lazily indexed backend array (Zarr, NetCDF... opened without dask).

    Chunks are the storage chunks the backend reports (``encoding['preferred_chunks']``
    or ``encoding['chunks']``); without them, blocks of about 16 MiB along the leading
    dims. Zarr variables that the direct reader understands get the faster
    :class:`~xbatcher.sources.ZarrSource` instead.
    """

    def __init__(self, key: Hashable, variable: xr.Variable) -> None:
        self.key = key
        self.variable = variable
        self.shape = tuple(variable.shape)
        self.dtype = np.dtype(variable.dtype)
        self.bounds = _bounds(_storage_chunks(variable))

    def read(self, region: tuple[slice, ...]) -> NDArray[Any]:
        return np.asarray(self.variable[region].values)

    @property
    def reopens_lazily(self) -> bool:
        """True when xarray reads the variable lazily from a file or a store outside
        this process's memory (a pickle then holds how to reopen it, not its data)."""
        if not known_lazy(self.variable):
            return False
        backing = find_backing(self.variable)
        return backing is None or not store_in_memory(backing)

    def read_chunks(self, chunk_ids: Sequence[tuple[int, ...]]) -> list[NDArray[Any]]:
        """Chunks that fill a box are read with one backend call: Zarr then decodes
        them concurrently, 1.3-1.7x faster than one call per chunk on 2 cores."""
        if len(chunk_ids) < 2:
            return super().read_chunks(chunk_ids)
        # runs of chunks consecutive along the first axis (same elsewhere) form boxes
        by_rest: dict[tuple[int, ...], list[int]] = {}
        for c in chunk_ids:
            by_rest.setdefault(c[1:], []).append(c[0])
        found: dict[tuple[int, ...], NDArray[Any]] = {}
        for rest, firsts in by_rest.items():
            firsts = sorted(set(firsts))
            run = [firsts[0]]
            for f in [*firsts[1:], None]:
                if f is not None and f == run[-1] + 1:
                    run.append(f)
                    continue
                ids = [(r, *rest) for r in run]
                found.update(zip(ids, self._read_box(ids), strict=True))
                if f is not None:
                    run = [f]
        return [found[c] for c in chunk_ids]

    def _read_box(self, ids: list[tuple[int, ...]]) -> list[NDArray[Any]]:
        """Chunks that fill a box, with one backend call (Zarr decodes them
        concurrently: 1.3-1.7x faster than one call per chunk on 2 cores)."""
        if len(ids) == 1:
            return [self.read(self.chunk_region(ids[0]))]
        first, last = self.chunk_region(ids[0]), self.chunk_region(ids[-1])
        region = tuple(slice(a.start, z.stop) for a, z in zip(first, last, strict=True))
        box = self.read(region)
        return [
            box[
                tuple(
                    slice(r.start - o.start, r.stop - o.start)
                    for r, o in zip(self.chunk_region(c), region, strict=True)
                )
            ]
            for c in ids
        ]


def _storage_chunks(variable: xr.Variable) -> tuple[tuple[int, ...], ...]:
    enc = variable.encoding
    sizes: tuple[int, ...] | None = None
    preferred = enc.get("preferred_chunks")
    if isinstance(preferred, dict) and all(d in preferred for d in variable.dims):
        sizes = tuple(int(preferred[d]) for d in variable.dims)
    elif enc.get("chunks") is not None and len(enc["chunks"]) == variable.ndim:
        sizes = tuple(int(c) for c in enc["chunks"])
    if sizes is None:
        sizes = _default_block(variable.shape, np.dtype(variable.dtype).itemsize)
    return tuple(
        tuple([c] * (n // c) + ([n % c] if n % c else [])) if n else (0,)
        for n, c in zip(variable.shape, sizes, strict=True)
    )


def _default_block(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Split leading dims so that a block holds about 16 MiB."""
    block = list(shape)
    for axis in range(len(shape)):
        total = math.prod(block) * itemsize
        if total <= _DEFAULT_BLOCK_BYTES:
            break
        rest = math.prod(block[axis + 1 :]) * itemsize
        block[axis] = max(1, _DEFAULT_BLOCK_BYTES // max(rest, 1))
    return tuple(max(1, b) for b in block)
