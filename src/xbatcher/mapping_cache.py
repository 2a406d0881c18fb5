"""The 0.4-compatible batch cache: finished xarray batches in a ``MutableMapping``.

``BatchGenerator(..., cache=store, cache_preprocess=fn)`` stores each batch (after
``fn``) as a Zarr group inside ``store`` (any ``MutableMapping``: a dict, a
``zarr.storage`` store...) and reads it back on the next request, as xbatcher 0.4 did.
Differences from 0.4, all fixes:

* keys carry a fingerprint of the schema and the source (``<fingerprint>/<unit>``), so
  changing a parameter or the data never returns a stale batch;
* an entry counts only once its completion marker is written, so an interrupted write
  is recomputed instead of returning a partial batch;
* batches stacked into a ``sample`` MultiIndex round-trip (0.4 failed to write them),
  and a DataArray comes back as a DataArray (0.4 returned a Dataset).

The pluggable cache layer of the roadmap (memory LRU, Zarr on S3, Redis) replaces
this module's internals behind the same arguments.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import MutableMapping
from typing import Any

import xarray as xr

from .errors import OptionalDependencyError

__all__ = ["MappingBatchCache"]

_DA_NAME = "__xbatcher_dataarray__"
_MARKER = "_xbatcher_complete"
_META = "_xbatcher_cache"


class MappingBatchCache:
    """Batches as Zarr groups in a ``MutableMapping``, keyed by fingerprint and unit."""

    def __init__(self, store: Any, fingerprint: str) -> None:
        try:
            from zarr.abc.store import Store
        except ImportError as err:
            raise OptionalDependencyError(
                'cache= stores batches as Zarr groups and needs zarr: pip install "xbatcher[zarr]"'
            ) from err
        if not isinstance(store, MutableMapping | Store):
            from .errors import InputTypeError

            raise InputTypeError(
                f"cache must be a MutableMapping (e.g. a dict) or a zarr store; got "
                f"{type(store).__name__}. Use cache={{}} or zarr.storage.LocalStore(path)."
            )
        self.store = store
        self.fingerprint = fingerprint

    def _group(self, key: str) -> str:
        return f"{self.fingerprint}/{key}"

    def __contains__(self, key: str) -> bool:
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
            return False
        return bool(group.attrs.get(_MARKER, False))

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
        meta: dict[str, Any] = {"dataarray": isinstance(batch, xr.DataArray)}
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
            ds.to_zarr(self.store, group=self._group(key), mode="w", consolidated=False)
        import zarr

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            zarr.open_group(self.store, path=self._group(key), mode="r+").attrs[
                _MARKER
            ] = True
