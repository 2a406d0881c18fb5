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


def warm(gen: Any, progress: bool = False) -> dict[str, int]:
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
    counts = {"chunks": 0, "chunks_decoded": 0, "batches": 0, "batches_built": 0}
    if chunk_sources:
        total = sum(int(np.prod(s.nchunks)) for s in chunk_sources)
        bar = _progress(total, progress, "chunks")
        for src in chunk_sources:
            ids = [tuple(int(i) for i in c) for c in np.ndindex(*src.nchunks)]
            for start in range(0, len(ids), _CHUNK_GROUP):
                group = ids[start : start + _CHUNK_GROUP]
                todo = [c for c in group if not src.guarded.contains(src._key(c))]
                if todo:
                    src.read_chunks(todo)  # stores each decoded chunk in the tier
                counts["chunks"] += len(group)
                counts["chunks_decoded"] += len(todo)
                if bar is not None:
                    bar.update(len(group))
        if bar is not None:
            bar.close()
    cache = gen._batch_cache
    if cache is not None:
        bar = _progress(len(gen), progress, "batches")
        for i in range(len(gen)):
            units = gen.batch_units(i)
            if not cache.contains(units):
                gen[i]  # reads the batch through the cache, which stores it
                counts["batches_built"] += 1
            counts["batches"] += 1
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
    return counts


class CacheWarmUp:
    """The cache warm-up of :class:`~xbatcher.BatchGenerator` (a mixin)."""

    def cache_all(self, progress: bool = False) -> dict[str, int]:
        """Fill the caches ahead of training: every chunk of the ``chunk_cache=``
        tier, then every batch of the current epoch in the ``cache=`` store
        (entries already there are skipped).

        Parameters
        ----------
        progress : bool
            Show tqdm progress bars (needs ``tqdm``: ``pip install "xbatcher[cli]"``).

        Returns
        -------
        dict
            Counts: ``chunks`` and ``batches`` visited, ``chunks_decoded`` and
            ``batches_built`` (not already cached).

        Raises
        ------
        SchemaError
            The generator has neither ``cache=`` nor ``chunk_cache=``.

        Examples
        --------
        >>> import numpy as np, xarray as xr, xbatcher as xb
        >>> da = xr.DataArray(np.arange(24.0).reshape(2, 12), dims=("t", "x"))
        >>> bgen = xb.BatchGenerator(da, {"x": 4}, cache="memory://")
        >>> bgen.cache_all()["batches_built"], bgen.cache_all()["batches_built"]
        (3, 0)
        """
        return warm(self, progress)
