"""Filling a generator's caches ahead of training (``bgen.cache_all()``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import OptionalDependencyError, SchemaError
from ._layers import ChunkCachedSource

if TYPE_CHECKING:
    from ..generator import BatchGenerator

__all__ = ["warm"]

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


def warm(gen: BatchGenerator, progress: bool = False) -> dict[str, int]:
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
        from ..generator import _cached_batch

        bar = _progress(len(gen), progress, "batches")
        for i in range(len(gen)):
            units = gen.batch_units(i)
            if not cache.contains(units):
                _cached_batch(gen, units)
                counts["batches_built"] += 1
            counts["batches"] += 1
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
    return counts
