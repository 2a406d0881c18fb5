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
    assert bgen._builder.fast_dataset
    for i in range(len(bgen)):
        y, x = divmod(i, 2)
        expected = ds.isel(lat=slice(3 * y, 3 * y + 3), lon=slice(3 * x, 3 * x + 4))
        xr.testing.assert_identical(bgen[i], expected)
    assert bgen._builder.fast_dataset is direct


def test_views_for_in_memory_window_batches_and_copies_for_arrays():
    ds = make_ds()
    bgen = xb.BatchGenerator(ds, {"lat": 3, "lon": 4})
    batch = bgen[0]
    assert np.shares_memory(batch["a"].values, ds["a"].values)  # like isel: a view
    arrays = bgen.arrays[0]
    assert not np.shares_memory(arrays["a"], ds["a"].values)
    assert arrays["a"].flags.c_contiguous and arrays["b"].flags.c_contiguous
    np.testing.assert_array_equal(arrays["b"], batch["b"].values)
