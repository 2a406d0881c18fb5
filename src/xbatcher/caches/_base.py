"""The :class:`Cache` contract: bytes under string keys, with counters."""

from __future__ import annotations

import abc
import re
import threading
from typing import Any

from ..errors import InputTypeError, SchemaError
from ._codec import decode, encode

__all__ = ["Cache", "check_key"]

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,511}$")


def check_key(key: Any) -> str:
    """A valid cache key: ``str`` of letters, digits, ``_ . - /`` (up to 512)."""
    if not isinstance(key, str):
        raise InputTypeError(f"a cache key must be a str; got {type(key).__name__}.")
    if not _KEY.match(key) or "//" in key or ".." in key:
        raise SchemaError(
            f"cache key {key!r} is not allowed: use 1..512 letters, digits and "
            "'_', '.', '-', '/' (no leading symbol, no '//' or '..')."
        )
    return key


class Cache(abc.ABC):
    """A store of byte strings under string keys: the plug point of the batch cache
    (``cache=``) and the chunk cache (``chunk_cache=``).

    Subclasses implement the ``_get``/``_put``/``_contains``/``_delete``/``_clear``
    primitives and the capability properties; this class checks keys and counts
    hits, misses and bytes. A ``put`` is atomic: a reader sees the whole value or
    nothing, never a part. Values are opaque bytes (xbatcher stores entries made by
    its own pickle-free codec, each with a checksum); an in-process backend may keep
    objects instead (:attr:`keeps_objects`, :meth:`get_object`, :meth:`put_object`).

    Examples
    --------
    >>> from xbatcher.caches import open_cache
    >>> c = open_cache("memory://?max_bytes=1MB")
    >>> c.put("a/1", b"xyz")
    >>> c.get("a/1"), c.get("a/2"), c.contains("a/1")
    (b'xyz', None, True)
    >>> s = c.stats(); s["hits"], s["misses"], s["bytes"]
    (1, 1, 3)
    """

    def __init__(self) -> None:
        self._counts_lock = threading.Lock()
        self._hits = 0
        self._misses = 0
        self._bytes_read = 0
        self._bytes_written = 0

    # ------------------------------------------------------------------ capabilities
    @property
    @abc.abstractmethod
    def persistent(self) -> bool:
        """True when entries outlive the process (disk, object store, server)."""

    @property
    @abc.abstractmethod
    def shared_across_processes(self) -> bool:
        """True when other processes (DataLoader workers, ranks) see the entries."""

    @property
    def keeps_objects(self) -> bool:
        """True when the cache keeps values as in-process objects
        (:meth:`get_object`/:meth:`put_object` without the codec), as
        :class:`~xbatcher.caches.MemoryCache` does; the batch and chunk layers then
        skip encoding. ``False`` (the default): values are stored encoded."""
        return False

    # ------------------------------------------------------------------ primitives
    @abc.abstractmethod
    def _get(self, key: str) -> bytes | None: ...

    @abc.abstractmethod
    def _put(self, key: str, value: bytes) -> None: ...

    @abc.abstractmethod
    def _contains(self, key: str) -> bool: ...

    @abc.abstractmethod
    def _delete(self, key: str) -> None: ...

    @abc.abstractmethod
    def _clear(self) -> None: ...

    def lease(self, key: str, seconds: float) -> bool:
        """Try to take, for ``seconds``, the exclusive right to compute ``key``
        (so that processes sharing the cache do not all compute the same entry).

        ``False`` means another holder has it: wait for the entry a while, then
        compute it anyway. Backends without coordination always return ``True``
        (the default); the lease ends at :meth:`release` or after ``seconds``.
        """
        del key, seconds
        return True

    def release(self, key: str) -> None:
        """End a lease taken with :meth:`lease` (nothing happens without one)."""
        del key

    def _resident_bytes(self) -> int | None:
        """Bytes held by the cache, where cheap to tell (else ``None``)."""
        return None

    # ------------------------------------------------------------------ public
    def get(self, key: str) -> bytes | None:
        """The value stored under ``key``, or ``None`` (a miss)."""
        value = self._get(check_key(key))
        with self._counts_lock:
            if value is None:
                self._misses += 1
            else:
                self._hits += 1
                self._bytes_read += len(value)
        return value

    def put(self, key: str, value: bytes) -> None:
        """Store ``value`` under ``key`` (replacing any value), atomically."""
        if not isinstance(value, bytes | bytearray | memoryview):
            raise InputTypeError(
                f"a cache value must be bytes; got {type(value).__name__}."
            )
        data = bytes(value)
        self._put(check_key(key), data)
        with self._counts_lock:
            self._bytes_written += len(data)

    def get_object(self, key: str) -> Any | None:
        """The value stored under ``key`` decoded (an array, DataArray, Dataset or
        dict of roles), or ``None``; this default decodes :meth:`get`'s bytes.

        Raises
        ------
        CacheCorruptError
            The entry is not a whole xbatcher entry (it fails its checksum).
        """
        raw = self.get(key)
        return None if raw is None else decode(raw)

    def put_object(self, key: str, value: Any) -> None:
        """Store ``value`` (an array, DataArray, Dataset or dict of roles) under
        ``key``; this default stores it encoded with :meth:`put`.

        Raises
        ------
        CacheEncodeError
            ``value`` holds something that cannot be stored exactly.
        """
        self.put(key, encode(value))

    def contains(self, key: str) -> bool:
        """Whether ``key`` holds a value (counts neither a hit nor a miss)."""
        return self._contains(check_key(key))

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.contains(key)

    def delete(self, key: str) -> None:
        """Remove ``key`` (nothing happens when it is absent)."""
        self._delete(check_key(key))

    def clear(self) -> None:
        """Remove every entry of this cache (only its own: its prefix or folder)."""
        self._clear()

    def stats(self) -> dict[str, int]:
        """Counters of this cache object: ``hits``, ``misses``, ``bytes_read``,
        ``bytes_written`` and ``bytes`` (bytes held where the backend can tell
        cheaply, else the bytes this object wrote)."""
        resident = self._resident_bytes()
        with self._counts_lock:
            return {
                "hits": self._hits,
                "misses": self._misses,
                "bytes_read": self._bytes_read,
                "bytes_written": self._bytes_written,
                "bytes": self._bytes_written if resident is None else resident,
            }

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_counts_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._counts_lock = threading.Lock()
