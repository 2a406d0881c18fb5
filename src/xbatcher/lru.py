"""A thread-safe, byte-bounded LRU cache with single-flight loads.

:class:`ByteLRU` keeps values up to a byte budget (measured by a ``sizeof``
callable, ``.nbytes`` by default) and evicts the least recently used ones beyond it.
Loads are *single-flight*: a reader that misses :meth:`~ByteLRU.claim`\\s the key,
loads the value and :meth:`~ByteLRU.put`\\s it; every other reader of that key waits
on the claim's future instead of loading it again. A load that raises reaches every
waiter (:meth:`~ByteLRU.fail`); a loader that is interrupted (``KeyboardInterrupt``,
``GeneratorExit``...) gives its claim up (:meth:`~ByteLRU.release`) and the waiters
load the value themselves. :meth:`~ByteLRU.get_or_load` does the whole dance for one
key.

The reader's chunk cache (:class:`xbatcher.reader.BlockCache`) is this cache
specialised for decoded chunks.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

from numpy.typing import NDArray

__all__ = ["BlockCache", "ByteLRU", "ReleasedClaim", "nbytes"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_live_caches: weakref.WeakSet[ByteLRU[Any, Any]] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A forked child (a DataLoader worker) inherits every cache but none of the
    threads that were loading into them: no cache may wait on a parent's thread."""
    for cache in list(_live_caches):
        cache._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class ReleasedClaim(Exception):
    """Raised to threads waiting on a key whose loader gave up its claim (it was
    interrupted); they load the value themselves. Never reaches users."""


def nbytes(value: Any) -> int:
    """The default ``sizeof``: ``value.nbytes`` (numpy arrays and the like)."""
    return int(value.nbytes)


class ByteLRU(Generic[K, V]):
    """A thread-safe, byte-bounded LRU cache with single-flight loads.

    Parameters
    ----------
    max_bytes : int
        Budget; the least recently used values are evicted beyond it. A single value
        larger than the budget is handed to the threads waiting on it and not kept.
    sizeof : callable, default :func:`nbytes`
        The size of a value in bytes (``len`` for ``bytes`` values). It must be a
        module-level function for the cache to pickle.

    Notes
    -----
    ``None`` is not a storable value: :meth:`get` returns ``None`` for a miss.
    A cache pickles as an empty cache with the same budget and ``sizeof``.

    Examples
    --------
    >>> c = ByteLRU[str, bytes](10, sizeof=len)
    >>> c.put("a", b"12345"); c.put("b", b"123456")  # 11 bytes: "a" is evicted
    >>> c.get("a") is None, c.get("b"), len(c)
    (True, b'123456', 1)
    >>> c.get_or_load("c", lambda: b"xyz"), c.stats()["loaded_bytes"]
    (b'xyz', 14)
    """

    def __init__(self, max_bytes: int, sizeof: Callable[[V], int] = nbytes) -> None:
        self.max_bytes = max_bytes
        self.sizeof = sizeof
        self._data: OrderedDict[K, V] = OrderedDict()
        self._sizes: dict[K, int] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self._inflight: dict[K, Future[V]] = {}
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.loaded_bytes = 0
        _live_caches.add(self)

    def _after_fork(self) -> None:
        """In a forked child the threads that were loading values are gone: forget
        their claims (waiting on them would hang) and take a fresh lock. Cached
        values stay: they are the parent's memory, copied on write."""
        self._lock = threading.Lock()
        self._inflight = {}

    # ------------------------------------------------------------------ lookups
    def get(self, key: K) -> V | None:
        """The value of ``key`` (now the most recently used), or ``None``."""
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is cached; counts neither a hit nor a use."""
        with self._lock:
            return key in self._data

    def claim(self, key: K) -> tuple[V | None, Future[V] | None]:
        """Look ``key`` up for a reader that will load it on a miss.

        Returns ``(value, None)`` on a hit, ``(None, None)`` when the caller must load
        the value and :meth:`put` it (or :meth:`fail` or :meth:`release` the claim),
        and ``(None, future)`` when another thread is already loading it (the future
        raises :class:`ReleasedClaim` if that loader gives up).
        """
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
                self.hits += 1
                return value, None
            pending = self._inflight.get(key)
            if pending is not None:
                self.hits += 1
                return None, pending
            self.misses += 1
            self._inflight[key] = Future()
            return None, None

    def claimed(self) -> list[K]:
        """Keys claimed by a loader that has not yet put, failed or released them."""
        with self._lock:
            return list(self._inflight)

    # ------------------------------------------------------------------ settling
    def put(self, key: K, value: V) -> None:
        """Store ``value`` (the most recently used) and hand it to the threads
        waiting on a claim of ``key``; evict the least recently used values beyond
        the budget. An already cached ``key`` keeps its value."""
        size = self.sizeof(value)
        with self._lock:
            pending = self._inflight.get(key)
            self.loaded_bytes += size
            if pending is not None:
                if not pending.done():
                    pending.set_result(value)
                del self._inflight[key]
            if key in self._data or size > self.max_bytes:
                return
            self._data[key] = value
            self._sizes[key] = size
            self._bytes += size
            while self._bytes > self.max_bytes:
                old, _ = self._data.popitem(last=False)
                self._bytes -= self._sizes.pop(old)
                self.evictions += 1

    def fail(self, key: K, error: BaseException) -> None:
        """Report that loading ``key`` failed; threads waiting on it get the error.

        An interruption that is not an ``Exception`` (``KeyboardInterrupt``,
        ``GeneratorExit``, ``SystemExit``) belongs to the interrupted thread, not to
        the waiters: the claim is released instead (:meth:`release`) and they load
        the value themselves.
        """
        if not isinstance(error, Exception):
            self.release(key)
            return
        with self._lock:
            pending = self._inflight.get(key)
            if pending is not None:
                # set before removing: an interruption between the two leaves a
                # finished future behind (harmless), never an unfinished orphan
                if not pending.done():
                    pending.set_exception(error)
                del self._inflight[key]

    def release(self, key: K) -> None:
        """Give up a claim without a value (its loader was interrupted).

        Threads waiting on the claim are woken and load ``key`` themselves; the next
        :meth:`claim` of ``key`` is a plain miss. Releasing a key that is not claimed
        does nothing.
        """
        with self._lock:
            pending = self._inflight.get(key)
            if pending is not None:
                if not pending.done():
                    pending.set_exception(ReleasedClaim(key))
                del self._inflight[key]

    def get_or_load(self, key: K, load: Callable[[], V]) -> V:
        """The value of ``key``, loaded by ``load()`` on a miss by exactly one of
        the threads asking at the same time (the others wait for it).

        ``load``'s exception reaches every waiter; if the loading thread is
        interrupted, a waiter loads the value instead. The claim is never left
        behind, whatever is raised.
        """
        while True:
            mine = True  # an interruption as claim() returns: release, to be safe
            try:
                value, pending = self.claim(key)
                mine = value is None and pending is None
                if value is not None:
                    return value
                if pending is not None:
                    try:
                        return pending.result()
                    except ReleasedClaim:
                        continue
                value = load()
                self.put(key, value)
                mine = False
                return value
            except BaseException as err:
                if mine:
                    self.fail(key, err)
                raise

    # ------------------------------------------------------------------ upkeep
    def discard(self, key: K) -> None:
        """Drop the value of ``key`` if cached (claims in flight stay)."""
        with self._lock:
            if key in self._data:
                del self._data[key]
                self._bytes -= self._sizes.pop(key)

    def clear(self) -> None:
        """Drop every cached value (claims in flight stay)."""
        with self._lock:
            self._data.clear()
            self._sizes.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._data)

    def stats(self) -> dict[str, int]:
        """Counters: hits, misses, evictions, resident bytes and values, and the
        bytes loaded (put) so far."""
        with self._lock:
            return {
                "hits": self.hits,
                "misses": self.misses,
                "evictions": self.evictions,
                "resident_bytes": self._bytes,
                "resident_items": len(self._data),
                "loaded_bytes": self.loaded_bytes,
            }

    def __getstate__(self) -> dict[str, Any]:
        """Pickles as an empty cache with the same budget (e.g. for a worker)."""
        return {"max_bytes": self.max_bytes, "sizeof": self.sizeof}

    def __setstate__(self, state: dict[str, Any]) -> None:
        ByteLRU.__init__(self, state["max_bytes"], state["sizeof"])


class BlockCache(ByteLRU[Hashable, NDArray[Any]]):
    """The reader's cache of decoded source chunks: a :class:`ByteLRU` keyed by
    ``(source key, chunk id)``, sized by ``.nbytes``.

    Parameters
    ----------
    max_bytes : int
        Budget; the least recently used chunks are evicted beyond it. A single chunk
        larger than the budget is used for the request that needed it and not kept.

    Examples
    --------
    >>> import numpy as np
    >>> c = BlockCache(100)
    >>> c.put(("v", (0,)), np.zeros(10))  # 80 bytes
    >>> c.get(("v", (0,))) is not None, c.stats()["hits"]
    (True, 1)
    """

    def __init__(self, max_bytes: int) -> None:
        super().__init__(max_bytes, nbytes)

    def stats(self) -> dict[str, int]:
        """Counters: hits, misses, evictions, resident bytes, bytes decoded."""
        counts = super().stats()
        return {
            "hits": counts["hits"],
            "misses": counts["misses"],
            "evictions": counts["evictions"],
            "resident_bytes": counts["resident_bytes"],
            "resident_chunks": counts["resident_items"],
            "decoded_bytes": counts["loaded_bytes"],
        }
