"""Direct Zarr reads against Zarr's own reads, over a wide matrix of stores.

Stores are written with zarr itself (so every metadata field is what the case says:
format, codecs, fill value, chunk key encoding, group, sharding) and opened with
xarray. Each case checks, value for value and dtype for dtype:

- the chunks :func:`~xbatcher.sources.make_source` reads against
  ``xr.open_dataset(..., engine="zarr", chunks=None)`` of the same view (CF decoded);
- the chunks of the same view opened without CF decoding against
  ``zarr.open_array(...)[view]`` (the stored values);
- generator batches against the batches of the same data loaded into memory;
- which path was taken: the direct :class:`~xbatcher.sources.ZarrSource`, or the
  fallback :class:`~xbatcher.sources.LazySource` for encodings it does not reproduce.

The damaged-chunk tests corrupt one chunk file of every codec the direct path
accepts and check that it raises :class:`~xbatcher.errors.ChunkDecodeError` naming
the chunk, and that what a damaged chunk decodes to never depends on the chunks read
before it (the reader reuses a per-thread buffer).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest
import xarray as xr
import zarr
import zarr.codecs
import zarr.codecs.numcodecs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xbatcher as xb
from xbatcher.errors import ChunkDecodeError
from xbatcher.sources import LazySource, Source, ZarrSource, make_source


@dataclass(frozen=True)
class Codec:
    """One storage encoding: zarr format, ``create_array`` kwargs, whether the direct
    path reads it, and whether the codec detects any flipped byte (a checksum)."""

    name: str
    fmt: int
    kwargs: Callable[[np.dtype[Any], int], dict[str, Any]]
    direct: bool
    checksum: bool = False


def _c(**kw: Any) -> Callable[[np.dtype[Any], int], dict[str, Any]]:
    return lambda dtype, ndim: dict(kw)


CODECS = [
    # Zarr v2: one numcodecs compressor
    Codec("v2-none", 2, _c(compressors=None), True),
    Codec("v2-blosc-lz4", 2, _c(compressors=numcodecs.Blosc("lz4", shuffle=1)), True),
    Codec("v2-blosc-zstd-bit", 2, _c(compressors=numcodecs.Blosc("zstd", 3, 2)), True),
    Codec("v2-blosc-noshuffle", 2, _c(compressors=numcodecs.Blosc(shuffle=0)), True),
    Codec("v2-zstd", 2, _c(compressors=numcodecs.Zstd(level=1)), True),
    Codec(
        "v2-zstd-checksum",
        2,
        _c(compressors=numcodecs.Zstd(level=1, checksum=True)),
        True,
        True,
    ),
    Codec("v2-gzip", 2, _c(compressors=numcodecs.GZip(level=1)), True, True),
    Codec("v2-zlib", 2, _c(compressors=numcodecs.Zlib(level=1)), True, True),
    Codec("v2-lz4", 2, _c(compressors=numcodecs.LZ4()), True),
    Codec(
        "v2-nested-keys",
        2,
        _c(chunk_key_encoding={"name": "v2", "separator": "/"}),
        True,
    ),
    # Zarr v2 encodings the direct path leaves to xarray
    Codec("v2-bz2", 2, _c(compressors=numcodecs.BZ2()), False),
    Codec(
        "v2-delta-filter",
        2,
        lambda dtype, ndim: {"filters": [numcodecs.Delta(dtype=dtype.str)]},
        False,
    ),
    Codec("v2-F-order", 2, _c(order="F"), False),
    # Zarr v3: bytes codec, then bytes-to-bytes codecs
    Codec("v3-none", 3, _c(compressors=None), True),
    Codec("v3-blosc", 3, _c(compressors=zarr.codecs.BloscCodec()), True),
    Codec(
        "v3-blosc-lz4-noshuffle",
        3,
        _c(compressors=zarr.codecs.BloscCodec(cname="lz4", shuffle="noshuffle")),
        True,
    ),
    Codec("v3-zstd", 3, _c(compressors=zarr.codecs.ZstdCodec()), True),
    Codec(
        "v3-zstd-checksum",
        3,
        _c(compressors=zarr.codecs.ZstdCodec(checksum=True)),
        True,
        True,
    ),
    Codec("v3-gzip", 3, _c(compressors=zarr.codecs.GzipCodec(level=1)), True, True),
    Codec(
        "v3-numcodecs-zlib",
        3,
        _c(compressors=zarr.codecs.numcodecs.Zlib(level=1)),
        True,
        True,
    ),
    Codec("v3-numcodecs-lz4", 3, _c(compressors=zarr.codecs.numcodecs.LZ4()), True),
    Codec(
        "v3-dot-keys",
        3,
        _c(chunk_key_encoding={"name": "v2", "separator": "."}),
        True,
    ),
    # Zarr v3 encodings the direct path leaves to xarray
    Codec(
        "v3-crc32c",
        3,
        _c(compressors=(zarr.codecs.ZstdCodec(), zarr.codecs.Crc32cCodec())),
        False,
    ),
    Codec(
        "v3-big-endian",
        3,
        _c(serializer=zarr.codecs.BytesCodec(endian="big")),
        False,
    ),
    Codec(
        "v3-transpose",
        3,
        lambda dtype, ndim: {
            "filters": (zarr.codecs.TransposeCodec(order=tuple(range(ndim))[::-1]),)
        },
        False,
    ),
    Codec("v3-sharded", 3, _c(), False),  # shards added by _create
]
BY_NAME = {c.name: c for c in CODECS}
DIRECT = [c for c in CODECS if c.direct]
DTYPES = ["int8", "int16", "uint16", "int32", "int64", "float32", "float64", "bool"]
DIMS = ("t", "y", "x")


@dataclass(frozen=True)
class Case:
    codec: str
    dtype: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    fill: Any  # None (v2 ``null``), a number, or nan
    missing: frozenset[tuple[int, ...]]  # chunks never written
    group: str | None
    cf: str  # "none", "scale", "mask", "time"
    view: tuple[Any, ...]  # per dim: a slice or an int
    seed: int

    @property
    def plain_view(self) -> bool:
        return all(isinstance(k, slice) and k.step in (None, 1) for k in self.view)


def _values(case: Case) -> np.ndarray:
    rng = np.random.default_rng(case.seed)
    dtype = np.dtype(case.dtype)
    if dtype.kind == "b":
        return rng.random(case.shape) < 0.5
    if dtype.kind == "f":
        out = rng.normal(0, 100, case.shape).astype(dtype)
        out[rng.random(case.shape) < 0.1] = np.nan
        return out
    if case.cf == "time":
        return rng.integers(0, 10_000, case.shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -500), min(info.max, 500), case.shape).astype(
        dtype
    )


def _attrs(case: Case, values: np.ndarray) -> dict[str, Any]:
    kind = np.dtype(case.dtype).kind
    if case.cf == "scale" and kind in "iuf":
        return {"scale_factor": 0.5, "add_offset": -3.0}
    if case.cf == "mask" and kind in "iu" and BY_NAME[case.codec].fmt == 3:
        # v2 stores _FillValue as the array's fill value; v3 as an attribute
        # (xarray's own encoding for floats: base64, so integers only here)
        return {"_FillValue": values.flat[0].item()}
    if case.cf == "time" and kind in "iu":
        return {"units": "hours since 2000-01-01", "calendar": "standard"}
    return {}


def _create(case: Case, store: Any) -> None:
    """Write the case's array as ``v`` (in its group), leaving ``missing`` chunks
    unwritten."""
    codec = BY_NAME[case.codec]
    dtype = np.dtype(case.dtype)
    values = _values(case)
    dims = DIMS[-len(case.shape) :]
    kwargs = codec.kwargs(dtype, len(case.shape))
    if codec.name == "v3-sharded":
        kwargs["shards"] = tuple(c * 2 for c in case.chunks)
    if codec.fmt == 3:
        kwargs["dimension_names"] = dims
        attrs = _attrs(case, values)
    else:
        attrs = {"_ARRAY_DIMENSIONS": list(dims), **_attrs(case, values)}
    root = zarr.open_group(store, mode="w", zarr_format=codec.fmt)
    parent = root if case.group is None else root.create_group(case.group)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numcodecs codecs in v3, v2 notices
        array = parent.create_array(
            "v",
            shape=case.shape,
            chunks=case.chunks,
            dtype=dtype,
            fill_value=case.fill,
            attributes=attrs,
            **kwargs,
        )
    counts = [math.ceil(n / c) for n, c in zip(case.shape, case.chunks, strict=True)]
    for cid in np.ndindex(*counts):
        if cid in case.missing:
            continue
        region = tuple(
            slice(i * c, min((i + 1) * c, n))
            for i, c, n in zip(cid, case.chunks, case.shape, strict=True)
        )
        array[region] = values[region]


def _open(store: Any, group: str | None, **kwargs: Any) -> xr.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return xr.open_dataset(
            store, engine="zarr", chunks=None, consolidated=False, group=group, **kwargs
        )


def _tiles(src: Source) -> np.ndarray:
    """The source's chunks, read in one call and put back together."""
    ids = [tuple(c) for c in np.ndindex(*src.nchunks)]
    out = np.empty(src.shape, dtype=src.dtype)
    covered = np.zeros(src.shape, dtype=int)
    for cid, block in zip(ids, src.read_chunks(ids), strict=True):
        region = src.chunk_region(cid)
        assert block.dtype == src.dtype
        assert block.shape == out[region].shape
        out[region] = block
        covered[region] += 1
    assert (covered == 1).all()
    return out


def _assert_same(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.dtype == expected.dtype
    if got.dtype == object:  # xarray masks a v2 bool array's fill value into NaN
        assert got.shape == expected.shape
        assert list(map(repr, got.ravel())) == list(map(repr, expected.ravel()))
    else:
        np.testing.assert_array_equal(got, expected)


def check_case(case: Case, store: Any) -> None:
    _create(case, store)
    codec = BY_NAME[case.codec]
    view = dict(zip(DIMS[-len(case.shape) :], case.view, strict=True))
    one_byte = np.dtype(case.dtype).itemsize == 1
    expect_direct = case.plain_view and (
        codec.direct or (codec.name == "v3-big-endian" and one_byte)
    )

    # CF-decoded values, against xarray's own read of the same view
    lazy = _open(store, case.group).isel(view)
    src = make_source("v", lazy["v"].variable)
    assert isinstance(src, LazySource)
    assert isinstance(src, ZarrSource) is expect_direct, (case, type(src))
    expected = _open(store, case.group).isel(view)["v"].values
    _assert_same(_tiles(src), expected)

    # stored values, against zarr's own read of the same region
    raw = _open(store, case.group, mask_and_scale=False, decode_times=False)
    raw_src = make_source("v", raw.isel(view)["v"].variable)
    assert isinstance(raw_src, ZarrSource) is expect_direct
    array = zarr.open_array(
        store, path="v" if case.group is None else f"{case.group}/v", mode="r"
    )
    stored = np.asarray(array[case.view])
    _assert_same(_tiles(raw_src), stored)

    # generator batches, against the same batches of the data in memory
    if lazy["v"].ndim == 0:
        return
    first = lazy["v"].dims[0]
    params = {"input_dims": {first: min(2, lazy.sizes[first])}, "batch_size": 2}
    bgen = xb.BatchGenerator(lazy, **params)
    assert isinstance(bgen.engine.sources["v"], ZarrSource) is expect_direct
    loaded = _open(store, case.group).isel(view).load()
    ref = xb.BatchGenerator(loaded, **params)
    assert len(bgen) == len(ref)
    for got_batch, want in zip(bgen, ref, strict=True):
        xr.testing.assert_identical(got_batch, want)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    codec = draw(st.sampled_from(CODECS), label="codec")
    dtype = np.dtype(draw(st.sampled_from(DTYPES), label="dtype"))
    if codec.name == "v2-delta-filter":
        dtype = np.dtype(draw(st.sampled_from(["int16", "int32", "float64"])))
    ndim = draw(st.integers(1, 3), label="ndim")
    shape = tuple(draw(st.integers(1, 7)) for _ in range(ndim))
    chunks = tuple(draw(st.integers(1, n)) for n in shape)
    fills: list[Any] = [0, 1] if dtype.kind == "b" else [0, 7]
    if dtype.kind == "f":
        fills.append(np.nan)
    if dtype.kind == "i":
        fills.append(-3)
    if codec.fmt == 2:
        fills.append(None)  # ``fill_value: null``
    fill = draw(st.sampled_from(fills), label="fill")
    if dtype.kind == "b" and fill is not None:
        fill = bool(fill)
    counts = [math.ceil(n / c) for n, c in zip(shape, chunks, strict=True)]
    ids = list(np.ndindex(*counts))
    missing = frozenset(draw(st.sets(st.sampled_from(ids)), label="missing"))
    group = draw(st.sampled_from([None, "g", "g/sub"]), label="group")
    cf = draw(st.sampled_from(["none", "scale", "mask", "time"]), label="cf")
    view: list[Any] = []
    for n in shape:
        kind = draw(st.sampled_from(["all", "slice", "slice", "step", "int"]))
        if kind == "all":
            view.append(slice(None))
        elif kind == "int" and len(view) == 0 and ndim > 1:
            view.append(draw(st.integers(0, n - 1)))
        else:
            start = draw(st.integers(0, n - 1))
            stop = draw(st.integers(start + 1, n))
            step = 2 if kind == "step" and stop - start > 1 else None
            view.append(slice(start, stop, step))
    seed = draw(st.integers(0, 2**16))
    return Case(
        codec.name,
        dtype.name,
        shape,
        chunks,
        fill,
        missing,
        group,
        cf,
        tuple(view),
        seed,
    )


_SETTINGS: dict[str, Any] = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture],
}


@settings(max_examples=40, **_SETTINGS)
@given(case=cases())
def test_reads_equal_zarr_reads(tmp_path, case):
    """The fast profile (runs with the suite)."""
    check_case(case, zarr.storage.LocalStore(tmp_path / f"s{case.seed}.zarr"))


@pytest.mark.slow
@settings(max_examples=600, **_SETTINGS)
@given(case=cases(), memory=st.booleans())
def test_reads_equal_zarr_reads_long(tmp_path, case, memory):
    """The long run: ``pytest -m slow tests/test_zarr_matrix.py`` (deselected by
    default, see ``addopts`` in pyproject.toml)."""
    store: Any = (
        zarr.storage.MemoryStore()
        if memory
        else zarr.storage.LocalStore(tmp_path / f"s{case.seed}-{os.getpid()}.zarr")
    )
    check_case(case, store)


@pytest.mark.parametrize("codec", [c.name for c in CODECS])
def test_every_codec_with_missing_chunks_and_an_edge(tmp_path, codec):
    """Each codec once, deterministically (a missing chunk, partial edge chunks, a
    view), so a codec is never left to hypothesis's draw."""
    dtype = "int16" if codec == "v2-delta-filter" else "float32"
    case = Case(
        codec,
        dtype,
        (7, 5),
        (3, 2),
        None if BY_NAME[codec].fmt == 2 else 7,
        frozenset({(1, 1), (2, 2)}),
        "g",
        "scale",
        (slice(1, 7), slice(None)),
        0,
    )
    check_case(case, zarr.storage.LocalStore(tmp_path / "s.zarr"))
    # the same in a store that is not a local directory (read through store.get)
    check_case(case, zarr.storage.MemoryStore())


# --------------------------------------------------------------------------- damage
N = 1000  # values per chunk (one chunk per row)
ROWS = Case("v3-none", "float32", (4, N), (1, N), 0.0, frozenset(), None, "none",
            (slice(None), slice(None)), 0)  # fmt: skip


@dataclass(frozen=True)
class Damage:
    src: ZarrSource
    key: str  # of chunk (3, 0), the one damaged
    path: Path
    good: bytes


@pytest.fixture(scope="module")
def damage_stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Damage]:
    """Per direct codec, a (4, N) float32 array with one chunk per row, each row
    different (random, some NaN)."""
    out = {}
    for codec in DIRECT:
        path = tmp_path_factory.mktemp("damage") / f"{codec.name}.zarr"
        store = zarr.storage.LocalStore(path)
        _create(replace(ROWS, codec=codec.name), store)
        array = zarr.open_array(store, path="v", mode="r")
        src = make_source("v", _open(store, None)["v"].variable)
        assert isinstance(src, ZarrSource)
        key = "v/" + array.metadata.encode_chunk_key((3, 0))
        out[codec.name] = Damage(src, key, path / key, (path / key).read_bytes())
    return out


def _read_after(src: ZarrSource, good: int) -> Any:
    """Read chunk (3, 0) right after the good chunk (good, 0), in this thread (one
    chunk is read inline, so the two share this thread's reused buffer)."""
    src.read_chunks([(good, 0)])
    try:
        return src.read_chunks([(3, 0)])[0]
    except ChunkDecodeError as err:
        return err


def _check_damaged(d: Damage, damaged: bytes, *, must_fail: bool) -> list[Any]:
    """Read the damaged chunk after each good one: an error naming the key, or
    (where the damage cannot be detected) the same array every time, never
    another chunk's data."""
    d.path.write_bytes(damaged)
    results = [_read_after(d.src, good) for good in range(3)]
    for r in results:
        if isinstance(r, ChunkDecodeError):
            assert f"chunk {d.key!r} of " in str(r)
            assert "is damaged" in str(r)
        else:
            assert not must_fail, f"a damaged chunk decoded: {r.ravel()[:4]}"
            assert r.shape == (1, N) and r.dtype == np.float32
    # what a damaged chunk decodes to never depends on what was read before it
    assert len({type(r) for r in results}) == 1, results
    if not isinstance(results[0], ChunkDecodeError):
        for r in results[1:]:
            np.testing.assert_array_equal(r, results[0])
        for good in range(3):
            other = d.src.read_chunks([(good, 0)])[0]
            assert not np.array_equal(results[0], other, equal_nan=True)
    return results


@pytest.mark.parametrize("codec", [c.name for c in DIRECT])
@pytest.mark.parametrize("kind", ["empty", "truncated", "one-byte-short", "garbage"])
def test_damaged_chunks_raise_naming_the_key(damage_stores, codec, kind):
    d = damage_stores[codec]
    damaged = {
        "empty": b"",
        "truncated": d.good[: len(d.good) // 2],
        "one-byte-short": d.good[:-1],
        "garbage": bytes(range(7, 107)),
    }[kind]
    try:
        _check_damaged(d, damaged, must_fail=True)
        with pytest.raises(ChunkDecodeError, match=r"chunk 'v/.*' of .* is damaged"):
            d.src.read_chunks([(0, 0), (3, 0), (1, 0)])  # in the decode pool too
    finally:
        d.path.write_bytes(d.good)
    np.testing.assert_array_equal(d.src.read_chunks([(3, 0)])[0], _values(ROWS)[3:4])


@settings(max_examples=60, **_SETTINGS)
@given(
    codec=st.sampled_from([c.name for c in DIRECT]),
    where=st.floats(0, 1, exclude_max=True),
    mask=st.integers(1, 255),
    truncate=st.booleans(),
)
def test_any_cut_or_flipped_byte(damage_stores, codec, where, mask, truncate):
    """A chunk cut anywhere always raises; one flipped byte anywhere raises or,
    for codecs with a checksum, decodes to the right values (a flip in a field
    nothing reads). Neither ever returns another chunk's bytes."""
    d = damage_stores[codec]
    pos = int(where * len(d.good))
    if truncate:
        damaged = d.good[:pos]
    else:
        flipped = bytearray(d.good)
        flipped[pos] ^= mask
        damaged = bytes(flipped)
    try:
        results = _check_damaged(d, damaged, must_fail=truncate)
    finally:
        d.path.write_bytes(d.good)
    if BY_NAME[codec].checksum and not isinstance(results[0], ChunkDecodeError):
        np.testing.assert_array_equal(results[0], _values(ROWS)[3:4])
