"""Dask-backed variables: the dask chunks a batch needs, computed together."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._base import Source, _bounds

__all__ = ["DaskSource"]


class DaskSource(Source):
    """A dask array; each chunk is computed once while it stays in the block cache.

    Its ``reopens_lazily`` is False: a dask graph may hold its data (``.chunk()`` of
    an in-memory array does).
    """

    def __init__(self, key: Hashable, array: Any) -> None:
        self.key = key
        self.array = array
        self.shape = tuple(array.shape)
        self.dtype = np.dtype(array.dtype)
        self.bounds = _bounds(array.chunks)

    def read(self, region: tuple[slice, ...]) -> NDArray[Any]:
        return np.asarray(self.array[region].compute())

    def read_chunks(self, chunk_ids: Sequence[tuple[int, ...]]) -> list[NDArray[Any]]:
        from dask.base import compute

        # slicing on chunk boundaries culls the graph to those chunks; .blocks[...]
        # would first build keys for every chunk of the array
        blocks = [self.array[self.chunk_region(c)] for c in chunk_ids]
        return [np.asarray(b) for b in compute(*blocks)]  # type: ignore[no-untyped-call]
