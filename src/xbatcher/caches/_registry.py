"""Cache backends by URL scheme: :func:`open_cache` and :func:`register_cache`."""

from __future__ import annotations

import importlib.util
import urllib.parse
from collections.abc import Callable
from typing import Any

from ..errors import InputTypeError, OptionalDependencyError, UnknownCacheError
from ._base import Cache

__all__ = ["as_cache", "known_schemes", "open_cache", "register_cache"]

_FACTORIES: dict[str, tuple[Callable[..., Cache], str | None, str | None]] = {}


def register_cache(
    scheme: str,
    factory: Callable[..., Cache],
    requires: str | None = None,
    extra: str | None = None,
) -> None:
    """Make ``open_cache("<scheme>://...")`` call ``factory(url, **options)``.

    ``requires`` names a module the backend imports; when it is missing,
    :func:`open_cache` raises :class:`~xbatcher.errors.OptionalDependencyError`
    naming the pip ``extra`` that installs it.
    """
    _FACTORIES[scheme.lower()] = (factory, requires, extra)


def known_schemes() -> list[str]:
    """The registered URL schemes, sorted."""
    return sorted(_FACTORIES)


def open_cache(url: str, **options: Any) -> Cache:
    """The cache a URL names.

    ``memory://?max_bytes=2GB`` (this process), ``file:///path/cache`` or a plain
    path (a local folder), ``s3://bucket/prefix`` (s3fs; ``storage_options=`` for
    credentials and endpoint), ``redis://host:6379/0`` (``rediss://`` for TLS;
    ``prefix``, ``ttl``, ``password``... as options or in the query).

    Raises
    ------
    UnknownCacheError
        The scheme is not registered (the message lists the known ones).
    OptionalDependencyError
        The backend's library is missing (the message names the pip extra).

    Examples
    --------
    >>> open_cache("memory://?max_bytes=64MB")
    MemoryCache(max_bytes=64000000)
    """
    if not isinstance(url, str):
        raise InputTypeError(f"a cache URL must be a str; got {type(url).__name__}.")
    scheme = urllib.parse.urlsplit(url).scheme.lower() if "://" in url else "file"
    if scheme not in _FACTORIES:
        raise UnknownCacheError(
            f"unknown cache URL scheme {scheme!r} in {url!r}; known schemes: "
            f"{', '.join(known_schemes())}. Register a backend with "
            "xbatcher.caches.register_cache(scheme, factory)."
        )
    factory, requires, extra = _FACTORIES[scheme]
    if requires is not None and importlib.util.find_spec(requires) is None:
        raise OptionalDependencyError(
            f"a {scheme}:// cache needs the {requires!r} package: "
            f'pip install "xbatcher[{extra or requires}]"'
        )
    return factory(url, **options)


def as_cache(value: Any, what: str) -> Cache:
    """A :class:`Cache` from a Cache or a URL (the ``cache=``/``chunk_cache=``
    arguments)."""
    if isinstance(value, Cache):
        return value
    if isinstance(value, str):
        return open_cache(value)
    raise InputTypeError(
        f"{what} must be a xbatcher.caches.Cache or a cache URL (e.g. "
        f"'memory://?max_bytes=2GB', 'file:///path', 's3://bucket/prefix', "
        f"'redis://host:6379/0'); got {type(value).__name__}."
    )


def _memory(url: str, **options: Any) -> Cache:
    from ._memory import MemoryCache

    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    query.update(options)
    return MemoryCache(**query)


def _fsspec(url: str, **options: Any) -> Cache:
    from ._fsspec import FsspecCache

    if "://" not in url:
        url = "file://" + url
    return FsspecCache(url, **options)


def _redis(url: str, **options: Any) -> Cache:
    from ._redis import RedisCache

    return RedisCache(url, **options)


register_cache("memory", _memory)
register_cache("file", _fsspec)
register_cache("s3", _fsspec, requires="s3fs", extra="s3")
register_cache("redis", _redis, requires="redis", extra="redis")
register_cache("rediss", _redis, requires="redis", extra="redis")
