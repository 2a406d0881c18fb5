"""``cache=`` / ``chunk_cache=`` / ``cache_all`` with several windows per sample
(``windows=``): a batch is a dict of roles, stored as one checksummed entry and read
back identically on every backend."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xbatcher as xb
from conftest import count_source_reads, to_backend
from test_targets import expected, forecast, make_ds, reference_samples
from xbatcher.caches import (
    BatchCache,
    Cache,
    ChunkCachedSource,
    MemoryCache,
    decode,
    encode,
    open_cache,
)
from xbatcher.errors import CacheEncodeError, CacheWarning

INPUT_DIMS = {"lat": 3, "lon": 4}


def assert_same_roles(got: Any, want: dict[str, Any]) -> None:
    assert type(got) is dict
    assert list(got) == list(want)
    for role, part in want.items():
        assert type(got[role]) is type(part)
        xr.testing.assert_identical(got[role], part)
        ds = part.to_dataset(name="_") if isinstance(part, xr.DataArray) else part
        got_ds = (
            got[role].to_dataset(name="_")
            if isinstance(part, xr.DataArray)
            else got[role]
        )
        for name, var in ds.variables.items():  # dtypes, incl. the sample index
            assert got_ds[name].dtype == var.dtype


def assert_values_equal_isel(
    ds: xr.Dataset, bgen: xb.BatchGenerator, i: int, batch: dict[str, Any]
) -> None:
    """Every role's values equal ``ds.isel`` at the role's offsets from the anchor."""
    windows = dict(bgen.schema.windows)
    samples = reference_samples(ds, INPUT_DIMS, windows)
    ids = bgen.sample_ids()[bgen.batch_units(i)]
    for role, window in windows.items():
        part = batch[role]
        np.testing.assert_array_equal(part["sample"].values, ids)
        for var in window.variables or list(ds.data_vars):
            for j, sid in enumerate(ids):
                want = expected(ds, samples[sid], INPUT_DIMS, window, var)
                np.testing.assert_array_equal(part[var].values[j], want)


@pytest.mark.parametrize("shuffle", [False, True])
def test_role_batches_hit_equal_miss_equal_fresh_on_every_backend(
    make_cache: Callable[[], Cache], shuffle: bool
) -> None:
    ds = make_ds(t=12)
    params: dict[str, Any] = dict(
        input_dims=INPUT_DIMS, batch_size=5, windows=forecast(), shuffle=shuffle
    )
    if shuffle:
        params["seed"] = 3
    fresh = xb.BatchGenerator(ds, **params)
    first = xb.BatchGenerator(ds, cache=make_cache(), **params)
    assert isinstance(first._batch_cache, BatchCache)
    misses = [first[i] for i in range(len(first))]
    cache = make_cache()
    before = cache.stats()
    second = xb.BatchGenerator(ds, cache=cache, **params)
    for i in range(len(second)):
        want = fresh[i]
        assert_same_roles(misses[i], want)
        hit = second[i]
        assert_same_roles(hit, want)
        assert_values_equal_isel(ds, second, i, hit)
    after = cache.stats()
    assert after["hits"] - before["hits"] == len(second)  # one entry per batch
    assert after["misses"] == before["misses"]
    # iteration and later (reshuffled) epochs go through the cache as well
    for epoch in (0, 1):
        fresh.set_epoch(epoch)
        second.set_epoch(epoch)
        for i, hit in enumerate(second):
            assert_same_roles(hit, fresh[i])
            assert_values_equal_isel(ds, second, i, hit)


def test_dataarray_roles_round_trip() -> None:
    da = make_ds(t=10)["t2m"].assign_attrs(units="K")
    windows = {
        "x": xb.Window(offsets={"time": range(-2, 1)}),
        "y": xb.Window(offsets={"time": [3]}),
    }
    cache = MemoryCache()
    a = xb.BatchGenerator(da, INPUT_DIMS, batch_size=4, windows=windows, cache=cache)
    fresh = xb.BatchGenerator(da, INPUT_DIMS, batch_size=4, windows=windows)
    for i in range(len(a)):
        want = fresh[i]
        assert isinstance(want["x"], xr.DataArray)
        assert_same_roles(a[i], want)  # the miss
        assert_same_roles(a[i], want)  # the hit
    assert cache.stats()["hits"] == len(a)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    lo=st.integers(-3, 1),
    n_hist=st.integers(1, 3),
    lead=st.integers(-2, 4),
    lead_list=st.booleans(),
    batch_size=st.integers(1, 6),
    shuffle=st.sampled_from([False, True, "chunks"]),
    tchunk=st.one_of(st.none(), st.integers(1, 5)),
)
def test_any_windows_round_trip_through_the_cache(
    lo: int,
    n_hist: int,
    lead: int,
    lead_list: bool,
    batch_size: int,
    shuffle: bool | str,
    tchunk: int | None,
) -> None:
    ds = make_ds(t=10, y=4, x=5)
    if tchunk is not None:
        ds = ds.chunk({"time": tchunk})
    windows = forecast(hist=range(lo, lo + n_hist), lead=[lead] if lead_list else lead)
    params: dict[str, Any] = dict(
        input_dims={"lat": 2, "lon": 5},
        batch_size=batch_size,
        windows=windows,
        shuffle=shuffle,
        seed=None if shuffle is False else 2,
    )
    cache = MemoryCache()
    cached = xb.BatchGenerator(ds, cache=cache, **params)
    fresh = xb.BatchGenerator(ds, **params)
    for i in range(len(cached)):
        want = fresh[i]
        assert_same_roles(cached[i], want)
        assert_same_roles(cached[i], want)
    assert cache.stats()["hits"] == cache.stats()["misses"] == len(cached)


def test_keys_differ_from_single_window_and_other_windows() -> None:
    ds = make_ds(t=12)
    cache = MemoryCache()
    single = xb.BatchGenerator(ds, INPUT_DIMS, batch_size=5, cache=cache)
    lead6 = xb.BatchGenerator(
        ds, INPUT_DIMS, batch_size=5, windows=forecast(lead=6), cache=cache
    )
    lead5 = xb.BatchGenerator(
        ds, INPUT_DIMS, batch_size=5, windows=forecast(lead=5), cache=cache
    )
    caches = [g._batch_cache for g in (single, lead6, lead5)]
    assert all(isinstance(c, BatchCache) for c in caches)
    units = lead6.batch_units(0)
    keys = {c.key(units) for c in caches}  # type: ignore[union-attr]
    assert len(keys) == 3
    # sharing one store, each generator reads its own batches back
    for g in (single, lead6, lead5, single, lead6, lead5):
        fresh = xb.BatchGenerator(
            ds, INPUT_DIMS, batch_size=5, windows=dict(g.schema.windows) or None
        )
        got, want = g[0], fresh[0]
        if isinstance(want, dict):
            assert_same_roles(got, want)
        else:
            xr.testing.assert_identical(got, want)


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_corrupt_role_entry_is_detected_and_recomputed(
    tmp_path: Path, damage: str
) -> None:
    ds = make_ds(t=12)
    cache = open_cache(str(tmp_path / "c"))
    bgen = xb.BatchGenerator(
        ds, INPUT_DIMS, batch_size=5, windows=forecast(), cache=cache
    )
    good = bgen[1]
    bc = bgen._batch_cache
    assert isinstance(bc, BatchCache)
    key = bc.key(bgen.batch_units(1))
    raw = bytearray(cache.get(key) or b"")
    assert_same_roles(decode(bytes(raw)), good)
    if damage == "truncate":
        bad = bytes(raw[: len(raw) // 2])
    elif damage == "flip":
        raw[len(raw) - 10] ^= 0xFF  # in the last role's payload
        bad = bytes(raw)
    else:
        bad = b"not a cache entry at all"
    cache.put(key, bad)
    with pytest.warns(CacheWarning, match="dropped a corrupt cache entry"):
        again = bgen[1]
    assert_same_roles(again, good)
    assert_values_equal_isel(ds, bgen, 1, again)
    assert cache.get(key) not in (None, bad)  # rewritten
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_same_roles(bgen[1], good)  # a clean hit now


def test_cache_preprocess_gets_and_returns_the_dict_of_roles() -> None:
    def prep(batch: dict[str, xr.Dataset]) -> dict[str, xr.Dataset]:
        return {role: part * 2 for role, part in batch.items()}

    ds = make_ds(t=12)
    cache = MemoryCache()
    params: dict[str, Any] = dict(
        input_dims=INPUT_DIMS, batch_size=5, windows=forecast()
    )
    bgen = xb.BatchGenerator(ds, cache=cache, cache_preprocess=prep, **params)
    fresh = xb.BatchGenerator(ds, **params)
    for i in range(len(bgen)):
        want = prep(fresh[i])
        assert_same_roles(bgen[i], want)
        assert_same_roles(bgen[i], want)
    assert cache.stats()["hits"] == len(bgen)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ({"x": np.zeros(3)}, r"role 'x' holding ndarray"),
        ({1: xr.Dataset()}, r"got role 1 holding Dataset"),
        ({"x": {"y": xr.Dataset()}}, r"role 'x' holding dict"),
    ],
)
def test_a_bad_dict_of_roles_names_what_is_wrong(value: Any, match: str) -> None:
    with pytest.raises(CacheEncodeError, match=match):
        encode(value)
    ds = make_ds(t=12)
    bgen = xb.BatchGenerator(
        ds,
        INPUT_DIMS,
        batch_size=5,
        windows=forecast(),
        cache=MemoryCache(),
        cache_preprocess=lambda batch: value,
    )
    with pytest.raises(CacheEncodeError, match="cache_preprocess"):
        bgen[0]


def test_cache_all_with_windows(tmp_path: Path) -> None:
    ds = make_ds(t=12)
    url = f"file://{tmp_path}/b"
    params: dict[str, Any] = dict(
        input_dims=INPUT_DIMS, batch_size=5, windows=forecast(), shuffle=True, seed=4
    )
    bgen = xb.BatchGenerator(ds, cache=url, **params)
    counts = bgen.cache_all()
    assert counts["batches"] == counts["batches_built"] == len(bgen)
    assert bgen.cache_all()["batches_built"] == 0  # all there
    cache = open_cache(url)
    again = xb.BatchGenerator(ds, cache=cache, **params)
    fresh = xb.BatchGenerator(ds, **params)
    for i in range(len(again)):
        got = again[i]
        assert_same_roles(got, fresh[i])
        assert_values_equal_isel(ds, again, i, got)
    assert cache.stats()["hits"] == len(again) and cache.stats()["misses"] == 0


@pytest.mark.parametrize("backend", ["zarr", "zarr-dask"])
def test_chunk_cache_with_windows_second_epoch_decodes_no_chunk(
    tmp_path: Path, backend: str
) -> None:
    ds = make_ds(t=12)
    stored = to_backend(ds, backend, tmp_path / "src.zarr")
    url = f"file://{tmp_path}/chunks"
    params: dict[str, Any] = dict(
        input_dims=INPUT_DIMS, batch_size=5, windows=forecast(), shuffle=True
    )
    first = xb.BatchGenerator(stored, chunk_cache=url, seed=7, **params)
    assert any(isinstance(s, ChunkCachedSource) for s in first.engine.sources.values())
    reads = count_source_reads(first, strict=False)
    reference = xb.BatchGenerator(ds, seed=7, **params)
    for i in range(len(first)):
        assert_same_roles(first[i], reference[i])
    assert reads[0] > 0
    # a new process (fresh in-memory chunk cache), another shuffle order
    again = xb.BatchGenerator(stored, chunk_cache=url, seed=8, **params)
    reference = xb.BatchGenerator(ds, seed=8, **params)
    reads = count_source_reads(again, strict=False)
    for i in range(len(again)):
        got = again[i]
        assert_same_roles(got, reference[i])
        assert_values_equal_isel(ds, again, i, got)
        arrays = again.arrays[i]
        for role, part in reference[i].items():
            for var in part.data_vars:
                np.testing.assert_array_equal(arrays[role][var], part[var].values)
    assert reads[0] == 0


def test_lazy_roles_are_stored_loaded() -> None:
    ds = make_ds(t=12).chunk(time=4)
    params: dict[str, Any] = dict(
        input_dims=INPUT_DIMS, batch_size=5, windows=forecast()
    )
    cache = MemoryCache()
    lazy = xb.BatchGenerator(ds, cache=cache, preload_batch=False, **params)
    fresh = xb.BatchGenerator(ds, **params)
    for i in range(len(lazy)):
        want = {role: part.load() for role, part in fresh[i].items()}
        assert_same_roles({r: p.load() for r, p in lazy[i].items()}, want)  # miss
        assert_same_roles(lazy[i], want)  # hit: in memory
    assert cache.stats()["hits"] == len(lazy)
