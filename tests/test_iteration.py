"""Iteration groups: how many batches are gathered at once, and that bigger groups
of a full shuffle give the same batches."""

from __future__ import annotations

import numpy as np
import xarray as xr

import xbatcher as xb
from xbatcher import _iteration


def make(chunked: bool) -> xr.DataArray:
    values = np.arange(400 * 1024, dtype=np.float32).reshape(400, 1024)
    da = xr.DataArray(values, dims=("time", "x"))
    return da.chunk(time=50) if chunked else da


def test_a_full_shuffle_over_chunks_gathers_bigger_groups_within_the_cache() -> None:
    # batches of 32 windows of 1024 float32: 128 KiB
    kw = {"input_dims": {"x": 1024}, "batch_size": 32}
    ordered = xb.BatchGenerator(make(True), **kw)
    shuffled = xb.BatchGenerator(make(True), shuffle=True, seed=0, **kw)
    small = xb.BatchGenerator(
        make(True), shuffle=True, seed=0, block_cache_bytes="16MiB", **kw
    )
    in_memory = xb.BatchGenerator(make(False), shuffle=True, seed=0, **kw)
    sizes = {
        name: _iteration.group_size(g.engine, g.plan)
        for name, g in [
            ("ordered", ordered),
            ("shuffled", shuffled),
            ("small", small),
            ("in_memory", in_memory),
        ]
    }
    assert sizes == {"ordered": 16, "shuffled": 64, "small": 32, "in_memory": 16}


def test_bigger_shuffle_groups_give_the_same_batches() -> None:
    da = make(True)
    bgen = xb.BatchGenerator(da, {"x": 1024}, batch_size=32, shuffle=True, seed=1)
    units_of = [bgen.batch_units(i) for i in range(len(bgen))]  # epoch 0's order
    got = list(bgen.arrays)  # epoch 0, in groups of 64 batches
    assert len(got) == len(bgen) == 13
    seen = []
    for batch, units in zip(got, units_of, strict=True):
        seen.extend(units.tolist())
        np.testing.assert_array_equal(batch, da.values[units])
    assert sorted(seen) == list(range(400))  # every sample once
