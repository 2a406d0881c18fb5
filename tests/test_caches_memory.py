"""The in-process tier: :class:`MemoryCache` keeps batches and chunks as frozen
objects (``caches/_objects.py``), without the byte codec; a hit equals the miss
exactly and never shares writable memory with the cache."""

from __future__ import annotations

import copy
import types
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xbatcher as xb
from conftest import make_dataset, to_backend
from test_caches_batches import CASES
from test_targets import forecast, make_ds
from xbatcher.caches import GuardedCache, MemoryCache, _codec, _objects, encode
from xbatcher.caches._objects import freeze, thaw
from xbatcher.errors import CacheEncodeError, CacheWarning


@pytest.fixture
def codec_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the codec's work: every encode and decode computes one digest."""
    calls = [0]
    digest = _codec._digest

    def counted(body: Any) -> bytes:
        calls[0] += 1
        return digest(body)

    monkeypatch.setattr(_codec, "_digest", counted)
    return calls


def assert_exact(got: Any, want: Any, order: bool = True) -> None:
    """Same type, values, dims, coords, indexes (in order), attrs, name and every
    dtype (``order=False``: indexes in any order, as the codec gives them)."""
    if isinstance(want, dict):
        assert type(got) is dict and list(got) == list(want)
        for role in want:
            assert_exact(got[role], want[role], order)
        return
    assert type(got) is type(want)
    xr.testing.assert_identical(got, want)
    if order:
        assert list(got.xindexes) == list(want.xindexes)
    for name, var in want.variables.items() if hasattr(want, "variables") else ():
        assert got.variables[name].dtype == var.dtype, name
    if isinstance(want, xr.DataArray):
        assert got.dtype == want.dtype
        for name, var in want.coords.variables.items():
            assert got.coords.variables[name].dtype == var.dtype, name


def mutate(batch: Any) -> None:
    """Change a batch in place everywhere a user could: data, non-index coords,
    attrs (top level and nested), the variables' attrs."""
    if isinstance(batch, dict):
        for part in batch.values():
            mutate(part)
        return
    ds = batch.to_dataset(name="__da__") if isinstance(batch, xr.DataArray) else batch
    for name, var in ds.variables.items():
        var.attrs["touched"] = 1
        if name not in ds.xindexes and var.size and var.values.flags.writeable:
            var.values.reshape(-1)[0] = var.values.reshape(-1)[-1]
    batch.attrs["touched"] = "yes"
    for value in batch.attrs.values():
        if isinstance(value, list):
            value.append("more")


# ----------------------------------------------------------------- no codec, exact
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("kind", ["DataArray", "Dataset"])
def test_memory_hits_and_misses_never_run_the_codec(
    codec_calls: list[int], case: str, kind: str
) -> None:
    ds = make_dataset()
    obj = ds["air"] if kind == "DataArray" else ds
    cache = MemoryCache("64MB")
    first = xb.BatchGenerator(obj, cache=cache, **CASES[case])
    misses = [first[i] for i in range(len(first))]
    second = xb.BatchGenerator(obj, cache=cache, **CASES[case])
    fresh = xb.BatchGenerator(obj, **CASES[case])
    for i in range(len(second)):
        hit = second[i]
        assert_exact(hit, misses[i], order=False)  # the codec orders indexes its way
        assert_exact(hit, fresh[i])
    assert codec_calls[0] == 0  # before the object tier: one per put and per hit
    stats = cache.stats()
    assert (stats["hits"], stats["misses"]) == (len(first), len(first))


def test_role_batches_never_run_the_codec(codec_calls: list[int]) -> None:
    ds = make_ds(t=12)
    params: dict[str, Any] = dict(
        input_dims={"lat": 3, "lon": 4}, batch_size=5, windows=forecast()
    )
    cache = MemoryCache()
    gen = xb.BatchGenerator(ds, cache=cache, **params)
    fresh = xb.BatchGenerator(ds, **params)
    misses = [gen[i] for i in range(len(gen))]
    for i in range(len(gen)):
        assert_exact(gen[i], misses[i])
        assert_exact(gen[i], fresh[i])
    assert codec_calls[0] == 0
    assert cache.stats()["hits"] == 2 * len(gen)


# ----------------------------------------------------------------- isolation
@pytest.mark.parametrize("case", list(CASES))
def test_mutating_a_hit_or_the_saved_batch_never_changes_the_cache(case: str) -> None:
    ds = make_dataset().assign_attrs(history=["made"])
    cache = MemoryCache()
    gen = xb.BatchGenerator(ds, cache=cache, **CASES[case])
    want = copy.deepcopy(xb.BatchGenerator(ds, **CASES[case])[0])
    saved = gen[0]  # the miss: this object was stored
    mutate(saved)
    hit = gen[0]
    assert_exact(hit, want)
    mutate(hit)  # a hit of its own
    assert_exact(gen[0], want)
    hit["air"].values[...] = -1.0  # in place through the DataArray
    assert_exact(gen[0], want)


@pytest.mark.filterwarnings("ignore::xbatcher.errors.XbatcherWarning")
def test_chunks_come_back_read_only_and_batches_stay_writable(
    codec_calls: list[int], tmp_path: Path
) -> None:
    """The engine only reads chunks: a hit is the entry's read-only array, no copy,
    and every batch built from it is an array of its own (writable)."""
    stored = to_backend(make_dataset(), "zarr", tmp_path / "a.zarr")
    cache = MemoryCache()
    for case, params in CASES.items():
        for bcb in ("512MiB", 0):  # with and without the engine's chunk cache
            first = xb.BatchGenerator(
                stored, chunk_cache=cache, block_cache_bytes=bcb, **params
            )
            for _ in first:
                pass
            again = xb.BatchGenerator(
                stored, chunk_cache=cache, block_cache_bytes=bcb, **params
            )
            fresh = xb.BatchGenerator(make_dataset(), **params)
            for epoch in range(2):
                again.set_epoch(epoch)
                fresh.set_epoch(epoch)
                for i, batch in enumerate(again):
                    xr.testing.assert_identical(batch, fresh[i])
                    for var in batch.data_vars.values():
                        assert var.values.flags.writeable, (case, bcb)
                        var.values[...] = 0  # never reaches the cached chunks
                for arrays in again.arrays:
                    assert all(np.asarray(a).flags.writeable for a in arrays.values())
    assert codec_calls[0] == 0
    key = next(iter(cache._lru._data))
    chunk = cache.get_object(key)
    assert isinstance(chunk, np.ndarray) and not chunk.flags.writeable
    assert cache.get_object(key) is chunk  # shared, read-only: no copy


# ----------------------------------------------------------------- freeze / thaw
def _variables(draw: st.DrawFn, sizes: dict[str, int]) -> dict[str, Any]:
    dtypes = st.sampled_from(
        ["<f8", ">f4", "<i2", "?", "<c16", "<M8[s]", "<M8[ns]", "<m8[ms]", "<U3", "S2"]
    )
    out = {}
    for k in range(draw(st.integers(1, 3))):
        dims = tuple(d for d in sizes if draw(st.booleans()))
        shape = tuple(sizes[d] for d in dims)
        dtype = np.dtype(draw(dtypes))
        raw = np.arange(int(np.prod(shape))).reshape(shape)
        if dtype.kind in "US":
            data = raw.astype(dtype)
        else:
            data = raw.astype("<i8").astype(dtype)
        attrs = draw(
            st.dictionaries(
                st.sampled_from(["units", "list", "np", "arr", "tup"]),
                st.one_of(
                    st.text(max_size=3),
                    st.lists(st.integers(-3, 3), max_size=3),
                    st.builds(np.float32, st.floats(-1, 1)),
                    st.builds(np.arange, st.integers(0, 3)),
                    st.tuples(st.integers(), st.text(max_size=2)),
                ),
                max_size=3,
            )
        )
        out[f"v{k}"] = (dims, data, attrs)
    return out


@st.composite
def xarray_values(draw: st.DrawFn) -> Any:
    """DataArrays, Datasets (with non-index coords, a stacked MultiIndex) and dicts
    of roles with random dtypes and attrs."""
    sizes = {"y": draw(st.integers(1, 3)), "x": draw(st.integers(1, 4))}
    variables = _variables(draw, sizes)
    coords: dict[str, Any] = {
        "y": ("y", np.arange(sizes["y"]) * 0.5, {"units": "m"}),
        "x": ("x", np.arange(sizes["x"]).astype("<M8[D]")),
        "label": ("x", np.array(["a", "b", "c", "d"][: sizes["x"]])),
    }
    ds = xr.Dataset(variables, coords=coords, attrs={"title": "t", "list": [1]})
    if draw(st.booleans()):
        ds = ds.stack(sample=("y", "x"))
    if draw(st.booleans()):
        return ds
    name = next(iter(ds.data_vars))
    da = ds[name]
    if draw(st.booleans()):
        return {"x": da, "y": ds}
    return da


_HYPO = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@_HYPO
@given(value=xarray_values())
def test_thaw_of_freeze_equals_the_value_and_the_codec_round_trip(value: Any) -> None:
    want = copy.deepcopy(value)
    entry = freeze(value)
    mutate(value)  # the value that was stored changes: the entry does not
    first = thaw(entry)
    assert_exact(first, want)
    assert_exact(_codec.decode(encode(first)), first, order=False)
    mutate(first)  # a thawed object changes: the next one does not
    assert_exact(thaw(entry), want)


@_HYPO
@given(value=xarray_values())
def test_hit_equals_miss_through_every_api(value: Any) -> None:
    cache = MemoryCache()
    cache.put_object("o", value)
    assert_exact(cache.get_object("o"), value)
    decoded = _codec.decode(cache.get("o") or b"")  # encoded on get()
    assert_exact(decoded, value, order=False)
    cache.put("b", encode(value))
    assert_exact(cache.get_object("b"), value, order=False)  # bytes, decoded


def _no_fastpath(cls: Any) -> Any:
    """``cls`` as xarray would be without the ``fastpath`` argument."""

    def make(*args: Any, fastpath: bool = False, **kwargs: Any) -> Any:
        if fastpath:
            raise TypeError("__init__() got an unexpected keyword 'fastpath'")
        return cls(*args, **kwargs)

    return make


@pytest.mark.parametrize(
    "direct_fails", ["Variable", "IndexVariable", "DataArray", "Dataset", "flag"]
)
def test_public_constructors_when_the_direct_ones_fail(
    monkeypatch: pytest.MonkeyPatch, direct_fails: str
) -> None:
    monkeypatch.setattr(_objects, "_DIRECT", [True])
    ds = make_dataset()
    values = [ds, ds["air"], ds.stack(sample=("lat", "lon")), {"a": ds["air"], "b": ds}]
    entries = [freeze(v) for v in values]

    class DatasetWithoutDirect:
        def __call__(self, *args: Any, **kwargs: Any) -> xr.Dataset:
            return xr.Dataset(*args, **kwargs)

        def _construct_direct(self, *args: Any, **kwargs: Any) -> xr.Dataset:
            raise AttributeError("no _construct_direct in this xarray")

    with monkeypatch.context() as m:
        if direct_fails == "flag":
            m.setattr(_objects, "_DIRECT", [False])
        else:  # only _objects sees this xarray
            fake = types.SimpleNamespace(**vars(xr))
            if direct_fails == "Dataset":
                fake.Dataset = DatasetWithoutDirect()
            else:
                setattr(fake, direct_fails, _no_fastpath(getattr(xr, direct_fails)))
            m.setattr(_objects, "xr", fake)
        thawed = [thaw(e) for e in entries]
        assert _objects._DIRECT == [False]  # probed once, the public route after
    for got, want in zip(thawed, values, strict=True):
        assert_exact(got, want)


# ----------------------------------------------------------------- budget, stats, API
def test_budget_and_eviction_count_the_arrays_nbytes() -> None:
    a = np.zeros(100)  # 800 bytes each
    cache = MemoryCache(2000)
    cache.put_object("a", a)
    cache.put_object("b", a + 1)
    assert cache.stats()["bytes"] == 1600
    cache.put_object("c", a + 2)  # 2400 > 2000: "a", the least recently used, goes
    assert cache.get_object("a") is None
    assert cache.stats()["bytes"] == 1600
    cache.get_object("b")  # now "c" is the least recently used
    cache.put_object("d", a + 3)
    assert cache.get_object("c") is None and cache.get_object("b") is not None
    batch = xb.BatchGenerator(make_dataset(), {"lat": 5})[0]
    cache.put_object("x", batch)
    nbytes = sum(int(v.nbytes) for v in batch.variables.values())
    assert cache.stats()["bytes_written"] == 4 * 800 + nbytes
    assert cache.get_object("x") is None  # larger than the budget: not kept
    s = cache.stats()
    assert (s["hits"], s["misses"], s["bytes_read"]) == (2, 3, 1600)


def test_a_corrupt_bytes_entry_read_as_an_object_is_dropped() -> None:
    cache = MemoryCache()
    guarded = GuardedCache(cache)
    cache.put("k", b"not an entry")
    with pytest.warns(CacheWarning, match="dropped a corrupt cache entry 'k'"):
        assert guarded.get("k") is None
    assert not cache.contains("k")


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (xr.Dataset(attrs={"bad": {1, 2}}), "values of type set"),
        (xr.DataArray(np.array([object()]), dims="x"), "dtype object"),
        (xr.DataArray([1], dims="x", attrs={"d": {1: 2}}), "non-str keys"),
        ({"x": np.zeros(2)}, "role 'x' holding ndarray"),
        ([1, 2], "got list"),
    ],
)
def test_values_the_codec_refuses_are_refused_by_the_memory_tier(
    value: Any, match: str
) -> None:
    with pytest.raises(CacheEncodeError, match=match) as by_codec:
        encode(value)
    with pytest.raises(CacheEncodeError, match=match) as by_memory:
        MemoryCache().put_object("k", value)
    assert str(by_memory.value) == str(by_codec.value)
    guarded = GuardedCache(MemoryCache())
    guarded._down_until = float("inf")  # even while the backend is skipped
    with pytest.raises(CacheEncodeError, match=match):
        guarded.put("k", value)


def test_multiindex_coords_are_shared_not_copied() -> None:
    """Index variables are immutable (pandas): a hit shares them, attrs apart."""
    batch = make_dataset().stack(sample=("lat", "lon"))
    entry = freeze(batch)
    one, two = thaw(entry), thaw(entry)
    assert isinstance(one.xindexes["sample"].index, pd.MultiIndex)
    assert one.xindexes["sample"] is two.xindexes["sample"]
    one["lat"].attrs["units"] = "changed"
    assert two["lat"].attrs["units"] == "degrees"
    assert thaw(entry)["lat"].attrs["units"] == "degrees"


def test_big_endian_batches_hit_with_their_byte_order(make_cache: Any) -> None:
    """Every backend: the codec used to hand back little-endian copies."""
    ds = make_dataset()
    ds = ds.assign(air=ds["air"].astype(">f8"), mask=ds["mask"].astype(">i4"))
    fresh = xb.BatchGenerator(ds, {"lat": 5, "lon": 6})
    first = xb.BatchGenerator(ds, {"lat": 5, "lon": 6}, cache=make_cache())
    misses = [first[i] for i in range(len(first))]
    second = xb.BatchGenerator(ds, {"lat": 5, "lon": 6}, cache=make_cache())
    for i in range(len(second)):
        hit = second[i]
        assert hit["air"].dtype == np.dtype(">f8") == fresh[i]["air"].dtype
        assert hit["mask"].dtype == np.dtype(">i4")
        assert_exact(hit, misses[i], order=False)  # the codec orders indexes its way
