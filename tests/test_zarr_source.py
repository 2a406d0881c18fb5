"""Direct Zarr chunk reads (``xbatcher.sources._zarr``) against xarray's own reading.

Every case writes a real Zarr store, opens it lazily with xarray, and checks that the
source :func:`~xbatcher.sources.make_source` picks reads each chunk exactly as xarray
reads the same region, and that generator batches equal ``isel`` of the same windows.
Encodings the direct path does not reproduce must fall back to the generic reader.
"""

from __future__ import annotations

import math
import multiprocessing
import pickle
import warnings
from typing import Any

import numcodecs
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

import xbatcher as xb
from reference import reference_batches, reference_sample_batches
from xbatcher.errors import ChunkDecodeError
from xbatcher.reader import BlockCache
from xbatcher.sources import LazySource, ZarrSource, make_source

SHAPE = (9, 10, 7)
CHUNKS = (4, 3, 7)


def _data(dtype: str = "float32") -> xr.Dataset:
    values = np.arange(np.prod(SHAPE)).reshape(SHAPE)
    return xr.Dataset(
        {"v": (("time", "lat", "lon"), values.astype(dtype), {"units": "K"})},
        coords={
            "time": pd.date_range("2001-01-01", periods=SHAPE[0]),
            "lat": np.linspace(-10.0, 10.0, SHAPE[1]),
        },
    )


def _open(path: Any, **kwargs: Any) -> xr.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return xr.open_dataset(
            path, engine="zarr", chunks=None, consolidated=False, **kwargs
        )


def _write(
    ds: xr.Dataset,
    path: Any,
    encoding: dict[str, Any],
    others: dict[str, Any] | None = None,
    **kwargs: Any,
) -> None:
    """Write ``ds`` with ``encoding`` for ``v`` (chunks CHUNKS) and ``others`` for
    the other variables."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(
            path,
            mode="w",
            consolidated=False,
            encoding={"v": {"chunks": CHUNKS, **encoding}, **(others or {})},
            **kwargs,
        )


def _check_chunks(src: Any, expected: np.ndarray) -> None:
    """Every chunk the source reports equals the same region of ``expected``, and
    the chunks tile the array."""
    ids = [tuple(c) for c in np.ndindex(*src.nchunks)]
    blocks = src.read_chunks(ids)
    covered = np.zeros(expected.shape, dtype=int)
    for cid, block in zip(ids, blocks, strict=True):
        region = src.chunk_region(cid)
        assert block.dtype == expected.dtype
        np.testing.assert_array_equal(block, expected[region])
        covered[region] += 1
    assert (covered == 1).all()


# name, dataset dtype, encoding, extra to_zarr kwargs, direct path expected
ENCODINGS = [
    ("zstd", "float32", {}, {}, True),
    ("blosc", "float32", {"compressors": (zarr.codecs.BloscCodec(),)}, {}, True),
    ("gzip", "int32", {"compressors": (zarr.codecs.GzipCodec(level=1),)}, {}, True),
    ("uncompressed", "float64", {"compressors": None}, {}, True),
    ("zarr-v2", "float32", {}, {"zarr_format": 2}, True),
    (
        "zarr-v2-blosc",
        "int16",
        {"compressors": (numcodecs.Blosc(cname="lz4"),)},
        {"zarr_format": 2},
        True,
    ),
    (
        "zarr-v2-filters",
        "int32",
        {"filters": (numcodecs.Delta(dtype="i4"),)},
        {"zarr_format": 2},
        False,
    ),
    ("sharded", "float32", {"shards": (8, 6, 7)}, {}, False),
    (
        "crc32c",
        "float32",
        {"compressors": (zarr.codecs.ZstdCodec(), zarr.codecs.Crc32cCodec())},
        {},
        False,
    ),
    (
        "big-endian",
        "float32",
        {"serializer": zarr.codecs.BytesCodec(endian="big")},
        {},
        False,
    ),
]


@pytest.mark.parametrize(
    ("dtype", "encoding", "kwargs", "direct"),
    [e[1:] for e in ENCODINGS],
    ids=[e[0] for e in ENCODINGS],
)
def test_encodings_read_like_xarray(tmp_path, dtype, encoding, kwargs, direct):
    path = tmp_path / "s.zarr"
    _write(_data(dtype), path, encoding, **kwargs)
    ds = _open(path)
    src = make_source("v", ds["v"].variable)
    assert isinstance(src, ZarrSource) is direct
    assert isinstance(src, LazySource)  # the fallback reads through xarray
    assert src.nchunks == tuple(-(-n // c) for n, c in zip(SHAPE, CHUNKS, strict=True))
    _check_chunks(src, _open(path)["v"].values)


def test_cf_decoding_is_applied_like_xarray(tmp_path):
    """Scale/offset, a _FillValue mask and time decoding are xarray's lazy functions:
    the direct path applies them to each decoded chunk."""
    ds = _data("float64")
    ds["v"][0, 0, :3] = np.nan
    ds["when"] = ("time", pd.date_range("1990-01-01", periods=SHAPE[0], freq="6h"))
    path = tmp_path / "cf.zarr"
    encoding = {"dtype": "int16", "scale_factor": 0.5, "add_offset": -3.0}
    _write(ds, path, {**encoding, "_FillValue": -32768}, {"when": {"chunks": (4,)}})
    opened = _open(path)
    expected = _open(path).load()
    for name in ("v", "when"):
        src = make_source(name, opened[name].variable)
        assert isinstance(src, ZarrSource)
        assert src.backing.funcs  # the CF functions were found
        _check_chunks(src, expected[name].values)
    assert np.isnan(expected["v"].values[0, 0, :3]).all()
    np.testing.assert_array_equal(expected["v"].values, ds["v"].values)


def test_missing_chunks_read_as_the_fill_value(tmp_path):
    path = tmp_path / "sparse.zarr"
    _write(_data(), path, {"_FillValue": -1.0})
    for t in (1, 2):  # chunks never written (or deleted) are absent from the store
        for f in (path / "v" / "c" / str(t)).rglob("*"):
            if f.is_file():
                f.unlink()
    files = [f for f in (path / "v" / "c").rglob("*") if f.is_file()]
    assert {f.relative_to(path / "v" / "c").parts[0] for f in files} == {"0"}
    src = make_source("v", _open(path)["v"].variable)
    assert isinstance(src, ZarrSource)
    expected = _open(path)["v"].values
    assert np.isnan(expected[4:]).all() and not np.isnan(expected[:4]).any()
    _check_chunks(src, expected)


def test_views_of_the_store_keep_their_offsets(tmp_path):
    """``isel`` before batching: chunk bounds follow the storage chunks inside the
    view, so each chunk is still decoded once."""
    path = tmp_path / "s.zarr"
    _write(_data(), path, {})
    full = _open(path)
    view = full.isel(time=slice(2, 9), lat=slice(1, 8)).isel(lat=slice(1, None))
    src = make_source("v", view["v"].variable)
    assert isinstance(src, ZarrSource)
    assert src.backing.offsets == (2, 2, 0)
    # storage chunks of 4 along time, 3 along lat, cut at the view's edges
    assert [list(np.diff(b)) for b in src.bounds] == [[2, 4, 1], [1, 3, 2], [7]]
    _check_chunks(src, view["v"].values)
    # an integer index drops a dim: not a plain view, so the generic reader
    assert not isinstance(make_source("v", full["v"].isel(lon=2).variable), ZarrSource)


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_any_view_of_any_chunking_reads_like_numpy(tmp_path_factory, data):
    shape = data.draw(st.tuples(*[st.integers(1, 9)] * 2), label="shape")
    chunks = tuple(data.draw(st.integers(1, n), label="chunk") for n in shape)
    values = np.arange(np.prod(shape), dtype=np.int32).reshape(shape)
    path = tmp_path_factory.mktemp("h") / "s.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        xr.Dataset({"v": (("a", "b"), values)}).to_zarr(
            path, mode="w", consolidated=False, encoding={"v": {"chunks": chunks}}
        )
    sel = {}
    for dim, n in zip(("a", "b"), shape, strict=True):
        start = data.draw(st.integers(0, n - 1), label=f"start[{dim}]")
        stop = data.draw(st.integers(start + 1, n), label=f"stop[{dim}]")
        sel[dim] = slice(start, stop)
    var = _open(path)["v"].isel(sel).variable
    src = make_source("v", var)
    assert isinstance(src, ZarrSource)
    _check_chunks(src, values[sel["a"], sel["b"]])


@pytest.mark.parametrize("shuffle", [False, "chunks", True])
def test_generator_batches_equal_isel(tmp_path, shuffle):
    path = tmp_path / "s.zarr"
    ds = _data()
    _write(ds, path, {})
    lazy = _open(path)
    params = {"input_dims": {"lat": 5, "lon": 7}, "input_overlap": {"lat": 2}}
    seed = 3 if shuffle else None
    bgen = xb.BatchGenerator(lazy, **params, batch_size=4, shuffle=shuffle, seed=seed)
    assert isinstance(bgen.engine.sources["v"], ZarrSource)
    expected = reference_sample_batches(_open(path).load(), **params, batch_size=1)
    by_number = {int(b["sample"][0]): b.isel(sample=0, drop=True) for b in expected}
    for i, (batch, array) in enumerate(zip(bgen, bgen.arrays, strict=True)):
        numbers = bgen.batch_units(i).tolist()
        assert batch["sample"].values.tolist() == numbers
        for j, n in enumerate(numbers):
            xr.testing.assert_identical(
                batch.isel(sample=j, drop=True).drop_vars("sample", errors="ignore"),
                by_number[n].drop_vars("sample", errors="ignore"),
            )
            np.testing.assert_array_equal(array["v"][j], by_number[n]["v"].values)


def test_non_local_stores_are_read_directly(tmp_path):
    """A store that is not a local directory (here zarr's MemoryStore) is read
    through the store's async ``get``."""
    store = zarr.storage.MemoryStore()
    _write(_data(), store, {})
    src = make_source("v", _open(store)["v"].variable)
    assert isinstance(src, ZarrSource)
    _check_chunks(src, _data()["v"].values)


def test_corrupt_chunks_raise_a_clear_error_every_time(tmp_path):
    path = tmp_path / "s.zarr"
    _write(_data(), path, {})
    (path / "v" / "c" / "1" / "0" / "0").write_bytes(b"not zstd at all")
    short = numcodecs.Zstd().encode(np.zeros(5, np.float32).tobytes())
    (path / "v" / "c" / "2" / "0" / "0").write_bytes(short)
    src = make_source("v", _open(path)["v"].variable)
    assert isinstance(src, ZarrSource)
    with pytest.raises(ChunkDecodeError, match=r"chunk 'v/c/1/0/0'"):
        src.read_chunks([(1, 0, 0)])
    with pytest.raises(ValueError, match=r"chunk 'v/c/2/0/0'.*could not be decoded"):
        src.read_chunks([(2, 0, 0)])
    # the generator surfaces it on every epoch and never hangs; whatever it yielded
    # before (batches are gathered in groups, so maybe nothing) is correct
    input_dims = {"time": 1, "lat": 10, "lon": 7}
    expected = reference_batches(_data(), input_dims)
    bgen = xb.BatchGenerator(_open(path), input_dims=input_dims)
    for _ in range(2):
        seen = []
        with pytest.raises(ChunkDecodeError):
            for batch in bgen:
                seen.append(batch)
        assert len(seen) <= 4  # time 4 lives in the corrupt chunk
        for batch, exp in zip(seen, expected, strict=False):
            xr.testing.assert_identical(batch, exp)
    # batches of the intact chunk are still served one by one
    for t in range(4):
        xr.testing.assert_identical(bgen[t], expected[t])
    with pytest.raises(ChunkDecodeError):
        bgen[4]


def _epoch_in_child(payload: bytes, queue: Any) -> None:
    bgen = pickle.loads(payload)
    queue.put([np.asarray(b["v"]).copy() for b in bgen.arrays])


def test_forked_and_unpickled_generators_decode_in_their_own_pools(tmp_path):
    """A DataLoader worker forks after the parent decoded in its thread pools: the
    child must start pools of its own instead of waiting on the parent's threads."""
    path = tmp_path / "s.zarr"
    _write(_data(), path, {})
    bgen = xb.BatchGenerator(
        _open(path), input_dims={"lat": 5, "lon": 7}, batch_size=6, shuffle="chunks"
    )
    parent = [np.asarray(b["v"]).copy() for b in bgen.arrays]  # warms the pools
    bgen.set_epoch(0)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_epoch_in_child, args=(pickle.dumps(bgen), queue))
    proc.start()
    child = queue.get(timeout=60)
    proc.join(timeout=60)
    assert proc.exitcode == 0
    assert len(child) == len(parent)
    for a, b in zip(parent, child, strict=True):
        np.testing.assert_array_equal(a, b)


def test_chunks_enter_the_cache_as_they_are_decoded(tmp_path):
    """A prefetch starts one decode per chunk and returns at once; the consumer then
    waits only for the chunks it asks for, each decoded once."""
    from xbatcher.reader import WindowRequest, gather, prefetch

    path = tmp_path / "s.zarr"
    _write(_data(), path, {})
    src = make_source("v", _open(path)["v"].variable)
    assert isinstance(src, ZarrSource)
    cache = BlockCache(2**30)
    starts = (np.array([0, 4, 8]), np.array([0, 3, 6]), np.array([0, 0, 0]))
    request = WindowRequest(starts, (1, 3, 7), 3)
    prefetch(src, request, cache)
    out = gather(src, request, cache)
    values = _data()["v"].values
    for k in range(3):
        np.testing.assert_array_equal(
            out[k, 0], values[starts[0][k], starts[1][k] : starts[1][k] + 3]
        )
    stats = cache.stats()
    assert stats["resident_chunks"] == 3
    # chunks (0, 0, 0), (1, 1, 0), (2, 2, 0): 4, 4 and 1 time steps of 3 x 7 float32
    assert stats["decoded_bytes"] == (4 + 4 + 1) * 3 * 7 * 4


@settings(max_examples=40, deadline=None)
@given(
    size=st.one_of(
        st.integers(0, 300), st.integers(65_000, 66_000), st.integers(0, 3_000_000)
    ),
    name=st.sampled_from(["Zstd", "Blosc", "GZip"]),
    level=st.integers(1, 5),
)
def test_declared_sizes_match_what_the_codecs_write(size, name, level):
    """The header fields read before decoding into a preallocated buffer (a wrong
    size there would leave part of a batch uninitialised)."""
    from xbatcher.sources._zarr import _declared_size

    codec = {
        "Zstd": numcodecs.Zstd(level=level),
        "Blosc": numcodecs.Blosc(clevel=level),
        "GZip": numcodecs.GZip(level=level),
    }[name]
    payload = (np.arange(size, dtype=np.uint32) % 251).astype(np.uint8).tobytes()
    assert _declared_size(codec, codec.encode(payload)) == size
    assert _declared_size(numcodecs.LZ4(), numcodecs.LZ4().encode(payload)) is None


def _rest_of_epoch_in_child(bgen: Any, queue: Any) -> None:
    bgen.set_epoch(0)
    queue.put([np.asarray(b["v"]).copy() for b in bgen.arrays])


def test_a_generator_forked_mid_epoch_does_not_wait_on_parent_threads(tmp_path):
    """Forking while the parent's prefetcher has chunk reads in flight (a DataLoader
    started mid-epoch): the child inherits the generator, not the threads, and must
    read those chunks itself instead of waiting for them forever."""
    path = tmp_path / "s.zarr"
    _write(_data(), path, {})
    bgen = xb.BatchGenerator(_open(path), input_dims={"lat": 5, "lon": 7}, batch_size=1)
    expected = [np.asarray(b["v"]).copy() for b in bgen.arrays]
    bgen.block_cache.clear()
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    # claim every chunk as in flight, as a prefetch that has not finished would
    for cid in np.ndindex(*bgen.engine.sources["v"].nchunks):
        assert bgen.block_cache.claim(("v", cid)) == (None, None)
    proc = ctx.Process(target=_rest_of_epoch_in_child, args=(bgen, queue))
    proc.start()
    try:
        child = queue.get(timeout=60)
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
    assert proc.exitcode == 0
    assert len(child) == len(expected)
    for a, b in zip(expected, child, strict=True):
        np.testing.assert_array_equal(a, b)


def test_big_chunk_files_are_read_without_the_reused_buffer(tmp_path, monkeypatch):
    from xbatcher.sources import _zarr as zarr_source

    monkeypatch.setattr(zarr_source, "_MAX_REUSED_BUFFER", 16)
    path = tmp_path / "s.zarr"
    _write(_data(), path, {})
    src = make_source("v", _open(path)["v"].variable)
    assert isinstance(src, ZarrSource)
    _check_chunks(src, _data()["v"].values)


def test_zarr_on_s3_is_read_directly_and_correctly(s3_endpoint, tmp_path):
    """Object storage (a real S3 endpoint over HTTP, through s3fs): chunks are
    fetched concurrently from the decode threads and decoded like local ones."""
    url = "s3://xbatcher-test/direct.zarr"
    _write(_data(), url, {}, storage_options=s3_endpoint)
    lazy = _open(url, storage_options=s3_endpoint)
    src = make_source("v", lazy["v"].variable)
    assert isinstance(src, ZarrSource)
    _check_chunks(src, _data()["v"].values)
    params = {"input_dims": {"lat": 5, "lon": 7}, "batch_size": 4}
    bgen = xb.BatchGenerator(lazy, **params, shuffle="chunks", seed=0)
    # the same store on local disk (same chunks, so the same chunk-aware order)
    _write(_data(), tmp_path / "local.zarr", {})
    local = xb.BatchGenerator(
        _open(tmp_path / "local.zarr"), **params, shuffle="chunks", seed=0
    )
    for got, want in zip(bgen, local, strict=True):
        xr.testing.assert_identical(got, want)


def _null_fill_store(dtype: str, path: Any, **kwargs: Any) -> Any:
    """A Zarr v2 store with ``fill_value: null`` (xarray's ``_FillValue=None``) whose
    middle chunk along time was never written."""
    ds = _data(dtype)
    ds["v"].values[...] = (ds["v"].values % 5 + 1).astype(dtype)  # no zeros written
    _write(ds, path, {"_FillValue": None}, zarr_format=2, **kwargs)
    array = zarr.open_array(
        path, path="v", storage_options=kwargs.get("storage_options")
    )
    assert array.metadata.fill_value is None
    return array


@pytest.mark.parametrize("dtype", ["float32", "float64", "int16", "uint8", "bool"])
def test_null_fill_values_read_as_zarr_reads_them(tmp_path, dtype):
    """Zarr reads never-written chunks of a ``fill_value: null`` array as zeros
    (``False``); they used to read as NaN (floats) or fail (ints)."""
    path = tmp_path / "null.zarr"
    array = _null_fill_store(dtype, path)
    for f in (path / "v").glob("1.*"):  # every chunk of time steps 4-7
        f.unlink()
    src = make_source("v", _open(path)["v"].variable)
    assert isinstance(src, ZarrSource)
    expected = array[:]
    assert (expected[4:8] == 0).all()
    _check_chunks(src, expected)
    _check_chunks(src, _open(path)["v"].values)


def test_null_fill_values_over_s3(s3_endpoint):
    url = "s3://xbatcher-test/null-fill.zarr"
    array = _null_fill_store("int32", url, storage_options=s3_endpoint)
    import s3fs

    fs = s3fs.S3FileSystem(**s3_endpoint)
    fs.rm([f"{url}/v/1.{y}.0" for y in range(4)])
    lazy = _open(url, storage_options=s3_endpoint)
    src = make_source("v", lazy["v"].variable)
    assert isinstance(src, ZarrSource)
    assert src._fetch.root is None  # read through the store's get
    expected = array[:]
    assert (expected[4:8] == 0).all()
    _check_chunks(src, expected)


def test_a_damaged_gzip_chunk_raises_chunk_decode_error(tmp_path):
    """It used to raise the gzip module's bare EOFError / BadGzipFile."""
    path = tmp_path / "s.zarr"
    _write(_data(), path, {"compressors": (zarr.codecs.GzipCodec(),)})
    good = (path / "v" / "c" / "1" / "0" / "0").read_bytes()
    src = make_source("v", _open(path)["v"].variable)
    for damaged in (good[:-9], good[:10] + b"x" + good[11:]):
        (path / "v" / "c" / "1" / "0" / "0").write_bytes(damaged)
        with pytest.raises(ChunkDecodeError, match=r"chunk 'v/c/1/0/0' .* damaged"):
            src.read_chunks([(1, 0, 0)])


def test_an_empty_blosc_chunk_never_reads_the_previous_chunk(tmp_path):
    """The per-thread buffer still held the chunk read before; blosc decoded it."""
    path = tmp_path / "s.zarr"
    _write(_data(), path, {"compressors": (zarr.codecs.BloscCodec(),)})
    (path / "v" / "c" / "1" / "0" / "0").write_bytes(b"")
    src = make_source("v", _open(path)["v"].variable)
    src.read_chunks([(0, 0, 0)])
    with pytest.raises(ChunkDecodeError, match=r"chunk 'v/c/1/0/0' .* empty"):
        src.read_chunks([(1, 0, 0)])


# ------------------------------------------------------ guards around private APIs
def _store_with(tmp_path: Any, memory: bool) -> Any:
    store: Any = zarr.storage.MemoryStore() if memory else tmp_path / "s.zarr"
    _write(_data(), store, {})
    return store


@pytest.mark.parametrize("missing", ["zarr.core.sync", "zarr.buffer"])
def test_without_zarr_sync_other_stores_fall_back_to_xarray(
    tmp_path, monkeypatch, missing
):
    """``zarr.core.sync`` is private: probed once when the source is built, and a
    zarr without it reads non-local stores through xarray (local ones need none)."""
    import sys

    monkeypatch.setitem(sys.modules, missing, None)  # import raises ImportError
    store = _store_with(tmp_path, memory=True)
    src = make_source("v", _open(store)["v"].variable)
    assert type(src) is LazySource
    _check_chunks(src, _data()["v"].values)
    local = make_source("v", _open(_store_with(tmp_path, memory=False))["v"].variable)
    assert isinstance(local, ZarrSource)
    _check_chunks(local, _data()["v"].values)


def test_a_store_class_that_overrides_get_is_read_through_it(tmp_path):
    """Local files are read directly only for zarr's own LocalStore: a subclass
    that changes ``get`` is read through its ``get``."""
    calls = []

    class Logged(zarr.storage.LocalStore):
        async def get(self, key: str, *args: Any, **kwargs: Any) -> Any:
            calls.append(key)
            return await super().get(key, *args, **kwargs)

    _write(_data(), tmp_path / "s.zarr", {})
    store = Logged(tmp_path / "s.zarr", read_only=True)
    src = make_source("v", _open(store)["v"].variable)
    assert isinstance(src, ZarrSource)
    assert src._fetch.root is None
    calls.clear()
    _check_chunks(src, _data()["v"].values)
    assert len([c for c in calls if c.startswith("v/c/")]) == math.prod(src.nchunks)


def test_an_unknown_codec_name_falls_back_to_xarray(tmp_path, monkeypatch):
    """Codecs are recognised by spec name; one the direct path does not know
    (here zstd, removed from the table) is read through xarray."""
    from xbatcher.sources import _zarr as zarr_source

    table = dict(zarr_source._CODEC_IDS)
    del table["zstd"]
    monkeypatch.setattr(zarr_source, "_CODEC_IDS", table)
    for fmt, zstd in ((2, numcodecs.Zstd()), (3, zarr.codecs.ZstdCodec())):
        path = tmp_path / f"s{fmt}.zarr"
        _write(_data(), path, {"compressors": (zstd,)}, zarr_format=fmt)
        src = make_source("v", _open(path)["v"].variable)
        assert type(src) is LazySource
        _check_chunks(src, _data()["v"].values)


def test_without_xarray_internals_the_generic_reader_is_used(tmp_path, monkeypatch):
    """``find_backing`` relies on xarray's private lazy-array classes: when one
    is gone, the variable is read through xarray."""
    import xarray.coding.common

    store = _store_with(tmp_path, memory=False)
    lazy = _open(store)
    monkeypatch.delattr(xarray.coding.common, "_ElementwiseFunctionArray")
    src = make_source("v", lazy["v"].variable)
    monkeypatch.undo()  # xarray's own reads need the class back
    assert type(src) is LazySource
    _check_chunks(src, _data()["v"].values)
