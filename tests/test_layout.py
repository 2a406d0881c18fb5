"""Layout: the direct (fast) xarray construction equals ds.isel, with or without it."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import xbatcher as xb
import xbatcher.layout


def make_ds() -> xr.Dataset:
    rng = np.random.default_rng(0)
    return xr.Dataset(
        {
            "a": (("time", "lat", "lon"), rng.random((4, 6, 8)), {"units": "K"}),
            "b": (("lat", "lon", "time"), rng.random((6, 8, 4)).astype("float32")),
        },
        coords={
            "time": np.arange(4),
            "lat": np.linspace(-5, 5, 6),
            "lon": np.arange(8.0),
            "area": (("lat", "lon"), rng.random((6, 8)), {"units": "m2"}),
        },
        attrs={"title": "t"},
    )


@pytest.mark.parametrize("direct", [True, False])
def test_window_batches_equal_isel_with_and_without_direct_construction(
    monkeypatch, direct
):
    ds = make_ds()
    if not direct:  # simulate an xarray whose internal constructor changed signature

        def changed(*args, **kwargs):
            raise TypeError("_construct_direct() got an unexpected keyword argument")

        monkeypatch.setattr(xb.layout.XarrayBuilder, "_dataset_window", changed)
    bgen = xb.BatchGenerator(ds, {"lat": 3, "lon": 4}, input_overlap={"lon": 1})
    assert bgen.engine.builder.fast_dataset
    for i in range(len(bgen)):
        y, x = divmod(i, 2)
        expected = ds.isel(lat=slice(3 * y, 3 * y + 3), lon=slice(3 * x, 3 * x + 4))
        xr.testing.assert_identical(bgen[i], expected)
    assert bgen.engine.builder.fast_dataset is direct


def test_views_for_in_memory_window_batches_and_copies_for_arrays():
    ds = make_ds()
    bgen = xb.BatchGenerator(ds, {"lat": 3, "lon": 4})
    batch = bgen[0]
    assert np.shares_memory(batch["a"].values, ds["a"].values)  # like isel: a view
    arrays = bgen.arrays[0]
    assert not np.shares_memory(arrays["a"], ds["a"].values)
    assert arrays["a"].flags.c_contiguous and arrays["b"].flags.c_contiguous
    np.testing.assert_array_equal(arrays["b"], batch["b"].values)


@pytest.mark.parametrize("kind", ["Dataset", "DataArray"])
def test_sample_batches_are_the_same_with_and_without_direct_construction(kind):
    """Sample mode builds batches with xarray's internal constructors; the result
    (values, coords, indexes, attrs, and the order of variables and dims) equals the
    public ``xr.Dataset(...)`` route, and a failing internal constructor falls back."""
    ds = make_ds().assign_coords(label=("time", ["a", "b", "c", "d"]), scalar=1.5)
    obj = ds if kind == "Dataset" else ds["a"]
    params = {"input_dims": {"lat": 3, "lon": 4}, "batch_size": 5, "shuffle": True}
    fast = xb.BatchGenerator(obj, **params, seed=1)
    slow = xb.BatchGenerator(obj, **params, seed=1)
    assert fast.engine.builder.fast_sample
    slow.engine.builder.fast_sample = False
    broken = xb.BatchGenerator(obj, **params, seed=1)

    def changed(*args, **kwargs):
        raise AttributeError("xarray moved calculate_dimensions")

    broken.engine.builder._sample_direct = changed
    for a, b, c in zip(fast, slow, broken, strict=True):
        xr.testing.assert_identical(a, b)
        xr.testing.assert_identical(c, b)
        assert list(a.coords) == list(b.coords)
        assert list(a.dims) == list(b.dims)
        assert type(a.indexes["sample"]) is type(b.indexes["sample"])
        if kind == "Dataset":
            assert list(a.variables) == list(b.variables)
            assert list(a.data_vars) == list(b.data_vars)
    assert fast.engine.builder.fast_sample and not broken.engine.builder.fast_sample
