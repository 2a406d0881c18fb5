"""Cache use that never breaks a training loop: a failing backend is skipped."""

from __future__ import annotations

import threading
import time
import warnings
from typing import Any

from ..errors import CacheCorruptError, CacheEncodeError, CacheWarning
from ._base import Cache
from ._codec import check_storable, decode, encode

_CORRUPT = (CacheCorruptError, ValueError, KeyError, TypeError)

__all__ = ["GuardedCache"]

#: seconds a failed backend is left alone before it is tried again
RETRY_AFTER = 30.0


class GuardedCache:
    """A :class:`Cache` used by the batch and chunk layers: values are encoded with
    the pickle-free codec, and the backend's failures do not reach the caller.

    * A backend error (unreachable server, S3 error, full Redis) warns once
      (:class:`~xbatcher.errors.CacheWarning`), then the cache is skipped (reads
      miss, writes are dropped) for ``retry_after`` seconds and tried again; a
      later recovery is silent, a later outage warns again.
    * An entry that fails its checksum is dropped with a warning and reads as a miss,
      so the caller recomputes and rewrites it.
    * :class:`~xbatcher.errors.CacheEncodeError` (a value the codec cannot store
      exactly) is the caller's to see: it is raised.
    """

    def __init__(self, cache: Cache, retry_after: float = RETRY_AFTER) -> None:
        self.cache = cache
        self.retry_after = retry_after
        self._down_until = 0.0
        self._warned = False
        self._lock = threading.Lock()
        self.errors = 0  # backend failures seen (for tests and diagnostics)
        self.corrupt = 0  # corrupt entries dropped

    def _usable(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, op: str, err: Exception) -> None:
        with self._lock:
            self.errors += 1
            self._down_until = time.monotonic() + self.retry_after
            warn = not self._warned
            self._warned = True
        if warn:
            warnings.warn(
                f"cache {self.cache!r} failed ({op}: {type(err).__name__}: {err}); "
                f"batches keep coming from the source, and the cache is tried again "
                f"in {self.retry_after:g} s.",
                CacheWarning,
                stacklevel=4,
            )

    def _ok(self) -> None:
        if self._warned:
            with self._lock:
                self._warned = False

    def get(self, key: str) -> Any | None:
        """The decoded value of ``key``, or ``None`` (a miss, a skipped backend, or
        a corrupt entry, which is deleted). A cache that keeps objects
        (:attr:`Cache.keeps_objects`) hands its value over without the codec."""
        if not self._usable():
            return None
        if self.cache.keeps_objects:
            try:
                found = self.cache.get_object(key)
            except _CORRUPT as err:  # a bytes entry put by hand
                self._corrupt(key, err)
                return None
            except Exception as err:
                self._failed("get", err)
                return None
            self._ok()
            return found
        try:
            raw = self.cache.get(key)
        except Exception as err:  # any backend failure: skip the cache
            self._failed("get", err)
            return None
        self._ok()
        if raw is None:
            return None
        try:
            return decode(raw)
        except _CORRUPT as err:
            self._corrupt(key, err)
            return None

    def _corrupt(self, key: str, err: Exception) -> None:
        self.corrupt += 1
        warnings.warn(
            f"dropped a corrupt cache entry {key!r} of {self.cache!r} ({err}); "
            "it is recomputed and rewritten.",
            CacheWarning,
            stacklevel=4,
        )
        self.delete(key)

    def put(self, key: str, value: Any) -> None:
        """Store ``value`` encoded, or as an object in a cache that keeps objects
        (raises :class:`CacheEncodeError` for a value the codec refuses, whatever
        the backend; a backend failure only warns)."""
        objects = self.cache.keeps_objects
        data = b"" if objects else encode(value)
        if not self._usable():
            if objects:
                check_storable(value)  # put_object checks it otherwise
            return
        try:
            if objects:
                self.cache.put_object(key, value)
            else:
                self.cache.put(key, data)
        except CacheEncodeError:
            raise
        except Exception as err:
            self._failed("put", err)
            return
        self._ok()

    def contains(self, key: str) -> bool:
        if not self._usable():
            return False
        try:
            return self.cache.contains(key)
        except Exception as err:
            self._failed("contains", err)
            return False

    def lease(self, key: str, seconds: float) -> bool:
        """:meth:`Cache.lease`; ``True`` (compute it) when the backend fails."""
        if not self._usable():
            return True
        try:
            return self.cache.lease(key, seconds)
        except Exception as err:
            self._failed("lease", err)
            return True

    def release(self, key: str) -> None:
        try:
            self.cache.release(key)
        except Exception as err:
            self._failed("release", err)

    def delete(self, key: str) -> None:
        try:
            self.cache.delete(key)
        except Exception as err:
            self._failed("delete", err)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
