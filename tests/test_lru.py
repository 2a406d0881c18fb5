"""The byte-bounded LRU with single-flight loads (xbatcher.lru), on any values."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import threading
from collections import OrderedDict
from concurrent.futures import Future

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from xbatcher.lru import BlockCache, ByteLRU, ReleasedClaim, nbytes

keys = st.integers(min_value=0, max_value=7)
values = st.binary(max_size=12)


class LRUAgainstAModel(RuleBasedStateMachine):
    """Random put/get/claim/clear sequences on ``bytes`` values (``sizeof=len``),
    checked after every step against an ordered dict that evicts from the front."""

    def __init__(self) -> None:
        super().__init__()
        self.budget = 16
        self.cache: ByteLRU[int, bytes] = ByteLRU(self.budget, sizeof=len)
        self.model: OrderedDict[int, bytes] = OrderedDict()
        self.hits = self.misses = self.evictions = self.loaded = 0

    def _use(self, key: int) -> bytes | None:
        if key in self.model:
            self.model.move_to_end(key)
            self.hits += 1
            return self.model[key]
        self.misses += 1
        return None

    @rule(key=keys, value=values)
    def put(self, key: int, value: bytes) -> None:
        self.cache.put(key, value)
        self.loaded += len(value)
        if key in self.model or len(value) > self.budget:
            return  # a cached key keeps its value; an oversized value is not kept
        self.model[key] = value
        while sum(map(len, self.model.values())) > self.budget:
            self.model.popitem(last=False)
            self.evictions += 1

    @rule(key=keys)
    def get(self, key: int) -> None:
        assert self.cache.get(key) == self._use(key)

    @rule(key=keys, value=values)
    def claim_then_put(self, key: int, value: bytes) -> None:
        hit, future = self.cache.claim(key)
        assert future is None  # nothing else is loading in this machine
        assert hit == self._use(key)
        if hit is None:
            assert self.cache.claimed() == [key]
            self.put(key, value)
        assert self.cache.claimed() == []

    @rule(key=keys)
    def contains(self, key: int) -> None:
        assert (key in self.cache) == (key in self.model)  # not a use: no reorder

    @rule()
    def clear(self) -> None:
        self.cache.clear()
        self.model.clear()

    @invariant()
    def same_contents_in_lru_order(self) -> None:
        assert list(self.cache._data.items()) == list(self.model.items())

    @invariant()
    def within_budget_and_stats_consistent(self) -> None:
        stats = self.cache.stats()
        resident = sum(map(len, self.model.values()))
        assert stats["resident_bytes"] == resident <= self.budget
        assert stats["resident_items"] == len(self.cache) == len(self.model)
        assert (stats["hits"], stats["misses"]) == (self.hits, self.misses)
        assert stats["evictions"] == self.evictions
        assert stats["loaded_bytes"] == self.loaded


TestLRUAgainstAModel = LRUAgainstAModel.TestCase
TestLRUAgainstAModel.settings = settings(max_examples=60, deadline=None)


@settings(max_examples=40, deadline=None)
@given(
    budget=st.integers(0, 100),
    sizes=st.lists(st.integers(0, 120), max_size=30),
)
def test_never_above_budget_and_oversized_values_not_kept(budget, sizes):
    cache: ByteLRU[int, bytes] = ByteLRU(budget, sizeof=len)
    for i, size in enumerate(sizes):
        cache.put(i, bytes(size))
        assert cache.stats()["resident_bytes"] <= budget
        assert (i in cache) == (size <= budget)  # the newest stays unless oversized
    assert cache.stats()["loaded_bytes"] == sum(sizes)


def _load_from_threads(cache, n_threads, load):
    """``n_threads`` threads, released together, each ``get_or_load`` one key."""
    barrier = threading.Barrier(n_threads)
    results: list[object] = [None] * n_threads

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = cache.get_or_load("k", load)
        except BaseException as err:  # returned for the test to check
            results[i] = err

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
        assert not t.is_alive(), "a thread waits forever on a claim"
    return results


@settings(max_examples=15, deadline=None)
@given(n_threads=st.integers(2, 12))
def test_threads_asking_for_one_key_cause_exactly_one_load(n_threads):
    cache: ByteLRU[str, bytes] = ByteLRU(2**10, sizeof=len)
    calls = []
    gate = threading.Event()

    def load() -> bytes:
        calls.append(1)
        gate.wait(0.05)  # hold the claim a moment: the others find it in flight
        return b"value"

    results = _load_from_threads(cache, n_threads, load)
    assert len(calls) == 1
    assert results == [b"value"] * n_threads
    stats = cache.stats()
    assert stats["misses"] == 1 and stats["hits"] == n_threads - 1
    assert stats["loaded_bytes"] == 5 and cache.claimed() == []


@settings(max_examples=10, deadline=None)
@given(n_threads=st.integers(2, 8))
def test_a_failed_load_reaches_every_waiter(n_threads):
    cache: ByteLRU[str, bytes] = ByteLRU(2**10, sizeof=len)
    error = OSError("storage gone")
    calls = []
    waiters_in = threading.Event()

    def load() -> bytes:
        calls.append(1)
        waiters_in.wait(0.05)
        raise error

    results = _load_from_threads(cache, n_threads, load)
    # waiters that claimed while the load ran got its error; any later thread
    # found no claim and tried (and failed) itself: never a hang, never a value
    assert all(r is error for r in results)
    assert cache.claimed() == [] and "k" not in cache
    assert 1 <= len(calls) <= n_threads


def test_waiters_get_the_error_of_the_load_they_waited_on():
    cache: ByteLRU[str, bytes] = ByteLRU(2**10, sizeof=len)
    assert cache.claim("k") == (None, None)
    waiters = [cache.claim("k")[1] for _ in range(5)]
    assert all(w is waiters[0] for w in waiters) and waiters[0] is not None
    cache.fail("k", ValueError("bad chunk"))
    for waiter in waiters:
        with pytest.raises(ValueError, match="bad chunk"):
            waiter.result(timeout=5)
    assert cache.claimed() == [] and cache.claim("k") == (None, None)


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, GeneratorExit, SystemExit])
def test_an_interrupted_load_releases_its_claim(interrupt):
    """The interruption is the loader's own: waiters are woken with ReleasedClaim
    (get_or_load then loads the value itself), and nothing stays claimed."""
    cache: ByteLRU[str, bytes] = ByteLRU(2**10, sizeof=len)
    started, waiting = threading.Event(), threading.Event()
    got: list[object] = []

    def interrupted_load() -> bytes:
        started.set()
        waiting.wait(5)
        raise interrupt

    def waiter() -> None:
        started.wait(5)
        _, future = cache.claim("k")
        assert future is not None
        waiting.set()
        with pytest.raises(ReleasedClaim):
            future.result(timeout=5)
        got.append(cache.get_or_load("k", lambda: b"second try"))

    t = threading.Thread(target=waiter)
    t.start()
    with pytest.raises(interrupt):
        cache.get_or_load("k", interrupted_load)
    t.join(10)
    assert not t.is_alive() and got == [b"second try"]
    assert cache.claimed() == [] and cache.get("k") == b"second try"


def test_release_and_fail_of_an_unclaimed_key_do_nothing():
    cache: ByteLRU[str, bytes] = ByteLRU(10, sizeof=len)
    cache.release("k")
    cache.fail("k", OSError())
    assert cache.claimed() == [] and cache.claim("k") == (None, None)


def test_an_oversized_value_reaches_waiters_but_is_not_kept():
    cache: ByteLRU[str, bytes] = ByteLRU(4, sizeof=len)
    assert cache.claim("k") == (None, None)
    _, waiter = cache.claim("k")
    assert isinstance(waiter, Future)
    cache.put("k", b"too big")
    assert waiter.result(timeout=5) == b"too big"
    assert "k" not in cache and cache.stats()["resident_bytes"] == 0


def test_pickles_as_an_empty_cache_with_the_same_budget_and_sizeof():
    cache: ByteLRU[str, bytes] = ByteLRU(100, sizeof=len)
    cache.put("a", b"xyz")
    cache.claim("b")
    copy = pickle.loads(pickle.dumps(cache))
    assert type(copy) is ByteLRU and copy.max_bytes == 100 and copy.sizeof is len
    assert len(copy) == 0 and copy.claimed() == [] and copy.stats()["hits"] == 0
    copy.put("c", b"12")
    assert copy.stats()["resident_bytes"] == 2
    blocks = pickle.loads(pickle.dumps(BlockCache(64)))
    assert type(blocks) is BlockCache and blocks.max_bytes == 64
    assert blocks.sizeof is nbytes


def test_block_cache_is_the_lru_on_arrays_with_chunk_stats():
    cache = BlockCache(200)
    cache.put(("v", (0,)), np.zeros(10))
    cache.put(("v", (1,)), np.zeros(20))  # 80 + 160 bytes: (0,) is evicted
    assert cache.get(("v", (0,))) is None
    assert cache.stats() == {
        "hits": 0,
        "misses": 1,
        "evictions": 1,
        "resident_bytes": 160,
        "resident_chunks": 1,
        "decoded_bytes": 240,
    }


_FORKED: list[ByteLRU[str, bytes]] = []


def _child_view(queue) -> None:
    cache = _FORKED[0]
    queue.put((cache.claimed(), cache.get("a"), cache.claim("b")))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_forgets_claims_but_keeps_values():
    """A DataLoader worker forks while a parent thread holds a claim: the child
    must not wait on that thread (gone in the child), and keeps the values."""
    cache: ByteLRU[str, bytes] = ByteLRU(100, sizeof=len)
    cache.put("a", b"kept")
    assert cache.claim("b") == (None, None)  # a parent loader, gone in the child
    _FORKED[:] = [cache]
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_view, args=(queue,))
    child.start()
    try:
        claimed, kept, claim = queue.get(timeout=30)
    finally:
        child.join(30)
        _FORKED.clear()
    assert (claimed, kept, claim) == ([], b"kept", (None, None))
    assert cache.claimed() == ["b"]  # the parent's claim is untouched
    cache.release("b")
