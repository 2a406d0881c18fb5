"""Every source passes the same contract (``source_contract.py``); the registry picks
registered sources first and falls back to the safe default."""

from __future__ import annotations

import importlib.util
import pickle
import warnings
from collections.abc import Hashable
from typing import Any

import dask.array as dsa
import numcodecs
import numpy as np
import pytest
import xarray as xr
import zarr
from xarray.backends import BackendArray
from xarray.core import indexing

import xbatcher as xb
from source_contract import DIMS, SourceContract, positional_values
from xbatcher.errors import InputTypeError
from xbatcher.sources import (
    DaskSource,
    InMemorySource,
    LazySource,
    Source,
    ZarrSource,
    _registry,
    make_source,
    register_source,
    unregister_source,
)


def _zarr_variable(
    values: np.ndarray,
    chunks: tuple[int, ...],
    store: Any,
    view: dict[str, slice] | None = None,
    **encoding: Any,
) -> xr.Variable:
    """``values`` written to a Zarr store and reopened lazily, without dask."""
    ds = xr.Dataset({"v": (DIMS, values)})
    fmt = encoding.pop("zarr_format", 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(
            store,
            mode="w",
            consolidated=False,
            zarr_format=fmt,
            encoding={"v": {"chunks": chunks, **encoding}},
        )
        opened = xr.open_dataset(store, engine="zarr", chunks=None, consolidated=False)
    var = opened["v"]
    return (var.isel(view) if view else var).variable


# --------------------------------------------------------------------------- contract
class TestInMemorySource(SourceContract):
    source_class = InMemorySource
    chunked = False
    in_memory = True

    def make_variable(self, values, chunks, path):
        return xr.Variable(DIMS, values)


class TestDaskSource(SourceContract):
    source_class = DaskSource

    def make_variable(self, values, chunks, path):
        return xr.Variable(DIMS, dsa.from_array(values, chunks=chunks))


class TestLazySourceZarr(SourceContract):
    """Zarr with a compressor the direct path leaves to xarray (bz2)."""

    source_class = LazySource
    reopens_lazily = True

    def make_variable(self, values, chunks, path):
        return _zarr_variable(
            values,
            chunks,
            path / "bz2.zarr",
            zarr_format=2,
            compressors=(numcodecs.BZ2(),),
        )


_NETCDF_ENGINE = next(
    (e for e in ("h5netcdf", "scipy") if importlib.util.find_spec(e) is not None),
    None,
)


@pytest.mark.skipif(_NETCDF_ENGINE is None, reason="needs h5netcdf or scipy")
class TestLazySourceNetCDF(SourceContract):
    source_class = LazySource
    reopens_lazily = True

    def make_variable(self, values, chunks, path):
        file = path / "v.nc"
        encoding = {"v": {"chunksizes": chunks}} if _NETCDF_ENGINE == "h5netcdf" else {}
        xr.Dataset({"v": (DIMS, values)}).to_netcdf(
            file, engine=_NETCDF_ENGINE, encoding=encoding
        )
        return xr.open_dataset(file, engine=_NETCDF_ENGINE, chunks=None)["v"].variable

    def test_storage_chunks_are_the_variables(self, source):
        if _NETCDF_ENGINE == "h5netcdf":
            super().test_storage_chunks_are_the_variables(source)
        # NetCDF3 has no chunks: blocks of about 16 MiB (here the whole array)


class TestZarrSourceLocal(SourceContract):
    source_class = ZarrSource
    submits_chunks = True
    decodes_into = True
    reopens_lazily = True

    def make_variable(self, values, chunks, path):
        return _zarr_variable(values, chunks, path / "local.zarr")


class TestZarrSourceMemoryStore(SourceContract):
    """A MemoryStore lives in this process: pickling carries its data."""

    source_class = ZarrSource
    submits_chunks = True
    decodes_into = True
    reopens_lazily = False

    def make_variable(self, values, chunks, path):
        return _zarr_variable(values, chunks, zarr.storage.MemoryStore())


class TestZarrSourceView(SourceContract):
    """A view that starts and ends inside storage chunks (``isel`` before batching):
    the chunks are the storage chunks cut at the view's edges."""

    source_class = ZarrSource
    submits_chunks = True
    decodes_into = True
    reopens_lazily = True

    def make_variable(self, values, chunks, path):
        padded = np.full(tuple(n + 3 for n in values.shape), -1, dtype=values.dtype)
        inner = tuple(slice(2, 2 + n) for n in values.shape)
        padded[inner] = values
        view = dict(zip(DIMS, inner, strict=True))
        return _zarr_variable(padded, chunks, path / "view.zarr", view=view)

    def test_storage_chunks_are_the_variables(self, source):
        """Cut at the view's edges: the first chunk along each dim is shorter."""
        assert source.bounds is not None
        for b, c, n in zip(source.bounds, self.chunks, self.shape, strict=True):
            assert b[1] == min(c - 2 % c, n)


# --------------------------------------------------------------------------- registry
@pytest.fixture
def registry(monkeypatch):
    """A registry with nothing registered, restored after the test."""
    monkeypatch.setattr(_registry, "_registered", [])


class _ExoticBackend(BackendArray):
    """A lazily indexed backend array of a kind no default source knows; counts the
    points it hands out."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values
        self.shape = values.shape
        self.dtype = values.dtype
        self.points_read = 0

    def __getitem__(self, key: Any) -> Any:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.BASIC, self._read
        )

    def _read(self, key: tuple[Any, ...]) -> np.ndarray:
        out = np.asarray(self.values[key])
        self.points_read += out.size
        return out


class CountingSource(Source):
    """A source over an in-memory array that counts its reads."""

    def __init__(self, key: Hashable, variable: xr.Variable) -> None:
        self.key = key
        self.array = np.asarray(variable.values)
        self.shape = self.array.shape
        self.dtype = self.array.dtype
        self.bounds = tuple(
            np.arange(0, n + 1, dtype=np.int64) for n in self.shape
        )  # one point per chunk
        self.reads = 0

    def read(self, region):
        self.reads += 1
        return self.array[region].copy()


def test_a_registered_source_reads_the_batches(registry):
    values = positional_values((8, 6), np.float64)
    lazy = xr.Variable(("t", "x"), indexing.LazilyIndexedArray(_ExoticBackend(values)))
    data = xr.DataArray(lazy)
    register_source(lambda v: v.dtype == np.float64, CountingSource)
    bgen = xb.BatchGenerator(data, input_dims={"t": 4}, input_overlap={"t": 2})
    (src,) = bgen.engine.sources.values()
    assert type(src) is CountingSource
    expected = xr.DataArray(values, dims=("t", "x"))
    for i, batch in enumerate(bgen):
        xr.testing.assert_identical(batch, expected.isel(t=slice(2 * i, 2 * i + 4)))
    reads = src.reads
    assert reads > 0
    bgen.block_cache.clear()  # the array path reads through the source too
    for i, arrays in enumerate(bgen.arrays):
        np.testing.assert_array_equal(arrays, values[2 * i : 2 * i + 4])
    assert src.reads > reads


def test_registered_pairs_are_tried_in_order_before_the_defaults(registry):
    var = xr.Variable(("x",), np.arange(4.0))
    seen = []

    def no(v):
        seen.append("no")
        return False

    def yes(v):
        seen.append("yes")
        return True

    class First(InMemorySource):
        pass

    class Second(InMemorySource):
        pass

    register_source(no, lambda k, v: pytest.fail("declined"))
    register_source(yes, lambda k, v: First(k, np.asarray(v.values)))
    register_source(yes, lambda k, v: Second(k, np.asarray(v.values)))
    assert type(make_source("k", var)) is First
    assert seen == ["no", "yes"]


def test_unregister_source(registry):
    def accepts(v):
        return True

    def factory(k, v):
        return CountingSource(k, v)

    register_source(accepts, factory)
    var = xr.Variable(("x",), np.arange(3.0))
    assert type(make_source("k", var)) is CountingSource
    assert unregister_source(accepts, factory) is True
    assert unregister_source(accepts, factory) is False
    assert type(make_source("k", var)) is InMemorySource


def test_an_unknown_backing_falls_back_to_lazy_reads(registry):
    """Not dask, not in memory, not Zarr: read through xarray, region by region,
    never loaded whole."""
    values = positional_values((40, 30), np.float32)
    backend = _ExoticBackend(values)
    var = xr.Variable(("t", "x"), indexing.LazilyIndexedArray(backend))
    src = make_source("v", var)
    assert type(src) is LazySource
    assert backend.points_read == 0
    region = (slice(3, 9), slice(4, 7))
    np.testing.assert_array_equal(src.read(region), values[region])
    assert backend.points_read == 6 * 3
    assert src.reopens_lazily  # pickles its backend, which holds... its values:
    assert len(pickle.dumps(src)) > 0  # (a real backend holds a file path)


def test_a_factory_must_build_a_source(registry):
    register_source(lambda v: True, lambda k, v: np.asarray(v.values))
    with pytest.raises(
        InputTypeError, match=r"returned ndarray for variable 'k'.*Source"
    ):
        make_source("k", xr.Variable(("x",), np.arange(3.0)))


@pytest.mark.parametrize("which", ["accepts", "factory"])
def test_register_source_wants_callables(registry, which):
    args = {"accepts": lambda v: True, "factory": CountingSource, which: "zarr"}
    with pytest.raises(InputTypeError, match=rf"{which} must be a callable.*'zarr'"):
        register_source(**args)
    assert _registry._registered == []
