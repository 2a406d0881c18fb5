"""Every cache backend against one contract (tests/cache_contract.py), the registry,
and the pickle-free codec."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cache_contract import CacheContract
from xbatcher.caches import (
    Cache,
    FsspecCache,
    MemoryCache,
    RedisCache,
    decode,
    encode,
    known_schemes,
    open_cache,
)
from xbatcher.errors import (
    CacheCorruptError,
    CacheEncodeError,
    OptionalDependencyError,
    UnknownCacheError,
)


# --------------------------------------------------------------------------- backends
class TestMemory(CacheContract):
    persistent = False
    shared_across_processes = False

    @pytest.fixture
    def cache(self) -> Cache:
        return open_cache("memory://?max_bytes=16MB")

    @pytest.fixture
    def twin(self) -> None:
        return None

    def test_evicts_least_recently_used_beyond_budget(self) -> None:
        c = MemoryCache(100)
        c.put("a", b"x" * 60)
        c.put("b", b"y" * 30)
        assert c.get("a") is not None  # "a" is now the most recent
        c.put("c", b"z" * 30)  # 120 bytes: "b" goes
        assert c.get("b") is None and c.get("a") and c.get("c")
        assert c.stats()["bytes"] == 90


class TestLocalDir(CacheContract):
    persistent = True
    shared_across_processes = True
    coordinates_leases = True

    @pytest.fixture
    def cache(self, tmp_path: Path) -> Cache:
        return open_cache(f"file://{tmp_path}/cache.zarr")

    @pytest.fixture
    def twin(self, tmp_path: Path) -> Cache:
        return open_cache(str(tmp_path / "cache.zarr"))  # a plain path works too

    def test_no_temporary_file_is_left(self, cache: Cache, tmp_path: Path) -> None:
        for i in range(5):
            cache.put(f"x/{i}", b"1" * 1000)
        names = [p.name for p in (tmp_path / "cache.zarr").rglob("*") if p.is_file()]
        assert sorted(names) == [str(i) for i in range(5)]


class TestS3(CacheContract):
    persistent = True
    shared_across_processes = True

    @pytest.fixture
    def cache(self, s3_endpoint: dict[str, Any]) -> Cache:
        url = f"s3://xbatcher-test/cache-{uuid.uuid4().hex[:8]}"
        self._url = url
        return open_cache(url, storage_options=s3_endpoint)

    @pytest.fixture
    def twin(self, cache: Cache, s3_endpoint: dict[str, Any]) -> Cache:
        return FsspecCache(self._url, storage_options=s3_endpoint)


class TestRedis(CacheContract):
    persistent = True
    shared_across_processes = True
    coordinates_leases = True

    @pytest.fixture
    def cache(self, redis_url: str) -> Iterator[Cache]:
        prefix = f"t{uuid.uuid4().hex[:8]}:"
        self._prefix = prefix
        c = open_cache(redis_url, prefix=prefix)
        yield c
        c.clear()

    @pytest.fixture
    def twin(self, cache: Cache, redis_url: str) -> Cache:
        return open_cache(f"{redis_url}?prefix={self._prefix}")

    def test_clear_keeps_other_prefixes(self, redis_url: str) -> None:
        a = RedisCache(redis_url, prefix="a*[x]:")  # glob characters are escaped
        b = RedisCache(redis_url, prefix="a")
        a.put("k", b"1")
        b.put("k", b"2")
        a.clear()
        assert a.get("k") is None and b.get("k") == b"2"
        b.clear()

    def test_ttl_expires_entries(self, redis_url: str) -> None:
        c = RedisCache(redis_url, prefix=f"ttl{uuid.uuid4().hex[:6]}:", ttl=60)
        c.put("k", b"v")
        ms = c.client.pttl(c.prefix + "k")
        assert 0 < ms <= 60_000
        c.clear()

    def test_bad_ttl(self) -> None:
        with pytest.raises(ValueError, match=r"ttl must be a positive number.*got -1"):
            RedisCache("redis://localhost:1/0", ttl=-1)

    def test_password_and_query_options(self, redis_server: Any) -> None:
        from conftest import RedisServer

        secured = RedisServer("--requirepass", "s3cret").start()
        try:
            url = f"redis://:s3cret@127.0.0.1:{secured.port}/0?prefix=pw:&ttl=30"
            c = open_cache(url)
            assert isinstance(c, RedisCache) and c.prefix == "pw:" and c.ttl == 30
            c.put("k", b"v")
            assert c.get("k") == b"v"
            assert "s3cret" not in repr(c) and str(secured.port) in repr(c)
            wrong = RedisCache(secured.url, password="nope")
            import redis

            with pytest.raises(redis.exceptions.AuthenticationError):
                wrong.get("k")
        finally:
            secured.kill()


# --------------------------------------------------------------------------- registry
def test_unknown_scheme_lists_known_ones() -> None:
    with pytest.raises(
        UnknownCacheError,
        match=r"unknown cache URL scheme 'ftp'.*known schemes: file, memory, redis",
    ):
        open_cache("ftp://host/x")
    assert {"memory", "file", "s3", "redis", "rediss"} <= set(known_schemes())
    assert issubclass(UnknownCacheError, ValueError)


def test_missing_dependency_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "redis" else real(name, *a),
    )
    with pytest.raises(
        OptionalDependencyError, match=r'pip install "xbatcher\[redis\]"'
    ):
        open_cache("redis://localhost:6379/0")
    with pytest.raises(ImportError):
        open_cache("redis://localhost:6379/0")


def test_urls_pick_backends(tmp_path: Path) -> None:
    assert isinstance(open_cache("memory://"), MemoryCache)
    assert open_cache("memory://?max_bytes=2GB").max_bytes == 2_000_000_000  # type: ignore[attr-defined]
    assert isinstance(open_cache(f"file://{tmp_path}"), FsspecCache)
    assert isinstance(open_cache("redis://localhost:1/0"), RedisCache)  # lazy connect


# --------------------------------------------------------------------------- codec
DTYPES = st.sampled_from(
    ["<f8", ">f4", "<i2", "u1", "?", "<c16", "<M8[ns]", "<m8[s]", "<U3", "S2", "<i8"]
)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_codec_arrays_round_trip_exactly(data: st.DataObject) -> None:
    dtype = np.dtype(data.draw(DTYPES))
    shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
    arr = data.draw(hnp.arrays(dtype, shape))
    back = decode(encode(arr))
    assert back.shape == arr.shape and back.dtype == arr.dtype  # byte order kept
    assert back.tobytes() == arr.astype(back.dtype).tobytes()  # NaN and NaT too
    assert back.flags.writeable


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 6),
    name=st.one_of(st.none(), st.text(max_size=5), st.integers(-3, 3)),
    attrs=st.dictionaries(
        st.text(max_size=4),
        st.one_of(
            st.integers(-(2**40), 2**40),
            st.floats(allow_nan=False),
            st.text(max_size=5),
            st.booleans(),
            st.none(),
            st.lists(st.integers(0, 9), max_size=3),
            st.tuples(st.integers(0, 9), st.text(max_size=2)),
        ),
        max_size=4,
    ),
)
def test_codec_xarray_round_trip_identically(
    n: int, name: Any, attrs: dict[str, Any]
) -> None:
    times = pd.date_range("2001-01-01", periods=n, freq="h").values
    da = xr.DataArray(
        np.arange(n * 3, dtype="float32").reshape(n, 3),
        dims=("time", "x"),
        coords={
            "time": times,
            "x": [True, False, True],
            "lab": ("x", ["a", "bb", "c"]),
        },
        name=name,
        attrs=attrs,
    )
    for obj in (
        da,
        da.to_dataset(name="v").assign_attrs(attrs),
        da.stack(s=("time", "x")),
    ):
        back = decode(encode(obj))
        assert type(back) is type(obj)
        xr.testing.assert_identical(back, obj)
        for k, v in obj.attrs.items():
            assert type(back.attrs[k]) is type(v)


def test_codec_keeps_the_sample_multiindex() -> None:
    import xbatcher as xb

    ds = xr.Dataset(
        {"a": (("y", "x"), np.arange(30.0).reshape(5, 6))},
        coords={"y": np.arange(5) * 2, "x": np.arange(6) * 0.5},
    )
    bgen = xb.BatchGenerator(ds, {"x": 2}, batch_size=4, shuffle=True, seed=3)
    batch = bgen[0]
    back = decode(encode(batch))
    xr.testing.assert_identical(back, batch)
    assert list(back.indexes["sample"].names) == list(batch.indexes["sample"].names)


def test_codec_refuses_what_it_cannot_store_exactly() -> None:
    obj = xr.DataArray(np.array(["a", None], dtype=object), dims="x")
    with pytest.raises(CacheEncodeError, match="dtype object is not stored exactly"):
        encode(obj)
    with pytest.raises(CacheEncodeError, match="values of type set"):
        encode(xr.DataArray([1, 2], dims="x", attrs={"s": {1, 2}}))
    with pytest.raises(CacheEncodeError, match="non-str keys"):
        encode(xr.DataArray([1, 2], dims="x", attrs={"d": {1: 2}}))
    with pytest.raises(CacheEncodeError, match="got list"):
        encode([1, 2])  # type: ignore[arg-type]
    assert issubclass(CacheEncodeError, TypeError)


@settings(max_examples=40, deadline=None)
@given(cut=st.integers(0, 10_000), flip=st.integers(0, 10_000))
def test_codec_detects_truncation_and_corruption(cut: int, flip: int) -> None:
    entry = encode(xr.DataArray(np.arange(100.0), dims="x", name="v"))
    truncated = entry[: cut % len(entry)]
    with pytest.raises(CacheCorruptError):
        decode(truncated)
    corrupt = bytearray(entry)
    corrupt[flip % len(entry)] ^= 0x41
    with pytest.raises(CacheCorruptError):
        decode(bytes(corrupt))


def test_codec_never_unpickles() -> None:
    import pickle

    with pytest.raises(CacheCorruptError, match="not an xbatcher cache entry"):
        decode(pickle.dumps(np.arange(3)))


def test_codec_falls_back_to_public_constructors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The direct (private) xarray constructors are a speed-up only: if xarray
    changes them, decoding takes the public path and stays identical."""
    from xbatcher.caches import _codec

    real = _codec._build

    def build(header: Any, r: Any, direct: bool) -> Any:
        if direct:  # as if xarray renamed a private constructor
            raise AttributeError("_construct_direct is gone")
        return real(header, r, direct)

    ds = make_ds_for_codec()
    monkeypatch.setattr(_codec, "_DIRECT", [True])
    monkeypatch.setattr(_codec, "_build", build)
    back = decode(encode(ds))
    xr.testing.assert_identical(back, ds)
    assert _codec._DIRECT == [False]
    xr.testing.assert_identical(decode(encode(ds["v"])), ds["v"])


def make_ds_for_codec() -> xr.Dataset:
    return xr.Dataset(
        {"v": (("t", "x"), np.arange(6.0).reshape(2, 3), {"u": "K"})},
        coords={"t": pd.date_range("2000", periods=2), "x": [0.5, 1.5, 2.5]},
        attrs={"a": 1},
    )


def test_decoded_batches_do_not_share_attrs() -> None:
    ds = make_ds_for_codec()
    entry = encode(ds)
    a, b = decode(entry), decode(entry)
    a["x"].attrs["changed"] = 1
    a["v"].values[0, 0] = -1
    assert "changed" not in b["x"].attrs and b["v"].values[0, 0] == 0
