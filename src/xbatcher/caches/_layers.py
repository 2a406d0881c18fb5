"""The two uses of a :class:`Cache`: finished batches and decoded source chunks.

* :class:`BatchCache` (``cache=``): an xarray batch per unit set (with
  ``windows=``, the dict of roles as one entry), under
  ``xb<format>/b/<fingerprint>/<units>``. The fingerprint covers the schema, the
  source data, the sample filter, the ``cache_preprocess`` function and the codec's
  format version, so entries never go stale and generators with different
  parameters (or split parts sharing one store) never see each other's entries.
* :class:`ChunkCachedSource` (``chunk_cache=``): a source whose decoded chunks are
  kept in a (persistent) cache under ``xb<format>/c/<source fingerprint>/<variable
  and chunking>/<chunk index>``, consulted when the engine's in-memory chunk cache
  misses, so a second epoch reads no chunk from the original store whatever the
  shuffle order.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..sources import Source
from ._base import Cache
from ._codec import FORMAT_VERSION
from ._guard import GuardedCache

__all__ = ["BatchCache", "ChunkCachedSource", "cache_chunks"]


#: seconds a process building a batch holds its lease (others wait that long at most)
LEASE_SECONDS = 30.0


def _units_token(units: NDArray[np.int64]) -> str:
    if units.size == 1:
        return f"u{int(units[0])}"
    data = np.ascontiguousarray(units, dtype="<i8").tobytes()
    return "s" + hashlib.sha256(data).hexdigest()[:32]


class BatchCache:
    """Finished xarray batches in a :class:`Cache`, keyed so they cannot go stale.

    Parameters
    ----------
    cache : Cache
        The backend.
    fingerprint : str
        What a unit's batch holds (schema, source, filter).
    preprocess : callable, optional
        ``cache_preprocess``; its identity joins the fingerprint.
    """

    def __init__(
        self,
        cache: Cache,
        fingerprint: str,
        preprocess: Callable[..., Any] | None = None,
    ) -> None:
        from ..mapping_cache import function_fingerprint

        self.guarded = GuardedCache(cache)
        prep = "none" if preprocess is None else function_fingerprint(preprocess)
        self.fingerprint = hashlib.sha256(
            f"{fingerprint}|{prep}|{FORMAT_VERSION}".encode()
        ).hexdigest()[:24]

    @property
    def cache(self) -> Cache:
        return self.guarded.cache

    def key(self, units: NDArray[np.int64]) -> str:
        """The cache key of the batch made of ``units``."""
        return f"xb{FORMAT_VERSION}/b/{self.fingerprint}/{_units_token(units)}"

    def lookup(self, units: NDArray[np.int64], load: bool) -> Any | None:
        """The cached batch of ``units`` (batches come back in memory), or ``None``:
        then the caller computes the batch and :meth:`save`\\s it.

        On a miss, a lease on the key (:meth:`Cache.lease`) makes one process the
        builder: the others wait up to ``LEASE_SECONDS`` for its entry, then build
        the batch themselves.
        """
        del load
        key = self.key(units)
        found = self.guarded.get(key)
        if found is not None:
            return found
        if self.guarded.lease(key, LEASE_SECONDS):
            # the builder may have finished between our miss and our lease
            if self.guarded.contains(key):
                found = self.guarded.get(key)
                if found is not None:
                    self.guarded.release(key)
                    return found
            return None
        deadline = time.monotonic() + LEASE_SECONDS
        delay = 0.005
        while time.monotonic() < deadline:
            time.sleep(delay)
            delay = min(2 * delay, 0.2)
            if self.guarded.contains(key):
                found = self.guarded.get(key)
                if found is not None:
                    return found
        return None

    def abandon(self, units: NDArray[np.int64]) -> None:
        """The batch that :meth:`lookup` left to the caller could not be built:
        end the lease (the next request builds it again, without waiting)."""
        self.guarded.release(self.key(units))

    def save(self, units: NDArray[np.int64], batch: Any) -> None:
        key = self.key(units)
        try:
            self.guarded.put(key, batch)
        finally:
            self.guarded.release(key)

    def contains(self, units: NDArray[np.int64]) -> bool:
        return self.guarded.contains(self.key(units))


class ChunkCachedSource(Source):
    """``inner`` with its decoded chunks kept in a cache tier (``chunk_cache=``).

    Whole-chunk reads (:meth:`read_chunks`, :meth:`submit_chunk`) look each chunk up
    in the tier first and store what they decode; region reads pass through.
    """

    def __init__(self, inner: Source, cache: GuardedCache, prefix: str) -> None:
        self.inner = inner
        self.guarded = cache
        self.prefix = prefix
        self.key = inner.key
        self.shape = inner.shape
        self.dtype = inner.dtype
        self.bounds = inner.bounds

    @property
    def reopens_lazily(self) -> bool:
        return self.inner.reopens_lazily

    def _key(self, cid: tuple[int, ...]) -> str:
        return f"{self.prefix}/{'.'.join(map(str, cid))}"

    def _cached(self, cid: tuple[int, ...]) -> NDArray[Any] | None:
        value = self.guarded.get(self._key(cid))
        if isinstance(value, np.ndarray) and value.shape == tuple(
            r.stop - r.start for r in self.chunk_region(cid)
        ):
            return value.astype(self.dtype, copy=False)
        return None

    def read(self, region: tuple[slice, ...]) -> NDArray[Any]:
        return self.inner.read(region)

    def read_chunks(self, chunk_ids: Sequence[tuple[int, ...]]) -> list[NDArray[Any]]:
        found = {cid: self._cached(cid) for cid in chunk_ids}
        missing = [cid for cid, v in found.items() if v is None]
        if missing:
            for cid, block in zip(
                missing, self.inner.read_chunks(missing), strict=True
            ):
                found[cid] = block
                self.guarded.put(self._key(cid), np.asarray(block))
        return [found[cid] for cid in chunk_ids]  # type: ignore[misc]

    def submit_chunk(
        self, cid: tuple[int, ...], out: NDArray[Any] | None = None
    ) -> Future[NDArray[Any]]:
        hit = self._cached(cid)
        if hit is not None:
            if out is not None:
                out[...] = hit
                hit = out
            done: Future[NDArray[Any]] = Future()
            done.set_result(hit)
            return done
        task = (
            self.inner.submit_chunk(cid)
            if out is None
            else self.inner.submit_chunk(cid, out)
        )
        key = self._key(cid)

        def store(t: Future[NDArray[Any]]) -> None:
            if not t.cancelled() and t.exception() is None:
                self.guarded.put(key, np.asarray(t.result()))

        task.add_done_callback(store)
        return task


class _SubmittingChunkCachedSource(ChunkCachedSource):
    submits_chunks = True


def cache_chunks(
    sources: dict[Hashable, Source], cache: Cache, source_fingerprint: str
) -> dict[Hashable, Source]:
    """``sources`` with the chunked ones reading through ``cache`` (one
    :class:`GuardedCache` for all); in-memory sources are left as they are."""
    guarded = GuardedCache(cache)
    out: dict[Hashable, Source] = {}
    for name, src in sources.items():
        if src.in_memory or src.bounds is None:
            out[name] = src
            continue
        layout = repr(
            (str(name), str(src.dtype), src.shape, [b.tolist() for b in src.bounds])
        )
        token = hashlib.sha256(layout.encode()).hexdigest()[:16]
        prefix = f"xb{FORMAT_VERSION}/c/{source_fingerprint}/{token}"
        cls = _SubmittingChunkCachedSource if src.submits_chunks else ChunkCachedSource
        out[name] = cls(src, guarded, prefix)
    return out
