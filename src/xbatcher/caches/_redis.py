"""A cache in a Redis server, shared by every process and node that reaches it.

Each entry is one Redis string (``SET``, atomic: a reader gets the whole value or
nothing) under ``prefix + key``. With ``ttl`` each entry expires that many seconds
after it was written. Under ``maxmemory`` the server's policy decides: with
``allkeys-lru`` (recommended for a cache) or ``volatile-lru`` plus a ``ttl``, Redis
evicts whole entries, which later read as misses and are recomputed; with the
default ``noeviction`` a full server refuses writes, which xbatcher reports once as
a :class:`~xbatcher.errors.CacheWarning` and then serves batches from the source.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from ..errors import OptionalDependencyError, SchemaError
from ._base import Cache

__all__ = ["RedisCache"]


class RedisCache(Cache):
    """Entries in Redis under a key prefix.

    Parameters
    ----------
    url : str, default "redis://localhost:6379/0"
        ``redis://[[user]:password@]host:port/db``; ``rediss://`` for TLS. The query
        may set ``prefix`` and ``ttl`` (e.g. ``?prefix=run1:&ttl=3600``).
    prefix : str, default "xbatcher:"
        Put before every key; :meth:`clear` removes only keys with this prefix, so
        several caches share one server.
    ttl : float, optional
        Seconds an entry lives (``None``: until evicted or cleared).
    password : str, optional
        Overrides the URL's password.
    ssl : bool, optional
        Use TLS (``True``: as a ``rediss://`` URL; ``False``: plain, whatever the
        scheme; ``None``: as the URL says). redis-py's ``ssl_*`` options
        (``ssl_ca_certs``, ``ssl_cert_reqs``, ``ssl_certfile``, ``ssl_keyfile``...)
        go in ``options`` or in the URL's query; they need TLS (else a
        ``SchemaError``).
    timeout : float, default 5.0
        Socket connect and read timeout in seconds: a stopped server fails fast.
    **options
        Other ``redis.Redis`` keyword arguments.
    """

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        prefix: str | None = None,
        ttl: float | None = None,
        password: str | None = None,
        ssl: bool | None = None,
        timeout: float = 5.0,
        **options: Any,
    ) -> None:
        super().__init__()
        parts = urllib.parse.urlsplit(url)
        query = dict(urllib.parse.parse_qsl(parts.query))
        url_prefix, url_ttl = query.pop("prefix", None), query.pop("ttl", None)
        if ssl is not None:  # redis-py picks TLS by the scheme, not by an option
            parts = parts._replace(scheme="rediss" if ssl else "redis")
        tls = parts.scheme == "rediss"
        ssl_options = sorted(k for k in (*options, *query) if k.startswith("ssl_"))
        if ssl_options and not tls:
            raise SchemaError(
                f"the TLS option(s) {', '.join(ssl_options)} need a TLS connection; "
                f"got a {parts.scheme}:// URL. Use a rediss:// URL or ssl=True."
            )
        self.url = urllib.parse.urlunsplit(
            parts._replace(query=urllib.parse.urlencode(query))
        )
        self.prefix = prefix if prefix is not None else (url_prefix or "xbatcher:")
        self.ttl = ttl if ttl is not None else (float(url_ttl) if url_ttl else None)
        if self.ttl is not None and not self.ttl > 0:
            raise SchemaError(
                f"ttl must be a positive number of seconds or None; got {self.ttl}."
            )
        self.options: dict[str, Any] = dict(options)
        self.options.setdefault("socket_timeout", timeout)
        self.options.setdefault("socket_connect_timeout", timeout)
        if password is not None:
            self.options["password"] = password
        self._client: Any = None

    @property
    def persistent(self) -> bool:
        return True

    @property
    def shared_across_processes(self) -> bool:
        return True

    @property
    def client(self) -> Any:
        """The ``redis.Redis`` client (made on first use, also after unpickling)."""
        if self._client is None:
            try:
                import redis
            except ImportError as err:
                raise OptionalDependencyError(
                    'a redis:// cache needs redis-py: pip install "xbatcher[redis]"'
                ) from err
            self._client = redis.Redis.from_url(self.url, **self.options)
        return self._client

    def _get(self, key: str) -> bytes | None:
        value = self.client.get(self.prefix + key)
        return None if value is None else bytes(value)

    def _put(self, key: str, value: bytes) -> None:
        ttl = None if self.ttl is None else max(1, round(self.ttl * 1000))
        self.client.set(self.prefix + key, value, px=ttl)

    def _contains(self, key: str) -> bool:
        return bool(self.client.exists(self.prefix + key))

    def _delete(self, key: str) -> None:
        self.client.delete(self.prefix + key)

    def lease(self, key: str, seconds: float) -> bool:
        """``SET NX`` of a lease key that expires after ``seconds``."""
        name = f"{self.prefix}lease:{key}"
        ms = max(1, round(seconds * 1000))
        return bool(self.client.set(name, b"1", nx=True, px=ms))

    def release(self, key: str) -> None:
        self.client.delete(f"{self.prefix}lease:{key}")

    def _clear(self) -> None:
        client = self.client
        batch: list[Any] = []
        for name in client.scan_iter(match=_glob_escape(self.prefix) + "*", count=500):
            batch.append(name)
            if len(batch) >= 500:
                client.delete(*batch)
                batch = []
        if batch:
            client.delete(*batch)

    def __repr__(self) -> str:  # never shows a password (warnings print it)
        parts = urllib.parse.urlsplit(self.url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        shown = urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=""))
        return f"RedisCache({shown!r}, prefix={self.prefix!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_client": None}


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
