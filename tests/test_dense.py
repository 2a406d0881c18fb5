"""Dense buffers (``xbatcher._dense``): a small Zarr source decoded chunk by chunk
into one array, and windows gathered from it with one fancy index. Every test
compares with numpy indexing of the values written, and counts decodes."""

from __future__ import annotations

import gc
import multiprocessing
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xbatcher as xb
from xbatcher import _chunkfetch, _iteration, reader
from xbatcher._dense import DenseBuffer, dense_buffer, slots_contiguous
from xbatcher.errors import ChunkDecodeError
from xbatcher.reader import BlockCache, WindowRequest, gather
from xbatcher.sources import ZarrSource, make_source

DIMS = ("t", "y", "x")


def _store(path: Path, values: np.ndarray, chunks: tuple[int, ...]) -> xr.DataArray:
    """``values`` written to Zarr with ``chunks`` and reopened lazily (no dask)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        xr.Dataset({"v": (DIMS, values)}).to_zarr(
            path, mode="w", consolidated=False, encoding={"v": {"chunks": chunks}}
        )
        return xr.open_dataset(path, engine="zarr", chunks=None, consolidated=False)[
            "v"
        ]


def _values(shape: tuple[int, ...]) -> np.ndarray:
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape)


class _Decodes:
    """Counts the chunk decodes of ``ZarrSource`` (``_decode`` calls)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.n = 0
        self.lock = threading.Lock()
        original = ZarrSource._decode

        def counted(src: Any, *args: Any, **kwargs: Any) -> Any:
            with self.lock:
                self.n += 1
            return original(src, *args, **kwargs)

        monkeypatch.setattr(ZarrSource, "_decode", counted)


def _settled(check: Any) -> None:
    """Wait until ``check()`` holds: a slot is marked by its decode task's callback,
    which may run just after the reader that waited for the task has woken."""
    deadline = time.monotonic() + 30
    while not check():
        assert time.monotonic() < deadline, "the decode callbacks never ran"
        time.sleep(0.005)


def _expected(values: np.ndarray, starts: list[np.ndarray], lengths: tuple[int, ...]):
    return np.stack(
        [
            values[tuple(slice(s, s + n) for s, n in zip(ss, lengths, strict=True))]
            for ss in zip(*(a.tolist() for a in starts), strict=True)
        ]
    )


# ------------------------------------------------------------------ slot layout
@settings(max_examples=200, deadline=None)
@given(
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    data=st.data(),
)
def test_slots_contiguous_says_when_every_slot_is_one_run(shape, data):
    lists = []
    for n in shape:
        cuts = (
            data.draw(st.sets(st.integers(1, n - 1), max_size=n - 1))
            if n > 1
            else set()
        )
        lists.append([0, *sorted(cuts), n])
    whole = np.empty(shape, dtype=np.float32)
    runs = all(
        whole[
            tuple(slice(b[i], b[i + 1]) for b, i in zip(lists, cid, strict=True))
        ].flags.c_contiguous
        for cid in np.ndindex(*(len(b) - 1 for b in lists))
    )
    assert slots_contiguous(tuple(lists)) == runs


# ------------------------------------------------------------------ gathers
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_gather_through_the_dense_buffer_equals_numpy(tmp_path_factory, data):
    """Random shapes, chunks along the first dims only (slots contiguous) or along
    any dim, and random windows, also across chunk edges: the same values as numpy;
    each chunk decoded once however many requests touch it."""
    shape = tuple(data.draw(st.integers(2, 9)) for _ in range(3))
    first_only = data.draw(st.booleans())
    chunks = tuple(
        data.draw(st.integers(1, n)) if (d == 0 or not first_only) else n
        for d, n in enumerate(shape)
    )
    values = _values(shape)
    da = _store(tmp_path_factory.mktemp("z") / "a.zarr", values, chunks)
    src = make_source("v", da.variable)
    cache = BlockCache(2**24)
    lengths = tuple(data.draw(st.integers(1, n)) for n in shape)
    for _ in range(3):
        count = data.draw(st.integers(2, 40))
        starts = [
            np.asarray(
                data.draw(
                    st.lists(st.integers(0, n - w), min_size=count, max_size=count)
                ),
                dtype=np.int64,
            )
            for n, w in zip(shape, lengths, strict=True)
        ]
        got = gather(src, WindowRequest(tuple(starts), lengths, count), cache)
        np.testing.assert_array_equal(got, _expected(values, starts, lengths))
    dense = dense_buffer(src, cache)
    many = np.prod([len(b) - 1 for b in src.bound_lists]) > 1
    assert (dense is not None) == (many and slots_contiguous(src.bound_lists))
    assert cache.stats()["decoded_bytes"] <= values.nbytes


def test_each_chunk_decoded_once_and_kept_after_eviction(tmp_path, monkeypatch):
    values = _values((12, 8, 8))
    src = make_source("v", _store(tmp_path / "a.zarr", values, (3, 8, 8)).variable)
    decodes = _Decodes(monkeypatch)
    cache = BlockCache(2**20)
    rng = np.random.default_rng(0)
    starts = [
        rng.integers(0, 12 - 1, 50),
        rng.integers(0, 5, 50),
        rng.integers(0, 5, 50),
    ]
    request = WindowRequest(tuple(starts), (2, 4, 4), 50)
    want = _expected(values, starts, (2, 4, 4))
    np.testing.assert_array_equal(gather(src, request, cache), want)
    assert decodes.n == 4
    dense = dense_buffer(src, cache)
    assert dense is not None
    _settled(lambda: dense.complete)
    cache.clear()  # every chunk evicted: they come back from their slots
    np.testing.assert_array_equal(gather(src, request, cache), want)
    np.testing.assert_array_equal(
        reader.read_region(src, (slice(0, 12), slice(0, 8), slice(0, 8)), cache), values
    )
    assert decodes.n == 4
    assert len(cache) == 4  # re-entered, as read-only views of their slots
    for cid in [(0, 0, 0), (3, 0, 0)]:
        block = cache.get(("v", cid))
        assert block is not None and block.base is dense.array
        assert not block.flags.writeable


def test_no_dense_buffer_beyond_half_the_cache(tmp_path):
    """A source bigger than what is left of half the cache gets no buffer and is
    gathered chunk by chunk: the same values."""
    a = make_source(
        "a", _store(tmp_path / "a.zarr", _values((8, 8, 8)), (2, 8, 8)).variable
    )
    b = make_source(
        "b", _store(tmp_path / "b.zarr", _values((8, 8, 8)) + 1, (2, 8, 8)).variable
    )
    cache = BlockCache(2 * a.nbytes + 100)  # half holds one of them
    assert dense_buffer(a, cache) is not None
    assert dense_buffer(b, cache) is None
    assert dense_buffer(b, BlockCache(2 * b.nbytes - 2)) is None
    starts = (np.array([0, 5, 3]), np.array([0, 1, 4]), np.array([2, 0, 4]))
    request = WindowRequest(starts, (3, 4, 4), 3)
    for src, offset in ((a, 0), (b, 1)):
        want = _expected(_values((8, 8, 8)) + offset, list(starts), (3, 4, 4))
        np.testing.assert_array_equal(gather(src, request, cache), want)


def test_a_damaged_chunk_leaves_its_slot_free(tmp_path, monkeypatch):
    """A decode that fails raises ChunkDecodeError and never marks its slot held;
    once the chunk is readable again, the next read writes the slot."""
    values = _values((6, 4, 4))
    src = make_source("v", _store(tmp_path / "a.zarr", values, (2, 4, 4)).variable)
    cache = BlockCache(2**20)
    original = ZarrSource._decode
    broken = {"on": True}

    def decode(self: Any, raw: Any, key: str, out: Any = None) -> Any:
        if broken["on"] and "c/1/" in key:
            if out is not None:
                out[...] = -1  # half-written garbage
            raise ChunkDecodeError(f"chunk {key!r} is damaged")
        return original(self, raw, key, out)

    monkeypatch.setattr(ZarrSource, "_decode", decode)
    starts = (np.array([0, 2, 4]), np.array([0, 0, 0]), np.array([0, 0, 0]))
    request = WindowRequest(starts, (2, 4, 4), 3)
    with pytest.raises(ChunkDecodeError, match="damaged"):
        gather(src, request, cache)
    dense = dense_buffer(src, cache)
    assert dense is not None and not dense.holds([(1, 0, 0)])
    freed = []  # free again (once the failed task's callback ran): nobody writes it
    _settled(lambda: freed.append(dense.begin((1, 0, 0))) or freed[-1] is not None)
    assert not dense.holds([(1, 0, 0)])
    dense.abandon((1, 0, 0))
    broken["on"] = False
    np.testing.assert_array_equal(
        gather(src, request, cache), values.reshape(3, 2, 4, 4)
    )
    _settled(lambda: dense.complete)


def test_slot_marked_late_still_gathers_from_the_buffer(tmp_path, monkeypatch):
    """A waiter wakes when a decode returns, before the callback that marks its slot
    held runs: the gather must still read the buffer (not fall back)."""
    values = _values((9, 4, 4))
    src = make_source("v", _store(tmp_path / "a.zarr", values, (3, 4, 4)).variable)
    settle = _chunkfetch._settle_slot

    def late(*args: Any) -> None:
        time.sleep(0.05)
        settle(*args)

    monkeypatch.setattr(_chunkfetch, "_settle_slot", late)
    fallbacks = []
    wave = reader._gather_wave
    monkeypatch.setattr(
        reader, "_gather_wave", lambda *a: fallbacks.append(1) or wave(*a)
    )
    starts = (np.array([8, 0, 4, 1]), np.zeros(4, np.int64), np.zeros(4, np.int64))
    got = gather(src, WindowRequest(starts, (1, 4, 4), 4), BlockCache(2**20))
    np.testing.assert_array_equal(got, values[[8, 0, 4, 1]][:, np.newaxis])
    assert fallbacks == []


def test_buffer_protocol():
    values = _values((4, 2, 2))

    class Src:
        shape, dtype = values.shape, values.dtype
        bound_lists = ([0, 2, 4], [0, 2], [0, 2])
        bounds = tuple(np.array(b) for b in bound_lists)
        nchunks = (2, 1, 1)

    buf = DenseBuffer(Src())  # type: ignore[arg-type]
    slot = buf.begin((1, 0, 0))
    assert slot is not None and buf.begin((1, 0, 0)) is None  # one writer
    assert buf.held((1, 0, 0)) is None
    slot[...] = values[2:]
    view = buf.finish((1, 0, 0), slot)
    assert not view.flags.writeable and not buf.complete
    np.testing.assert_array_equal(buf.held((1, 0, 0)), values[2:])
    assert buf.holds([(1, 0, 0)]) and not buf.holds([(0, 0, 0)])
    buf.abandon((1, 0, 0))  # a held slot stays held
    assert buf.holds([(1, 0, 0)])


def _child_gather(args: Any) -> bool:
    src, cache, starts, want = args
    got = gather(src, WindowRequest(starts, (1, 4, 4), len(starts[0])), cache)
    return bool(np.array_equal(got, want))


def test_forked_child_gathers_from_the_inherited_buffer(tmp_path):
    """A forked child (a DataLoader worker) inherits a half-written buffer: the
    slots its parent was writing are free again there, the held ones are read."""
    values = _values((8, 4, 4))
    src = make_source("v", _store(tmp_path / "a.zarr", values, (2, 4, 4)).variable)
    cache = BlockCache(2**20)
    starts = (np.arange(8), np.zeros(8, np.int64), np.zeros(8, np.int64))
    gather(src, WindowRequest(tuple(a[:4] for a in starts), (1, 4, 4), 4), cache)
    dense = dense_buffer(src, cache)
    assert dense is not None and dense.begin((3, 0, 0)) is not None  # "writing"
    global _FORK_ARGS
    _FORK_ARGS = (src, cache, starts, values[:, np.newaxis])
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        assert pool.apply(_forked) is True
    dense.abandon((3, 0, 0))


_FORK_ARGS: Any = None


def _forked() -> bool:
    return _child_gather(_FORK_ARGS)


# ------------------------------------------------------------------ iteration
SHUFFLES = [True, "chunks", False]


def _windows(bgen: Any, i: int) -> list[tuple[int, int, int]]:
    units = bgen.plan.batch_units(bgen.epoch, i, i + 1)[0]
    w = bgen.engine.schema.unit_windows(units).starts
    return list(zip(w["t"].tolist(), w["y"].tolist(), w["x"].tolist(), strict=True))


@pytest.mark.parametrize("shuffle", SHUFFLES)
@pytest.mark.parametrize("path", ["arrays", "xarray"])
def test_epochs_equal_isel(tmp_path, shuffle, path):
    values = _values((20, 12, 12))
    da = _store(tmp_path / "a.zarr", values, (3, 12, 12))
    kw = {"seed": 3} if shuffle else {}
    bgen = xb.BatchGenerator(
        da, input_dims={"y": 4, "x": 4}, batch_size=7, shuffle=shuffle, **kw
    )
    for _ in range(2):
        expected = [
            np.stack([values[t, y : y + 4, x : x + 4] for t, y, x in _windows(bgen, i)])
            for i in range(len(bgen))
        ]
        got = list(bgen.arrays) if path == "arrays" else list(bgen)
        assert len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_array_equal(np.asarray(g), e)
    (src,) = bgen.engine.sources.values()
    assert dense_buffer(src, bgen.block_cache) is not None


def test_shuffled_groups_are_read_on_background_threads(tmp_path, monkeypatch):
    """A shuffle over chunked data reads several groups at once on the read
    threads; in order, the consumer's thread reads them (no such threads)."""
    values = _values((30, 8, 8))
    da = _store(tmp_path / "a.zarr", values, (5, 8, 8))
    monkeypatch.setattr(_iteration, "_SHUFFLE_GROUP_BYTES", 1)
    monkeypatch.setattr(_iteration, "_GROUP_BYTES", 1)
    monkeypatch.setenv("XBATCHER_NUM_THREADS", "2")
    seen: list[str] = []
    read = xb.engine.read_batches

    def spy(engine: Any, batches: Any) -> Any:
        seen.append(threading.current_thread().name)
        return read(engine, batches)

    monkeypatch.setattr(xb.generator, "read_batches", spy)
    for shuffle, threaded in ((True, True), ("chunks", True), (False, False)):
        seen.clear()
        kw = {"seed": 1} if shuffle else {}
        bgen = xb.BatchGenerator(
            da, input_dims={"y": 4, "x": 4}, batch_size=4, shuffle=shuffle, **kw
        )
        assert _iteration.reads_in_flight(bgen.engine, bgen.plan) == (
            2 if threaded else 0
        )
        got = list(bgen.arrays)
        assert len(got) == len(bgen) == len(seen)
        assert {n.startswith("xbatcher-read") for n in seen} == {threaded}


@pytest.mark.filterwarnings("ignore:shuffle=True draws each batch")
def test_no_concurrent_reads_for_a_full_shuffle_bigger_than_the_cache(tmp_path):
    da = _store(tmp_path / "a.zarr", _values((30, 8, 8)), (5, 8, 8))
    kw: dict[str, Any] = {"input_dims": {"y": 4, "x": 4}, "batch_size": 4, "seed": 1}
    big = xb.BatchGenerator(da, shuffle=True, block_cache_bytes=2**20, **kw)
    small = xb.BatchGenerator(da, shuffle=True, block_cache_bytes=4096, **kw)
    pools = xb.BatchGenerator(da, shuffle="chunks", block_cache_bytes=4096, **kw)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XBATCHER_NUM_THREADS", "3")
        assert _iteration.reads_in_flight(big.engine, big.plan) == 3
        assert _iteration.reads_in_flight(small.engine, small.plan) == 0
        assert _iteration.reads_in_flight(pools.engine, pools.plan) == 3
        mp.setenv("XBATCHER_NUM_THREADS", "1")
        assert _iteration.reads_in_flight(big.engine, big.plan) == 0
    values = _values((30, 8, 8))
    for bgen in (small, pools):
        expected = [
            np.stack([values[t, y : y + 4, x : x + 4] for t, y, x in _windows(bgen, i)])
            for i in range(len(bgen))
        ]
        for got, want in zip(bgen.arrays, expected, strict=True):
            np.testing.assert_array_equal(got, want)


def test_a_failed_group_read_raises_at_its_turn(tmp_path, monkeypatch):
    """Groups are read ahead, but the error of group k reaches the consumer after
    the batches before it, and the cursor counts exactly those."""
    values = _values((30, 8, 8))
    da = _store(tmp_path / "a.zarr", values, (5, 8, 8))
    monkeypatch.setattr(_iteration, "_SHUFFLE_GROUP_BYTES", 1)
    monkeypatch.setattr(_iteration, "_GROUP_BYTES", 1)
    bgen = xb.BatchGenerator(
        da, input_dims={"y": 4, "x": 4}, batch_size=4, shuffle=True, seed=1
    )
    bad = bgen.plan.batch_units(bgen.epoch, 5, 6)[0]
    read = xb.engine.read_batches

    def failing(engine: Any, batches: Any) -> Any:
        if any(np.array_equal(b, bad) for b in batches):
            raise OSError("store went away")
        return read(engine, batches)

    monkeypatch.setattr(xb.generator, "read_batches", failing)
    got = []
    with pytest.raises(OSError, match="went away"):
        for batch in bgen.arrays:
            got.append(batch)
    assert len(got) == 5
    assert bgen.state_dict()["position"] == 5
    for i, g in enumerate(got):
        want = np.stack(
            [values[t, y : y + 4, x : x + 4] for t, y, x in _windows(bgen, i)]
        )
        np.testing.assert_array_equal(g, want)


def test_abandoned_shuffled_epoch_never_hangs_and_the_next_is_right(tmp_path):
    values = _values((30, 8, 8))
    da = _store(tmp_path / "a.zarr", values, (5, 8, 8))
    bgen = xb.BatchGenerator(
        da, input_dims={"y": 4, "x": 4}, batch_size=2, shuffle=True, seed=2
    )
    it = iter(bgen.arrays)
    next(it)
    del it
    gc.collect()
    bgen.set_epoch(0)
    expected = [
        np.stack([values[t, y : y + 4, x : x + 4] for t, y, x in _windows(bgen, i)])
        for i in range(len(bgen))
    ]
    got = list(bgen.arrays)
    assert len(got) == len(expected)
    for g, want in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g, want)
    deadline = time.monotonic() + 30
    while bgen.block_cache.claimed() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert bgen.block_cache.claimed() == []


def test_concurrent_reads_hold_a_bounded_number_of_groups(tmp_path, monkeypatch):
    """Memory of a shuffled epoch read concurrently: the dense buffer, at most
    ``reads + 1`` groups being read or waiting and the group being consumed, plus
    the decode threads' reused read buffers (1 MiB each); the epoch's output is
    about 14x the buffer."""
    import tracemalloc

    values = _values((64, 64, 128))  # 2 MiB
    da = _store(tmp_path / "a.zarr", values, (8, 64, 128))
    monkeypatch.setenv("XBATCHER_NUM_THREADS", "2")
    group = 2**18
    monkeypatch.setattr(_iteration, "_SHUFFLE_GROUP_BYTES", group)
    monkeypatch.setattr(_iteration, "_GROUP_BYTES", group)
    # the chunk read-ahead plans the windows of this much output at once (its index
    # arrays would dominate the peak, concurrent reads or not)
    monkeypatch.setattr(_iteration, "_READAHEAD_BYTES", 2 * group)
    bgen = xb.BatchGenerator(
        da,
        input_dims={"y": 8, "x": 8},
        input_overlap={"y": 6, "x": 6},
        batch_size=8,
        shuffle=True,
        seed=0,
    )
    engine = bgen.engine
    assert len(bgen) * engine.batch_nbytes >= 12 * values.nbytes
    assert _iteration.group_size(engine, bgen.plan) * engine.batch_nbytes == group
    tracemalloc.start()
    try:
        n = 0
        for batch in bgen.arrays:
            n += 1
            del batch
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == len(bgen)
    reads = _iteration.reads_in_flight(engine, bgen.plan)
    assert reads == 2
    assert peak <= values.nbytes + (reads + 2) * group + 5 * 2**20


def test_full_shuffle_requests_every_chunk_up_front(tmp_path, monkeypatch):
    """A full shuffle of data that half the cache holds requests all its chunks
    when the iteration starts (each decoded once) and runs the sampler once for the
    whole epoch; bigger data, or a chunk-aware shuffle, plans the groups ahead."""
    values = _values((24, 8, 8))
    da = _store(tmp_path / "a.zarr", values, (3, 8, 8))
    decodes = _Decodes(monkeypatch)
    submitted = []
    submit = ZarrSource.submit_chunk

    def counted_submit(self: Any, cid: Any, *args: Any) -> Any:
        submitted.append(cid)
        return submit(self, cid, *args)

    monkeypatch.setattr(ZarrSource, "submit_chunk", counted_submit)
    monkeypatch.setattr(_iteration, "_SHUFFLE_GROUP_BYTES", 1)
    kw: dict[str, Any] = {"input_dims": {"y": 4, "x": 4}, "batch_size": 4, "seed": 5}
    bgen = xb.BatchGenerator(da, shuffle=True, **kw)
    expected = [
        np.stack([values[t, y : y + 4, x : x + 4] for t, y, x in _windows(bgen, i)])
        for i in range(len(bgen))
    ]
    calls = []
    units = xb.plan.EpochPlan.batch_units

    def counted(self: Any, *args: Any) -> Any:
        calls.append(args)
        return units(self, *args)

    monkeypatch.setattr(xb.plan.EpochPlan, "batch_units", counted)
    assert _iteration._reads_whole_data(bgen.plan, bgen.engine, len(bgen))
    it = iter(bgen.arrays)
    got = [next(it)]
    (src,) = bgen.engine.sources.values()
    # all requested by the first batch (not all decoded yet: 2 threads decode them)
    assert sorted(submitted) == sorted(np.ndindex(*src.nchunks)) and len(submitted) == 8
    got.extend(it)
    assert decodes.n == 8 and calls == [(bgen.epoch - 1, 0, len(bgen))]
    for g, want in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g, want)
    small = xb.BatchGenerator(
        da, shuffle=True, block_cache_bytes=4 * values.nbytes // 3, **kw
    )
    pools = xb.BatchGenerator(da, shuffle="chunks", **kw)
    for other in (small, pools):
        assert not _iteration._reads_whole_data(other.plan, other.engine, len(other))


def test_big_windows_across_chunk_edges(tmp_path):
    """Windows of 32 KiB (the size from which the per-chunk path copies window by
    window) gathered from the dense buffer with one fancy index, in order and
    shuffled, across the time chunks' edges: the values of isel."""
    values = _values((40, 32, 64))
    da = _store(tmp_path / "a.zarr", values, (6, 32, 64))
    for shuffle in (False, True):
        kw = {"seed": 1} if shuffle else {}
        bgen = xb.BatchGenerator(
            da,
            input_dims={"t": 8, "y": 32, "x": 32},
            input_overlap={"t": 5},
            batch_size=5,
            shuffle=shuffle,
            **kw,
        )
        assert bgen.engine.batch_nbytes == 5 * 8 * 32 * 32 * 4
        expected = [
            np.stack(
                [
                    values[t : t + 8, y : y + 32, x : x + 32]
                    for t, y, x in _windows(bgen, i)
                ]
            )
            for i in range(len(bgen))
        ]
        got = list(bgen.arrays)
        assert len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_array_equal(g, e)
        (src,) = bgen.engine.sources.values()
        assert dense_buffer(src, bgen.block_cache) is not None
