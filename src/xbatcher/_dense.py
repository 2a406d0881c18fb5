"""Dense buffers: a small chunked source decoded into one array of its own shape.

A full shuffle draws every batch from the whole store, so each batch touches most
chunks. Gathered chunk by chunk, every batch pays a fancy index per chunk into a
temporary and a scatter of its rows into the batch. When the whole source fits in
half of the chunk cache, the reader instead decodes each chunk straight into its
place in one :class:`DenseBuffer` of the source's shape (its pages are only touched
as chunks arrive), and a batch is one fancy index over that buffer, in the batch's
own order, whatever chunks its windows lie in or cross.

The cache still holds one entry per chunk (a read-only view of its slot) and keeps
doing the single-flight bookkeeping: a slot is written once, by the one reader that
claimed its chunk, and only then counts as held. A chunk evicted from the cache and
asked for again comes back from its slot without a decode. Only sources that decode
straight into a given array (``Source.decodes_into``) and whose chunk slots are
contiguous in the buffer get one, so the buffer never costs an extra copy; the dense
buffers of one cache hold at most half its budget.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import weakref
from collections.abc import Hashable, Iterable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .lru import BlockCache
from .sources import Source

__all__ = ["DenseBuffer", "dense_buffer"]

_WRITING, _HELD = 1, 2


class DenseBuffer:
    """One source's values in a single C-contiguous array, filled chunk by chunk.

    Parameters
    ----------
    source : Source
        A chunked source (``bounds`` set).

    Attributes
    ----------
    array : numpy.ndarray
        The buffer, of ``source.shape`` and ``source.dtype``. Only the slots of
        held chunks (:meth:`holds`) hold values; read nothing else.
    """

    def __init__(self, source: Source) -> None:
        assert source.bounds is not None
        self.shape = source.shape
        self.dtype = source.dtype
        self.lists = source.bound_lists
        self.array: NDArray[Any] = np.empty(source.shape, dtype=source.dtype)
        self.nbytes = int(self.array.nbytes)
        self.total = math.prod(source.nchunks)
        self._state: dict[tuple[int, ...], int] = {}
        self._held = 0
        self._lock = threading.Lock()

    def _slot(self, cid: tuple[int, ...]) -> NDArray[Any]:
        region = tuple(
            slice(b[i], b[i + 1]) for b, i in zip(self.lists, cid, strict=True)
        )
        return self.array[region]

    @property
    def complete(self) -> bool:
        """True once every chunk's slot is held (no more lookups needed)."""
        return self._held == self.total

    def begin(self, cid: tuple[int, ...]) -> NDArray[Any] | None:
        """The writable slot of chunk ``cid`` for its one writer, or ``None`` when
        it is held or being written already (then read the chunk elsewhere)."""
        with self._lock:
            if cid in self._state:
                return None
            self._state[cid] = _WRITING
        return self._slot(cid)

    def finish(self, cid: tuple[int, ...], slot: NDArray[Any]) -> NDArray[Any]:
        """Mark the slot of ``cid`` held (its writer succeeded); returns it, now
        read-only."""
        slot.flags.writeable = False
        with self._lock:
            if self._state.get(cid) == _WRITING:
                self._state[cid] = _HELD
                self._held += 1
        return slot

    def settle(
        self, cid: tuple[int, ...], slot: NDArray[Any], block: NDArray[Any] | None
    ) -> None:
        """The read of ``cid`` into ``slot`` ended with ``block`` (``None``: it
        failed): the slot is held when the read wrote it, free again otherwise."""
        if block is slot:
            self.finish(cid, slot)
        else:
            self.abandon(cid)

    def abandon(self, cid: tuple[int, ...]) -> None:
        """Give up writing the slot of ``cid`` (its read failed or was
        interrupted): its values are undefined, and a later reader writes it."""
        with self._lock:
            if self._state.get(cid) == _WRITING:
                del self._state[cid]

    def held(self, cid: tuple[int, ...]) -> NDArray[Any] | None:
        """A read-only view of the slot of ``cid`` when it is held, else ``None``."""
        with self._lock:
            if self._state.get(cid) != _HELD:
                return None
        view = self._slot(cid)
        view.flags.writeable = False
        return view

    def holds(self, ids: Iterable[tuple[int, ...]]) -> bool:
        """True when the slots of all of ``ids`` are held."""
        if self._held == self.total:
            return True
        with self._lock:
            return all(self._state.get(cid) == _HELD for cid in ids)

    def _after_fork(self) -> None:
        """In a forked child the writers are gone: slots they were writing are
        free again (undefined until rewritten)."""
        self._lock = threading.Lock()
        self._state = {k: v for k, v in self._state.items() if v == _HELD}


def slots_contiguous(lists: tuple[list[int], ...]) -> bool:
    """True when every chunk's slot is one C-contiguous run of the dense array:
    the dims before the last one split into several chunks have length-1 chunks
    only, and the dims after it are whole (one chunk).

    Examples
    --------
    >>> slots_contiguous(([0, 30, 60], [0, 256], [0, 256]))  # chunks (30, 256, 256)
    True
    >>> slots_contiguous(([0, 1, 2], [0, 64, 128], [0, 256]))  # (1, 64, 256)
    True
    >>> slots_contiguous(([0, 10, 20], [0, 64, 128], [0, 256]))  # (10, 64, 256)
    False
    >>> slots_contiguous(([0, 5], [0, 10, 20], [0, 256]))  # (5, 10, 256) of (5, 20, 256)
    False
    """
    split = [d for d, b in enumerate(lists) if len(b) > 2]
    if not split:
        return True
    last = split[-1]
    return all(all(z - a == 1 for a, z in itertools.pairwise(b)) for b in lists[:last])


class _Registry:
    """The dense buffers of each live chunk cache, by source key (``None``: the
    source gets none). Weakly keyed: a buffer goes with its cache."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_cache: weakref.WeakKeyDictionary[
            BlockCache, dict[Hashable, DenseBuffer | None]
        ] = weakref.WeakKeyDictionary()

    def after_fork(self) -> None:
        self.lock = threading.Lock()
        for buffers in list(self.by_cache.values()):
            for buf in buffers.values():
                if buf is not None:
                    buf._after_fork()


_registry = _Registry()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_registry.after_fork)


def _eligible(source: Source) -> bool:
    if source.bounds is None or source.nbytes == 0:
        return False
    return math.prod(source.nchunks) > 1 and slots_contiguous(source.bound_lists)


def dense_buffer(source: Source, cache: BlockCache | None) -> DenseBuffer | None:
    """The dense buffer of ``source`` in ``cache``, made on first use when the
    source is eligible (see the module docstring) and fits in what is left of half
    the cache's budget; ``None`` otherwise."""
    if cache is None or not source.decodes_into:
        return None
    key = source.key
    with _registry.lock:
        buffers = _registry.by_cache.get(cache)
        if buffers is None:
            buffers = _registry.by_cache[cache] = {}
        if key in buffers:
            buf = buffers[key]
            same = buf is None or (
                buf.shape == source.shape
                and buf.dtype == source.dtype
                and buf.lists == source.bound_lists
            )
            if same:
                return buf
            return None  # another source under the same key: chunks cannot match
        used = sum(b.nbytes for b in buffers.values() if b is not None)
        fits = _eligible(source) and used + source.nbytes <= cache.max_bytes // 2
        buf = DenseBuffer(source) if fits else None
        buffers[key] = buf
        return buf
