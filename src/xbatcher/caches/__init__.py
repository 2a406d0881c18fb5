"""Pluggable caches: one :class:`Cache` contract, backends chosen by URL.

``BatchGenerator(..., cache=...)`` keeps finished batches and
``BatchGenerator(..., chunk_cache=...)`` keeps decoded source chunks in any
:class:`Cache`: :class:`MemoryCache` (``memory://``), :class:`FsspecCache` (a local
folder, ``file://``, ``s3://``) or :class:`RedisCache` (``redis://``,
``rediss://``), opened by :func:`open_cache`. Entries are stored with a pickle-free
codec (:func:`encode`/:func:`decode`) and a checksum; the in-process
:class:`MemoryCache` keeps them as frozen objects instead. See ``docs/caching.md``.
"""

from __future__ import annotations

from ._base import Cache
from ._codec import FORMAT_VERSION, decode, encode
from ._fsspec import FsspecCache
from ._guard import GuardedCache
from ._layers import BatchCache, ChunkCachedSource, cache_chunks
from ._memory import MemoryCache
from ._redis import RedisCache
from ._registry import as_cache, known_schemes, open_cache, register_cache

__all__ = [
    "FORMAT_VERSION",
    "BatchCache",
    "Cache",
    "ChunkCachedSource",
    "FsspecCache",
    "GuardedCache",
    "MemoryCache",
    "RedisCache",
    "as_cache",
    "cache_chunks",
    "decode",
    "encode",
    "known_schemes",
    "open_cache",
    "register_cache",
]
