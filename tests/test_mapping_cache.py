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


def _text(value) -> str:
    return bytes(value.to_bytes() if hasattr(value, "to_bytes") else value).decode()


def _bytes_like(old, text: str):
    return (
        type(old).from_bytes(text.encode())
        if hasattr(old, "to_bytes")
        else text.encode()
    )


def test_interrupted_write_is_recomputed():
    ds = make_ds()
    store: dict = {}
    bgen = xb.BatchGenerator(ds, {"lat": 4, "lon": 5}, cache=store)
    good = bgen[1]
    # simulate a crash after the data was written but before the entry was marked
    # complete, and the data itself incomplete
    attrs = "1/.zattrs"
    text = _text(store[attrs])
    assert '"_xbatcher_complete": true' in text
    store[attrs] = _bytes_like(
        store[attrs],
        text.replace('"_xbatcher_complete": true', '"_xbatcher_complete": false'),
    )
    del store["1/a/0.0.0"]
    again = bgen[1]
    xr.testing.assert_identical(again, good)


def test_0_4_layout_and_no_stale_entry_across_generators():
    """0.4's layout (a Zarr v2 group per batch index: "0/.zgroup"); an entry written by
    a generator with other parameters, data or preprocessing is a miss and rewritten."""
    ds = make_ds()
    store: dict = {}

    def tag(batch):
        return batch.assign_attrs(tagged=1)

    first = xb.BatchGenerator(
        ds, {"lat": 4, "lon": 5}, cache=store, cache_preprocess=tag
    )
    assert first[0].attrs["tagged"] == 1
    assert "0/.zgroup" in store
    plain = xb.BatchGenerator(ds, {"lat": 4, "lon": 5}, cache=store)
    fresh = plain[0]  # 0.4 would return the tagged batch here
    assert "tagged" not in fresh.attrs
    xr.testing.assert_identical(fresh, ds.isel(lat=slice(0, 4), lon=slice(0, 5)))
    xr.testing.assert_identical(plain[0], fresh)  # now a hit
    other = xb.BatchGenerator(ds * 2, {"lat": 4, "lon": 5}, cache=store)[0]
    xr.testing.assert_identical(other, (ds * 2).isel(lat=slice(0, 4), lon=slice(0, 5)))


def test_function_fingerprint_follows_the_code():
    from xbatcher.mapping_cache import function_fingerprint

    def f(b):
        return b + 1

    def g(b):
        return b + 2

    def f2(b):
        return b + 1

    assert function_fingerprint(f) == function_fingerprint(f)
    assert function_fingerprint(f) != function_fingerprint(g)
    assert function_fingerprint(f) != function_fingerprint(f2)  # another name
    import functools

    assert function_fingerprint(functools.partial(f)) != function_fingerprint(f)


def test_bad_cache_type():
    with pytest.raises(TypeError, match="MutableMapping"):
        xb.BatchGenerator(make_ds(), {"lat": 4}, cache=42)
    with pytest.raises(TypeError, match="callable"):
        xb.BatchGenerator(make_ds(), {"lat": 4}, cache={}, cache_preprocess=3)
