"""Indexed batches (``bgen[i]``): the scalar unit lookup, the chunk kept between
window batches, the cached window coordinates and the read-ahead of in-order access.

Each is checked against ``ds.isel`` of the same window (values, coordinates, attrs)
and by counts (chunks computed, cache lookups, calls, threads), never by time.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
import threading
from typing import Any

import dask
import dask.array as dsa
import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xbatcher as xb
from conftest import ChunkCounter
from reference import reference_batches, reference_sample_batch, reference_samples

# ---------------------------------------------------------------- scalar unit lookup


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 40),
    window=st.integers(1, 4),
    batch_size=st.one_of(st.none(), st.integers(1, 7)),
    drop_last=st.booleans(),
    shuffle=st.sampled_from([False, True, "chunks"]),
    world=st.integers(1, 3),
    nan_at=st.sets(st.integers(0, 39), max_size=5),
    epoch=st.integers(0, 3),
)
def test_units_of_batch_equals_batch_units(
    n, window, batch_size, drop_last, shuffle, world, nan_at, epoch
):
    """The scalar lookup of ``bgen[i]`` gives ``plan.batch_units(e, i, i + 1)[0]``
    for every sampler, shard, filter and epoch, as a fresh int64 array."""
    window = min(window, n)
    values = np.arange(n, dtype=np.float64)
    if batch_size is not None:
        values[[k for k in nan_at if k < n]] = np.nan
    da = xr.DataArray(values, dims="x").chunk(x=5)
    kwargs: dict[str, Any] = {"shuffle": shuffle, "seed": 3 if shuffle else None}
    if batch_size is not None:
        kwargs.update(batch_size=batch_size, drop_last=drop_last)
        if nan_at and len(nan_at) < n - window:
            kwargs["skip_nan"] = da.name or "__xarray_dataarray_variable__"
    try:
        bgen = xb.BatchGenerator(da, {"x": window}, **kwargs)
    except xb.errors.XbatcherError:
        return  # e.g. a filter that keeps nothing: not this test's subject
    for rank in range(world):
        gen = bgen.shard(rank, world) if world > 1 else bgen
        gen.set_epoch(epoch)
        plan = gen.plan
        for i in range(len(gen)):
            units = plan.units_of_batch(epoch, i)
            expected = plan.batch_units(epoch, i, i + 1)[0]
            assert units.dtype == np.int64
            np.testing.assert_array_equal(units, expected)
            np.testing.assert_array_equal(gen.batch_units(i), expected)
            units[...] = -1  # the caller owns the array: the next lookup is intact
            np.testing.assert_array_equal(plan.units_of_batch(epoch, i), expected)


def test_units_of_batch_across_a_page_of_units():
    """A batch whose positions straddle two pages of the plan's unit memo."""
    da = xr.DataArray(np.zeros(5000), dims="x")
    bgen = xb.BatchGenerator(da, {"x": 1}, batch_size=3, shuffle=True, seed=1)
    plan = bgen.plan
    for i in (0, 1364, 1365, 1366, len(bgen) - 1):  # 4095..4097 is batch 1365
        np.testing.assert_array_equal(
            plan.units_of_batch(0, i), plan.batch_units(0, i, i + 1)[0]
        )


def test_num_batches_follows_a_replaced_shard():
    """The memo of ``num_batches`` is not carried by ``dataclasses.replace``."""
    da = xr.DataArray(np.zeros(20), dims="x")
    plan = xb.BatchGenerator(da, {"x": 1}, batch_size=2).plan
    assert plan.num_batches() == 10
    sharded = dataclasses.replace(plan, shard=plan.with_shard(1, 4).shard)
    assert sharded.num_batches() == 3 == plan.with_shard(1, 4).num_batches()


# ------------------------------------------------------------------ window batches
def _dataarray(counter: ChunkCounter) -> xr.DataArray:
    t, y, x = counter.array.shape
    return xr.DataArray(
        counter.array,
        dims=("time", "y", "x"),
        coords={
            "time": np.arange(t) * 10,
            "y": np.linspace(0, 1, y),
            "x": np.arange(x),
        },
        name="v",
        attrs={"units": "K"},
    )


def _in_memory(counter: ChunkCounter) -> xr.DataArray:
    return _dataarray(counter).copy(data=counter.values)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    chunks=st.tuples(st.integers(1, 5), st.integers(2, 7), st.integers(2, 9)),
    wy=st.integers(1, 6),
    wx=st.integers(1, 8),
    bt=st.integers(1, 4),
    overlap=st.booleans(),
    order=st.sampled_from(["in order", "reversed", "shuffled", "repeats"]),
)
def test_window_batches_equal_isel_in_any_order(chunks, wy, wx, bt, overlap, order):
    """``bgen[i]`` over dask data (windows inside one chunk, read from the chunk kept
    at hand, and across chunks) is ``isel`` of its window, whatever the order."""
    counter = ChunkCounter((6, 7, 9), chunks)
    da = _dataarray(counter)
    params: dict[str, Any] = {
        "input_dims": {"y": wy, "x": wx},
        "batch_dims": {"time": bt},
    }
    if overlap and wx > 1:
        params["input_overlap"] = {"x": wx - 1}
    bgen = xb.BatchGenerator(da, **params)
    expected = reference_batches(_in_memory(counter), **params)
    n = len(bgen)
    assert n == len(expected)
    indices = list(range(n))
    if order == "reversed":
        indices.reverse()
    elif order == "shuffled":
        indices = list(np.random.default_rng(n).permutation(n))
    elif order == "repeats":
        indices = [i for i in indices for _ in range(2)] + indices
    for i in indices:
        xr.testing.assert_identical(bgen[int(i)], expected[int(i)])
    bgen._read_ahead.wait()


def test_windows_in_the_same_chunk_need_no_chunk_lookup():
    """Windows inside the chunk of the previous one (asked for out of order, one
    at a time) are cut from that chunk: no lookup in the chunk cache (before: one
    per batch)."""
    counter = ChunkCounter((4, 8, 8), (4, 8, 8))  # one chunk
    bgen = xb.BatchGenerator(_dataarray(counter), {"y": 2, "x": 2})
    bgen[0]
    stats = bgen.block_cache.stats()
    before = stats["hits"] + stats["misses"]
    batches = [bgen[i] for i in reversed(range(1, len(bgen)))]
    stats = bgen.block_cache.stats()
    assert stats["hits"] + stats["misses"] == before
    assert counter.computed == [(0, 0, 0)]
    ref = _in_memory(counter)
    xr.testing.assert_identical(batches[0], ref.isel(y=slice(6, 8), x=slice(6, 8)))
    assert bgen._read_ahead.groups == 0


def test_the_kept_chunk_does_not_travel_with_the_engine():
    values = np.random.default_rng(0).random((4, 64, 64))
    da = xr.DataArray(values, dims=("time", "y", "x")).chunk(y=32)
    bgen = xb.BatchGenerator(da, {"y": 2, "x": 2})
    unread = len(pickle.dumps(bgen.engine))  # the dask graph holds the data
    first = bgen[0]
    assert bgen.engine.chunk_memo._held  # a chunk (32 KiB) is kept ...
    payload = pickle.dumps(bgen.engine)
    assert len(payload) < unread + 4096  # ... but not pickled, nor the coords
    engine = pickle.loads(payload)
    again = xb.engine.read_batch_xarray(engine, bgen.batch_units(0))
    xr.testing.assert_identical(again, first)
    clone = pickle.loads(pickle.dumps(bgen))  # and the generator, read-ahead state
    xr.testing.assert_identical(clone[1], bgen[1])


def test_window_coordinates_are_cut_once_per_window(monkeypatch):
    """A window read again reuses its cut coordinates (no ``cut`` call); each
    batch still gets coordinate dicts of its own."""
    counter = ChunkCounter((4, 8, 8), (2, 4, 4))
    bgen = xb.BatchGenerator(_dataarray(counter), {"y": 2, "x": 4})
    coords = bgen.engine.builder.window_coords
    calls = []
    cut = coords.cut

    def counted(*args):
        calls.append(args[0])
        return cut(*args)

    monkeypatch.setattr(coords, "cut", counted)
    first = bgen[3]
    assert sorted(calls) == ["time", "x", "y"]
    first.coords["extra"] = 1  # changing one batch in place ...
    again = bgen[3]
    assert len(calls) == 3  # ... nothing cut again
    assert "extra" not in again.coords  # ... and the next batch is not changed
    ref = _in_memory(counter).isel(y=slice(2, 4), x=slice(4, 8))
    xr.testing.assert_identical(again, ref)


# ------------------------------------------------------------------------ read-ahead
def _reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if "readahead" in t.name]


def test_in_order_indexing_computes_the_next_chunks_ahead():
    """``bgen[0]``, ``bgen[1]``: the chunks of the following batches are computed
    in the background (before: only those of batches 0 and 1), each chunk once,
    and every batch is ``isel`` of its window."""
    counter = ChunkCounter((12, 4, 6), (3, 4, 6))  # 4 chunks along time
    da = _dataarray(counter)
    params: dict[str, Any] = {"input_dims": {"y": 2, "x": 3}, "batch_dims": {"time": 2}}
    bgen = xb.BatchGenerator(da, **params)
    expected = reference_batches(_in_memory(counter), **params)
    xr.testing.assert_identical(bgen[0], expected[0])
    xr.testing.assert_identical(bgen[1], expected[1])
    bgen._read_ahead.wait()
    assert bgen._read_ahead.jobs == 1
    assert set(counter.computed) == counter.all_chunks()
    for i in range(2, len(bgen)):
        xr.testing.assert_identical(bgen[i], expected[i])
    bgen._read_ahead.wait()
    assert sorted(counter.computed) == sorted(counter.all_chunks())  # each once


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), count=st.integers(1, 24))
def test_random_access_reads_ahead_nothing(seed, count):
    """Indices that never follow the previous one start no read-ahead: exactly the
    chunks of the batches asked for are computed, each once."""
    counter = ChunkCounter((12, 4, 6), (3, 2, 3))
    bgen = xb.BatchGenerator(
        _dataarray(counter), {"y": 2, "x": 3}, batch_dims={"time": 2}
    )
    rng = np.random.default_rng(seed)
    indices: list[int] = []
    for _ in range(count):
        i = int(rng.integers(len(bgen)))
        if indices and i == indices[-1] + 1:
            continue
        indices.append(i)
    needed: set[tuple[int, ...]] = set()
    for i in indices:
        bgen[i]
        t, rest = divmod(i, 4)  # 6 time blocks x (2 y windows x 2 x windows)
        y, x = divmod(rest, 2)
        needed |= counter.needed(
            {0: (2 * t, 2 * t + 2), 1: (2 * y, 2 * y + 2), 2: (3 * x, 3 * x + 3)}
        )
    assert bgen._read_ahead.jobs == 0
    assert sorted(counter.computed) == sorted(needed)


def test_read_ahead_uses_one_thread_for_every_generator():
    counter = ChunkCounter((12, 4, 6), (3, 4, 6))
    before = len(_reader_threads())
    for _ in range(5):
        bgen = xb.BatchGenerator(_dataarray(counter), {"y": 2, "x": 3})
        for i in range(4):
            bgen[i]
        assert bgen._read_ahead.jobs >= 1
        bgen._read_ahead.wait()
    assert len(_reader_threads()) <= max(1, before)


def test_no_read_ahead_without_chunks_or_with_lazy_batches():
    counter = ChunkCounter((12, 4, 6), (3, 4, 6))
    assert xb.BatchGenerator(_in_memory(counter), {"y": 2})._read_ahead is None
    lazy = xb.BatchGenerator(
        _dataarray(counter), {"y": 2}, batch_dims={"time": 3}, preload_batch=False
    )
    assert lazy._read_ahead is None
    with dask.config.set(scheduler="synchronous"):
        for i in range(3):
            lazy[i].compute()
    # three batches: time block 0, the two y windows; time block 1, first window
    assert set(counter.computed) == {(0, 0, 0), (1, 0, 0)}


def test_a_jump_reads_nothing_ahead_and_in_order_access_resumes():
    counter = ChunkCounter((24, 4, 6), (3, 4, 6))
    bgen = xb.BatchGenerator(
        _dataarray(counter), {"y": 4, "x": 6}, batch_dims={"time": 1}
    )
    ahead = bgen._read_ahead
    bgen[0]
    bgen[1]
    assert ahead.jobs == 1
    ahead.wait()
    bgen[10]  # a jump: nothing new
    assert ahead.jobs == 1
    bgen[11]  # in order again, but already read ahead
    ahead.wait()
    assert sorted(counter.computed) == sorted(counter.all_chunks())


# ------------------------------------------------------------ groups of batches
def test_in_order_indexing_reads_window_batches_a_group_at_a_time(monkeypatch):
    """In order, ``bgen[i]`` gathers its group's windows at once (as iterating
    does): one single-batch read (batch 0), then one gather per group; each batch
    is handed out once and is ``isel`` of its window."""
    counter = ChunkCounter((12, 8, 12), (3, 4, 6))
    params: dict[str, Any] = {"input_dims": {"y": 2, "x": 3}, "batch_dims": {"time": 2}}
    bgen = xb.BatchGenerator(_dataarray(counter), **params)
    expected = reference_batches(_in_memory(counter), **params)
    singles = []
    one = xb.engine._window_xarray

    def counted(engine, unit):
        singles.append(unit)
        return one(engine, unit)

    monkeypatch.setattr(xb.engine, "_window_xarray", counted)
    monkeypatch.setattr(xb._iteration, "_MAX_GROUP", 8)  # groups of 8 batches
    n = len(bgen)
    step = xb._iteration.group_size(bgen.engine, bgen.plan)
    assert 1 < step < n - 1
    batches = [bgen[i] for i in range(n)]
    assert singles == [0]
    assert bgen._read_ahead.groups == math.ceil((n - 1) / step)
    for got, want in zip(batches, expected, strict=True):
        xr.testing.assert_identical(got, want)
    again = bgen[5]  # not in order, and handed out already: read on its own
    assert singles == [0, 5] and again is not batches[5]
    again.values[...] = -1  # a batch of its own
    xr.testing.assert_identical(batches[5], expected[5])
    bgen._read_ahead.wait()


@pytest.mark.parametrize("shuffle", [False, True])
def test_in_order_sample_batches_follow_the_epoch(shuffle):
    """Sample batches read a group at a time in order are the samples the plan
    gives, in every epoch (the group read in epoch 0 is not served in epoch 1)."""
    counter = ChunkCounter((6, 8, 12), (3, 4, 6))
    ref = _in_memory(counter)
    input_dims = {"y": 2, "x": 3}
    bgen = xb.BatchGenerator(
        _dataarray(counter),
        input_dims,
        batch_size=5,
        shuffle=shuffle,
        seed=0 if shuffle else None,
    )
    samples = reference_samples(ref, input_dims)
    for epoch in (0, 1):
        bgen.set_epoch(epoch)
        for i in range(len(bgen) if epoch else 7):
            units = bgen.batch_units(i).tolist()
            want = reference_sample_batch(ref, [samples[u] for u in units], units)
            xr.testing.assert_identical(bgen[i], want)
    assert bgen._read_ahead.groups >= 2
    bgen._read_ahead.wait()


def test_a_failing_batch_fails_alone_when_indexed_in_order():
    """A chunk that cannot be read fails the batches that need it, each at its own
    index; the batches before it (in the same group) are still served, and equal
    ``isel`` of their windows."""
    values = np.arange(8 * 4 * 6, dtype=np.float64).reshape(8, 4, 6)

    def read(block: np.ndarray, block_info: Any = None) -> np.ndarray:
        if block_info is not None and block_info[None]["chunk-location"][0] == 1:
            raise OSError("chunk 1 is unreadable")
        return block

    data = dsa.from_array(values, chunks=(4, 4, 6)).map_blocks(read, dtype=np.float64)
    da = xr.DataArray(data, dims=("time", "y", "x"), name="v")
    bgen = xb.BatchGenerator(da, {"y": 2, "x": 3}, batch_dims={"time": 2})
    ref = xr.DataArray(values, dims=("time", "y", "x"), name="v")
    expected = reference_batches(ref, {"y": 2, "x": 3}, batch_dims={"time": 2})
    for i in range(8):  # time blocks 0 and 1 lie in chunk 0
        xr.testing.assert_identical(bgen[i], expected[i])
    for i in range(8, len(bgen)):
        with pytest.raises(OSError, match="chunk 1 is unreadable"):
            bgen[i]
    bgen._read_ahead.wait()
