"""``chunk_cache=``: decoded source chunks kept in a cache tier; epoch 1 fills it and
later epochs read no chunk from the source, whatever the shuffle order."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

import xbatcher as xb
from conftest import count_source_reads, make_dataset, to_backend
from xbatcher.caches import Cache, ChunkCachedSource, open_cache
from xbatcher.engine import read_batch


@pytest.fixture
def chunk_store(make_cache: Callable[[], Cache]) -> Callable[[], Cache]:
    """A chunk cache on each backend (conftest's ``make_cache``)."""
    return make_cache


@pytest.mark.parametrize("backend", ["zarr", "zarr-dask"])
def test_second_epoch_reads_no_chunk_from_the_source(
    chunk_store: Callable[[], Cache], backend: str, tmp_path: Path
) -> None:
    ds = to_backend(make_dataset(), backend, tmp_path / "src.zarr")
    params: dict[str, Any] = dict(input_dims={"lat": 3, "lon": 4}, batch_size=5)
    reference = xb.BatchGenerator(make_dataset(), shuffle=True, seed=7, **params)
    first = xb.BatchGenerator(
        ds, chunk_cache=chunk_store(), shuffle=True, seed=7, **params
    )
    reads = count_source_reads(first)
    for i in range(len(first)):
        np.testing.assert_array_equal(
            first.arrays[i]["air"], reference.arrays[i]["air"]
        )
    nchunks = sum(int(np.prod(s.nchunks)) for s in first.engine.sources.values())
    assert reads[0] == nchunks  # epoch 1: every chunk decoded once
    # a new process (fresh in-memory chunk cache), another shuffle order
    again = xb.BatchGenerator(
        ds, chunk_cache=chunk_store(), shuffle=True, seed=8, **params
    )
    reference = xb.BatchGenerator(make_dataset(), shuffle=True, seed=8, **params)
    reads = count_source_reads(again)
    for i in range(len(again)):
        xr.testing.assert_identical(again[i], reference[i])
        units = again.batch_units(i)
        np.testing.assert_array_equal(
            read_batch(again.engine, units)["mask"], reference.arrays[i]["mask"]
        )
    assert reads[0] == 0


def test_chunk_keys_follow_the_data_not_the_schema(tmp_path: Path) -> None:
    ds = to_backend(make_dataset(), "zarr", tmp_path / "a.zarr")
    cache = open_cache(str(tmp_path / "chunks"))
    a = xb.BatchGenerator(ds, {"lat": 5}, chunk_cache=cache)
    for i in range(len(a)):
        a[i]
    b = xb.BatchGenerator(ds, {"lat": 2, "lon": 3}, chunk_cache=cache)  # other schema
    reads = count_source_reads(b)
    for i in range(len(b)):
        b[i]
    assert reads[0] == 0  # same data: same chunks
    other = to_backend(make_dataset() * 2, "zarr", tmp_path / "b.zarr")
    c = xb.BatchGenerator(other, {"lat": 5}, chunk_cache=cache)
    fresh = xb.BatchGenerator(make_dataset() * 2, {"lat": 5})
    for i in range(len(c)):
        xr.testing.assert_identical(c[i], fresh[i])  # never the other data's chunks


def test_in_memory_sources_are_not_wrapped() -> None:
    bgen = xb.BatchGenerator(make_dataset(), {"lat": 5}, chunk_cache="memory://")
    assert not any(
        isinstance(s, ChunkCachedSource) for s in bgen.engine.sources.values()
    )


def test_corrupt_chunk_entry_is_recomputed(tmp_path: Path) -> None:
    from xbatcher.errors import CacheWarning

    ds = to_backend(make_dataset(), "zarr", tmp_path / "a.zarr")
    cache = open_cache(str(tmp_path / "chunks"))
    a = xb.BatchGenerator(ds, {"lat": 5}, chunk_cache=cache)
    want = [a[i] for i in range(len(a))]
    for path in (tmp_path / "chunks").rglob("*"):
        if path.is_file():
            path.write_bytes(path.read_bytes()[:20])
    b = xb.BatchGenerator(ds, {"lat": 5}, chunk_cache=cache)
    with pytest.warns(CacheWarning, match="corrupt"):
        got = [b[i] for i in range(len(b))]
    for x, y in zip(got, want, strict=True):
        xr.testing.assert_identical(x, y)


def test_split_parts_keep_the_chunk_cache(tmp_path: Path) -> None:
    ds = to_backend(make_dataset(), "zarr", tmp_path / "a.zarr")
    bgen = xb.BatchGenerator(ds, {"lat": 5}, chunk_cache=str(tmp_path / "c"))
    parts = bgen.split("time", train=4, val=2)
    assert all(
        isinstance(s, ChunkCachedSource)
        for p in parts.values()
        for s in p.engine.sources.values()
    )


def test_submit_chunk_into_a_given_array(tmp_path: Path) -> None:
    """The chunk-cache layer honours ``submit_chunk(cid, out)`` of the source
    contract: a miss decodes into ``out`` (and stores the chunk), a hit copies the
    stored chunk into ``out``; ``out`` comes back, holding the chunk's values."""
    ds = to_backend(make_dataset(), "zarr", tmp_path / "a.zarr")
    bgen = xb.BatchGenerator(
        ds,
        input_dims={"lat": 3, "lon": 4},
        chunk_cache=open_cache(str(tmp_path / "chunks")),
    )
    src = bgen.engine.sources["air"]
    assert isinstance(src, ChunkCachedSource) and src.submits_chunks
    assert not src.decodes_into  # the reader gives it no dense buffer
    values = make_dataset()["air"].values
    reads = count_source_reads(bgen)
    ids = list(np.ndindex(*src.nchunks))
    for round_ in ("miss", "hit"):
        for cid in ids:
            region = src.chunk_region(cid)
            out = np.full([r.stop - r.start for r in region], -1, src.dtype)
            assert src.submit_chunk(cid, out).result(timeout=60) is out
            np.testing.assert_array_equal(out, values[region])
        assert reads[0] == len(ids)  # decoded in the first round only
        if round_ == "miss":
            # the tier is filled by the task's callback, which may still be running
            # when .result() returns
            deadline = time.monotonic() + 30
            while not all(src._cached(c) is not None for c in ids):
                assert time.monotonic() < deadline
                time.sleep(0.01)
