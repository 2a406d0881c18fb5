"""Window batches read one at a time (``bgen[i]`` in window mode, lazy variables).

Consecutive windows mostly lie in the chunk the previous one came from: a
:class:`ChunkMemo` keeps, per source, that chunk (a view of the array the chunk
cache holds) and its edges, so the next window inside it is one slice and one copy,
without the chunk lookup. A window in another chunk is read through the chunk cache
as before (and its chunk kept instead); a window across chunks is assembled by the
reader. Values are the reader's: the memo holds the very array the cache handed out.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Hashable
from typing import Any

from numpy.typing import NDArray

from .reader import BlockCache, read_region, read_region_copy
from .sources import Source

__all__ = ["ChunkMemo"]


class ChunkMemo:
    """The chunk the last window of each source was read from (at most one chunk
    per source is kept alive beyond the chunk cache's own budget).

    It pickles empty (an engine sent to a worker carries no data).
    """

    __slots__ = ("_held",)

    def __init__(self) -> None:
        # name -> (source, chunk start and stop per dim, the chunk)
        self._held: dict[
            Hashable, tuple[Source, tuple[int, ...], tuple[int, ...], NDArray[Any]]
        ] = {}

    def __reduce__(self) -> tuple[type[ChunkMemo], tuple[()]]:
        return ChunkMemo, ()

    def clear(self) -> None:
        """Let go of the chunks kept."""
        self._held = {}

    def read_copy(
        self,
        name: Hashable,
        source: Source,
        region: tuple[slice, ...],
        cache: BlockCache,
    ) -> NDArray[Any]:
        """:func:`~xbatcher.reader.read_region_copy` of ``region`` (slices with
        integer bounds), served from the chunk kept for ``name`` when it holds the
        region."""
        held = self._held.get(name)  # one read: another thread may replace it
        if held is not None and held[0] is source:
            _, lo, hi, block = held
            inner = []
            for r, a, z in zip(region, lo, hi, strict=True):
                if r.start < a or r.stop > z:
                    break
                inner.append(slice(r.start - a, r.stop - a))
            else:
                return block[tuple(inner)].copy()
        if source.bounds is None or not region:
            return read_region_copy(source, region, cache)
        starts: list[int] = []
        stops: list[int] = []
        for b, r in zip(source.bound_lists, region, strict=True):
            c = bisect_right(b, r.start) - 1
            if r.stop > b[c + 1]:  # across chunks: the reader assembles it
                return read_region_copy(source, region, cache)
            starts.append(b[c])
            stops.append(b[c + 1])
        chunk = tuple(slice(a, z) for a, z in zip(starts, stops, strict=True))
        block = read_region(source, chunk, cache)  # the cached chunk itself
        self._held[name] = (source, tuple(starts), tuple(stops), block)
        inner_region = tuple(
            slice(r.start - a, r.stop - a) for r, a in zip(region, starts, strict=True)
        )
        return block[inner_region].copy()
