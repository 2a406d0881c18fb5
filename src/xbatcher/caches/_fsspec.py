"""A cache of files under a folder or object-store prefix, through fsspec.

Each entry is one file (one object on S3) named by its key under the root: no Zarr
hierarchy, because an entry is written and read whole and an object-store PUT of one
object is atomic, while a Zarr array is many objects whose partial state a reader
could see. Writes are atomic: on a local disk a value goes to a temporary file in
the same folder and is renamed over the entry (``os.replace``); on an object store
it is one PUT. A reader therefore sees a whole entry or none, and the entry's
checksum catches anything else (a disk error, a hand edit).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from typing import Any

from ._base import Cache

__all__ = ["FsspecCache"]

# an unreachable endpoint must fail fast (then the cache is skipped), not hang
_S3_DEFAULTS: dict[str, Any] = {
    "config_kwargs": {
        "connect_timeout": 5,
        "read_timeout": 20,
        "retries": {"max_attempts": 2, "mode": "standard"},
    }
}


class FsspecCache(Cache):
    """Entries as files under ``url`` (a local path, ``file://``, ``s3://``...).

    Parameters
    ----------
    url : str
        The root folder or prefix, e.g. ``"/scratch/cache"``,
        ``"file:///scratch/cache.zarr"`` or ``"s3://bucket/prefix"``.
    storage_options : dict, optional
        fsspec options (for s3fs: ``key``, ``secret``, ``client_kwargs``...). For S3
        the defaults add short connect/read timeouts and two attempts.

    Examples
    --------
    >>> import tempfile
    >>> c = FsspecCache(tempfile.mkdtemp())
    >>> c.put("b/1", b"abc"); c.get("b/1"), c.persistent
    (b'abc', True)
    """

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.url = url
        self.storage_options = dict(storage_options or {})
        self._fs: Any = None
        self._root = ""
        self._local = False

    @property
    def persistent(self) -> bool:
        return True

    @property
    def shared_across_processes(self) -> bool:
        return True

    @property
    def fs(self) -> Any:
        """The fsspec file system (opened on first use, also after unpickling)."""
        if self._fs is None:
            from fsspec.core import url_to_fs  # type: ignore[import-untyped]
            from fsspec.implementations.local import (  # type: ignore[import-untyped]
                LocalFileSystem,
            )

            options = dict(self.storage_options)
            if self.url.startswith(("s3://", "s3a://")):
                for name, value in _S3_DEFAULTS.items():
                    options.setdefault(name, value)
            fs, root = url_to_fs(self.url, **options)
            self._local = isinstance(fs, LocalFileSystem)
            self._root = root.rstrip("/")
            if self._local:
                os.makedirs(self._root, exist_ok=True)
            self._fs = fs
        return self._fs

    def _path(self, key: str) -> str:
        fs = self.fs
        del fs
        return f"{self._root}/{key}"

    def _get(self, key: str) -> bytes | None:
        path = self._path(key)
        if self._local:
            try:
                with open(path, "rb") as f:
                    return f.read()
            except (FileNotFoundError, NotADirectoryError):
                return None
        try:
            return bytes(self.fs.cat_file(path))
        except FileNotFoundError:
            return None

    def _put(self, key: str, value: bytes) -> None:
        path = self._path(key)
        if not self._local:
            self.fs.pipe_file(path, value)  # one PUT: atomic
            return
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".tmp-{uuid.uuid4().hex}")
        try:
            with open(tmp, "wb") as f:
                f.write(value)
            os.replace(tmp, path)  # atomic on POSIX: readers see old or new, whole
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def _is_local(self) -> bool:
        return self.fs is not None and self._local  # opens the file system first

    def _lease_path(self, key: str) -> str:
        return os.path.join(self._path(".leases"), key.replace("/", "%"))

    def lease(self, key: str, seconds: float) -> bool:
        """On a local disk: create a lease file exclusively (a hard link, which
        fails if the name exists), its mtime set to when it expires; an expired
        one (its holder died) is taken over. Object stores have no such
        primitive: always ``True``."""
        if not self._is_local():
            return True
        path = self._lease_path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        for _ in range(2):
            # the lease file appears whole, its mtime already its expiry: made
            # aside, then hard-linked into place (fails if the name exists)
            tmp = f"{path}.{uuid.uuid4().hex}"
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            expiry = time.time() + seconds
            os.utime(tmp, (expiry, expiry))
            try:
                os.link(tmp, path)
                return True
            except FileExistsError:
                try:
                    if time.time() < os.path.getmtime(path):
                        return False
                    os.unlink(path)  # expired: take it over
                except FileNotFoundError:
                    pass  # released meanwhile: try again
            except OSError:  # no hard links here (some network or FAT disks)
                return True  # build it: at worst twice, never wrong
            finally:
                os.unlink(tmp)
        return False

    def release(self, key: str) -> None:
        if self._is_local():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._lease_path(key))

    def _contains(self, key: str) -> bool:
        return bool(self.fs.exists(self._path(key)))

    def _delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(key))

    def _clear(self) -> None:
        fs = self.fs
        if fs.exists(self._root):
            fs.rm(self._root, recursive=True)
        if self._local:
            os.makedirs(self._root, exist_ok=True)

    def _resident_bytes(self) -> int | None:
        if not self._local:
            return None
        total = 0
        for folder, _, files in os.walk(self._root):
            total += sum(os.path.getsize(os.path.join(folder, f)) for f in files)
        return total

    def __repr__(self) -> str:
        return f"FsspecCache({self.url!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_fs": None}
