"""``cache=`` with a Cache or URL: hit == miss on every backend, keys that cannot go
stale, split parts that keep their entries, corrupt entries recovered, backend
faults survived."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xbatcher as xb
from conftest import RedisServer, make_dataset, schemas
from xbatcher.caches import BatchCache, Cache, MemoryCache, RedisCache, open_cache
from xbatcher.errors import CacheWarning

CASES: dict[str, dict[str, Any]] = {
    "window": dict(input_dims={"lat": 4, "lon": 5}),
    "stacked": dict(input_dims={"lat": 4}),
    "concat": dict(
        input_dims={"lat": 5, "lon": 6}, batch_dims={"time": 2}, concat_input_dims=True
    ),
    "sample": dict(input_dims={"lat": 5, "lon": 4}, batch_size=7, shuffle=True, seed=1),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("kind", ["DataArray", "Dataset"])
def test_hit_identical_to_miss_on_every_backend(
    make_cache: Callable[[], Cache], case: str, kind: str
) -> None:
    ds = make_dataset()
    obj = ds["air"] if kind == "DataArray" else ds
    fresh = xb.BatchGenerator(obj, **CASES[case])
    first = xb.BatchGenerator(obj, cache=make_cache(), **CASES[case])
    misses = [first[i] for i in range(len(first))]
    cache = make_cache()
    before = cache.stats()
    second = xb.BatchGenerator(obj, cache=cache, **CASES[case])
    for i in range(len(second)):
        hit = second[i]
        assert type(hit) is type(fresh[i])
        xr.testing.assert_identical(hit, misses[i])
        xr.testing.assert_identical(hit, fresh[i])
        # the same order too (assert_identical ignores it; a repr or a loop
        # over the coordinates does not)
        assert list(hit.coords) == list(fresh[i].coords)
        assert list(hit.xindexes) == list(fresh[i].xindexes)
        if isinstance(hit, xr.Dataset):
            assert list(hit.data_vars) == list(fresh[i].data_vars)
    after = cache.stats()
    assert after["hits"] - before["hits"] == len(second)
    assert after["misses"] == before["misses"]
    # iteration goes through the cache as well
    for hit, want in zip(second, fresh, strict=True):
        xr.testing.assert_identical(hit, want)


def test_url_argument_and_values_against_isel() -> None:
    ds = make_dataset()
    bgen = xb.BatchGenerator(ds, {"lat": 5, "lon": 6}, cache="memory://?max_bytes=8MB")
    assert isinstance(bgen._batch_cache, BatchCache)
    want = ds.isel(lat=slice(5, 10), lon=slice(6, 12))
    for _ in range(2):
        batch = bgen[3]
        xr.testing.assert_identical(
            batch, xb.BatchGenerator(ds, {"lat": 5, "lon": 6})[3]
        )
        np.testing.assert_array_equal(
            batch["air"].values,
            want["air"].stack(sample=("time", "level")).transpose("sample", ...).values,
        )
    assert bgen._batch_cache.cache.stats()["hits"] == 1


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    lat=st.integers(1, 10),
    lon=st.integers(1, 12),
    batch_size=st.one_of(st.none(), st.integers(1, 6)),
    scale=st.sampled_from([1.0, 2.0]),
    prep=st.sampled_from(["none", "double", "tag"]),
)
def test_generators_sharing_a_cache_never_see_each_others_entries(
    lat: int, lon: int, batch_size: int | None, scale: float, prep: str
) -> None:
    cache = MemoryCache("64MB")
    ds = make_dataset()[["air"]]
    preps: dict[str, Any] = {
        "none": None,
        "double": _double,
        "tag": _tag,
    }
    # fill the cache with batches of a fixed generator first, then of the drawn one
    base = xb.BatchGenerator(ds, {"lat": 5, "lon": 6}, cache=cache)
    for i in range(len(base)):
        base[i]
    params: dict[str, Any] = {"input_dims": {"lat": lat, "lon": lon}}
    if batch_size is not None:
        params["batch_size"] = batch_size
    data = ds * scale
    fresh = xb.BatchGenerator(data, **params)
    bgen = xb.BatchGenerator(data, cache=cache, cache_preprocess=preps[prep], **params)
    for _ in range(2):  # miss, then hit
        for i in range(min(len(bgen), 6)):
            want = fresh[i] if preps[prep] is None else preps[prep](fresh[i])
            xr.testing.assert_identical(bgen[i], want)


def _double(batch: Any) -> Any:
    return batch * 2


def _tag(batch: Any) -> Any:
    return batch.assign_attrs(tag=1)


@pytest.mark.parametrize("store", ["dict", "cache"])
def test_split_parts_sharing_one_store_keep_their_entries(store: str) -> None:
    """Before: the 0.4 layout keyed by batch index, so part B overwrote part A's
    batch 0 and every pass recomputed everything."""
    calls: list[int] = []

    def prep(batch: Any) -> Any:
        calls.append(1)
        return batch

    ds = make_dataset()
    cache: Any = {} if store == "dict" else MemoryCache("64MB")
    parts = xb.BatchGenerator(
        ds, {"time": 2, "lat": 5}, cache=cache, cache_preprocess=prep
    ).split("time", train=4, val=2)
    for part in parts.values():
        for i in range(len(part)):
            part[i]
    filled = len(calls)
    assert filled == sum(len(p) for p in parts.values())
    for name, part in parts.items():
        fresh = xb.BatchGenerator(
            ds.isel(time=slice(0, 4) if name == "train" else slice(4, 6)),
            {"time": 2, "lat": 5},
        )
        for i in range(len(part)):
            xr.testing.assert_identical(part[i], fresh[i])
    assert len(calls) == filled  # the second pass was all hits
    if store == "dict":
        assert "0/.zgroup" in cache  # 0.4's layout for the first writer


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_corrupt_entry_is_dropped_recomputed_and_rewritten(
    tmp_path: Path, damage: str
) -> None:
    ds = make_dataset()
    cache = open_cache(str(tmp_path / "c"))
    bgen = xb.BatchGenerator(ds, {"lat": 5, "lon": 6}, cache=cache)
    good = bgen[2]
    bc = bgen._batch_cache
    assert isinstance(bc, BatchCache)
    key = bc.key(bgen.batch_units(2))
    raw = bytearray(cache.get(key) or b"")
    if damage == "truncate":
        bad = bytes(raw[: len(raw) // 2])
    elif damage == "flip":
        raw[len(raw) - 10] ^= 0xFF
        bad = bytes(raw)
    else:
        bad = b"not a cache entry at all"
    cache.put(key, bad)
    with pytest.warns(CacheWarning, match="dropped a corrupt cache entry"):
        again = bgen[2]
    xr.testing.assert_identical(again, good)
    assert cache.get(key) not in (None, bad)  # rewritten
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        xr.testing.assert_identical(bgen[2], good)  # a clean hit now


def test_redis_killed_mid_epoch_warns_once_and_keeps_batches_correct(
    redis_server: RedisServer,
) -> None:
    ds = make_dataset()
    cache = RedisCache(redis_server.url, prefix="kill:", timeout=2.0)
    bgen = xb.BatchGenerator(ds, {"lat": 5, "lon": 4}, cache=cache)
    fresh = xb.BatchGenerator(ds, {"lat": 5, "lon": 4})
    bc = bgen._batch_cache
    assert isinstance(bc, BatchCache)
    bc.guarded.retry_after = 0.0  # retry at every call: the server is back below
    n = len(bgen)
    for i in range(n // 2):
        xr.testing.assert_identical(bgen[i], fresh[i])
    redis_server.kill()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(n):
            xr.testing.assert_identical(bgen[i], fresh[i])
    cache_warnings = [w for w in caught if issubclass(w.category, CacheWarning)]
    assert len(cache_warnings) == 1
    assert "batches keep coming from the source" in str(cache_warnings[0].message)
    assert bc.guarded.errors >= n  # every call failed fast, none hung
    redis_server.start()  # same port: the cache is used again
    written = cache.stats()["bytes_written"]
    for i in range(n):
        xr.testing.assert_identical(bgen[i], fresh[i])
    assert cache.stats()["bytes_written"] > written
    assert cache.stats()["hits"] >= 0 and cache.get(bc.key(bgen.batch_units(0)))


def test_unreachable_s3_endpoint_is_skipped_with_one_warning() -> None:
    from conftest import _free_port

    opts = {
        "key": "k",
        "secret": "s",
        "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{_free_port()}"},
        "config_kwargs": {"connect_timeout": 1, "retries": {"max_attempts": 1}},
    }
    ds = make_dataset()
    cache = open_cache("s3://nobucket/x", storage_options=opts)
    bgen = xb.BatchGenerator(ds, {"lat": 5, "lon": 6}, cache=cache)
    fresh = xb.BatchGenerator(ds, {"lat": 5, "lon": 6})
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        batches = [bgen[i] for i in range(4)]
    for i, batch in enumerate(batches):
        xr.testing.assert_identical(batch, fresh[i])
    caught = [w for w in record if issubclass(w.category, CacheWarning)]
    assert len(caught) == 1 and "failed" in str(caught[0].message)


def test_bad_cache_argument_names_the_choices() -> None:
    with pytest.raises(TypeError, match=r"Cache, a cache URL.*MutableMapping.*got int"):
        xb.BatchGenerator(make_dataset(), {"lat": 4}, cache=42)
    with pytest.raises(ValueError, match="unknown cache URL scheme 'ftp'"):
        xb.BatchGenerator(make_dataset(), {"lat": 4}, cache="ftp://x/y")


def test_unencodable_batch_raises_typed_error() -> None:
    from xbatcher.errors import CacheEncodeError

    ds = make_dataset().assign_attrs(bad={1, 2})
    bgen = xb.BatchGenerator(ds, {"lat": 5}, cache="memory://")
    with pytest.raises(CacheEncodeError, match="values of type set"):
        bgen[0]


def test_pickled_generator_shares_a_persistent_cache(tmp_path: Path) -> None:
    import pickle

    ds = make_dataset()
    bgen = xb.BatchGenerator(ds, {"lat": 5, "lon": 6}, cache=f"file://{tmp_path}/c")
    want = bgen[1]
    clone = pickle.loads(pickle.dumps(bgen))
    got = clone[1]
    xr.testing.assert_identical(got, want)
    assert clone._batch_cache.cache.stats()["hits"] == 1
    np.testing.assert_array_equal(got["air"].values, want["air"].values)


@pytest.mark.filterwarnings("ignore::xbatcher.errors.XbatcherWarning")
@settings(max_examples=30, deadline=None)
@given(case=schemas(), kind=st.sampled_from(["DataArray", "Dataset"]))
def test_hit_equals_miss_for_any_schema(
    case: tuple[dict[str, int], dict[str, Any]], kind: str
) -> None:
    from conftest import positional

    sizes, params = case
    obj = positional(sizes, kind)
    cache = MemoryCache("64MB")
    fresh = xb.BatchGenerator(obj, **params)
    first = xb.BatchGenerator(obj, cache=cache, **params)
    second = xb.BatchGenerator(obj, cache=cache, **params)
    misses = [first[i] for i in range(len(first))]
    hits_before = cache.stats()["hits"]
    for i in range(len(second)):
        hit = second[i]
        assert type(hit) is type(fresh[i])
        xr.testing.assert_identical(hit, misses[i])
        xr.testing.assert_identical(hit, fresh[i])
    assert cache.stats()["hits"] - hits_before == len(second)


def test_a_failed_build_releases_its_lease(tmp_path: Path) -> None:
    """Otherwise the next request of that batch would wait LEASE_SECONDS."""
    fail = [True]

    def prep(batch: Any) -> Any:
        if fail[0]:
            raise RuntimeError("preprocessing failed")
        return batch

    cache = open_cache(str(tmp_path / "c"))
    bgen = xb.BatchGenerator(
        make_dataset(), {"lat": 5}, cache=cache, cache_preprocess=prep
    )
    with pytest.raises(RuntimeError, match="preprocessing failed"):
        bgen[0]
    bc = bgen._batch_cache
    assert isinstance(bc, BatchCache)
    key = bc.key(bgen.batch_units(0))
    assert cache.lease(key, 30.0)  # free: the failed builder gave it up
    cache.release(key)
    fail[0] = False
    xr.testing.assert_identical(
        bgen[0], xb.BatchGenerator(make_dataset(), {"lat": 5})[0]
    )
    assert cache.lease(key, 30.0)  # released after the save too


@pytest.mark.parametrize("case", ["window", "stacked", "sample"])
def test_entries_written_before_the_stored_order_still_decode(case: str) -> None:
    """An entry whose header lacks ``order``/``index_order`` (written before they
    were stored) decodes to the same batch, in the order it always had."""
    import json
    import struct

    from xbatcher.caches import _codec

    batch = xb.BatchGenerator(make_dataset(), **CASES[case])[1]
    entry = _codec.encode(batch)
    start = len(_codec._MAGIC) + _codec._DIGEST
    body = entry[start:]
    (size,) = struct.unpack("<I", body[:4])
    header = json.loads(body[4 : 4 + size])
    assert "order" in header and "index_order" in header
    del header["order"], header["index_order"]
    text = json.dumps(header, separators=(",", ":")).encode()
    old_body = struct.pack("<I", len(text)) + text + body[4 + size :]
    old = _codec._MAGIC + _codec._digest(old_body) + old_body
    decoded = _codec.decode(old)
    xr.testing.assert_identical(decoded, batch)
    assert set(decoded.coords) == set(batch.coords)
