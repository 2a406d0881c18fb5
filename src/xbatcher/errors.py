"""Exceptions and warnings raised by xbatcher.

Every exception subclasses :class:`XbatcherError` *and* the built-in exception a user
would naturally catch, so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "BatchIndexError",
    "BatchIndexTypeError",
    "CacheCorruptError",
    "CacheEncodeError",
    "CacheWarning",
    "ChunkDecodeError",
    "DimensionError",
    "InputTypeError",
    "OptionalDependencyError",
    "PrefetchForkError",
    "SchemaError",
    "StateError",
    "StateTypeError",
    "UnknownCacheError",
    "VariableError",
    "XbatcherError",
    "XbatcherWarning",
]


class XbatcherError(Exception):
    """Base class of every error raised by xbatcher."""


class SchemaError(XbatcherError, ValueError):
    """A window, overlap, batch or sampling parameter is invalid for the data."""


class DimensionError(XbatcherError, KeyError):
    """A dimension name is not present in the data."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class VariableError(XbatcherError, KeyError):
    """A variable name (``inputs=``, ``targets=``) is not a data variable."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class InputTypeError(XbatcherError, TypeError):
    """An argument has the wrong type (for example ``ds`` is not an xarray object)."""


class StateError(XbatcherError, ValueError):
    """A saved iteration state does not match this generator."""


class StateTypeError(StateError, InputTypeError):
    """A field of a saved iteration state has the wrong type (also a ``TypeError``)."""


class BatchIndexError(XbatcherError, IndexError):
    """A batch index is out of range; the message keeps Python's ``list index out of
    range`` so code written for xbatcher 0.4 that matches on it keeps working."""


class BatchIndexTypeError(XbatcherError, TypeError, NotImplementedError):
    """A batch index is not an integer (a list, slice or array): one batch at a time.
    Also a ``NotImplementedError``, as xbatcher 0.4 raised for a list of indices."""


class ChunkDecodeError(XbatcherError, ValueError):
    """A stored chunk could not be decoded into the shape and dtype its array
    declares (a corrupt or truncated chunk); the message names the chunk's key."""


class OptionalDependencyError(XbatcherError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""


class XbatcherWarning(UserWarning):
    """Warnings emitted by xbatcher."""


class UnknownCacheError(XbatcherError, ValueError):
    """A cache URL names a scheme no cache backend is registered for; the message
    lists the known schemes."""


class CacheEncodeError(XbatcherError, TypeError):
    """A value cannot be stored in a cache exactly (an object dtype, an attribute of
    an unsupported type...); xbatcher never falls back to pickle."""


class CacheCorruptError(XbatcherError, ValueError):
    """A cache entry failed its checksum or format check (corrupt or truncated)."""


class PrefetchForkError(XbatcherError, RuntimeError):
    """A prefetcher is iterated in a process forked after it was made: its reading
    threads stayed in the parent, so waiting for them would hang."""


class CacheWarning(XbatcherWarning):
    """A cache backend failed (unreachable, full) or held a corrupt entry; batches
    keep coming from the source."""
