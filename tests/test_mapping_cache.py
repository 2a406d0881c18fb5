"""The 0.4-compatible ``cache=`` argument: hit == miss, no stale or partial entries."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import xbatcher as xb

zarr = pytest.importorskip("zarr")


def make_ds() -> xr.Dataset:
    rng = np.random.default_rng(0)
    return xr.Dataset(
        {
            "a": (("time", "lat", "lon"), rng.random((6, 8, 10)), {"units": "K"}),
            "b": (("time", "lat", "lon"), rng.random((6, 8, 10)).astype("float32")),
        },
        coords={
            "time": np.arange(6) * 3,
            "lat": np.linspace(-10, 10, 8),
            "lon": np.arange(10.0),
        },
        attrs={"title": "t"},
    )


CASES = {
    "window": dict(input_dims={"lat": 4, "lon": 5}),
    "window-stacked": dict(input_dims={"lat": 4}),
    "concat": dict(
        input_dims={"lat": 4, "lon": 5}, batch_dims={"time": 2}, concat_input_dims=True
    ),
    "sample": dict(input_dims={"lat": 4, "lon": 5}, batch_size=5, shuffle=True, seed=1),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dataarray", [False, True])
def test_cache_hit_identical_to_miss(case, dataarray):
    obj = make_ds()["a"] if dataarray else make_ds()
    store: dict = {}
    bgen = xb.BatchGenerator(obj, cache=store, **CASES[case])
    fresh = xb.BatchGenerator(obj, **CASES[case])
    for i in range(len(bgen)):
        miss = bgen[i]
        assert store  # written
        hit = bgen[i]
        xr.testing.assert_identical(hit, miss)
        xr.testing.assert_identical(hit, fresh[i])
        assert type(hit) is type(fresh[i])
        for var in [hit] if dataarray else hit.data_vars.values():
            assert isinstance(var.variable._data, np.ndarray)


def test_preprocess_applied_and_cached(tmp_path):
    ds = make_ds()
    calls = []

    def prep(batch):
        calls.append(1)
        return batch * 2

    store = zarr.storage.LocalStore(tmp_path / "cache")
    bgen = xb.BatchGenerator(
        ds, {"lat": 4, "lon": 5}, cache=store, cache_preprocess=prep
    )
    first = bgen[2]
    second = bgen[2]
    xr.testing.assert_identical(first, second)
    np.testing.assert_array_equal(
        second["a"].values, 2 * ds["a"].isel(lat=slice(4, 8), lon=slice(0, 5)).values
    )
    assert len(calls) == 1  # the second request came from the cache


def test_changed_parameters_or_data_never_return_stale_batches():
    ds = make_ds()
    store: dict = {}
    b1 = xb.BatchGenerator(ds, {"lat": 4, "lon": 5}, cache=store)[0]
    b2 = xb.BatchGenerator(ds, {"lat": 2, "lon": 5}, cache=store)[0]
    assert b2.sizes["lat"] == 2 and b1.sizes["lat"] == 4
    ds2 = ds.assign_coords(lat=ds.lat + 1)
    b3 = xb.BatchGenerator(ds2, {"lat": 4, "lon": 5}, cache=store)[0]
    np.testing.assert_array_equal(b3["lat"].values, ds2["lat"].values[:4])


def test_interrupted_write_is_recomputed():
    ds = make_ds()
    store: dict = {}
    bgen = xb.BatchGenerator(ds, {"lat": 4, "lon": 5}, cache=store)
    good = bgen[1]
    # simulate a crash after the data was written but before the entry was marked complete
    for key in [k for k in store if k.endswith("zarr.json") and k.count("/") == 2]:
        meta = store[key]
        text = bytes(meta.to_bytes() if hasattr(meta, "to_bytes") else meta).decode()
        assert "_xbatcher_complete" in text
        store[key] = (
            type(meta).from_bytes(
                text.replace(
                    '"_xbatcher_complete": true', '"_xbatcher_complete": false'
                ).encode()
            )
            if hasattr(meta, "to_bytes")
            else text.replace(
                '"_xbatcher_complete": true', '"_xbatcher_complete": false'
            ).encode()
        )
    bad_value = next(
        k for k in store if k.endswith("/a/c/0/0/0") or k.endswith("/a/c/0/0")
    )
    del store[bad_value]  # and the data itself is incomplete
    again = bgen[1]
    xr.testing.assert_identical(again, good)


def test_bad_cache_type():
    with pytest.raises(TypeError, match="MutableMapping"):
        xb.BatchGenerator(make_ds(), {"lat": 4}, cache=42)
    with pytest.raises(TypeError, match="callable"):
        xb.BatchGenerator(make_ds(), {"lat": 4}, cache={}, cache_preprocess=3)
