"""Filling a generator's caches ahead of training (``bgen.cache_all()``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import OptionalDependencyError, SchemaError
from ._layers import ChunkCachedSource

__all__ = ["CacheWarmUp", "warm"]

_CHUNK_GROUP = 16  # chunks decoded per read while warming


def _progress(total: int, enabled: bool, desc: str) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError as err:
        raise OptionalDependencyError(
            'progress=True needs tqdm: pip install "xbatcher[cli]" (or progress=False)'
        ) from err
    return tqdm(total=total, desc=desc, unit="it")


def _fill_chunks(src: ChunkCachedSource, ids: list[tuple[int, ...]]) -> int:
    """Decode the chunks of ``ids`` not yet in ``src``'s tier (which stores them);
    returns how many were decoded."""
    decoded = 0
    for start in range(0, len(ids), _CHUNK_GROUP):
        group = ids[start : start + _CHUNK_GROUP]
        todo = [c for c in group if not src.guarded.contains(src._key(c))]
        if todo:
            src.read_chunks(todo)
        decoded += len(todo)
    return decoded


def _fill_batches(gen: Any, start: int, stop: int) -> int:
    """Build the batches ``start .. stop - 1`` not yet cached; returns how many."""
    built = 0
    cache = gen._batch_cache
    for i in range(start, stop):
        if not cache.contains(gen.batch_units(i)):
            gen[i]  # reads the batch through the cache, which stores it
            built += 1
    return built


def _check_shared(gen: Any, chunk_sources: list[ChunkCachedSource]) -> None:
    from ._base import Cache

    caches = [s.guarded.cache for s in chunk_sources[:1]]
    if gen._batch_cache is not None:
        caches.append(getattr(gen._batch_cache, "cache", gen.cache))
    for cache in caches:
        if not (isinstance(cache, Cache) and cache.shared_across_processes):
            raise SchemaError(
                f"cache_all(client=...) fills the caches on the cluster's workers, so "
                f"each must be shared across processes; got {cache!r}. Use a "
                "file://, s3:// or redis:// cache, or call cache_all() without client."
            )


def _on_cluster(
    gen: Any, client: Any, chunk_sources: list[ChunkCachedSource]
) -> dict[str, int]:
    """The fill as tasks on a Dask distributed ``client``: ranges of chunks first,
    then ranges of batches, a few ranges per worker."""
    _check_shared(gen, chunk_sources)
    parts = 4 * max(1, len(client.scheduler_info().get("workers", {})))
    counts = {"chunks": 0, "chunks_decoded": 0, "batches": 0, "batches_built": 0}
    chunk_tasks = []
    for src in chunk_sources:
        ids = [tuple(int(i) for i in c) for c in np.ndindex(*src.nchunks)]
        step = max(1, -(-len(ids) // parts))
        for a in range(0, len(ids), step):
            part = ids[a : a + step]
            counts["chunks"] += len(part)
            chunk_tasks.append(client.submit(_fill_chunks, src, part, pure=False))
    counts["chunks_decoded"] = sum(client.gather(chunk_tasks))
    if gen._batch_cache is not None:
        n = len(gen)
        step = max(1, -(-n // parts))
        batch_tasks = [
            client.submit(_fill_batches, gen, a, min(a + step, n), pure=False)
            for a in range(0, n, step)
        ]
        counts["batches"] = n
        counts["batches_built"] = sum(client.gather(batch_tasks))
    return counts


def warm(gen: Any, progress: bool = False, client: Any = None) -> dict[str, int]:
    """Fill ``gen``'s chunk cache (every chunk of every chunked variable) and its
    batch cache (every batch of the current epoch); see
    :meth:`xbatcher.BatchGenerator.cache_all`."""
    chunk_sources = [
        s for s in gen.engine.sources.values() if isinstance(s, ChunkCachedSource)
    ]
    if gen._batch_cache is None and not chunk_sources:
        raise SchemaError(
            "cache_all() has nothing to fill: this generator has neither cache= nor "
            "chunk_cache=. Pass cache='file:///path' (batches) or "
            "chunk_cache='file:///path' (chunks)."
        )
    if client is not None:
        return _on_cluster(gen, client, chunk_sources)
    counts = {"chunks": 0, "chunks_decoded": 0, "batches": 0, "batches_built": 0}
    if chunk_sources:
        total = sum(int(np.prod(s.nchunks)) for s in chunk_sources)
        bar = _progress(total, progress, "chunks")
        for src in chunk_sources:
            ids = [tuple(int(i) for i in c) for c in np.ndindex(*src.nchunks)]
            for start in range(0, len(ids), _CHUNK_GROUP):
                group = ids[start : start + _CHUNK_GROUP]
                counts["chunks_decoded"] += _fill_chunks(src, group)
                counts["chunks"] += len(group)
                if bar is not None:
                    bar.update(len(group))
        if bar is not None:
            bar.close()
    if gen._batch_cache is not None:
        bar = _progress(len(gen), progress, "batches")
        for i in range(len(gen)):
            counts["batches_built"] += _fill_batches(gen, i, i + 1)
            counts["batches"] += 1
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
    return counts


class CacheWarmUp:
    """The cache warm-up of :class:`~xbatcher.BatchGenerator` (a mixin)."""

    def cache_all(self, progress: bool = False, client: Any = None) -> dict[str, int]:
        """Fill the caches ahead of training: every chunk of the ``chunk_cache=``
        tier, then every batch of the current epoch in the ``cache=`` store
        (entries already there are skipped).

        Parameters
        ----------
        progress : bool
            Show tqdm progress bars (needs ``tqdm``: ``pip install "xbatcher[cli]"``).
        client : distributed.Client, optional
            Run the fill on a Dask cluster: ranges of chunks, then ranges of
            batches, as tasks (caches must be shared across processes: files, S3,
            Redis). ``progress`` is ignored there (use the Dask dashboard).

        Returns
        -------
        dict
            Counts: ``chunks`` and ``batches`` visited, ``chunks_decoded`` and
            ``batches_built`` (not already cached).

        Raises
        ------
        SchemaError
            The generator has neither ``cache=`` nor ``chunk_cache=``, or a
            ``client`` is given with a cache its workers cannot share.

        Examples
        --------
        >>> import numpy as np, xarray as xr, xbatcher as xb
        >>> da = xr.DataArray(np.arange(24.0).reshape(2, 12), dims=("t", "x"))
        >>> bgen = xb.BatchGenerator(da, {"x": 4}, cache="memory://")
        >>> bgen.cache_all()["batches_built"], bgen.cache_all()["batches_built"]
        (3, 0)
        """
        return warm(self, progress, client)
