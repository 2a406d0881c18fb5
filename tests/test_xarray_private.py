"""The guard around xarray's private ``Variable._in_memory``: should xarray rename or
change it, every variable counts as lazy (correct values, never a store loaded whole)."""

from __future__ import annotations

import collections
import warnings
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zarr

import xbatcher as xb
from conftest import make_dataset
from xbatcher import _xarray_private
from xbatcher.fingerprint import source_fingerprint
from xbatcher.sources import InMemorySource, LazySource, ZarrSource, make_source


def test_the_flag_works_on_this_xarray():
    """If this fails, xarray changed ``_in_memory``: xbatcher still reads correctly,
    but in-memory data now takes the slower lazy path. Update the probe."""
    assert _xarray_private.flag_works()


def _broken(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """Break ``Variable._in_memory`` the way a future xarray might."""
    if how == "deleted":
        monkeypatch.delattr(xr.Variable, "_in_memory")
    elif how == "renamed":
        prop = xr.Variable._in_memory
        monkeypatch.delattr(xr.Variable, "_in_memory")
        monkeypatch.setattr(xr.Variable, "_in_memory_now", prop, raising=False)
    elif how == "always-true":
        monkeypatch.setattr(xr.Variable, "_in_memory", property(lambda self: True))
    elif how == "raises":

        def fail(self: Any) -> bool:
            raise NotImplementedError("gone")

        monkeypatch.setattr(xr.Variable, "_in_memory", property(fail))
    _xarray_private.flag_works.cache_clear()


@pytest.fixture(autouse=True)
def fresh_probe():
    _xarray_private.flag_works.cache_clear()
    yield
    _xarray_private.flag_works.cache_clear()


BREAKS = ["deleted", "renamed", "always-true", "raises"]


@pytest.fixture
def chunk_gets(monkeypatch: pytest.MonkeyPatch) -> collections.Counter[str]:
    """Counts the chunks (not metadata) any reader, xarray's or ours, gets from a
    MemoryStore; the keys of Zarr v3 chunks read ``"<variable>/c/<i>/<j>..."``."""
    gets: collections.Counter[str] = collections.Counter()
    original = zarr.storage.MemoryStore.get

    async def get(self: Any, key: str, *args: Any, **kwargs: Any) -> Any:
        if "/c/" in key:
            gets[key] += 1
        return await original(self, key, *args, **kwargs)

    monkeypatch.setattr(zarr.storage.MemoryStore, "get", get)
    return gets


def _lazy_store(ds: xr.Dataset) -> tuple[xr.Dataset, int]:
    """``ds`` in a MemoryStore (one chunk per time step), reopened lazily; and the
    number of chunks of ``air``."""
    store = zarr.storage.MemoryStore()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.chunk({"time": 1}).to_zarr(store, mode="w", consolidated=False)
        lazy = xr.open_dataset(store, engine="zarr", chunks=None, consolidated=False)
    return lazy, ds.sizes["time"]


@pytest.mark.parametrize("how", BREAKS)
@pytest.mark.parametrize("kind", ["Dataset", "DataArray"])
def test_a_broken_flag_never_loads_a_lazy_store_whole(
    monkeypatch, chunk_gets, how, kind
):
    ds = make_dataset()
    lazy, n_chunks = _lazy_store(ds)
    _broken(monkeypatch, how)  # after opening: xarray's own open uses the flag
    assert not _xarray_private.flag_works()
    chunk_gets.clear()
    obj = lazy if kind == "Dataset" else lazy["air"]
    expected = ds if kind == "Dataset" else ds["air"]
    bgen = xb.BatchGenerator(
        obj, input_dims={"time": 2, "level": 3, "lat": 5, "lon": 12}
    )
    assert not any(k.startswith("air/") for k in chunk_gets)  # construction reads
    first = bgen[0]
    # the first batch needs the first two time steps' chunks, each once
    air = {k: n for k, n in chunk_gets.items() if k.startswith("air/")}
    assert set(air.values()) == {1}
    assert 0 < len(air) <= 2 < n_chunks
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = expected.isel(time=slice(0, 2), lat=slice(0, 5))
    xr.testing.assert_equal(first.load(), ref)
    assert type(make_source("air", lazy["air"].variable)) is ZarrSource


@pytest.mark.parametrize("how", BREAKS)
@pytest.mark.parametrize("kind", ["Dataset", "DataArray"])
def test_a_broken_flag_still_gives_correct_batches_from_memory(monkeypatch, how, kind):
    """In-memory data read lazily: slower, but the batches equal ``isel``, with
    their index coordinates."""
    ds = make_dataset()
    obj = ds if kind == "Dataset" else ds["air"]
    _broken(monkeypatch, how)
    assert type(make_source("air", ds["air"].variable)) is LazySource
    bgen = xb.BatchGenerator(
        obj,
        input_dims={"time": 6, "level": 3, "lat": 5, "lon": 4},
        input_overlap={"lon": 1},
    )
    steps = [(i, j) for i in range(0, 6, 5) for j in range(0, 9, 3)]
    assert len(bgen) == len(steps)
    for batch, (i, j) in zip(bgen, steps, strict=True):
        ref = obj.isel(lat=slice(i, i + 5), lon=slice(j, j + 4))
        xr.testing.assert_identical(batch.load(), ref)
    for arrays, (i, j) in zip(bgen.arrays, steps, strict=True):
        got = arrays if kind == "DataArray" else arrays["air"]
        np.testing.assert_array_equal(got, ds["air"].values[:, :, i : i + 5, j : j + 4])


def test_with_a_working_flag_in_memory_data_is_gathered_in_place():
    """The fast path this guard protects (and must not lose while the flag works)."""
    ds = make_dataset()
    assert type(make_source("air", ds["air"].variable)) is InMemorySource
    lazy, _ = _lazy_store(ds)
    assert type(make_source("air", lazy["air"].variable)) is ZarrSource
    assert _xarray_private.in_memory(ds["air"].variable)
    assert not _xarray_private.in_memory(lazy["air"].variable)
    assert _xarray_private.known_lazy(lazy["air"].variable)


@pytest.mark.parametrize("how", BREAKS)
def test_a_broken_flag_never_loads_lazy_coordinates_for_the_fingerprint(
    monkeypatch, chunk_gets, how
):
    """The content fingerprint hashes in-memory coordinates whole; with the flag
    broken, the lazily opened ``doy(time)`` and ``area(lat, lon)`` are not loaded."""
    lazy, _ = _lazy_store(make_dataset())
    _broken(monkeypatch, how)
    chunk_gets.clear()
    source_fingerprint(lazy)
    assert not [k for k in chunk_gets if k.startswith(("doy/", "area/"))]
