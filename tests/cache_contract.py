"""The contract every :class:`~xbatcher.caches.Cache` backend passes.

Subclass :class:`CacheContract` once per backend (``tests/test_caches.py``), set the
capability flags it must report, and give it a ``cache`` fixture that yields a
fresh, empty cache (and a ``twin`` fixture: a second cache object over the same
entries, as another process would open it, or ``None`` for a per-process cache).
"""

from __future__ import annotations

import pickle
import threading
from typing import ClassVar

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xbatcher as xb
from xbatcher.caches import Cache, decode, encode
from xbatcher.errors import InputTypeError, SchemaError

_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.differing_executors,
    ],
)
keys = st.from_regex(
    r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,20}(/[A-Za-z0-9_\-]{1,8}){0,3}", fullmatch=True
).filter(lambda k: ".." not in k)


class CacheContract:
    """Tests every cache backend passes."""

    persistent: ClassVar[bool]
    shared_across_processes: ClassVar[bool]
    #: whether lease() coordinates writers (else it always grants)
    coordinates_leases: ClassVar[bool] = False

    def test_capabilities(self, cache: Cache) -> None:
        assert cache.persistent is self.persistent
        assert cache.shared_across_processes is self.shared_across_processes

    def test_miss_then_hit_and_counters(self, cache: Cache) -> None:
        assert cache.get("a/1") is None
        assert not cache.contains("a/1") and "a/1" not in cache
        cache.put("a/1", b"hello")
        assert cache.get("a/1") == b"hello"
        assert cache.contains("a/1") and "a/1" in cache
        stats = cache.stats()
        assert (stats["hits"], stats["misses"]) == (1, 1)
        assert stats["bytes_read"] == 5 and stats["bytes_written"] == 5
        assert stats["bytes"] >= 5

    @_SETTINGS
    @given(data=st.dictionaries(keys, st.binary(max_size=300), max_size=6))
    def test_values_round_trip_exactly(
        self, cache: Cache, data: dict[str, bytes]
    ) -> None:
        cache.clear()
        # a key cannot be both an entry and a folder of entries on a file system
        names = sorted(data)
        data = {
            k: v
            for k, v in data.items()
            if not any(o != k and o.startswith(k + "/") for o in names)
            and not any(o != k and k.startswith(o + "/") for o in names)
        }
        for k, v in data.items():
            cache.put(k, v)
        for k, v in data.items():
            assert cache.get(k) == v

    def test_put_replaces_and_delete_removes(self, cache: Cache) -> None:
        cache.put("k", b"one")
        cache.put("k", b"two-longer")
        assert cache.get("k") == b"two-longer"
        cache.delete("k")
        assert cache.get("k") is None
        cache.delete("k")  # absent: nothing happens

    def test_clear_removes_every_entry(self, cache: Cache) -> None:
        for i in range(5):
            cache.put(f"b/{i}", bytes([i]) * 10)
        cache.clear()
        assert all(cache.get(f"b/{i}") is None for i in range(5))
        cache.put("b/0", b"again")  # still usable
        assert cache.get("b/0") == b"again"

    def test_bad_keys_and_values_are_refused(self, cache: Cache) -> None:
        with pytest.raises(SchemaError, match=r"cache key '\.\./x' is not allowed"):
            cache.put("../x", b"1")
        with pytest.raises(SchemaError, match="is not allowed"):
            cache.get("a//b")
        with pytest.raises(InputTypeError, match="cache key must be a str; got int"):
            cache.get(3)  # type: ignore[arg-type]
        with pytest.raises(InputTypeError, match="cache value must be bytes; got str"):
            cache.put("a", "text")  # type: ignore[arg-type]

    def test_batches_round_trip_identically(self, cache: Cache) -> None:
        ds = xr.Dataset(
            {"v": (("t", "x"), np.arange(40.0).reshape(4, 10), {"units": "K"})},
            coords={
                "t": np.arange("2000-01-01", "2000-01-05", dtype="datetime64[D]"),
                "x": np.arange(10),
            },
            attrs={"title": "t"},
        )
        bgen = xb.BatchGenerator(ds, {"x": 5}, batch_size=3, shuffle=True, seed=0)
        for i, batch in enumerate([bgen[0], bgen[1], bgen[0]["v"]]):
            cache.put(f"e/{i}", encode(batch))
            back = decode(cache.get(f"e/{i}") or b"")
            assert type(back) is type(batch)
            xr.testing.assert_identical(back, batch)

    def test_concurrent_writers_never_expose_a_partial_value(
        self, cache: Cache
    ) -> None:
        values = [bytes([i]) * (50_000 + 1000 * i) for i in range(4)]
        seen: list[bytes | None] = []
        errors: list[BaseException] = []

        def write(v: bytes) -> None:
            try:
                for _ in range(5):
                    cache.put("hot", v)
            except BaseException as err:  # pragma: no cover - reported below
                errors.append(err)

        def read() -> None:
            for _ in range(20):
                seen.append(cache.get("hot"))

        threads = [threading.Thread(target=write, args=(v,)) for v in values]
        threads.append(threading.Thread(target=read))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert all(s is None or s in values for s in seen)
        assert cache.get("hot") in values

    def test_pickled_copy(self, cache: Cache, twin: Cache | None) -> None:
        cache.put("p/1", b"shared")
        copy = pickle.loads(pickle.dumps(cache))
        if self.shared_across_processes:
            assert copy.get("p/1") == b"shared"
            assert twin is not None and twin.get("p/1") == b"shared"
        else:
            assert copy.get("p/1") is None  # a per-process cache travels empty

    def test_leases(self, cache: Cache, twin: Cache | None) -> None:
        import time

        assert cache.lease("l/1", 30.0)
        other = twin if twin is not None else cache
        if not self.coordinates_leases:
            assert other.lease("l/1", 30.0)  # no coordination: always granted
            return
        assert not other.lease("l/1", 30.0)  # held
        assert other.lease("l/2", 30.0)  # another key is free
        cache.release("l/1")
        assert other.lease("l/1", 0.05)  # released: free again
        time.sleep(0.3)
        assert cache.lease("l/1", 30.0)  # an expired lease is taken over
        cache.release("l/1")
        cache.release("l/1")  # releasing twice does nothing
        assert cache.get("l/1") is None  # a lease is not an entry

    def test_many_entries(self, cache: Cache) -> None:
        rng = np.random.default_rng(0)
        blobs = {f"m/{i}": rng.bytes(int(rng.integers(0, 5000))) for i in range(40)}
        for k, v in blobs.items():
            cache.put(k, v)
        assert {k: cache.get(k) for k in blobs} == blobs
