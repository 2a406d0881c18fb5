"""The reader: chunk cache, block reads and window gathers, faults."""

from __future__ import annotations

import contextlib
import itertools
import math
import threading
import time
import tracemalloc
from unittest import mock

import dask.array as dsa
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import xbatcher as xb
from test_chunkgather import chunked_windows
from xbatcher import _chunkfetch, _iteration, _threads, reader
from xbatcher._chunkgather import plan_windows
from xbatcher.errors import SchemaError
from xbatcher.reader import (
    BlockCache,
    WindowRequest,
    gather,
    gather_grid,
    parse_bytes,
    read_region,
)
from xbatcher.sources import DaskSource, InMemorySource, Source


def test_parse_bytes():
    assert parse_bytes("256MiB") == 256 * 2**20
    assert parse_bytes("1.5GB") == 1_500_000_000
    assert parse_bytes(12) == 12
    with pytest.raises(SchemaError, match="Known units"):
        parse_bytes("12 parsecs")
    with pytest.raises(SchemaError, match=">= 0"):
        parse_bytes(-1)
    assert (
        parse_bytes("2 kib") == 2048 and parse_bytes(np.int64(7)) == 7
    )  # dask's units


@pytest.mark.parametrize("bad", ["", "MiB", "1e999GB", "nan", "12 parsecs", "1.2.3 MB"])
def test_parse_bytes_refuses_strings_without_a_byte_count(bad):
    with pytest.raises(
        SchemaError, match=r"block_cache_bytes must be a byte count.*Known units"
    ):
        parse_bytes(bad)
    with pytest.raises(SchemaError, match="must be an int or a string"):
        parse_bytes(1.5)  # type: ignore[arg-type]
    with pytest.raises(SchemaError, match="got True"):
        parse_bytes(True)


def test_format_bytes_is_dask_format():
    from dask.utils import format_bytes as dask_format

    from xbatcher.reader import format_bytes

    for n in (0, 512, 1000, 81920, 3 * 2**30, 5 * 2**40):
        assert format_bytes(n) == dask_format(n)


def test_block_cache_is_byte_bounded_lru():
    cache = BlockCache(max_bytes=3 * 80)
    for i in range(3):
        cache.put(("v", (i,)), np.zeros(10))  # 80 bytes each
    assert cache.get(("v", (0,))) is not None  # 0 is now the most recent
    cache.put(("v", (3,)), np.zeros(10))  # evicts the least recent: 1
    assert cache.get(("v", (1,))) is None
    assert cache.get(("v", (0,))) is not None and cache.get(("v", (3,))) is not None
    stats = cache.stats()
    assert stats["resident_bytes"] == 240 and stats["evictions"] == 1
    cache.put(("v", (9,)), np.zeros(100))  # larger than the budget: not kept
    assert cache.get(("v", (9,))) is None and cache.stats()["resident_bytes"] == 240


class CountingSource(Source):
    """An in-memory array exposed as a chunked source that counts chunk reads."""

    def __init__(self, array, chunks, delay=0.0, fail_on=None):
        self.key = "counting"
        self.array = array
        self.shape = array.shape
        self.dtype = array.dtype
        self.bounds = tuple(
            np.concatenate([[0], np.cumsum(c)]).astype(np.int64) for c in chunks
        )
        self.reads: list[tuple[int, ...]] = []
        self.delay = delay
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def read(self, region):
        raise AssertionError("chunks are read through read_chunks")

    def read_chunks(self, chunk_ids):
        out = []
        for cid in chunk_ids:
            if cid == self.fail_on:
                raise OSError(f"storage went away reading chunk {cid}")
            time.sleep(self.delay)
            with self.lock:
                self.reads.append(cid)
            out.append(self.array[self.chunk_region(cid)].copy())
        return out


def regular_chunks(n, c):
    return tuple([c] * (n // c) + ([n % c] if n % c else []))


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 12), st.integers(1, 12)),
    chunk=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    data=st.data(),
)
def test_chunked_gather_equals_numpy(shape, chunk, data):
    array = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    wy = data.draw(st.integers(1, shape[0]))
    wx = data.draw(st.integers(1, shape[1]))
    k = data.draw(st.integers(1, 20))
    ys = np.array(
        data.draw(st.lists(st.integers(0, shape[0] - wy), min_size=k, max_size=k))
    )
    xs = np.array(
        data.draw(st.lists(st.integers(0, shape[1] - wx), min_size=k, max_size=k))
    )
    request = WindowRequest((ys, xs), (wy, wx), k)
    expected = np.stack(
        [array[y : y + wy, x : x + wx] for y, x in zip(ys, xs, strict=True)]
    )
    chunks = (regular_chunks(shape[0], chunk[0]), regular_chunks(shape[1], chunk[1]))
    src = CountingSource(array, chunks)
    cache = BlockCache(2**20)
    # big gathers share their chunk groups among threads: force that for tiny ones
    parallel = data.draw(st.booleans(), label="parallel gather")
    with mock.patch.object(reader, "_PARALLEL_GATHER_BYTES", 0 if parallel else 2**60):
        np.testing.assert_array_equal(gather(src, request, cache), expected)
    np.testing.assert_array_equal(
        gather(InMemorySource("v", array), request, None), expected
    )
    dask_src = DaskSource("d", dsa.from_array(array, chunks=chunks))
    np.testing.assert_array_equal(
        gather(dask_src, request, BlockCache(2**20)), expected
    )
    # every chunk read at most once, and only chunks the windows touch
    assert len(src.reads) == len(set(src.reads))
    touched = {
        (cy, cx)
        for y, x in zip(ys, xs, strict=True)
        for cy in range(y // chunk[0], (y + wy - 1) // chunk[0] + 1)
        for cx in range(x // chunk[1], (x + wx - 1) // chunk[1] + 1)
    }
    assert set(src.reads) == touched
    # a second request is served from the cache
    np.testing.assert_array_equal(gather(src, request, cache), expected)
    assert len(src.reads) == len(touched)


def test_read_region_and_grid_copy():
    array = np.arange(20 * 30, dtype=np.int64).reshape(20, 30)
    src = CountingSource(array, (regular_chunks(20, 7), regular_chunks(30, 8)))
    region = read_region(src, (slice(3, 17), slice(5, 29)), BlockCache(2**20))
    np.testing.assert_array_equal(region, array[3:17, 5:29])
    # windows of 4x5 every (3, 2) points: 3 x 4 of them, laid out (k_x, k_y, y, x)
    grid = gather_grid(region, [3, 4], [3, 2], [0, 1], [4, 5], [1, 0, 2, 3])
    for ky in range(3):
        for kx in range(4):
            np.testing.assert_array_equal(
                grid[kx, ky], array[3 + 3 * ky : 7 + 3 * ky, 5 + 2 * kx : 10 + 2 * kx]
            )
    assert grid.flags.c_contiguous


def test_concurrent_requests_read_each_chunk_once():
    array = np.arange(400.0).reshape(20, 20)
    src = CountingSource(array, (regular_chunks(20, 5), (20,)), delay=0.05)
    cache = BlockCache(2**20)
    request = WindowRequest((np.array([0, 6, 12]), np.array([0, 0, 0])), (4, 20), 3)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(gather(src, request, cache)))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(src.reads) == [(0, 0), (1, 0), (2, 0), (3, 0)]
    for r in results:
        np.testing.assert_array_equal(r[1], array[6:10])


def test_read_failure_reaches_the_caller_and_waiters_without_hanging():
    array = np.arange(400.0).reshape(20, 20)
    src = CountingSource(
        array, (regular_chunks(20, 5), (20,)), delay=0.05, fail_on=(1, 0)
    )
    cache = BlockCache(2**20)
    request = WindowRequest((np.array([6]), np.array([0])), (3, 20), 1)
    errors = []

    def worker():
        try:
            gather(src, request, cache)
        except OSError as err:
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert not any(t.is_alive() for t in threads)
    assert len(errors) == 3 and "storage went away" in str(errors[0])
    # the failure is not cached: once storage is back, the read succeeds
    src.fail_on = None
    np.testing.assert_array_equal(gather(src, request, cache)[0], array[6:9])


def test_generator_iteration_surfaces_storage_errors(monkeypatch):
    # 2 MB batches: iteration gathers a few batches per group, over several groups
    da = xr.DataArray(np.arange(600 * 4096.0).reshape(600, 4096), dims=("time", "x"))
    da = da.chunk(time=100)
    bgen = xb.BatchGenerator(da, {"x": 4096}, batch_dims={"time": 64})
    original = DaskSource.read_chunks

    def flaky(self, chunk_ids):
        if (4, 0) in chunk_ids:
            raise OSError("connection reset")
        return original(self, chunk_ids)

    monkeypatch.setattr(DaskSource, "read_chunks", flaky)
    delivered = []
    with pytest.raises(OSError, match="connection reset"):
        for batch in bgen.arrays:
            delivered.append(batch)
    # every batch delivered before the error is correct
    assert 0 < len(delivered) < len(bgen)
    for i, batch in enumerate(delivered):
        np.testing.assert_array_equal(batch, da.values[64 * i : 64 * i + 64])


def test_in_order_epoch_decodes_each_chunk_once():
    da = xr.DataArray(
        np.random.default_rng(0).random((60, 40, 40)), dims=("time", "y", "x")
    )
    bgen = xb.BatchGenerator(da.chunk(time=7), {"y": 8, "x": 8}, batch_dims={"time": 4})
    for _ in bgen.arrays:
        pass
    stats = bgen.block_cache.stats()
    assert stats["misses"] == 9  # ceil(60 / 7) chunks, each decoded once
    assert stats["decoded_bytes"] == da.nbytes


def test_thread_count_setting(monkeypatch):
    """``XBATCHER_NUM_THREADS`` bounds the reader's threads (for many loader worker
    processes); a bad value is a clear error; gathers stay correct with 1 thread."""
    monkeypatch.setenv("XBATCHER_NUM_THREADS", "3")
    assert _threads.usable_cores() == 3
    assert _threads.worker_pool("decode")._max_workers == 3
    assert _threads.worker_pool("gather")._max_workers == 2
    monkeypatch.setenv("XBATCHER_NUM_THREADS", "1")
    assert _threads.worker_pool("decode")._max_workers == 1
    array = np.arange(64 * 64, dtype=np.float64).reshape(64, 64)
    src = DaskSource("d", dsa.from_array(array, chunks=(16, 16)))
    starts = (np.arange(0, 48, 3), np.arange(0, 48, 3)[::-1].copy())
    with mock.patch.object(reader, "_PARALLEL_GATHER_BYTES", 0):
        out = gather(src, WindowRequest(starts, (16, 16), 16), BlockCache(2**30))
    for k, (y, x) in enumerate(zip(*starts, strict=True)):
        np.testing.assert_array_equal(out[k], array[y : y + 16, x : x + 16])
    for bad in ("zero", "0"):
        monkeypatch.setenv("XBATCHER_NUM_THREADS", bad)
        with pytest.raises(SchemaError, match=r"XBATCHER_NUM_THREADS must be"):
            _threads.usable_cores()
    monkeypatch.delenv("XBATCHER_NUM_THREADS")
    assert 1 <= _threads.usable_cores() <= 8


@settings(max_examples=40, deadline=None)
@given(
    shape=st.tuples(st.integers(4, 16), st.integers(4, 16)),
    chunk=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    cache_chunks=st.integers(1, 6),
    data=st.data(),
)
def test_gathers_needing_more_chunks_than_the_cache_holds(
    shape, chunk, cache_chunks, data
):
    """A request touching more chunk bytes than half the cache (a full shuffle over
    big data) is gathered in waves: still exact, and the cache stays in budget."""
    array = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    chunks = (regular_chunks(shape[0], chunk[0]), regular_chunks(shape[1], chunk[1]))
    src = CountingSource(array, chunks)
    cache = BlockCache(cache_chunks * src.chunk_nbytes)
    k = data.draw(st.integers(2, 30))
    wy, wx = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    ys = np.array(
        data.draw(st.lists(st.integers(0, shape[0] - wy), min_size=k, max_size=k))
    )
    xs = np.array(
        data.draw(st.lists(st.integers(0, shape[1] - wx), min_size=k, max_size=k))
    )
    out = gather(src, WindowRequest((ys, xs), (wy, wx), k), cache)
    for j in range(k):
        np.testing.assert_array_equal(
            out[j], array[ys[j] : ys[j] + wy, xs[j] : xs[j] + wx]
        )
    assert cache.stats()["resident_bytes"] <= cache.max_bytes


def test_prefetch_decodes_at_most_its_budget():
    array = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    src = CountingSource(array, (regular_chunks(64, 8), regular_chunks(64, 64)))
    starts = (np.arange(0, 64, 4), np.zeros(16, dtype=np.int64))  # 8 chunks
    request = WindowRequest(starts, (2, 64), 16)
    cache = BlockCache(2**30)
    reader.prefetch(src, request, cache, max_bytes=3 * src.chunk_nbytes)
    assert src.reads == [(0, 0), (1, 0), (2, 0)]  # the first chunks it needs
    np.testing.assert_array_equal(
        gather(src, request, cache), np.stack([array[y : y + 2] for y in starts[0]])
    )
    assert sorted(src.reads) == [(c, 0) for c in range(8)]  # the rest read once


@pytest.mark.parametrize("delay", [0.0, 0.5])
@pytest.mark.parametrize("path", ["arrays", "xarray"])
def test_a_failing_prefetcher_is_never_silent(monkeypatch, path, delay):
    """An error in the background prefetcher itself (not in a chunk read, which the
    consumer would hit again) reaches the consumer before the epoch ends, also when
    it comes after the consumer has passed every group (``delay``)."""
    da = xr.DataArray(np.arange(600 * 4096.0).reshape(600, 4096), dims=("time", "x"))
    bgen = xb.BatchGenerator(da.chunk(time=100), {"x": 4096}, batch_dims={"time": 64})

    def broken(self, first, stop, *rest):
        time.sleep(delay)
        raise RuntimeError(f"prefetch bug at {first}")

    monkeypatch.setattr(_iteration, "_prefetch", broken)
    delivered = 0
    with pytest.raises(RuntimeError, match="prefetch bug at"):
        for _ in bgen.arrays if path == "arrays" else bgen:
            delivered += 1
    assert delivered <= len(bgen)


class SubmittingSource(CountingSource):
    """A counting source that decodes chunks in the reader's pool, as the direct
    Zarr reader does (``submits_chunks``); ``gates`` holds chunks back until set."""

    submits_chunks = True

    def __init__(self, array, chunks, gates=None):
        super().__init__(array, chunks)
        self.gates = gates or {}
        self.gate_timeouts: list[tuple[int, ...]] = []

    def submit_chunk(self, cid):
        return _threads.worker_pool("decode").submit(self._read_one, cid)

    def _read_one(self, cid):
        gate = self.gates.get(cid)
        if gate is not None and not gate.wait(10):
            self.gate_timeouts.append(cid)
        return self.read_chunks([cid])[0]


DTYPES = ["float32", "int16", "bool", "complex64", "datetime64[s]", "uint8"]


def touched_chunks(bounds, starts, lengths):
    out = set()
    for k in range(starts[0].size):
        ranges = []
        for b, s, n in zip(bounds, starts, lengths, strict=True):
            first = int(np.searchsorted(b, s[k], side="right") - 1)
            last = int(np.searchsorted(b, s[k] + n - 1, side="right") - 1)
            ranges.append(range(first, last + 1))
        out.update(itertools.product(*ranges))
    return out


@settings(max_examples=80, deadline=None)
@given(
    case=chunked_windows(),
    dtype=st.sampled_from(DTYPES),
    kind=st.sampled_from(["counting", "submitting", "dask"]),
    cached=st.booleans(),
    parallel=st.booleans(),
)
def test_vectorised_gather_over_random_chunkings(case, dtype, kind, cached, parallel):
    """Random windows (inside a chunk, across chunk edges, across several chunks)
    over random irregular n-d chunkings: the gather equals numpy slicing, for every
    kind of chunked source and dtype, and reads exactly the chunks the windows
    touch, each once (the cache holds them all, or there is no cache)."""
    bounds, starts, lengths = case
    shape = tuple(int(b[-1]) for b in bounds)
    values = np.arange(math.prod(shape)).reshape(shape) % 251
    array = values.astype(dtype)
    chunks = tuple(tuple(np.diff(b).tolist()) for b in bounds)
    expected = np.stack(
        [
            array[
                tuple(
                    slice(s[k], s[k] + n) for s, n in zip(starts, lengths, strict=True)
                )
            ]
            for k in range(starts[0].size)
        ]
    )
    request = WindowRequest(starts, lengths, starts[0].size)
    if kind == "dask":
        src = DaskSource("d", dsa.from_array(array, chunks=chunks))
    else:
        src = (CountingSource if kind == "counting" else SubmittingSource)(
            array, chunks
        )
    cache = BlockCache(2**24) if cached else None
    with mock.patch.object(reader, "_PARALLEL_GATHER_BYTES", 0 if parallel else 2**60):
        out = gather(src, request, cache)
    assert out.dtype == array.dtype and out.flags.c_contiguous
    np.testing.assert_array_equal(out, expected)
    if kind != "dask":
        assert sorted(src.reads) == sorted(touched_chunks(bounds, starts, lengths))


@settings(max_examples=60, deadline=None)
@given(
    case=chunked_windows(max_ndim=2, max_windows=60),
    cache_chunks=st.integers(1, 5),
    kind=st.sampled_from(["counting", "submitting"]),
)
def test_vectorised_gather_in_waves_within_a_small_cache(case, cache_chunks, kind):
    """More touched chunks than half the cache: gathered in waves, still exact, the
    cache within its budget, and no chunk read more often than the waves need it."""
    bounds, starts, lengths = case
    shape = tuple(int(b[-1]) for b in bounds)
    array = np.arange(math.prod(shape), dtype=np.float64).reshape(shape)
    chunks = tuple(tuple(np.diff(b).tolist()) for b in bounds)
    src = (CountingSource if kind == "counting" else SubmittingSource)(array, chunks)
    cache = BlockCache(cache_chunks * src.chunk_nbytes)
    out = gather(src, WindowRequest(starts, lengths, starts[0].size), cache)
    for k in range(starts[0].size):
        window = tuple(
            slice(s[k], s[k] + n) for s, n in zip(starts, lengths, strict=True)
        )
        np.testing.assert_array_equal(out[k], array[window])
    assert cache.stats()["resident_bytes"] <= cache.max_bytes
    touched = touched_chunks(bounds, starts, lengths)
    assert set(src.reads) == touched
    waves = list(
        reader._waves(
            src, plan_windows(src.bounds, starts, lengths), cache.max_bytes // 2
        )
    )
    for cid in touched:
        assert src.reads.count(cid) <= sum(cid in ids for _, ids in waves)


def test_windows_across_a_chunk_edge_are_cut_from_a_small_stitched_block():
    """A few windows crossing a chunk edge are copied from a block covering just
    them, not from the bounding box of every window of their starting chunk."""
    array = np.arange(400 * 400, dtype=np.float64).reshape(400, 400)
    src = CountingSource(array, ((100,) * 4, (400,)))  # 320 KB chunks
    rng = np.random.default_rng(0)
    ys = np.append(rng.integers(0, 96, 49), 98)  # the last one crosses row 100
    xs = rng.integers(0, 384, 50)
    request = WindowRequest((ys, xs), (4, 16), 50)
    cache = BlockCache(2**24)
    gather(src, request, cache)  # the chunks are cached now
    tracemalloc.start()
    try:
        out = gather(src, request, cache)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    for k in range(50):
        np.testing.assert_array_equal(
            out[k], array[ys[k] : ys[k] + 4, xs[k] : xs[k] + 16]
        )
    # the output (25.6 KB), one group's intermediate copy and a 4x16 stitched block
    assert peak < 3 * out.nbytes + 16384, peak


def test_groups_are_gathered_while_later_chunks_still_decode(monkeypatch):
    """With a source that decodes in a pool, the windows of chunks already decoded
    are copied while the later chunks decode: chunk 1 is held back until chunk 0's
    windows have been gathered (it would wait forever if the reader waited for
    every chunk first)."""
    array = np.arange(40.0)
    gate = threading.Event()
    src = SubmittingSource(array, ((10, 10, 10, 10),), gates={(1,): gate})
    original = reader._gather_group

    def gather_group(*args, **kwargs):
        group = args[2]
        lo = group.lo if hasattr(group, "lo") else group[1]
        result = original(*args, **kwargs)
        if lo == (0,):
            gate.set()
        return result

    monkeypatch.setattr(reader, "_gather_group", gather_group)
    starts = (np.array([12, 1, 33, 5, 25, 14, 0]),)
    out = gather(src, WindowRequest(starts, (3,), 7), BlockCache(2**20))
    assert src.gate_timeouts == []
    for k, s in enumerate(starts[0]):
        np.testing.assert_array_equal(out[k], array[s : s + 3])
    assert sorted(src.reads) == [(0,), (1,), (2,), (3,)]


# --------------------------------------------------------------------------- interrupts
class _Once:
    """Wrap ``original`` so that its ``n``-th call raises KeyboardInterrupt, before
    (``when="before"``) or after (``"after"``: the call's effect happened, as when
    Ctrl-C lands just as it returns) running it.

    With ``thread`` set, calls made on the decode and gather pools' workers do not
    count: Ctrl-C never reaches them, and a BaseException raised in a worker's
    future callback would kill the worker (and, after two tests, the pool)."""

    def __init__(self, original, n, when="before"):
        self.original, self.n, self.when = original, n, when
        self.calls = 0
        self.fired = False
        self.thread = None
        self.lock = threading.Lock()

    def __call__(self, *args, **kwargs):
        with self.lock:
            counted = (
                self.thread is None
                or not threading.current_thread().name.startswith(
                    ("xbatcher-decode", "xbatcher-gather")
                )
            )
            self.calls += counted
            fire = counted and self.calls == self.n and not self.fired
            self.fired = self.fired or fire
        if fire and self.when == "before":
            raise KeyboardInterrupt
        result = self.original(*args, **kwargs)
        if fire:
            raise KeyboardInterrupt
        return result

    def as_method(self):
        def method(*args, **kwargs):
            return self(*args, **kwargs)

        return method


def _interrupt_data(backend, tmp_path):
    # windows of 6 steps every 4 over chunks of 4: most windows span two chunks
    da = xr.DataArray(
        np.arange(40 * 8, dtype=np.float64).reshape(40, 8), dims=("time", "x"), name="v"
    )
    if backend == "dask":
        return da, da.chunk(time=4)
    da.to_dataset().chunk(time=4).to_zarr(tmp_path / "s.zarr", consolidated=False)
    opened = xr.open_dataset(
        tmp_path / "s.zarr", engine="zarr", chunks=None, consolidated=False
    )
    return da, opened["v"]


def _run_guarded(fn, timeout=60, interrupt=None):
    """Run ``fn`` in a thread; fail (instead of hanging CI) if it does not finish.
    ``interrupt`` (an ``_Once``) fires on that thread or the prefetch thread only,
    unless it is a source read (whose errors travel through futures)."""
    out = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as err:  # reported below
            out["error"] = err

    t = threading.Thread(target=target, daemon=True)
    if interrupt is not None:
        interrupt.thread = t  # not on the pools' workers
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "a read waits forever on a chunk claimed by no reader"
    if "error" in out:
        raise out["error"]
    return out.get("value")


INJECTIONS = {
    # name: (object, attribute, n-th call, when, backends where that step runs on
    # the consumer's or the prefetcher's thread)
    "claim-after": (BlockCache, "claim", 2, "after", ("dask", "zarr")),
    "claim-later": (BlockCache, "claim", 7, "after", ("dask", "zarr")),
    "put-before": (BlockCache, "put", 2, "before", ("dask",)),
    "put-after": (BlockCache, "put", 3, "after", ("dask",)),
    "dask-read": (DaskSource, "read_chunks", 2, "before", ("dask",)),
    "zarr-submit": ("ZarrSource", "submit_chunk", 2, "before", ("zarr",)),
    "zarr-decode": ("ZarrSource", "_read_chunk", 3, "before", ("zarr",)),
}


# a generator closed on its own prefetch thread once tried to join that thread
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("path", ["xarray", "arrays"])
@pytest.mark.parametrize(
    ("point", "backend"),
    [(p, b) for p, spec in sorted(INJECTIONS.items()) for b in spec[-1]],
)
def test_interrupt_never_leaves_a_chunk_claimed(
    monkeypatch, tmp_path, backend, path, point
):
    """Ctrl-C (or any BaseException) at any step of a chunk read, then a new
    iteration: every batch still equals ``isel`` and nothing hangs."""
    from xbatcher.sources import _zarr

    owner, attr, n, when, _ = INJECTIONS[point]
    if owner == "ZarrSource":
        owner = _zarr.ZarrSource
    da, source = _interrupt_data(backend, tmp_path)
    # one batch per group, so the background prefetcher claims chunks as well
    monkeypatch.setattr(_iteration, "_GROUP_BYTES", 1)
    bgen = xb.BatchGenerator(source, {"time": 6}, input_overlap={"time": 2})
    expected = [da.isel(time=slice(4 * i, 4 * i + 6)) for i in range(len(bgen))]

    def epoch():
        return list(bgen.arrays if path == "arrays" else bgen)

    wrapper = _Once(getattr(owner, attr), n, when)
    monkeypatch.setattr(owner, attr, wrapper.as_method())
    try:
        anywhere = point in ("zarr-decode", "dask-read")  # source reads
        _run_guarded(epoch, interrupt=None if anywhere else wrapper)
    except KeyboardInterrupt:
        pass
    monkeypatch.undo()
    assert wrapper.fired
    batches = _run_guarded(epoch)
    assert len(batches) == len(expected)
    for got, want in zip(batches, expected, strict=True):
        np.testing.assert_array_equal(np.asarray(got), want.values)
    _run_guarded(lambda: _wait_until_settled(bgen.block_cache))


def _wait_until_settled(cache):
    while cache.claimed():  # decodes started by the prefetcher may still run
        time.sleep(0.01)


@pytest.mark.parametrize("how", ["close", "interrupt"])
@pytest.mark.parametrize("backend", ["dask", "zarr"])
def test_consumer_abandoning_an_epoch_leaves_no_claim(
    monkeypatch, tmp_path, backend, how
):

    da, source = _interrupt_data(backend, tmp_path)
    monkeypatch.setattr(_iteration, "_GROUP_BYTES", 1)
    bgen = xb.BatchGenerator(source, {"time": 6}, input_overlap={"time": 2})

    def abandon():
        it = iter(bgen.arrays)
        next(it), next(it)
        if how == "close":
            it.close()  # GeneratorExit inside the iteration
            return
        with contextlib.suppress(KeyboardInterrupt):
            it.throw(KeyboardInterrupt)

    _run_guarded(abandon)
    batches = _run_guarded(lambda: list(bgen.arrays))
    for i, got in enumerate(batches):
        np.testing.assert_array_equal(got, da.values[4 * i : 4 * i + 6])
    _run_guarded(lambda: _wait_until_settled(bgen.block_cache))


def test_released_claim_wakes_waiters_who_load_it_themselves():
    cache = BlockCache(2**20)
    assert cache.claim("k") == (None, None)
    _, future = cache.claim("k")
    assert future is not None
    cache.release("k")
    with pytest.raises(reader.ReleasedClaim):
        future.result(timeout=5)
    assert cache.claimed() == [] and cache.claim("k") == (None, None)
    # an interruption passed to fail() is the interrupted thread's, not the waiters'
    _, waiter = cache.claim("k")
    cache.fail("k", KeyboardInterrupt())
    with pytest.raises(reader.ReleasedClaim):
        waiter.result(timeout=5)
    assert cache.claimed() == []


def test_cancelled_or_interrupted_chunk_task_releases_its_claim():
    from concurrent.futures import Future

    cache = BlockCache(2**20)
    for outcome in ("cancel", "interrupt", "error"):
        key = ("v", outcome)
        assert cache.claim(key) == (None, None)
        _, waiter = cache.claim(key)
        task = Future()
        if outcome == "cancel":
            task.cancel()  # e.g. a pool shut down with cancel_futures=True
        elif outcome == "interrupt":
            task.set_exception(KeyboardInterrupt())
        else:
            task.set_exception(OSError("gone"))
        _chunkfetch._settle(cache, key, task)
        assert cache.claimed() == []
        expected = OSError if outcome == "error" else reader.ReleasedClaim
        with pytest.raises(expected):
            waiter.result(timeout=5)


def test_interrupted_submit_releases_the_chunks_not_yet_handed_to_a_task():
    array = np.arange(400.0).reshape(20, 20)

    class Submitting(CountingSource):
        submits_chunks = True

        def submit_chunk(self, cid):
            if cid == (2, 0):
                raise KeyboardInterrupt
            return reader.worker_pool("decode").submit(
                lambda: self.read_chunks([cid])[0]
            )

    src = Submitting(array, (regular_chunks(20, 5), (20,)))
    cache = BlockCache(2**20)
    request = WindowRequest((np.array([0]), np.array([0])), (20, 20), 1)
    with pytest.raises(KeyboardInterrupt):
        gather(src, request, cache)
    src.submit_chunk = lambda cid: reader.worker_pool("decode").submit(
        lambda: src.read_chunks([cid])[0]
    )
    out = _run_guarded(lambda: gather(src, request, cache))
    np.testing.assert_array_equal(out[0], array)
    _run_guarded(lambda: _wait_until_settled(cache))


def test_closing_an_iteration_never_waits_for_its_prefetcher(monkeypatch, tmp_path):
    """An abandoned iteration is closed wherever its last reference goes: by the
    garbage collector, in a thread that may hold a lock the prefetch job waits for
    (dask's tokenize lock did, in a run of the tests above). Closing must not wait
    for the prefetch job, or both threads wait forever."""

    da, source = _interrupt_data("dask", tmp_path)
    monkeypatch.setattr(_iteration, "_GROUP_BYTES", 1)
    bgen = xb.BatchGenerator(source, {"time": 6}, input_overlap={"time": 2})
    lock = threading.Lock()
    started = threading.Event()
    original = _iteration._prefetch

    def prefetch_needing_the_lock(self, *args):
        started.set()
        with lock:
            return original(self, *args)

    monkeypatch.setattr(_iteration, "_prefetch", prefetch_needing_the_lock)

    def abandon_while_holding_the_lock():
        with lock:
            it = iter(bgen.arrays)
            first = next(it)
            assert started.wait(30)
            it.close()  # as the garbage collector would, in this thread
        return first

    first = _run_guarded(abandon_while_holding_the_lock)
    np.testing.assert_array_equal(first, da.values[0:6])
    monkeypatch.undo()
    batches = _run_guarded(lambda: list(bgen.arrays))
    for i, got in enumerate(batches):
        np.testing.assert_array_equal(got, da.values[4 * i : 4 * i + 6])
    _run_guarded(lambda: _wait_until_settled(bgen.block_cache))


# ------------------------------------------------- gathers share only idle cores
def test_a_big_gather_shares_only_the_cores_that_decodes_leave_idle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XBATCHER_NUM_THREADS", "4")
    big = reader._PARALLEL_GATHER_BYTES
    helpers = {}
    for in_flight in (0, 1, 3, 4, 9):
        monkeypatch.setattr(reader._decoding, "count", in_flight)
        helpers[in_flight] = (
            reader.gather_helpers(big),
            reader.gather_helpers(big - 1),
        )
    # the caller gathers; each unfinished decode keeps one more core busy
    assert helpers == {0: (3, 0), 1: (2, 0), 3: (0, 0), 4: (0, 0), 9: (0, 0)}


def test_decodes_in_flight_are_counted_until_each_one_ends() -> None:
    array = np.arange(64 * 8, dtype=np.float32).reshape(64, 8)
    gates = {(k, 0): threading.Event() for k in range(4)}
    source = SubmittingSource(array, (regular_chunks(64, 16), (8,)), gates=gates)
    cache = BlockCache(2**20)
    request = WindowRequest((np.arange(0, 64, 8), np.zeros(8, np.int64)), (8, 8), 8)
    before = reader._decoding.count
    reader.prefetch(source, request, cache)  # starts the 4 decodes, waits for none
    assert reader._decoding.count == before + 4
    for gate in gates.values():
        gate.set()
    out = reader.gather(source, request, cache)
    np.testing.assert_array_equal(
        out, np.stack([array[s : s + 8] for s in range(0, 64, 8)])
    )
    deadline = time.monotonic() + 10
    while reader._decoding.count != before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert reader._decoding.count == before
    assert sorted(source.reads) == sorted(gates)  # each chunk decoded once
