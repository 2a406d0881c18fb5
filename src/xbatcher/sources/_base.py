"""The :class:`Source` contract: one variable as an n-d array read by blocks."""

from __future__ import annotations

import abc
import functools
import math
from collections.abc import Hashable, Sequence
from concurrent.futures import Future
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

__all__ = ["Source"]


def _bounds(chunks: Sequence[Sequence[int]]) -> tuple[NDArray[np.int64], ...]:
    """Chunk sizes per dim as chunk boundaries ``[0, c0, c0 + c1, ..., size]``."""
    return tuple(np.concatenate([[0], np.cumsum(c)]).astype(np.int64) for c in chunks)


class Source(abc.ABC):
    """One variable of the dataset as an n-d array that can be read by blocks.

    A source knows its ``shape``, ``dtype`` and storage chunks; it knows nothing of
    windows, batches or samplers. The reader (:mod:`xbatcher.reader`) asks it for
    regions (:meth:`read`) or whole chunks (:meth:`read_chunks`) and caches the chunks.

    ``bounds`` is ``None`` for data held in memory (the whole array counts as one
    chunk); otherwise it holds, per dim, the chunk boundaries
    ``[0, c0, c0 + c1, ..., size]``.

    Subclasses set ``key``, ``shape``, ``dtype`` and ``bounds`` and implement
    :meth:`read`; every other method has a default built on those. New kinds of
    source plug in through :func:`~xbatcher.sources.register_source`, and
    ``tests/source_contract.py`` is the test suite each must pass.
    """

    key: Hashable
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    bounds: tuple[NDArray[np.int64], ...] | None
    #: True when :meth:`submit_chunk` reads chunks concurrently in a pool
    submits_chunks: ClassVar[bool] = False
    #: True when the values are held in memory: :meth:`read` returns views of them
    in_memory: ClassVar[bool] = False
    #: True when :meth:`read_chunk_into` (and :meth:`submit_chunk` with ``out``)
    #: decode a chunk straight into the array given, without a copy
    decodes_into: ClassVar[bool] = False

    @abc.abstractmethod
    def read(self, region: tuple[slice, ...]) -> NDArray[Any]:
        """Read a region (one slice with step 1 per dim) as a numpy array."""

    def read_chunks(self, chunk_ids: Sequence[tuple[int, ...]]) -> list[NDArray[Any]]:
        """Read whole chunks (by chunk index tuple), in the order asked."""
        return [self.read(self.chunk_region(c)) for c in chunk_ids]

    def read_chunk_into(self, cid: tuple[int, ...], out: NDArray[Any]) -> NDArray[Any]:
        """Read chunk ``cid`` into ``out`` (an array of the chunk's shape and the
        source's dtype) and return ``out``. The default copies :meth:`read_chunks`;
        sources with ``decodes_into`` write ``out`` directly."""
        out[...] = self.read_chunks([cid])[0]
        return out

    def submit_chunk(
        self, cid: tuple[int, ...], out: NDArray[Any] | None = None
    ) -> Future[NDArray[Any]]:
        """Start reading one chunk in the background (sources with ``submits_chunks``);
        with ``out``, into ``out`` as :meth:`read_chunk_into` does."""
        raise NotImplementedError(
            f"{type(self).__name__} reads chunks on the calling thread "
            "(submits_chunks is False); use read_chunks"
        )

    @property
    def chunked(self) -> bool:
        """True when the data is read chunk by chunk (``bounds`` is not ``None``)."""
        return self.bounds is not None

    @property
    def reopens_lazily(self) -> bool:
        """True when a pickled source holds no array data, only how to reopen it
        (a file or a store): it pickles small whatever the array's size. False when
        it may carry its data (or that cannot be told)."""
        return False

    @property
    def nbytes(self) -> int:
        """Bytes of the whole array."""
        return math.prod(self.shape) * self.dtype.itemsize

    def chunk_region(self, cid: tuple[int, ...]) -> tuple[slice, ...]:
        """The region chunk ``cid`` covers (the whole array for ``bounds=None``)."""
        if self.bounds is None:
            if len(cid) != len(self.shape) or any(cid):
                raise IndexError(f"{type(self).__name__} has one chunk; got {cid}")
            return tuple(slice(0, n) for n in self.shape)
        return tuple(
            slice(int(b[i]), int(b[i + 1]))
            for b, i in zip(self.bounds, cid, strict=True)
        )

    @functools.cached_property
    def bound_lists(self) -> tuple[list[int], ...]:
        """``bounds`` as Python lists (fast scalar bisection)."""
        assert self.bounds is not None
        return tuple(b.tolist() for b in self.bounds)

    @property
    def nchunks(self) -> tuple[int, ...]:
        """Chunks along each dim (one per dim for ``bounds=None``)."""
        if self.bounds is None:
            return (1,) * len(self.shape)
        return tuple(len(b) - 1 for b in self.bounds)

    @property
    def chunk_nbytes(self) -> int:
        """Bytes of the largest chunk (the whole array when not chunked)."""
        if self.bounds is None:
            return self.nbytes
        return (
            math.prod(int(np.diff(b).max()) for b in self.bounds) * self.dtype.itemsize
        )
