"""Sample filters (skip_nan, mask, min_valid): exact against brute force, masks matched
by coordinate label, computed chunk by chunk in bounded memory."""

from __future__ import annotations

import itertools
import math
import tracemalloc
import warnings
from fractions import Fraction

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import xbatcher as xb
from xbatcher.errors import DimensionError, InputTypeError, SchemaError, XbatcherWarning


def window_starts(size: int, window: int, stride: int, keep_remainder: bool) -> list:
    starts = list(range(0, size - window + 1, stride))
    if keep_remainder and (size - window) % stride:
        starts.append(size - window)
    return starts


def brute_windows(sizes, input_dims, overlap, batch_dims, keep_remainder):
    """Every sample's isel selector, in xbatcher's documented numbering: unsliced
    dims (dataset order), then batch-only dims, then input dims (row-major)."""
    sliced = [d for d in batch_dims if d not in input_dims] + list(input_dims)
    axes = []
    for d in [d for d in sizes if d not in sliced]:
        axes.append([(d, slice(i, i + 1)) for i in range(sizes[d])])
    for d in sliced:
        w = input_dims.get(d, batch_dims.get(d))
        s = w - overlap.get(d, 0)
        axes.append(
            [
                (d, slice(a, a + w))
                for a in window_starts(sizes[d], w, s, keep_remainder)
            ]
        )
    return [dict(combo) for combo in itertools.product(*axes)]


def passes(values: np.ndarray, bad: np.ndarray, min_valid: float) -> bool:
    """At least ``min_valid`` of the window's points are not bad (exact fractions)."""
    return Fraction(int((~bad).sum()), values.size) >= Fraction(str(min_valid))


def kept_ids(bgen: xb.BatchGenerator) -> list[int]:
    return [int(s) for batch in bgen for s in batch["sample"].values]


# ---------------------------------------------------------------- masks by label


@st.composite
def masked_grids(draw):
    ny, nx = draw(st.integers(2, 7)), draw(st.integers(2, 7))
    wy, wx = draw(st.integers(1, ny)), draw(st.integers(1, nx))
    oy, ox = draw(st.integers(0, wy - 1)), draw(st.integers(0, wx - 1))
    values = draw(st.lists(st.booleans(), min_size=ny * nx, max_size=ny * nx))
    perm_y = draw(st.permutations(range(ny)))
    perm_x = draw(st.permutations(range(nx)))
    return ny, nx, wy, wx, oy, ox, np.array(values).reshape(ny, nx), perm_y, perm_x


@settings(max_examples=60, deadline=None)
@given(g=masked_grids(), descending=st.booleans())
def test_mask_matches_ds_where_by_label(g, descending):
    ny, nx, wy, wx, oy, ox, truth, perm_y, perm_x = g
    lat = np.linspace(-30.0, 30.0, ny)
    if descending:
        lat = lat[::-1]
    ds = xr.Dataset(
        {"v": (("time", "lat", "lon"), np.ones((2, ny, nx)))},
        coords={"time": [0, 1], "lat": lat, "lon": np.arange(nx) * 1.5},
    )
    mask = xr.DataArray(truth, dims=("lat", "lon"), coords={"lat": lat, "lon": ds.lon})
    # the same mask with its coordinates permuted: must select the same samples
    shuffled = mask.isel(lat=list(perm_y), lon=list(perm_x))
    input_dims, overlap = {"lat": wy, "lon": wx}, {"lat": oy, "lon": ox}
    # oracle: ds.where(mask) aligns by label; keep windows that are all non-NaN there
    where = ds.v.where(shuffled).notnull().values
    expected = [
        i
        for i, sel in enumerate(
            brute_windows(dict(ds.sizes), input_dims, overlap, {}, False)
        )
        if where[sel["time"], sel["lat"], sel["lon"]].all()
    ]
    bgen = xb.BatchGenerator(
        ds, input_dims, input_overlap=overlap, batch_size=3, mask=shuffled
    )
    assert bgen.sample_ids().tolist() == expected
    for batch in bgen:  # the windows really are all-True in the mask
        for k in range(batch.sizes["sample"]):
            lab = {d: batch[d].values[k] for d in ("lat", "lon")}
            assert bool(mask.sel(lab).all())


def test_descending_latitude_mask_keeps_the_right_samples():
    lat = np.array([10.0, 0.0, -10.0, -20.0])
    ds = xr.Dataset(
        {"v": (("lat", "lon"), np.arange(8.0).reshape(4, 2))},
        coords={"lat": lat, "lon": [0.0, 1.0]},
    )
    north = xr.DataArray(  # ascending labels -20 .. 10; True at 0 and 10
        np.array([False, False, True, True])[:, None].repeat(2, 1),
        dims=("lat", "lon"),
        coords={"lat": lat[::-1], "lon": [0.0, 1.0]},
    )
    bgen = xb.BatchGenerator(ds, {"lat": 2, "lon": 2}, batch_size=4, mask=north)
    (batch,) = list(bgen)
    assert sorted(batch["lat"].values.ravel().tolist()) == [0.0, 10.0]


def test_partial_mask_counts_outside_as_false_and_warns():
    ds = xr.Dataset({"v": (("x",), np.arange(6.0))}, coords={"x": np.arange(6) * 1.0})
    mask = xr.DataArray(np.ones(4, bool), dims="x", coords={"x": [0.0, 1.0, 2.0, 3.0]})
    with pytest.warns(XbatcherWarning, match="lacks some of the data's labels"):
        bgen = xb.BatchGenerator(ds, {"x": 2}, batch_size=8, mask=mask)
    assert kept_ids(bgen) == [0, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        silent = xb.BatchGenerator(
            ds, {"x": 2}, batch_size=8, mask=mask.reindex_like(ds, fill_value=False)
        )
    assert kept_ids(silent) == [0, 1]


def test_bad_masks_get_typed_errors():
    ds = xr.Dataset({"v": (("y", "x"), np.zeros((4, 5)))}, coords={"x": np.arange(5)})
    kw = dict(input_dims={"x": 2}, batch_size=2)
    with pytest.raises(DimensionError, match=r"mask has dims \['z'\] that the data"):
        xb.BatchGenerator(
            ds, **kw, mask=xr.DataArray(np.ones((5, 2), bool), dims=("x", "z"))
        )
    with pytest.raises(SchemaError, match="mask has 3 points along 'y' and the data 4"):
        xb.BatchGenerator(ds, **kw, mask=xr.DataArray(np.ones(3, bool), dims="y"))
    with pytest.raises(SchemaError, match="shares no 'x' label with the data"):
        xb.BatchGenerator(
            ds,
            **kw,
            mask=xr.DataArray(np.ones(2, bool), dims="x", coords={"x": [7, 8]}),
        )
    with pytest.raises(SchemaError, match="duplicate labels"):
        xb.BatchGenerator(
            ds,
            **kw,
            mask=xr.DataArray(np.ones(2, bool), dims="x", coords={"x": [1, 1]}),
        )
    with pytest.raises(SchemaError, match="must be a boolean variable"):
        xb.BatchGenerator(ds, **kw, mask=xr.DataArray(np.ones(5), dims="x"))
    with pytest.raises(DimensionError, match="mask 'land' is not a variable"):
        xb.BatchGenerator(ds, **kw, mask="land")
    with pytest.raises(InputTypeError, match="mask must be the name"):
        xb.BatchGenerator(ds, **kw, mask=["v"])


def test_bad_min_valid_gets_typed_errors():
    ds = xr.Dataset({"v": (("x",), np.zeros(5))})
    kw = dict(input_dims={"x": 2}, batch_size=2, skip_nan="v")
    with pytest.raises(SchemaError, match=r"fraction in \(0, 1\]; got 1.5"):
        xb.BatchGenerator(ds, **kw, min_valid=1.5)
    with pytest.raises(SchemaError, match=r"fraction in \(0, 1\]; got 0"):
        xb.BatchGenerator(ds, **kw, min_valid=0)
    with pytest.raises(InputTypeError, match=r"got '0\.5' of type str"):
        xb.BatchGenerator(ds, **kw, min_valid="0.5")
    with pytest.raises(SchemaError, match="keys must be 'skip_nan' or 'mask'; got"):
        xb.BatchGenerator(ds, **kw, min_valid={"v": 0.5})
    with pytest.raises(SchemaError, match="without skip_nan= or mask="):
        xb.BatchGenerator(ds, {"x": 2}, batch_size=2, min_valid=0.5)


# ---------------------------------------------------------------- exact counts


@st.composite
def filtered_cases(draw):
    nt, ny, nx = (
        draw(st.integers(1, 3)),
        draw(st.integers(1, 8)),
        draw(st.integers(1, 8)),
    )
    wy, wx = draw(st.integers(1, ny)), draw(st.integers(1, nx))
    overlap = {"y": draw(st.integers(0, wy - 1)), "x": draw(st.integers(0, wx - 1))}
    batch_dims = {"time": draw(st.integers(1, nt))} if draw(st.booleans()) else {}
    nan = draw(st.lists(st.booleans(), min_size=nt * ny * nx, max_size=nt * ny * nx))
    land = draw(st.lists(st.booleans(), min_size=ny * nx, max_size=ny * nx))
    chunks = {
        d: draw(st.integers(1, n)) for d, n in (("time", nt), ("y", ny), ("x", nx))
    }
    return dict(
        shape=(nt, ny, nx),
        input_dims={"y": wy, "x": wx},
        overlap=overlap,
        batch_dims=batch_dims,
        nan=np.array(nan).reshape(nt, ny, nx),
        ocean=np.array(land).reshape(ny, nx),
        chunks=chunks,
        keep_remainder=draw(st.booleans()),
        min_nan=draw(st.sampled_from([1.0, 0.75, 0.5, 0.3])),
        min_mask=draw(st.sampled_from([1.0, 0.6, 0.5, 0.25])),
        backing=draw(st.sampled_from(["numpy", "dask"])),
    )


@settings(max_examples=80, deadline=None)
@given(c=filtered_cases(), use_mask=st.booleans(), use_nan=st.booleans())
def test_filters_equal_brute_force_per_window(c, use_mask, use_nan):
    """Overlap, batch-dim blocks, keep_remainder windows and thresholds; in memory
    and chunked (dask chunks cut windows anywhere): the kept samples are exactly
    those a per-window numpy check keeps, and their values are the windows'."""
    nt, ny, nx = c["shape"]
    values = np.arange(nt * ny * nx, dtype="float64").reshape(c["shape"])
    values[c["nan"]] = np.nan
    ds = xr.Dataset(
        {
            "v": (("time", "y", "x"), values),
            "w": (("time", "y", "x"), np.ones(c["shape"], "float32")),
        }
    )
    ocean = xr.DataArray(c["ocean"], dims=("y", "x"))
    if c["backing"] == "dask":
        ds = ds.chunk(c["chunks"])
        ocean = ocean.chunk({d: c["chunks"][d] for d in ("y", "x")})
    if not (use_mask or use_nan):
        use_nan = True
    bgen = xb.BatchGenerator(
        ds,
        c["input_dims"],
        input_overlap=c["overlap"],
        batch_dims=c["batch_dims"],
        keep_remainder=c["keep_remainder"],
        batch_size=4,
        skip_nan=["v", "w"] if use_nan else None,
        mask=ocean if use_mask else None,
        min_valid={"skip_nan": c["min_nan"], "mask": c["min_mask"]},
    )
    sels = brute_windows(
        dict(ds.sizes),
        c["input_dims"],
        c["overlap"],
        c["batch_dims"],
        c["keep_remainder"],
    )
    expected = []
    for i, sel in enumerate(sels):
        window = values[sel["time"], sel["y"], sel["x"]]
        ok = not use_nan or passes(window, np.isnan(window), c["min_nan"])
        if use_mask:
            m = c["ocean"][sel["y"], sel["x"]]
            ok = ok and passes(m, ~m, c["min_mask"])
        if ok:
            expected.append(i)
    assert bgen.sample_ids().tolist() == expected
    for batch in bgen:
        for k, s in enumerate(batch["sample"].values):
            sel = sels[int(s)]
            np.testing.assert_array_equal(
                batch["v"].values[k].ravel(),
                values[sel["time"], sel["y"], sel["x"]].ravel(),
            )


def test_filter_on_variables_lacking_a_dim_broadcasts():
    ds = xr.Dataset(
        {"v": (("time", "x"), np.ones((3, 6)))},
        coords={"lsm": (("x",), np.array([1, 1, 0, 1, 1, 1], bool))},
    )
    bgen = xb.BatchGenerator(ds, {"x": 2}, batch_size=4, mask="lsm")
    # windows x=[0,2) and [4,6) are all True, for each of the 3 time steps
    assert bgen.sample_ids().tolist() == [0, 2, 3, 5, 6, 8]


def test_integer_variables_are_not_read_for_skip_nan():
    ds = xr.Dataset({"i": (("x",), np.arange(6))}).chunk(x=2)
    bgen = xb.BatchGenerator(ds, {"x": 2}, batch_size=4, skip_nan="i")
    assert bgen.sample_ids().tolist() == [0, 1, 2]
    assert bgen.block_cache.stats()["misses"] == 0


# ---------------------------------------------------------------- chunk by chunk


@pytest.fixture
def lazy_zarr(tmp_path):
    pytest.importorskip("zarr")
    rng = np.random.default_rng(0)
    values = rng.standard_normal((40, 256, 256)).astype("float32")  # 10.5 MB
    values[rng.random(values.shape) < 1e-4] = np.nan
    path = tmp_path / "v.zarr"
    xr.Dataset({"v": (("time", "y", "x"), values)}).chunk(time=4, y=64, x=64).to_zarr(
        path
    )
    ds = xr.open_dataset(path, engine="zarr", chunks=None)
    return ds, values


def test_skip_nan_reads_each_chunk_once_in_bounded_memory(lazy_zarr):
    ds, values = lazy_zarr
    nbytes = values.nbytes
    # warm up (imports, thread pools, Zarr metadata) before measuring
    xb.BatchGenerator(ds, {"y": 16, "x": 16}, batch_size=1, skip_nan="v")
    tracemalloc.start()
    try:
        bgen = xb.BatchGenerator(
            ds,
            {"y": 16, "x": 16},
            input_overlap={"y": 8, "x": 8},
            batch_size=32,
            skip_nan="v",
            block_cache_bytes=3 * 64 * 64 * 4 * 4,  # three chunks
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    stats = bgen.block_cache.stats()
    n_chunks = 10 * 4 * 4
    assert stats["misses"] == n_chunks  # each chunk read once
    assert stats["decoded_bytes"] == nbytes
    assert peak < nbytes / 5, (peak, nbytes)  # measured: under a tenth
    # and the result is exact
    mem = xb.BatchGenerator(
        xr.Dataset({"v": (("time", "y", "x"), values)}),
        {"y": 16, "x": 16},
        input_overlap={"y": 8, "x": 8},
        batch_size=32,
        skip_nan="v",
    )
    np.testing.assert_array_equal(bgen.sample_ids(), mem.sample_ids())
    assert 0 < bgen.n_units < math.prod(mem.schema.unit_shape)


def test_a_failing_chunk_read_raises_at_construction(lazy_zarr, monkeypatch):
    ds, _ = lazy_zarr
    from xbatcher import validity

    calls = []

    def broken(source, region, cache):
        calls.append(region)
        raise OSError("disk on fire")

    monkeypatch.setattr(validity, "read_region", broken)
    with pytest.raises(OSError, match="disk on fire"):
        xb.BatchGenerator(ds, {"y": 16, "x": 16}, batch_size=4, skip_nan="v")
    assert len(calls) < 40  # the other threads stopped taking chunks
