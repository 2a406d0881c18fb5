"""The contract every :class:`~xbatcher.sources.Source` passes.

Shaped like zarr's ``StoreTests``: subclass :class:`SourceContract` once per kind of
source (``tests/test_sources.py``), say which class :func:`make_source` must pick and
what its capability flags are, and build the xarray variable it wraps in
:meth:`SourceContract.make_variable`. Every test compares the source's reads with
numpy slicing of the values the variable was built from.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xbatcher.reader import BlockCache, read_region
from xbatcher.sources import Source, make_source

DIMS = ("a", "b", "c")
# each subclass runs the inherited property tests as its own test (the same draws
# are valid for every source: all share the variable's shape)
_SHARED = [HealthCheck.differing_executors]


def positional_values(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """Values that differ at every point (each names its own position)."""
    return np.arange(math.prod(shape)).reshape(shape).astype(dtype)


@st.composite
def regions(draw: Any, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """A region of ``shape``: one slice ``start:stop`` (possibly empty) per dim."""
    out = []
    for n in shape:
        start = draw(st.integers(0, n))
        stop = draw(st.integers(start, n))
        out.append(slice(start, stop))
    return tuple(out)


def all_chunk_ids(src: Source) -> list[tuple[int, ...]]:
    return [tuple(int(i) for i in c) for c in np.ndindex(*src.nchunks)]


class SourceContract:
    """Tests every source passes. Subclasses set the class attributes and implement
    :meth:`make_variable`."""

    #: the class make_source must pick for the variable
    source_class: ClassVar[type[Source]]
    #: the capability flags the source must report
    chunked: ClassVar[bool] = True
    in_memory: ClassVar[bool] = False
    submits_chunks: ClassVar[bool] = False
    reopens_lazily: ClassVar[bool] = False
    decodes_into: ClassVar[bool] = False
    #: the small variable most tests read, and its storage chunks (uneven edges)
    shape: ClassVar[tuple[int, ...]] = (7, 6, 5)
    chunks: ClassVar[tuple[int, ...]] = (3, 4, 2)
    dtype: ClassVar[Any] = np.float32
    #: the bigger variable of the pickle-size test
    big_shape: ClassVar[tuple[int, ...]] = (64, 64, 32)
    big_chunks: ClassVar[tuple[int, ...]] = (16, 32, 32)

    def make_variable(
        self, values: np.ndarray, chunks: tuple[int, ...], path: Path
    ) -> xr.Variable:
        """An xarray variable over dims ``DIMS`` holding ``values``, backed the way
        this source reads (``path`` is an empty directory for files or stores)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ fixtures
    @pytest.fixture(scope="class")
    @classmethod
    def values(cls) -> np.ndarray:
        return positional_values(cls.shape, cls.dtype)

    @pytest.fixture(scope="class")
    @classmethod
    def variable(
        cls, values: np.ndarray, tmp_path_factory: pytest.TempPathFactory
    ) -> xr.Variable:
        path = tmp_path_factory.mktemp("src")
        return cls().make_variable(values, cls.chunks, path)

    @pytest.fixture(scope="class")
    @classmethod
    def source(cls, variable: xr.Variable) -> Source:
        return make_source("v", variable)

    # ------------------------------------------------------------------ tests
    def test_make_source_picks_the_class(self, source: Source) -> None:
        assert type(source) is self.source_class

    def test_shape_dtype_key(
        self, source: Source, variable: xr.Variable, values: np.ndarray
    ) -> None:
        assert source.key == "v"
        assert source.shape == variable.shape == values.shape
        assert isinstance(source.shape, tuple)
        assert source.dtype == variable.dtype == values.dtype
        assert isinstance(source.dtype, np.dtype)
        assert source.nbytes == values.nbytes

    def test_capability_flags(self, source: Source) -> None:
        flags = (
            source.chunked,
            source.in_memory,
            source.submits_chunks,
            source.reopens_lazily,
            source.decodes_into,
        )
        expected = (
            self.chunked,
            self.in_memory,
            self.submits_chunks,
            self.reopens_lazily,
            self.decodes_into,
        )
        assert flags == expected
        assert source.chunked == (source.bounds is not None)

    def test_bounds_cover_the_array_exactly(
        self, source: Source, values: np.ndarray
    ) -> None:
        if source.bounds is None:
            assert source.nchunks == (1,) * values.ndim
            assert source.chunk_region((0,) * values.ndim) == tuple(
                slice(0, n) for n in values.shape
            )
            return
        assert len(source.bounds) == values.ndim
        for b, n in zip(source.bounds, values.shape, strict=True):
            assert b.dtype == np.int64
            assert b[0] == 0 and b[-1] == n
            assert (np.diff(b) > 0).all() or n == 0
        assert source.nchunks == tuple(len(b) - 1 for b in source.bounds)
        assert source.bound_lists == tuple(b.tolist() for b in source.bounds)
        # the chunk regions tile the array: every point in exactly one
        covered = np.zeros(values.shape, dtype=int)
        for cid in all_chunk_ids(source):
            covered[source.chunk_region(cid)] += 1
        assert (covered == 1).all()

    def test_storage_chunks_are_the_variables(self, source: Source) -> None:
        if source.bounds is None:
            return
        sizes = tuple(int(np.diff(b).max()) for b in source.bounds)
        assert sizes == tuple(
            min(c, n) for c, n in zip(self.chunks, self.shape, strict=True)
        )

    def test_chunk_nbytes(self, source: Source, values: np.ndarray) -> None:
        sizes = [
            math.prod(r.stop - r.start for r in source.chunk_region(cid))
            for cid in all_chunk_ids(source)
        ]
        assert source.chunk_nbytes == max(sizes) * values.itemsize

    @settings(max_examples=30, deadline=None, suppress_health_check=_SHARED)
    @given(data=st.data())
    def test_read_equals_numpy_slicing(
        self, source: Source, values: np.ndarray, data: st.DataObject
    ) -> None:
        region = data.draw(regions(values.shape))
        got = source.read(region)
        assert got.dtype == values.dtype
        np.testing.assert_array_equal(got, values[region])

    @settings(max_examples=20, deadline=None, suppress_health_check=_SHARED)
    @given(data=st.data())
    def test_read_chunks_equal_their_regions(
        self, source: Source, values: np.ndarray, data: st.DataObject
    ) -> None:
        """Any chunks, in any order (repeats too), come back in the order asked."""
        ids = all_chunk_ids(source)
        asked = data.draw(st.lists(st.sampled_from(ids), min_size=1, max_size=12))
        blocks = source.read_chunks(asked)
        assert len(blocks) == len(asked)
        for cid, block in zip(asked, blocks, strict=True):
            assert block.dtype == values.dtype
            np.testing.assert_array_equal(block, values[source.chunk_region(cid)])

    @settings(max_examples=20, deadline=None, suppress_health_check=_SHARED)
    @given(data=st.data())
    def test_reader_regions_through_the_chunk_cache(
        self, source: Source, values: np.ndarray, data: st.DataObject
    ) -> None:
        """The reader assembles any non-empty region from this source's chunks."""
        region = data.draw(regions(values.shape))
        if any(r.start == r.stop for r in region):
            return
        cache = BlockCache(2**20)
        np.testing.assert_array_equal(
            read_region(source, region, cache), values[region]
        )
        np.testing.assert_array_equal(
            read_region(source, region, cache), values[region]
        )

    def test_submit_chunk(self, source: Source, values: np.ndarray) -> None:
        cid = all_chunk_ids(source)[-1]
        if not source.submits_chunks:
            with pytest.raises(NotImplementedError, match="read_chunks"):
                source.submit_chunk(cid)
            return
        block = source.submit_chunk(cid).result(timeout=60)
        np.testing.assert_array_equal(block, values[source.chunk_region(cid)])

    @pytest.mark.parametrize("layout", ["contiguous", "strided", "dense slot"])
    def test_read_chunk_into(
        self, source: Source, values: np.ndarray, layout: str
    ) -> None:
        """Every chunk read into a given array (contiguous, strided, or its slot of
        a whole-array buffer) fills exactly that array, which comes back; the
        bytes around it stay as they were."""
        whole = np.full(values.shape, -7, dtype=values.dtype)
        for cid in all_chunk_ids(source):
            region = source.chunk_region(cid)
            shape = tuple(r.stop - r.start for r in region)
            if layout == "contiguous":
                out = np.full(shape, -7, dtype=values.dtype)
            elif layout == "strided":
                out = np.full(tuple(2 * n for n in shape), -7, dtype=values.dtype)
                out = out[tuple(slice(None, None, 2) for _ in shape)]
            else:
                out = whole[region]
            got = source.read_chunk_into(cid, out)
            assert got is out
            np.testing.assert_array_equal(out, values[region])
        if layout == "dense slot":
            np.testing.assert_array_equal(whole, values)

    def test_submit_chunk_into(self, source: Source, values: np.ndarray) -> None:
        if not source.submits_chunks:
            return
        for cid in all_chunk_ids(source):
            region = source.chunk_region(cid)
            out = np.full(
                tuple(r.stop - r.start for r in region), -7, dtype=values.dtype
            )
            assert source.submit_chunk(cid, out).result(timeout=60) is out
            np.testing.assert_array_equal(out, values[region])

    def test_in_memory_reads_are_views(self, source: Source) -> None:
        region = tuple(slice(0, n) for n in source.shape)
        first, second = source.read(region), source.read(region)
        # in memory: views of one array; otherwise every read is a fresh array
        assert np.shares_memory(first, second) == source.in_memory

    def test_pickle_round_trip(self, source: Source, values: np.ndarray) -> None:
        source.read_chunks(all_chunk_ids(source))  # reading leaves nothing behind
        back = pickle.loads(pickle.dumps(source))
        assert type(back) is type(source)
        assert (back.key, back.shape, back.dtype) == (
            source.key,
            source.shape,
            source.dtype,
        )
        if source.bounds is None:
            assert back.bounds is None
        else:
            assert back.bounds is not None
            for a, b in zip(back.bounds, source.bounds, strict=True):
                np.testing.assert_array_equal(a, b)
        everything = tuple(slice(0, n) for n in values.shape)
        np.testing.assert_array_equal(back.read(everything), values)
        ids = all_chunk_ids(source)
        for cid, block in zip(ids, back.read_chunks(ids), strict=True):
            np.testing.assert_array_equal(block, values[source.chunk_region(cid)])

    def test_pickles_small_when_it_reopens_lazily(
        self, tmp_path_factory: pytest.TempPathFactory
    ) -> None:
        """A source that reopens lazily pickles how to reopen its data, never the
        data, even after reading all of it."""
        values = positional_values(self.big_shape, self.dtype)
        var = self.make_variable(
            values, self.big_chunks, tmp_path_factory.mktemp("big")
        )
        src = make_source("v", var)
        assert src.reopens_lazily == self.reopens_lazily
        src.read(tuple(slice(0, n) for n in values.shape))
        if src.chunked:
            src.read_chunks(all_chunk_ids(src))
        size = len(pickle.dumps(src))
        if src.reopens_lazily:
            assert size < values.nbytes // 20, (size, values.nbytes)
        elif src.in_memory:
            assert size >= values.nbytes  # it carries its data, and says so
