"""The batch engine (``bgen.engine``) and its module-level, pure readers."""

from __future__ import annotations

import multiprocessing
import pickle
import warnings

import numpy as np
import pytest
import xarray as xr

import xbatcher as xb
from conftest import make_dataset
from xbatcher.engine import (
    BatchEngine,
    read_batch,
    read_batch_xarray,
    read_batches,
    read_batches_xarray,
)

PARAMS = [
    {"input_dims": {"lat": 5, "lon": 4}, "batch_size": 7},
    {"input_dims": {"lat": 5, "lon": 4}, "batch_dims": {"time": 2}},
    {"input_dims": {"lat": 5}, "concat_input_dims": True},
    {"input_dims": {"lon": 6}, "input_overlap": {"lon": 2}, "keep_remainder": True},
]


@pytest.mark.parametrize("params", PARAMS)
def test_readers_give_the_generators_batches(source, params):
    """``read_batch``/``read_batch_xarray`` of a batch's units are ``bgen.arrays[i]``
    and ``bgen[i]``; reading several batches together changes nothing."""
    bgen = xb.BatchGenerator(source, **params)
    engine = bgen.engine
    assert isinstance(engine, BatchEngine)
    units = [bgen.batch_units(i) for i in range(len(bgen))]
    together = read_batches(engine, units)
    xarrays = read_batches_xarray(engine, units)
    for i, u in enumerate(units):
        one = read_batch(engine, u)
        batch = bgen[i]
        xr.testing.assert_identical(read_batch_xarray(engine, u), batch)
        xr.testing.assert_identical(xarrays[i], batch)
        if isinstance(batch, xr.DataArray):
            np.testing.assert_array_equal(one, batch.values)
            np.testing.assert_array_equal(together[i], batch.values)
        else:
            for name in batch.data_vars:
                np.testing.assert_array_equal(one[name], batch[name].values)
                np.testing.assert_array_equal(together[i][name], batch[name].values)
    lazy = read_batch_xarray(engine, units[0], preload=False)
    xr.testing.assert_identical(lazy.compute(), bgen[0])


def _lazy_store(tmp_path):
    ds = make_dataset(shape=(40, 3, 64, 64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr v3 consolidated-metadata notice
        ds.chunk(time=10, lat=32).to_zarr(tmp_path / "s.zarr", consolidated=False)
        lazy = xr.open_dataset(
            tmp_path / "s.zarr", engine="zarr", chunks=None, consolidated=False
        )
    return ds, lazy


def test_engine_pickles_small_and_reads_in_a_spawned_process(tmp_path):
    """A Dask task or loader worker gets the engine, not the data: a lazily opened
    store travels as its path, the chunk cache travels empty, and ``read_batch`` in
    a fresh (spawned) interpreter gives the parent's values."""
    ds, lazy = _lazy_store(tmp_path)
    bgen = xb.BatchGenerator(lazy, {"lat": 8, "lon": 8}, batch_size=16, shuffle=True)
    units = bgen.batch_units(3)
    mine = read_batch(bgen.engine, units)
    assert len(bgen.engine.block_cache) > 0
    payload = pickle.dumps(bgen.engine)
    assert len(payload) < ds.nbytes // 100
    assert len(pickle.loads(payload).block_cache) == 0
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        theirs = pool.apply(read_batch, (bgen.engine, units))
        theirs_xr = pool.apply(read_batch_xarray, (bgen.engine, units))
    assert set(theirs) == set(mine) == {"air", "mask"}
    for name in mine:
        np.testing.assert_array_equal(theirs[name], mine[name])
    xr.testing.assert_identical(theirs_xr, bgen[3])
    # and both are the data: the first sample is its window of ds
    windows = bgen.schema.unit_windows(units[:1])
    window = {
        d: slice(int(v[0]), int(v[0]) + windows.lengths[d])
        for d, v in windows.starts.items()
    }
    expected = ds["air"].isel(window).values.reshape(mine["air"][0].shape)
    np.testing.assert_array_equal(mine["air"][0], expected)


def test_engine_facts():
    da = xr.DataArray(np.zeros((8, 10, 12), np.float32), dims=("t", "y", "x"))
    bgen = xb.BatchGenerator(da, {"y": 5, "x": 4}, batch_size=3)
    assert bgen.engine.batch_nbytes == 3 * 5 * 4 * 4
    assert not bgen.engine.chunked
    assert xb.BatchGenerator(da.chunk(t=2), {"y": 5}).engine.chunked
    assert bgen.engine.block_cache is bgen.block_cache


def test_a_window_across_chunks_is_copied_once():
    """A window batch of a dask variable that spans two chunks is assembled straight
    into the batch's own array: one window of memory at the peak (before, the
    assembled block was copied again: two), and the batch is ``isel`` of its
    window, owning its values."""
    import tracemalloc

    values = np.arange(16 * 256 * 256, dtype=np.float32).reshape(16, 256, 256)
    da = xr.DataArray(values, dims=("time", "y", "x"), name="v").chunk(time=6)
    bgen = xb.BatchGenerator(
        da, input_dims={"y": 256, "x": 256}, batch_dims={"time": 4}
    )
    window = 4 * 256 * 256 * 4  # 1 MiB
    for i in range(len(bgen)):
        bgen[i]  # decode every chunk first: the peak below is the batch alone
    across = 1  # time 4..8: chunks 0 and 1
    tracemalloc.start()
    try:
        batch = bgen[across]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert window <= peak < 1.5 * window
    assert len(bgen.engine.builder.lazy_vars) == 1  # read through the engine
    xr.testing.assert_identical(batch, da.isel(time=slice(4, 8)).compute())
    for i in range(len(bgen)):
        b = bgen[i]
        assert b.values.flags.owndata or b.values.base is not None
        b.values[...] = -1  # a batch's values are its own
    np.testing.assert_array_equal(bgen[across].values, values[4:8])
    np.testing.assert_array_equal(bgen[0].values, values[0:4])
