"""Iteration groups: how many batches are gathered at once, and that bigger groups
of a full shuffle give the same batches."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import xbatcher as xb
from xbatcher import _iteration
from xbatcher.errors import XbatcherWarning


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


def test_a_chunk_aware_shuffle_over_chunks_gathers_bigger_groups() -> None:
    # each batch of a pool draws from all of the pool's chunks, as a full shuffle's
    # from all of the store's: 64 batches of 128 KiB per group, not 16
    kw = {"input_dims": {"x": 1024}, "batch_size": 32, "shuffle": "chunks"}
    sizes = [
        _iteration.group_size(g.engine, g.plan)
        for g in (
            xb.BatchGenerator(make(True), **kw),
            xb.BatchGenerator(make(True), block_cache_bytes="16MiB", **kw),
            xb.BatchGenerator(make(False), **kw),
        )
    ]
    assert sizes == [64, 32, 16]


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


# ---------------------------------------------------------------- window batches
def _window_source(t: int, y: int, x: int, chunk_t: int) -> xr.Dataset:
    """A Dataset with a dask variable, an in-memory variable and index coords."""
    values = np.arange(t * y * x, dtype=np.float32).reshape(t, y, x)
    return (
        xr.Dataset(
            {
                "v": (("time", "y", "x"), values, {"units": "K"}),
                "w": (("y", "x"), values[0] * 2),
            },
            coords={
                "time": np.arange(t) * 10,
                "y": np.arange(y) + 0.5,
                "x": np.arange(x),
            },
            attrs={"title": "t"},
        )
        .chunk(time=chunk_t, y=-1, x=-1)
        .assign(w=(("y", "x"), values[0] * 2))
    )


@given(
    t=st.integers(4, 24),
    chunk_t=st.integers(1, 9),
    wt=st.integers(1, 4),
    wy=st.integers(1, 5),
    overlap=st.integers(0, 1),
    as_dataarray=st.booleans(),
)
@settings(max_examples=25, deadline=None)
def test_iterated_window_batches_are_the_indexed_ones(
    t: int, chunk_t: int, wt: int, wy: int, overlap: int, as_dataarray: bool
) -> None:
    """Iterating gathers a group's window batches together (views of one buffer);
    each is still ``bgen[i]`` (itself ``isel`` of its window), and changing one
    batch's values changes no other batch and not the data."""
    ds = _window_source(t, 5, 6, chunk_t)
    data: xr.Dataset | xr.DataArray = ds["v"] if as_dataarray else ds
    bgen = xb.BatchGenerator(
        data,
        input_dims={"y": wy, "x": 3},
        input_overlap={"y": min(overlap, wy - 1)},
        batch_dims={"time": wt},
    )
    got = list(bgen)
    assert len(got) == len(bgen)
    for i, batch in enumerate(got):
        xr.testing.assert_identical(batch, bgen[i])
    before = [b.copy(deep=True) for b in got]
    first = got[0] if as_dataarray else got[0]["v"]
    first.values[...] = -1
    for i in range(1, len(got)):
        xr.testing.assert_identical(got[i], before[i])
    xr.testing.assert_identical(bgen[0], before[0])


def test_iterating_window_batches_looks_each_chunk_up_once_per_group() -> None:
    """A group of window batches is one gather: the chunk cache is asked once per
    chunk a group touches, not once per batch (one lookup per batch before)."""
    ds = _window_source(60, 16, 16, 10)
    bgen = xb.BatchGenerator(
        ds["v"], input_dims={"y": 4, "x": 4}, batch_dims={"time": 5}
    )
    for _ in bgen:
        pass
    stats = bgen.block_cache.stats()
    lookups = stats["hits"] + stats["misses"]
    n_groups = -(-len(bgen) // _iteration.group_size(bgen.engine, bgen.plan))
    assert len(bgen) == 12 * 16
    assert stats["misses"] == 6  # every chunk decoded once
    # the readahead and each group's gather look each of its chunks up (at most
    # twice: requested, then used), never once per batch
    assert lookups <= 2 * n_groups * 6 < len(bgen)


# ---------------------------------------------------------------- full shuffle
def test_a_full_shuffle_over_a_small_cache_decodes_what_the_cache_cannot_keep(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A full shuffle over data bigger than the chunk cache decodes, per group of
    batches, the chunks the group touches less those the cache kept from the group
    before (the group starts with them), and decodes nothing ahead that would be
    evicted before use. Before: every touched chunk, in chunk order, every group."""
    values = np.arange(64 * 64 * 64, dtype=np.float32).reshape(64, 64, 64)
    da = xr.DataArray(values, dims=("time", "y", "x")).chunk(time=4, y=32, x=32)
    n_chunks = 16 * 2 * 2  # of 16 KiB each: 1 MiB in all
    kept = 16  # chunks the cache holds (256 KiB)
    # groups of 4 batches (256 windows): each touches nearly every chunk
    monkeypatch.setattr(_iteration, "_GROUP_BYTES", 4 * 64 * 256)
    monkeypatch.setattr(_iteration, "_SHUFFLE_GROUP_BYTES", 4 * 64 * 256)
    with pytest.warns(XbatcherWarning, match="block_cache_bytes"):
        bgen = xb.BatchGenerator(
            da,
            input_dims={"y": 8, "x": 8},
            batch_size=64,
            shuffle=True,
            seed=3,
            block_cache_bytes=kept * 16 * 1024,
        )
    step = _iteration.group_size(bgen.engine, bgen.plan)
    n_groups = -(-len(bgen) // step)
    assert n_groups >= 4
    seen = []
    for i, batch in enumerate(bgen.arrays):
        units = bgen.batch_units(i)
        seen.extend(units.tolist())
        windows = bgen.schema.unit_windows(units)
        t, y, x = (windows.starts[d] for d in ("time", "y", "x"))
        expected = np.stack(
            [values[a, b : b + 8, c : c + 8] for a, b, c in zip(t, y, x, strict=True)]
        )
        np.testing.assert_array_equal(batch, expected)
    assert sorted(seen) == list(range(64 * 8 * 8))  # every sample once
    decoded = bgen.block_cache.stats()["misses"]
    # each group touches every chunk (256 windows over 64 chunks)
    assert decoded <= n_chunks + (n_groups - 1) * (n_chunks - kept)


# ------------------------------------------------------------ the sampler, once
@pytest.mark.parametrize("shuffle", [False, True, "chunks"])
def test_an_iteration_evaluates_the_sampler_about_once_per_sample(
    monkeypatch: pytest.MonkeyPatch, shuffle: bool | str
) -> None:
    # the readahead job computes the units of the groups it decodes for; the
    # groups take theirs from it instead of running the sampler again
    from xbatcher import plan as plan_mod

    values = np.arange(40_000 * 64, dtype=np.float32).reshape(40_000, 64)
    da = xr.DataArray(values, dims=("time", "x")).chunk(time=5000)
    kw = {"seed": 0} if shuffle else {}
    bgen = xb.BatchGenerator(da, {"x": 64}, batch_size=32, shuffle=shuffle, **kw)
    expected = [bgen.batch_units(i) for i in range(len(bgen))]
    evaluated: list[int] = []
    original = plan_mod.EpochPlan._compute_units

    def counting(self: object, epoch: int, positions: np.ndarray) -> np.ndarray:
        evaluated.append(int(np.asarray(positions).size))
        return original(self, epoch, positions)  # type: ignore[arg-type]

    monkeypatch.setattr(plan_mod.EpochPlan, "_compute_units", counting)
    got = list(bgen.arrays)
    assert len(got) == len(expected) == 1250
    for batch, units in zip(got, expected, strict=True):
        np.testing.assert_array_equal(batch, values[units])
    # the first group reads one page of the sampler itself, the readahead the rest
    assert sum(evaluated) <= 40_000 + plan_mod._PAGE
