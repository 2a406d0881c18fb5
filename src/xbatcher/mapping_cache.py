"""The 0.4-compatible batch cache: finished xarray batches in a ``MutableMapping``.

``BatchGenerator(..., cache=store, cache_preprocess=fn)`` stores each batch (after
``fn``) as a Zarr group inside ``store`` (any ``MutableMapping``: a dict, a
``zarr.storage`` store...) and reads it back on the next request, as xbatcher 0.4 did.
The layout is 0.4's: batch ``i`` is a Zarr v2 group at key prefix ``"<i>/"`` (so
``"0/.zgroup" in store`` after ``bgen[0]``). Differences from 0.4, all fixes:

* each entry records the fingerprint of the schema, the source and the
  ``cache_preprocess`` function that made it; an entry whose fingerprint differs from
  the generator's (a parameter, the data or the preprocessing changed) is a miss and
  is overwritten, so a stale batch is never returned;
* an entry counts only once its completion marker is written, so an interrupted write
  is recomputed instead of returning a partial batch;
* batches stacked into a ``sample`` MultiIndex round-trip (0.4 failed to write them),
  and a DataArray comes back as a DataArray (0.4 returned a Dataset);
* generators that share one store without sharing batches (split parts, other
  parameters or data) no longer overwrite each other: the first to write batch ``i``
  owns 0.4's ``"<i>/"`` group, the others write theirs under
  ``"xb-<fingerprint>/<i>/"``, so each keeps its entries. (A store reused after the
  data changed therefore keeps the old ``"<i>/"`` entries beside the new ones: clear
  it to reclaim the space.)

The pluggable caches (:mod:`xbatcher.caches`: memory, files or S3, Redis; keyed,
checksummed, pickle-free) are used instead when ``cache=`` is a
:class:`~xbatcher.caches.Cache` or a URL.
"""

from __future__ import annotations

import functools
import hashlib
import json
import types
import warnings
from collections.abc import Callable, MutableMapping
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from .errors import OptionalDependencyError

__all__ = ["MappingBatchCache", "function_fingerprint"]

_DA_NAME = "__xbatcher_dataarray__"
_MARKER = "_xbatcher_complete"
_META = "_xbatcher_cache"


class MappingBatchCache:
    """Batches as Zarr groups in a ``MutableMapping``, keyed by fingerprint and unit."""

    def __init__(
        self,
        store: Any,
        fingerprint: str,
        preprocess: Callable[..., Any] | None = None,
    ) -> None:
        try:
            from zarr.abc.store import Store
        except ImportError as err:
            raise OptionalDependencyError(
                'cache= stores batches as Zarr groups and needs zarr: pip install "xbatcher[zarr]"'
            ) from err
        if not isinstance(store, MutableMapping | Store):
            from .errors import InputTypeError

            raise InputTypeError(
                f"cache must be an xbatcher.caches.Cache, a cache URL (e.g. "
                f"'memory://?max_bytes=2GB'), a MutableMapping (e.g. a dict) or a zarr "
                f"store; got {type(store).__name__}. Use cache='memory://', cache={{}} "
                "or zarr.storage.LocalStore(path)."
            )
        self.store = store
        self.fingerprint = (
            fingerprint
            if preprocess is None
            else f"{fingerprint}-{function_fingerprint(preprocess)}"
        )

    def _group(self, key: str) -> str:
        return key

    @staticmethod
    def unit_key(units: NDArray[np.int64]) -> str:
        """0.4's key of a batch: its index; a sample batch: a hash of its units."""
        if units.size == 1:
            return str(int(units[0]))
        return "s-" + hashlib.sha256(units.tobytes()).hexdigest()[:20]

    def _own_key(self, key: str) -> str:
        """Where this generator writes ``key`` when another one holds 0.4's slot."""
        return f"xb-{hashlib.sha256(self.fingerprint.encode()).hexdigest()[:16]}/{key}"

    def lookup(self, units: NDArray[np.int64], load: bool) -> Any | None:
        """The cached batch of ``units``, or ``None``."""
        key = self.unit_key(units)
        for where in (key, self._own_key(key)):
            if self._entry_fingerprint(where) == self.fingerprint:
                return self.get(where, load)
        return None

    def abandon(self, units: NDArray[np.int64]) -> None:
        """Nothing to undo (no leases in the 0.4 layout)."""
        del units

    def contains(self, units: NDArray[np.int64]) -> bool:
        """Whether the batch of ``units`` is cached (for this generator)."""
        key = self.unit_key(units)
        return any(
            self._entry_fingerprint(where) == self.fingerprint
            for where in (key, self._own_key(key))
        )

    def save(self, units: NDArray[np.int64], batch: xr.Dataset | xr.DataArray) -> None:
        """Write the batch of ``units``: in 0.4's slot unless another generator's
        complete entry holds it."""
        key = self.unit_key(units)
        holder = self._entry_fingerprint(key)
        self.put(
            key if holder in (None, self.fingerprint) else self._own_key(key), batch
        )

    def __contains__(self, key: str) -> bool:
        return self._entry_fingerprint(key) == self.fingerprint

    def _entry_fingerprint(self, key: str) -> str | None:
        """The fingerprint of the complete entry at ``key`` (None: none there)."""
        import zarr

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                group = zarr.open_group(self.store, path=self._group(key), mode="r")
        except (
            FileNotFoundError,
            KeyError,
            ValueError,
            zarr.errors.GroupNotFoundError,
        ):
            return None
        if not group.attrs.get(_MARKER, False):
            return None
        try:
            meta = json.loads(str(group.attrs[_META]))
        except (KeyError, ValueError):
            return None
        found = meta.get("fingerprint")
        return found if isinstance(found, str) else None

    def get(self, key: str, load: bool) -> xr.Dataset | xr.DataArray:
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", UserWarning
            )  # zarr's consolidated-metadata note
            ds: xr.Dataset = xr.open_zarr(
                self.store, group=self._group(key), consolidated=False
            )
        if load:
            ds = ds.load()
        ds.attrs.pop(_MARKER, None)
        meta = json.loads(ds.attrs.pop(_META))
        if meta["levels"]:
            ds = ds.set_index({meta["stacked"]: meta["levels"]})
        if meta["dataarray"]:
            da: xr.DataArray = ds[_DA_NAME]
            da.name = meta["name"]
            da.attrs = meta["attrs"]
            return da
        return ds

    def put(self, key: str, batch: xr.Dataset | xr.DataArray) -> None:
        meta: dict[str, Any] = {
            "dataarray": isinstance(batch, xr.DataArray),
            "fingerprint": self.fingerprint,
        }
        if isinstance(batch, xr.DataArray):
            meta["name"], meta["attrs"] = batch.name, dict(batch.attrs)
            ds = batch.to_dataset(name=_DA_NAME)
        else:
            ds = batch
        levels: list[str] = []
        stacked = None
        for dim in ds.dims:
            index = ds.indexes.get(dim)
            if index is not None and index.nlevels > 1:
                stacked, levels = str(dim), [str(n) for n in index.names]
        if stacked is not None:
            ds = ds.reset_index(stacked)
        meta["stacked"], meta["levels"] = stacked, levels
        ds = ds.copy()
        ds.attrs[_META] = json.dumps(meta)
        for var in ds.variables.values():
            var.encoding = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            ds.to_zarr(
                self.store,
                group=self._group(key),
                mode="w",
                consolidated=False,
                zarr_format=2,
            )
        import zarr

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            zarr.open_group(self.store, path=self._group(key), mode="r+").attrs[
                _MARKER
            ] = True


def function_fingerprint(fn: Callable[..., Any]) -> str:
    """A hash of what a preprocessing function is: its module, qualified name and
    compiled code (constants and nested functions included), stable across processes.

    Editing the function's body changes it; a closure's captured values and the
    globals it reads are not covered (give such a function a new name when they
    change).
    """
    h = hashlib.sha256()
    target: Any = fn
    while isinstance(target, functools.partial):
        h.update(repr((target.args, sorted(target.keywords.items()))).encode())
        target = target.func
    name = getattr(target, "__qualname__", type(target).__qualname__)
    h.update(f"{getattr(target, '__module__', '')}.{name}".encode())
    code = getattr(target, "__code__", None) or getattr(
        type(target).__call__, "__code__", None
    )
    if code is not None:
        _hash_code(h, code)
    return h.hexdigest()[:12]


def _hash_code(h: Any, code: types.CodeType) -> None:
    h.update(code.co_code)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _hash_code(h, const)
        else:
            h.update(repr(const).encode())
    h.update(repr(code.co_names).encode())
