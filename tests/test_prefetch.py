"""Background prefetch (``xbatcher.prefetch``, ``bgen.prefetch(n)``): same batches in
the same order as plain iteration, bounded by a count and a byte budget, errors
re-raised in the consumer with their traceback, and never a thread left behind."""

from __future__ import annotations

import gc
import threading
import time
import traceback
import tracemalloc
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import dask.array
import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xbatcher as xb
from conftest import positional, schemas
from xbatcher.errors import InputTypeError, SchemaError, XbatcherWarning
from xbatcher.prefetch import Prefetcher, nbytes

POOLS = ("xbatcher-decode", "xbatcher-gather")  # process-wide, kept on purpose


def _wait(condition: Callable[[], bool], what: str) -> None:
    """Poll until ``condition()`` holds (a liveness guard, not a timing assert)."""
    deadline = time.monotonic() + 30
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


def _fill(items: Prefetcher[Any]) -> None:
    """Wait until the producers may start nothing more (budget full, or the end)."""
    shared = items._shared
    _wait(
        lambda: shared.end is not None or shared.stop or not shared.admit(),
        "the prefetch to fill its budget",
    )


def _new_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if t not in before and not t.name.startswith(POOLS)
    ]


def _assert_threads_end(before: set[threading.Thread]) -> None:
    for thread in _new_threads(before):
        thread.join(timeout=30)
    assert [t.name for t in _new_threads(before)] == []


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True))


def _chunked(n_batches: int = 40, chunks: int = 8) -> xr.DataArray:
    data = np.arange(n_batches * 4 * 6, dtype=np.float32).reshape(n_batches * 4, 6)
    return xr.DataArray(data, dims=("sample", "feature")).chunk(sample=chunks)


# ----------------------------------------------------------------------- values, order
@st.composite
def generators(draw: st.DrawFn) -> xb.BatchGenerator:
    sample_mode = draw(st.booleans())
    sizes, params = draw(schemas(sample_mode=sample_mode, max_windows=24))
    obj = positional(sizes, draw(st.sampled_from(["DataArray", "Dataset"])))
    if draw(st.booleans()):
        obj = obj.chunk({d: max(1, n // 2) for d, n in sizes.items()})
    if sample_mode:
        params["batch_size"] = draw(st.integers(1, 5))
        params["shuffle"] = draw(st.sampled_from([False, True, "chunks"]))
        params["seed"] = 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", XbatcherWarning)
        return xb.BatchGenerator(obj, **params)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bgen=generators(),
    n=st.integers(1, 6),
    max_bytes=st.one_of(st.none(), st.integers(0, 4096)),
    epoch=st.integers(0, 3),
)
def test_prefetch_yields_the_batches_of_plain_iteration_in_order(
    bgen: xb.BatchGenerator, n: int, max_bytes: int | None, epoch: int
) -> None:
    bgen.set_epoch(epoch)
    expected = list(bgen.arrays)
    assert bgen.epoch == epoch + 1
    bgen.set_epoch(epoch)
    with bgen.prefetch(n, max_bytes=max_bytes) as batches:
        got = list(batches)
    assert bgen.epoch == epoch + 1  # the epoch ended, as plain iteration ends it
    assert len(got) == len(expected) == len(bgen)
    assert all(_same(a, b) for a, b in zip(got, expected, strict=True))
    # the xarray form equals bgen[i]
    bgen.set_epoch(epoch)
    xarrays = list(bgen.prefetch(n, xarray=True))
    bgen.set_epoch(epoch)
    for i, batch in enumerate(xarrays):
        xr.testing.assert_identical(batch, bgen[i])


@pytest.mark.parametrize("shuffle", [False, True])
def test_prefetch_equals_plain_iteration_on_every_backend(
    source: xr.Dataset | xr.DataArray, shuffle: bool
) -> None:
    bgen = xb.BatchGenerator(
        source,
        {"lat": 4, "lon": 3},
        batch_size=5,
        shuffle=shuffle,
        seed=2 if shuffle else None,
    )
    expected = list(bgen.arrays)
    bgen.set_epoch(0)
    with bgen.prefetch(3, max_bytes="1MiB") as batches:
        got = list(batches)
    assert len(got) == len(expected) > 1
    assert all(_same(a, b) for a, b in zip(got, expected, strict=True))


def test_prefetch_follows_the_epochs_of_a_shuffled_generator() -> None:
    bgen = xb.BatchGenerator(_chunked(), {"feature": 6}, batch_size=4, shuffle=True)
    first = [b[:, 0].tolist() for b in bgen.prefetch(3)]
    second = [b[:, 0].tolist() for b in bgen.prefetch(3)]
    assert bgen.epoch == 2
    assert first != second  # a new order each epoch
    assert sorted(np.concatenate(first)) == sorted(np.concatenate(second))
    bgen.set_epoch(1)
    assert [b[:, 0].tolist() for b in bgen.arrays] == second


def test_state_dict_counts_delivered_batches_not_those_read_ahead() -> None:
    bgen = xb.BatchGenerator(_chunked(), {"feature": 6}, batch_size=4, shuffle=True)
    batches = bgen.prefetch(5)
    taken = [next(batches) for _ in range(7)]
    _fill(batches)
    assert batches.in_flight[0] == 5
    state = bgen.state_dict()
    assert (state["epoch"], state["position"]) == (0, 7)
    batches.close()
    # resuming from that state gives the batches not yet delivered
    other = xb.BatchGenerator(_chunked(), {"feature": 6}, batch_size=4, shuffle=True)
    other = other.with_sampler(bgen.sampler)
    other.load_state_dict(state)
    rest = list(other.prefetch(2))
    bgen.set_epoch(0)
    full = list(bgen.arrays)
    assert all(_same(a, b) for a, b in zip(taken + rest, full, strict=True))


def test_map_delivers_in_key_order_when_items_finish_out_of_order() -> None:
    second_done = threading.Event()

    def read(key: int) -> int:
        if key == 0:  # the first item finishes only after the second
            assert second_done.wait(timeout=30)
        if key == 1:
            second_done.set()
        return key * 10

    with Prefetcher(range(6), read, depth=3, threads=3) as items:
        assert list(items) == [0, 10, 20, 30, 40, 50]


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 3000), max_size=25),
    depth=st.integers(1, 6),
    threads=st.integers(1, 4),
    max_bytes=st.one_of(st.none(), st.integers(0, 8000)),
    fail_at=st.one_of(st.none(), st.integers(0, 30)),
    use_fn=st.booleans(),
)
def test_prefetcher_delivers_in_order_within_budget_then_the_error(
    sizes: list[int],
    depth: int,
    threads: int,
    max_bytes: int | None,
    fail_at: int | None,
    use_fn: bool,
) -> None:
    """Any sizes, depth, threads, byte budget and failing item: the items before
    the failure in order, then its error; never more than ``depth`` items (or,
    beyond one item, ``max_bytes``) ahead of the consumer; no thread left."""
    before = set(threading.enumerate())

    def make(k: int) -> np.ndarray[Any, Any]:
        if k == fail_at:
            raise LookupError(f"item {k}")
        return np.full(sizes[k], k % 251, dtype=np.uint8)

    def source() -> Iterator[np.ndarray[Any, Any]]:
        for k in range(len(sizes)):
            yield make(k)

    if use_fn:
        items = Prefetcher(range(len(sizes)), make, depth=depth, threads=threads,
                           max_bytes=max_bytes)  # fmt: skip
    else:
        items = Prefetcher(source(), depth=depth, max_bytes=max_bytes)
    got = []
    failed = fail_at is not None and fail_at < len(sizes)
    error: LookupError | None = None
    with items:
        while True:
            _fill(items)
            count, held = items.in_flight
            assert count <= depth
            if max_bytes is not None and count > 1:
                # admitted within the budget; each item being read when the last
                # one was admitted may have come out bigger than estimated
                assert held <= max_bytes + (threads if use_fn else 1) * max(sizes)
            try:
                got.append(next(items))
            except StopIteration:
                break
            except LookupError as exc:
                error = exc
                break
    assert (str(error) if error else None) == (f"item {fail_at}" if failed else None)
    stop = fail_at if failed else len(sizes)
    assert [int(a[0]) if a.size else None for a in got] == [
        k % 251 if sizes[k] else None for k in range(stop)
    ]
    _assert_threads_end(before)


# ----------------------------------------------------------------------- budgets
@pytest.mark.parametrize("depth", [1, 2, 5])
@pytest.mark.parametrize("threads", [1, 3])
def test_at_most_depth_items_are_read_ahead(depth: int, threads: int) -> None:
    produced = 0
    consumed = 0
    gaps: list[int] = []
    lock = threading.Lock()

    def read(key: int) -> int:
        nonlocal produced
        with lock:
            produced += 1
            gaps.append(produced - consumed)
        return key

    items = Prefetcher(range(30), read, depth=depth, threads=threads)
    for expected in range(30):
        # let the producers run as far ahead as they may before each item is taken
        _fill(items)
        assert items.in_flight[0] == min(depth, 30 - expected)
        assert next(items) == expected
        with lock:
            consumed += 1
    with pytest.raises(StopIteration):
        next(items)
    assert produced == 30
    # each read started with at most `depth` items ahead of the consumer (plus the
    # one it has just been handed), and the prefetch did run that far ahead
    assert max(gaps) == depth


def test_the_byte_budget_bounds_the_bytes_read_ahead() -> None:
    item = 1000  # bytes of each item

    def read(key: int) -> np.ndarray[Any, Any]:
        return np.full(item, key % 256, dtype=np.uint8)

    items = Prefetcher(range(20), read, depth=100, max_bytes=3500, threads=4)
    seen = []
    for _ in range(20):
        _fill(items)
        count, held = items.in_flight
        seen.append(count)
        assert held <= 3500
        next(items)
    assert max(seen) == 3  # 3 items of 1000 bytes fit in 3500, 4 do not
    # one item larger than the budget is still read (one at a time)
    big = Prefetcher(range(3), read, depth=4, max_bytes=10, item_bytes=item)
    assert [int(a[0]) for a in big] == [0, 1, 2]


def _peak_bytes(bgen: xb.BatchGenerator, n: int, max_bytes: int | None) -> int:
    """Peak traced memory while a consumer takes an epoch of ``bgen.prefetch`` with
    the producer always as far ahead as it may go."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        with bgen.prefetch(n, max_bytes=max_bytes) as batches:
            for _ in range(len(bgen)):
                _fill(batches)
                next(batches)
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_prefetch_memory_is_bounded_by_its_budget() -> None:
    # 256 batches of 64 KiB (16 MiB in all); plain iteration gathers 2 MiB groups
    data = np.arange(256 * 16 * 1024, dtype=np.float32).reshape(256 * 16, 1024)
    bgen = xb.BatchGenerator(xr.DataArray(data, dims=("s", "f")), {"s": 16})
    batch = bgen.engine.batch_nbytes
    assert batch == 64 * 2**10
    bounded = _peak_bytes(bgen, 4, None)
    by_bytes = _peak_bytes(bgen, 1000, 4 * batch)
    unbounded = _peak_bytes(bgen, 1000, None)
    # the producer holds the group it gathers (2 MiB) and the next one while it
    # reads it, plus the batches ahead: far less than the epoch
    assert bounded < 2 * 2**21 + 8 * batch
    assert by_bytes < 2 * 2**21 + 8 * batch
    assert unbounded > 12 * 2**20  # the same measure sees an unbounded prefetch


# ----------------------------------------------------------------------- threads
def test_no_thread_is_left_after_an_epoch_close_break_or_garbage_collection() -> None:
    bgen = xb.BatchGenerator(_chunked(), {"feature": 6}, batch_size=4, shuffle=True)
    list(bgen.arrays)  # start the process-wide decode pools
    before = set(threading.enumerate())

    list(bgen.prefetch(2))  # a whole epoch
    _assert_threads_end(before)

    batches = bgen.prefetch(2)
    next(batches)
    assert _new_threads(before)  # the producer runs
    batches.close()
    batches.close()  # twice is fine
    assert _new_threads(before) == []  # close() waits for the threads
    with pytest.raises(StopIteration):
        next(batches)

    with bgen.prefetch(3) as batches:
        for _ in batches:
            break
    assert _new_threads(before) == []

    batches = bgen.prefetch(2)
    next(batches)
    _fill(batches)
    assert batches.in_flight[0] == 2  # the producer waits on its budget
    del batches  # dropped mid-epoch, the producer blocked on its budget
    gc.collect()
    _assert_threads_end(before)

    class Holder:  # a reference cycle: only the cyclic collector frees it
        pass

    holder = Holder()
    holder.self = holder  # type: ignore[attr-defined]
    holder.batches = bgen.prefetch(2)  # type: ignore[attr-defined]
    next(holder.batches)  # type: ignore[attr-defined]
    del holder
    gc.collect()
    _assert_threads_end(before)


def test_many_abandoned_prefetchers_leave_no_threads() -> None:
    before = set(threading.enumerate())
    for k in range(20):
        items = Prefetcher(iter(range(100)), depth=2, threads=2)
        for _ in range(k % 4):
            next(items)
        del items
    gc.collect()
    _assert_threads_end(before)


# ----------------------------------------------------------------------- errors
def failing_read(key: int) -> int:
    if key == 3:
        raise KeyError(f"item {key} is corrupt")
    return key


def test_an_error_is_raised_in_the_consumer_with_its_traceback() -> None:
    before = set(threading.enumerate())
    items = Prefetcher(range(10), failing_read, depth=4, threads=2)
    assert [next(items) for _ in range(3)] == [0, 1, 2]  # earlier items first
    with pytest.raises(KeyError, match="item 3 is corrupt") as info:
        next(items)
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert "failing_read" in frames  # the producer thread's frames
    assert any("prefetch thread" in note for note in info.value.__notes__)
    with pytest.raises(StopIteration):
        next(items)
    _assert_threads_end(before)


def test_items_before_a_failure_still_come_when_they_finish_after_it() -> None:
    made: list[Prefetcher[int]] = []

    def read(key: int) -> int:
        if key == 1:  # still reading when item 2 fails
            _wait(lambda: bool(made) and made[0]._shared.stop, "item 2 to fail")
        if key == 2:
            raise ValueError("item 2 failed")
        return key

    items = Prefetcher(range(10), read, depth=4, threads=3)
    made.append(items)
    assert next(items) == 0
    assert next(items) == 1
    with pytest.raises(ValueError, match="item 2 failed"):
        next(items)


def test_an_error_of_the_source_iterator_is_raised_in_order() -> None:
    def source() -> Iterator[int]:
        yield 1
        yield 2
        raise OSError("the store went away")

    with Prefetcher(source(), depth=3) as items:
        assert next(items) == 1
        assert next(items) == 2
        with pytest.raises(OSError, match="store went away"):
            next(items)


def test_a_read_error_of_a_generator_reaches_the_consumer() -> None:
    def explode(block: np.ndarray[Any, Any], block_info: Any = None) -> Any:
        if block_info[0]["chunk-location"][0] == 2:
            raise RuntimeError("chunk 2 cannot be decoded")
        return block

    data = dask.array.zeros((40, 3), chunks=(8, 3)).map_blocks(explode, dtype=float)
    da = xr.DataArray(data, dims=("sample", "feature"))
    bgen = xb.BatchGenerator(da, {"sample": 4})
    plain = []
    with pytest.raises(RuntimeError, match="chunk 2"):
        for batch in bgen.arrays:
            plain.append(batch)
    got = []
    with pytest.raises(RuntimeError, match="chunk 2") as info:
        for batch in bgen.prefetch(3):
            got.append(batch)
    assert len(got) == len(plain)
    assert "explode" in [f.name for f in traceback.extract_tb(info.value.__traceback__)]


# ----------------------------------------------------------------------- arguments
def test_bad_arguments_raise_typed_errors() -> None:
    bgen = xb.BatchGenerator(_chunked(), {"feature": 6}, batch_size=4)
    with pytest.raises(SchemaError, match=r"n must be an int >= 1; got 0"):
        bgen.prefetch(0)
    with pytest.raises(InputTypeError, match=r"n must be an int >= 1; got 2.0"):
        bgen.prefetch(2.0)  # type: ignore[arg-type]
    with pytest.raises(SchemaError, match="max_bytes"):
        bgen.prefetch(2, max_bytes="lots")
    with pytest.raises(SchemaError, match=r"threads must be an int >= 1; got 0"):
        Prefetcher(range(3), threads=0)
    assert bgen.state_dict()["position"] == 0  # nothing started


def test_nbytes_counts_nested_batches() -> None:
    ds = xr.Dataset({"a": ("x", np.zeros(3))})
    assert nbytes({"x": np.zeros(4), "y": [np.zeros(2, "int8")], "n": None}) == 34
    assert nbytes((ds, np.zeros(1))) == 24 + 8


def _next_in_child(prefetcher: Prefetcher[int], out: Any) -> None:
    try:
        out.put(("item", next(prefetcher)))
    except Exception as err:  # reported to the parent, whatever it is
        out.put((type(err).__name__, str(err)))


@pytest.mark.skipif(
    "fork" not in __import__("multiprocessing").get_all_start_methods(),
    reason="needs the fork start method",
)
def test_a_forked_child_gets_an_error_instead_of_waiting_forever() -> None:
    import multiprocessing

    from xbatcher.errors import PrefetchForkError

    ctx = multiprocessing.get_context("fork")
    with Prefetcher(range(100), lambda i: i, depth=1) as prefetcher:
        assert next(prefetcher) == 0  # the threads run in this process
        out = ctx.Queue()
        child = ctx.Process(target=_next_in_child, args=(prefetcher, out))
        child.start()
        child.join(timeout=120)
        alive = child.is_alive()
        if alive:
            child.kill()
        assert not alive, "the forked child hung on the prefetcher"
        kind, message = out.get(timeout=10)
        assert kind == PrefetchForkError.__name__
        assert "a fork of it" in message and "bgen.prefetch" in message
        assert issubclass(PrefetchForkError, RuntimeError)
        assert next(prefetcher) == 1  # the parent's prefetcher still works
