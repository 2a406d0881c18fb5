"""The in-process cache: the engine's byte-bounded, thread-safe LRU, keeping
values as frozen objects (no serialisation) or bytes."""

from __future__ import annotations

from typing import Any

from ..lru import ByteLRU
from ..reader import parse_bytes
from ._base import Cache, check_key
from ._codec import decode, encode
from ._objects import freeze, frozen_nbytes, thaw

__all__ = ["MemoryCache"]


class MemoryCache(Cache):
    """Entries in this process's memory, the least recently used evicted beyond
    ``max_bytes`` (a :class:`~xbatcher.lru.ByteLRU`; thread-safe).

    Batches and chunks (:meth:`put_object`) are kept as objects, not encoded: a
    private read-only copy of their arrays, counted at their ``nbytes``; a hit
    (:meth:`get_object`) is a new object with its own data and attrs (index
    coordinates, immutable, are shared), so changing a batch never changes the
    cache. Bytes (:meth:`~Cache.put`) are kept as bytes; either kind reads back
    through either API (an object read with :meth:`~Cache.get` comes back encoded,
    bytes read with :meth:`get_object` decoded).

    Parameters
    ----------
    max_bytes : int or str, default "1GiB"
        Budget, e.g. ``"2GB"``. An entry larger than the budget is not kept.

    Notes
    -----
    Not persistent, not shared: a pickled copy (a DataLoader worker) starts empty.

    Examples
    --------
    >>> c = MemoryCache("10B")
    >>> c.put("a", b"12345"); c.put("b", b"123456")
    >>> c.get("a") is None, c.stats()["bytes"]
    (True, 6)
    >>> import numpy as np
    >>> c = MemoryCache("1MB")
    >>> c.put_object("chunk/0", np.arange(4.0))
    >>> c.get_object("chunk/0"), c.stats()["bytes"]
    (array([0., 1., 2., 3.]), 32)
    """

    def __init__(self, max_bytes: int | str = "1GiB") -> None:
        super().__init__()
        self.max_bytes = parse_bytes(max_bytes, "max_bytes")
        self._lru: ByteLRU[str, Any] = ByteLRU(self.max_bytes, sizeof=frozen_nbytes)

    @property
    def persistent(self) -> bool:
        return False

    @property
    def shared_across_processes(self) -> bool:
        return False

    @property
    def keeps_objects(self) -> bool:
        return True

    def _get(self, key: str) -> bytes | None:
        entry = self._lru.get(key)
        if entry is None or isinstance(entry, bytes):
            return entry
        return encode(thaw(entry))

    def _put(self, key: str, value: Any) -> None:
        self._lru.discard(key)  # a put replaces (the LRU keeps a cached value)
        self._lru.put(key, value)

    def _contains(self, key: str) -> bool:
        return key in self._lru

    def _delete(self, key: str) -> None:
        self._lru.discard(key)

    def _clear(self) -> None:
        self._lru.clear()

    def _resident_bytes(self) -> int | None:
        return self._lru.stats()["resident_bytes"]

    def get_object(self, key: str) -> Any | None:
        """The value under ``key`` as a new object (see the class notes), or
        ``None``; a bytes entry is decoded (``CacheCorruptError`` when it is not
        a whole xbatcher entry)."""
        entry = self._lru.get(check_key(key))
        with self._counts_lock:
            if entry is None:
                self._misses += 1
                return None
            self._hits += 1
            self._bytes_read += frozen_nbytes(entry)
        if isinstance(entry, bytes):
            return decode(entry)
        return thaw(entry)

    def put_object(self, key: str, value: Any) -> None:
        """Keep a read-only copy of ``value`` under ``key`` (raises
        ``CacheEncodeError`` for what the codec would refuse, as every backend)."""
        key = check_key(key)
        entry = freeze(value)
        self._put(key, entry)
        with self._counts_lock:
            self._bytes_written += frozen_nbytes(entry)

    def __repr__(self) -> str:
        return f"MemoryCache(max_bytes={self.max_bytes})"

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        return {**state, "_lru": ByteLRU(self.max_bytes, frozen_nbytes)}
