"""What defines the sample space: data variables only, numbered in an order that does
not depend on how the Dataset was opened; variables that lack some sliced dims."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import xbatcher as xb
from reference import (
    reference_batches,
    reference_sample_batch,
    reference_sample_batches,
    reference_samples,
)

DIMS = ("time", "y", "x")
SIZES = {"time": 4, "y": 5, "x": 6}


def build(
    var_dims: dict[str, tuple[str, ...]], order: list[int], coord_order: list[int]
) -> xr.Dataset:
    """Variables (values tell their position) inserted in ``order``; coordinates in
    ``coord_order``; the data are the same whatever the orders."""
    names = list(var_dims)
    data = {}
    for k in order:
        name = names[k]
        dims = var_dims[name]
        shape = tuple(SIZES[d] for d in dims)
        values = np.arange(math.prod(shape), dtype=np.float64).reshape(shape)
        data[name] = (dims, values + 1000.0 * k)
    coords_all = {
        "time": ("time", np.arange(SIZES["time"]) * 6),
        "y": ("y", np.linspace(-1.0, 1.0, SIZES["y"])),
        "x": ("x", np.arange(SIZES["x"]) * 0.5),
    }
    keys = list(coords_all)
    coords = {keys[k]: coords_all[keys[k]] for k in coord_order}
    used = {d for dims in var_dims.values() for d in dims}
    coords = {k: v for k, v in coords.items() if k in used}
    return xr.Dataset(data, coords=coords, attrs={"title": "t"})


def var_dims_strategy() -> st.SearchStrategy[dict[str, tuple[str, ...]]]:
    """2-3 variables; each has a non-empty subset of the dims, in some order."""
    one = st.lists(st.sampled_from(DIMS), unique=True, min_size=1).map(tuple)
    return st.lists(one, min_size=2, max_size=3).map(
        lambda dims: {f"v{i}": d for i, d in enumerate(dims)}
    )


def same_batches(a: xb.BatchGenerator, b: xb.BatchGenerator) -> None:
    assert len(a) == len(b)
    for got, exp in zip(a, b, strict=True):
        xr.testing.assert_identical(got, exp)


MODES: dict[str, dict[str, Any]] = {
    "window": {"input_dims": {"x": 3}},
    "window-batch-dim": {"input_dims": {"x": 3}, "batch_dims": {"y": 2}},
    "concat": {"input_dims": {"x": 3}, "batch_dims": {"y": 2}, "concat_input_dims": True},
    "sample": {"input_dims": {"x": 3}, "batch_size": 4},
    "shuffled": {"input_dims": {"x": 3}, "batch_size": 4, "shuffle": True, "seed": 3},
}  # fmt: skip


# --------------------------------------------------------------------------- 1. order
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    var_dims=var_dims_strategy(),
    data=st.data(),
    mode=st.sampled_from([*MODES, "chunks"]),
)
def test_numbering_does_not_depend_on_variable_order(
    var_dims: dict[str, tuple[str, ...]], data: st.DataObject, mode: str
) -> None:
    """The same data with variables (so the Dataset's dims) in another order gives
    the same batches in the same order (a Zarr store opened twice without
    consolidated metadata lists its variables in any order)."""
    n = len(var_dims)
    order = data.draw(st.permutations(range(n)))
    coord_order = data.draw(st.permutations(range(3)))
    first = build(var_dims, list(range(n)), [0, 1, 2])
    other = build(var_dims, list(order), list(coord_order))
    assume("x" in first.dims)
    if mode == "chunks":
        params: dict[str, Any] = {
            "input_dims": {"x": 3},
            "batch_size": 4,
            "shuffle": "chunks",
            "seed": 5,
        }
        first, other = first.chunk(x=3), other.chunk(x=3)
    else:
        params = MODES[mode]
    named = {*params["input_dims"], *params.get("batch_dims", {})}
    assume(named <= set(first.dims))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        same_batches(
            xb.BatchGenerator(first, **params), xb.BatchGenerator(other, **params)
        )


def test_numbering_follows_the_largest_variable() -> None:
    """The documented rule: dims in order of first appearance over the data
    variables by number of dims (most first), then name."""
    ds = xr.Dataset(
        {
            "b": (("y", "x"), np.zeros((2, 3))),
            "a": (("time", "x"), np.zeros((4, 3))),
            "big": (("x", "time", "y"), np.zeros((3, 4, 2))),
        }
    )
    bgen = xb.BatchGenerator(ds, {"x": 3}, batch_size=1)
    assert [d for d, _ in bgen.schema.unsliced] == ["time", "y"]
    assert bgen.schema.unit_shape == (4, 2, 1)


# --------------------------------------------------------------------------- 2. bounds
@pytest.mark.parametrize("as_coord", [True, False])
def test_coordinate_only_dim_does_not_multiply_samples(as_coord: bool) -> None:
    """A CF bounds variable ``time_bnds(time, bnds)`` (a coordinate) does not add a
    ``bnds`` axis to the sample space; every sample equals its isel window."""
    t, nx = 3, 8
    ds = xr.Dataset(
        {"v": (("time", "x"), np.arange(t * nx, dtype=np.float64).reshape(t, nx))},
        coords={"time": np.arange(t) * 24, "x": np.arange(nx) * 0.25},
    )
    bnds = np.stack([np.arange(t) * 24, np.arange(t) * 24 + 24], axis=1)
    ds = ds.assign_coords(time_bnds=(("time", "bnds"), bnds))
    bgen = xb.BatchGenerator(ds, {"x": 4}, batch_size=2)
    assert bgen.n_units == t * 2  # 3 times x 2 windows (not x 2 bounds)
    numbers = [int(s) for b in bgen for s in b["sample"].values]
    assert numbers == list(range(t * 2))
    for b in bgen:
        assert b["v"].dims == ("sample", "x_input")
        assert b["time_bnds"].dims == ("sample", "bnds")
        for k, s in enumerate(b["sample"].values):
            ti, xi = divmod(int(s), 2)
            window = ds.isel(time=ti, x=slice(4 * xi, 4 * xi + 4))
            np.testing.assert_array_equal(b["v"].values[k], window["v"].values)
            np.testing.assert_array_equal(
                b["time_bnds"].values[k], window["time_bnds"].values
            )
    expected = reference_sample_batches(ds, {"x": 4}, batch_size=2)
    for got, ref in zip(bgen, expected, strict=True):
        xr.testing.assert_identical(got, ref)
    # a data variable on the same dims does add them (only data defines the space)
    if not as_coord:
        ds2 = ds.reset_coords("time_bnds")
        bgen2 = xb.BatchGenerator(ds2, {"x": 4}, batch_size=2)
        assert bgen2.n_units == t * 2 * 2


# --------------------------------------------------------------------------- 4. lacking
def lacking_dataset(var_dims: dict[str, tuple[str, ...]]) -> xr.Dataset:
    ds = build({"full": DIMS, **var_dims}, list(range(len(var_dims) + 1)), [0, 1, 2])
    return ds.assign_coords(area=(("y", "x"), np.arange(30.0).reshape(5, 6) * -1))


LACKING_MODES: dict[str, dict[str, Any]] = {
    "window": {"input_dims": {"y": 2, "x": 3}},
    "window-stacked": {"input_dims": {"x": 3}, "batch_dims": {"y": 2}},
    "window-time": {"input_dims": {"time": 2, "x": 4}, "input_overlap": {"x": 1}},
    "concat": {"input_dims": {"y": 2, "x": 3}, "batch_dims": {"time": 2},
               "concat_input_dims": True},
    "concat-dup": {"input_dims": {"x": 2}, "batch_dims": {"x": 4, "time": 1},
                   "concat_input_dims": True},
    "sample": {"input_dims": {"y": 2, "x": 3}, "batch_size": 5},
    "sample-time": {"input_dims": {"time": 2}, "batch_size": 3},
}  # fmt: skip


def check_arrays(bgen: xb.BatchGenerator, i: int, batch: xr.Dataset) -> None:
    arrays = bgen.arrays[i]
    assert isinstance(arrays, dict)
    for name, var in batch.data_vars.items():
        assert arrays[name].shape == var.shape, name
        np.testing.assert_array_equal(arrays[name], var.values)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(var_dims=var_dims_strategy(), mode=st.sampled_from(list(LACKING_MODES)))
def test_variables_lacking_sliced_dims_match_reference(
    var_dims: dict[str, tuple[str, ...]], mode: str
) -> None:
    """0.4 slices each variable along the dims it has: so do we, in every mode, and
    ``bgen.arrays[i]`` has the shapes and values of ``bgen[i]``."""
    ds = lacking_dataset(var_dims)
    params = LACKING_MODES[mode]
    bgen = xb.BatchGenerator(ds, **params)
    ref_params = {k: v for k, v in params.items() if k != "batch_size"}
    if "batch_size" in params:
        expected = reference_sample_batches(
            ds, **ref_params, batch_size=params["batch_size"]
        )
    else:
        expected = reference_batches(ds, **ref_params)
    assert len(bgen) == len(expected)
    for i, ref in enumerate(expected):
        got = bgen[i]
        xr.testing.assert_identical(got, ref)
        check_arrays(bgen, i, got)
    for got, ref in zip(bgen, expected, strict=True):  # the iteration path
        xr.testing.assert_identical(got, ref)


@pytest.mark.parametrize("how", ["shuffle", "chunks", "skip_nan", "dask"])
def test_variables_lacking_dims_shuffled_chunked_filtered(how: str) -> None:
    """Static ``lsm(y, x)`` and ``series(time)`` next to ``t(time, y, x)``: shuffled,
    chunk-aware and filtered sample batches equal the reference's samples."""
    ds = lacking_dataset({"lsm": ("y", "x"), "series": ("time",)})
    kwargs: dict[str, Any] = {"batch_size": 4}
    if how == "shuffle":
        kwargs.update(shuffle=True, seed=1)
    elif how == "chunks":
        ds = ds.chunk(time=2, x=3)
        kwargs.update(shuffle="chunks", seed=2)
    elif how == "dask":
        ds = ds.chunk(y=2)
    else:
        ds["full"] = ds["full"].where(ds["full"] % 7 != 0)
        kwargs.update(skip_nan="full")
    bgen = xb.BatchGenerator(ds, {"y": 2, "x": 3}, **kwargs)
    samples = reference_samples(ds, {"y": 2, "x": 3})
    seen = []
    for i, batch in enumerate(bgen):
        units = bgen.batch_units(i).tolist()
        ref = reference_sample_batch(ds, [samples[u] for u in units], units)
        xr.testing.assert_identical(batch.load(), ref.load())
        check_arrays(bgen, i, batch)
        seen += units
    if how == "skip_nan":
        assert 0 < len(seen) < len(samples)
        for u in seen:
            assert not ds["full"].isel(samples[u]).isnull().any()
    else:
        assert sorted(seen) == list(range(len(samples)))
