"""The in-process cache: the engine's byte-bounded, thread-safe LRU."""

from __future__ import annotations

from typing import Any

from ..lru import ByteLRU
from ..reader import parse_bytes
from ._base import Cache

__all__ = ["MemoryCache"]


class MemoryCache(Cache):
    """Entries in this process's memory, the least recently used evicted beyond
    ``max_bytes`` (a :class:`~xbatcher.lru.ByteLRU`; thread-safe).

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
    """

    def __init__(self, max_bytes: int | str = "1GiB") -> None:
        super().__init__()
        self.max_bytes = parse_bytes(max_bytes, "max_bytes")
        self._lru: ByteLRU[str, bytes] = ByteLRU(self.max_bytes, sizeof=len)

    @property
    def persistent(self) -> bool:
        return False

    @property
    def shared_across_processes(self) -> bool:
        return False

    def _get(self, key: str) -> bytes | None:
        return self._lru.get(key)

    def _put(self, key: str, value: bytes) -> None:
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

    def __repr__(self) -> str:
        return f"MemoryCache(max_bytes={self.max_bytes})"

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_lru": ByteLRU(self.max_bytes, len)}
