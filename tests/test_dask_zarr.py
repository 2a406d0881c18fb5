"""Dask graphs that only read a Zarr array (``xr.open_zarr``) are read directly by
:class:`DaskZarrSource`; every other dask graph stays with :class:`DaskSource`, and
both give dask's own values."""

from __future__ import annotations

import contextlib
import pickle
import sys
import warnings
from pathlib import Path
from typing import Any

import dask
import dask.array as dsa
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
from dask.callbacks import Callback
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xbatcher as xb
from reference import reference_sample_batches
from source_contract import DIMS, SourceContract
from xbatcher.sources import (
    DaskSource,
    DaskZarrSource,
    _dask_graph,
    _dask_zarr,
    make_source,
)


def _write(
    ds: xr.Dataset, store: Any, encoding: dict[str, Any], zarr_format: int = 3
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr v3 consolidated-metadata notice
        ds.to_zarr(
            store,
            mode="w",
            consolidated=False,
            encoding=encoding,
            zarr_format=zarr_format,
        )


def _open_zarr(store: Any, **kwargs: Any) -> xr.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return xr.open_zarr(store, consolidated=False, **kwargs)


def _dask_variable(
    values: np.ndarray,
    chunks: tuple[int, ...],
    store: Any,
    view: dict[str, slice] | None = None,
    dask_chunks: Any = None,
) -> xr.Variable:
    """``values`` written to Zarr and reopened with ``open_zarr`` (dask; its default
    chunks unless ``dask_chunks`` is given)."""
    _write(xr.Dataset({"v": (DIMS, values)}), store, {"v": {"chunks": chunks}})
    kwargs = {} if dask_chunks is None else {"chunks": dask_chunks}
    var = _open_zarr(store, **kwargs)["v"]
    return (var.isel(view) if view else var).variable


def _check_chunks(src: Any, expected: np.ndarray) -> None:
    ids = [tuple(int(i) for i in c) for c in np.ndindex(*src.nchunks)]
    for cid, block in zip(ids, src.read_chunks(ids), strict=True):
        assert block.dtype == expected.dtype
        np.testing.assert_array_equal(block, expected[src.chunk_region(cid)])


class _TaskCounter(Callback):  # type: ignore[misc]
    """Counts the dask tasks run while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.tasks = 0

    def _posttask(self, *args: Any) -> None:
        self.tasks += 1


@pytest.fixture
def fresh_probes():
    """Run the once-only probes again in this test, and again after it."""
    _dask_graph.views_work.cache_clear()
    _dask_zarr.roots_work.cache_clear()
    yield
    _dask_graph.views_work.cache_clear()
    _dask_zarr.roots_work.cache_clear()


# --------------------------------------------------------------------------- contract
class TestDaskZarrSource(SourceContract):
    """``open_zarr`` with its default chunks (the storage chunks)."""

    source_class = DaskZarrSource
    submits_chunks = True
    decodes_into = True
    reopens_lazily = True

    def make_variable(self, values, chunks, path):
        return _dask_variable(values, chunks, path / "dask.zarr")


class TestDaskZarrSourceMemoryStore(SourceContract):
    """A MemoryStore lives in this process: pickling carries its data."""

    source_class = DaskZarrSource
    submits_chunks = True
    decodes_into = True
    reopens_lazily = False

    def make_variable(self, values, chunks, path):
        return _dask_variable(values, chunks, zarr.storage.MemoryStore())


class TestDaskZarrSourceRechunkedView(SourceContract):
    """``open_zarr`` with dask chunks unlike the storage chunks, then ``isel`` and a
    rechunk: the chunks are still the storage chunks, cut at the view's edges."""

    source_class = DaskZarrSource
    submits_chunks = True
    decodes_into = True
    reopens_lazily = True

    def make_variable(self, values, chunks, path):
        padded = np.full(tuple(n + 3 for n in values.shape), -1, dtype=values.dtype)
        inner = tuple(slice(2, 2 + n) for n in values.shape)
        padded[inner] = values
        view = dict(zip(DIMS, inner, strict=True))
        var = _dask_variable(
            padded, chunks, path / "view.zarr", view=view, dask_chunks={"a": 5}
        )
        return var.chunk({"b": 4, "c": 3})

    def test_storage_chunks_are_the_variables(self, source):
        assert source.bounds is not None
        for b, c, n in zip(source.bounds, self.chunks, self.shape, strict=True):
            assert b[1] == min(c - 2 % c, n)


# --------------------------------------------------------------------------- routing
def _cf_dataset(kind: str, dtype: str, shape: tuple[int, ...]) -> tuple[Any, Any]:
    """A dataset with variable ``v`` and the encoding that stores it as ``kind``."""
    n = int(np.prod(shape))
    if kind == "plain":
        values = (np.arange(n) % 100).reshape(shape).astype(dtype)
        return xr.Dataset({"v": (DIMS, values)}), {}
    if kind == "mask-scale":
        values = (np.arange(n, dtype=np.float64) * 0.5 - 3.0).reshape(shape)
        values.reshape(-1)[::5] = np.nan
        enc = {"dtype": dtype, "scale_factor": 0.5, "add_offset": -3.0}
        enc["_FillValue"] = np.iinfo(dtype).max if dtype[0] in "iu" else np.nan
        return xr.Dataset({"v": (DIMS, values)}), enc
    if kind == "fill":
        values = np.arange(n, dtype=dtype).reshape(shape)
        return xr.Dataset({"v": (DIMS, values)}), {"_FillValue": 3}
    assert kind == "time"
    start = np.datetime64("1990-01-01T00", "ns")
    values = (start + np.arange(n) * np.timedelta64(6, "h")).reshape(shape)
    return xr.Dataset({"v": (DIMS, values)}), {"units": "hours since 1990-01-01"}


@st.composite
def routed_cases(draw: Any) -> dict[str, Any]:
    """A store (dtype, CF encoding, storage chunks), how ``open_zarr`` chunks it,
    and the slices and rechunk applied before batching."""
    shape = draw(st.tuples(*[st.integers(1, 7)] * 3), label="shape")
    kind = draw(st.sampled_from(["plain", "mask-scale", "fill", "time"]), label="cf")
    dtypes = {
        "plain": ["float32", "float64", "int16", "uint8", "int64", "bool"],
        "mask-scale": ["int16", "uint8", "int32"],
        "fill": ["int32", "float32"],
        "time": ["int64"],
    }
    case: dict[str, Any] = {
        "shape": shape,
        "kind": kind,
        "dtype": draw(st.sampled_from(dtypes[kind]), label="dtype"),
        "chunks": tuple(draw(st.integers(1, n)) for n in shape),
        "memory": draw(st.booleans(), label="memory store"),
        "zarr_format": draw(st.sampled_from([2, 3]), label="zarr format"),
    }
    case["dask_chunks"] = draw(
        st.one_of(
            st.none(),
            st.just({}),
            st.fixed_dictionaries(
                {d: st.integers(1, n) for d, n in zip(DIMS, shape, strict=True)}
            ),
        ),
        label="open_zarr chunks",
    )
    views = []
    for _ in range(draw(st.integers(0, 2), label="isel count")):
        views.append(
            {d: draw(st.tuples(st.integers(0, 3), st.integers(0, 3))) for d in DIMS}
        )
    case["views"] = views
    case["rechunk"] = draw(
        st.none() | st.fixed_dictionaries({d: st.integers(1, 7) for d in DIMS}),
        label="rechunk",
    )
    return case


def _build(case: dict[str, Any], path: Path) -> tuple[xr.DataArray, xr.Dataset]:
    """The routed DataArray and the dataset it was written from."""
    ds, enc = _cf_dataset(case["kind"], case["dtype"], case["shape"])
    if case["kind"] == "plain" and case["dtype"] == "bool":
        ds["v"] = ds["v"] % 2 == 0
    store: Any = zarr.storage.MemoryStore() if case["memory"] else path / "s.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(
            store,
            mode="w",
            consolidated=False,
            zarr_format=case["zarr_format"],
            encoding={"v": {"chunks": case["chunks"], **enc}},
        )
    kwargs = {} if case["dask_chunks"] is None else {"chunks": case["dask_chunks"]}
    da = _open_zarr(store, **kwargs)["v"]
    for cut in case["views"]:  # trims from both ends, while something is left
        sel = {}
        for d, (lo, hi) in cut.items():
            n = da.sizes[d]
            lo = min(lo, n - 1)
            sel[d] = slice(lo, max(lo + 1, n - hi))
        da = da.isel(sel)
    if case["rechunk"] is not None:
        da = da.chunk(case["rechunk"])
    return da, ds


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(case=routed_cases())
def test_zarr_reads_behind_dask_are_routed_and_read_like_dask(tmp_path_factory, case):
    da, _ = _build(case, tmp_path_factory.mktemp("r"))
    src = make_source("v", da.variable)
    assert type(src) is DaskZarrSource
    # dask's own values, and the storage chunks whatever the dask chunks
    _check_chunks(src, da.values)
    assert src.storage_chunks() == tuple(tuple(np.diff(b)) for b in src.bounds)
    with _TaskCounter() as counter:  # the direct path runs no dask task
        src.read_chunks([(0,) * da.ndim])
    assert counter.tasks == 0


# graphs that do more than read the store: each must stay with dask
NOT_ROUTED = {
    "times 2": lambda v: v * 2,
    "plus itself": lambda v: v + v,
    "where": lambda v: v.where(v > 3),
    "fillna": lambda v: v.fillna(0),
    "astype": lambda v: v.astype("float64"),
    "map_blocks identity": lambda v: v.copy(data=v.data.map_blocks(lambda x: x)),
    "xarray map_blocks": lambda v: v.map_blocks(lambda x: x),
    "integer isel": lambda v: v.isel(a=1),
    "list isel": lambda v: v.isel(a=[0, 2, 1]),
    "stepped isel": lambda v: v.isel(b=slice(None, None, 2)),
    "reversed": lambda v: v.isel(b=slice(None, None, -1)),
    "transpose": lambda v: v.transpose("c", "b", "a"),
    "concat": lambda v: xr.concat([v, v], dim="a"),
    "shift": lambda v: v.shift(a=1),
    "roll": lambda v: v.roll(b=1),
    "persisted": lambda v: v.persist(),
    "expand_dims": lambda v: v.expand_dims("z"),
}


@pytest.mark.parametrize("name", list(NOT_ROUTED))
def test_graphs_that_compute_are_read_through_dask(tmp_path, name):
    values = np.arange(7 * 6 * 5, dtype=np.float32).reshape(7, 6, 5)
    _write(xr.Dataset({"v": (DIMS, values)}), tmp_path / "s.zarr", {})
    base = _open_zarr(tmp_path / "s.zarr")["v"]
    da = NOT_ROUTED[name](base)
    src = make_source("v", da.variable)
    assert type(src) is DaskSource
    _check_chunks(src, da.values)


def test_other_backends_behind_dask_are_read_through_dask(tmp_path):
    """NetCDF, and a Zarr encoding the direct reader leaves to xarray, opened with
    dask: dask reads them."""
    import numcodecs

    values = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    ds = xr.Dataset({"v": (DIMS, values)})
    bz2 = {"v": {"compressors": (numcodecs.BZ2(),)}}
    _write(ds, tmp_path / "bz2.zarr", bz2, zarr_format=2)
    cases = [_open_zarr(tmp_path / "bz2.zarr")["v"]]
    with contextlib.suppress(ValueError):  # no NetCDF engine installed
        ds.to_netcdf(tmp_path / "v.nc")
        cases.append(xr.open_dataset(tmp_path / "v.nc", chunks={})["v"])
    cases.append(ds["v"].chunk({"a": 2}))  # an in-memory array behind dask
    for da in cases:
        src = make_source("v", da.variable)
        assert type(src) is DaskSource
        _check_chunks(src, values)


@pytest.mark.parametrize("shuffle", [False, True, "chunks"])
def test_batches_equal_isel_whatever_the_dask_chunks(tmp_path, shuffle):
    """Dask chunks unlike the storage chunks: the batches are the same as through
    dask (the chunk-aware shuffle groups by the storage chunks now) and as isel."""
    values = np.arange(12 * 9 * 8, dtype=np.float32).reshape(12, 9, 8)
    ds = xr.Dataset(
        {"v": (("time", "lat", "lon"), values)},
        coords={"time": pd.date_range("2000-01-01", periods=12), "lat": np.arange(9.0)},
    )
    path = tmp_path / "s.zarr"
    _write(ds, path, {"v": {"chunks": (4, 5, 8)}})
    opened = _open_zarr(path, chunks={"time": 3, "lat": 9})
    params = {"input_dims": {"lat": 4, "lon": 3}, "input_overlap": {"lat": 1}}
    seed = 5 if shuffle else None
    bgen = xb.BatchGenerator(opened, **params, batch_size=6, shuffle=shuffle, seed=seed)
    assert type(bgen.engine.sources["v"]) is DaskZarrSource
    expected = reference_sample_batches(ds, **params, batch_size=1)
    by_number = {int(b["sample"][0]): b.isel(sample=0, drop=True) for b in expected}
    seen, arrays, units = [], [], []
    with _TaskCounter() as counter:
        for i, array in enumerate(bgen.arrays):  # (units of this epoch's batches)
            arrays.append(array)
            units.append(bgen.batch_units(i).tolist())
    assert counter.tasks == 0  # not one dask task: every chunk read directly
    for array, numbers in zip(arrays, units, strict=True):
        seen += numbers
        for j, n in enumerate(numbers):
            np.testing.assert_array_equal(array["v"][j], by_number[n]["v"].values)
    assert sorted(seen) == sorted(by_number)
    if shuffle != "chunks":  # the same order as reading through dask
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(_dask_zarr, "roots_work", lambda: False)
            through_dask = xb.BatchGenerator(
                opened, **params, batch_size=6, shuffle=shuffle, seed=seed
            )
            assert type(through_dask.engine.sources["v"]) is DaskSource
            for ours, theirs in zip(arrays, through_dask.arrays, strict=True):
                np.testing.assert_array_equal(ours["v"], theirs["v"])


def test_a_routed_source_pickles_without_data(tmp_path):
    values = np.arange(64 * 64 * 16, dtype=np.float64).reshape(64, 64, 16)
    src = make_source("v", _dask_variable(values, (16, 32, 16), tmp_path / "s.zarr"))
    assert type(src) is DaskZarrSource
    _check_chunks(src, values)
    back = pickle.loads(pickle.dumps(src))
    assert len(pickle.dumps(src)) < values.nbytes // 20
    _check_chunks(back, values)


# --------------------------------------------------------------------------- guards
def _routed(tmp_path: Path) -> tuple[xr.DataArray, np.ndarray]:
    values = np.arange(5 * 4 * 3, dtype=np.float32).reshape(5, 4, 3)
    return xr.DataArray(
        _dask_variable(values, (2, 4, 3), tmp_path / "g.zarr", view={"a": slice(1, 5)})
    ), values[1:5]


def test_the_probes_pass_on_this_dask_and_xarray(fresh_probes):
    assert _dask_graph.views_work() is True
    assert _dask_zarr.roots_work() is True


def test_without_dask_task_spec_dask_reads_everything(
    tmp_path, monkeypatch, fresh_probes
):
    """dask reorganised its private graph module: the probe fails, dask reads."""
    da, values = _routed(tmp_path)
    with monkeypatch.context() as mp:  # (dask itself needs it to compute)
        mp.setitem(sys.modules, "dask._task_spec", None)
        assert _dask_graph.views_work() is False
    src = make_source("v", da.variable)
    assert type(src) is DaskSource
    _check_chunks(src, values)


def test_a_walk_that_misreads_slices_fails_the_probe(
    tmp_path, monkeypatch, fresh_probes
):
    """dask changed what its slicing tasks mean: the probe's known answers no longer
    come out, so nothing is routed (rather than read at the wrong offsets)."""
    da, _ = _routed(tmp_path)
    monkeypatch.setattr(_dask_graph, "_getitem", lambda box, index: box)
    assert _dask_graph.views_work() is False
    assert type(make_source("v", da.variable)) is DaskSource


def test_a_changed_blockwise_template_is_not_plain(tmp_path):
    """from_array with a getter of the user's own: a Blockwise whose function is not
    dask's getter, so not routed."""

    def my_getter(a, b, asarray=True, lock=None):
        return np.asarray(a[b]) * 2

    da, _ = _routed(tmp_path)
    root = _dask_graph.read_view(da.data).root
    custom = dsa.from_array(root, chunks=(2, 2, 2), getitem=my_getter)
    assert _dask_graph.read_view(custom) is None
    assert type(make_source("v", xr.Variable(DIMS, custom))) is DaskSource


def test_a_renamed_xarray_adapter_leaves_dask_to_read(
    tmp_path, monkeypatch, fresh_probes
):
    from xarray.core import indexing

    da, values = _routed(tmp_path)
    monkeypatch.delattr(indexing, "ImplicitToExplicitIndexingAdapter")
    assert _dask_zarr.roots_work() is False
    src = make_source("v", da.variable)
    assert type(src) is DaskSource
    _check_chunks(src, values)


def test_an_unexpected_xarray_root_fails_the_probe(tmp_path, monkeypatch, fresh_probes):
    """xarray hands dask something else than the adapter this module unwraps."""
    da, _ = _routed(tmp_path)
    monkeypatch.setattr(_dask_zarr, "_adapter_class", lambda: np.ndarray)
    assert _dask_zarr.roots_work() is False
    assert type(make_source("v", da.variable)) is DaskSource


def test_the_probes_read_no_data(fresh_probes):
    """The probes wrap arrays whose reads raise: passing means nothing was read."""
    with dask.config.set(scheduler="sync"):
        assert _dask_graph.views_work() and _dask_zarr.roots_work()


def test_each_dask_array_is_walked_once(tmp_path, monkeypatch):
    """Building sources over the same dask arrays again (another generator over the
    same Dataset of two variables) walks no graph again: a walk costs microseconds
    per chunk (before, only the last array's walk was kept)."""
    from xbatcher.sources import _dask_zarr

    assert _dask_zarr.roots_work()  # the probe's own walk, done (and kept) here
    walked: list[str] = []
    real = _dask_zarr.read_view

    def counting(array: Any) -> Any:
        walked.append(array.name)
        return real(array)

    monkeypatch.setattr(_dask_zarr, "read_view", counting)
    values = np.arange(240, dtype=np.float32).reshape(6, 8, 5)
    data = xr.Dataset({"v": (DIMS, values), "w": (DIMS, -values)})
    _write(data, tmp_path / "s.zarr", {"v": {"chunks": (2, 4, 5)}})
    ds = _open_zarr(tmp_path / "s.zarr").isel(a=slice(1, None))
    for _ in range(3):
        bgen = xb.BatchGenerator(ds, input_dims={"b": 4}, batch_size=3)
        kinds = {k: type(s) for k, s in bgen.engine.sources.items()}
        assert set(kinds.values()) == {DaskZarrSource}, kinds
        xr.testing.assert_identical(
            bgen[0],
            xb.BatchGenerator(ds.compute(), input_dims={"b": 4}, batch_size=3)[0],
        )
    assert sorted(walked) == sorted({ds["v"].data.name, ds["w"].data.name})


def test_an_array_changed_in_place_is_walked_again():
    """The kept walk of a dask array is dropped when the array is changed in place
    (its graph is no longer a plain read)."""
    from xbatcher.sources._dask_graph import _ProbeArray
    from xbatcher.sources._dask_zarr import _view_of

    class Probe(_ProbeArray):
        def __getitem__(self, key: Any) -> Any:
            return np.zeros((6, 5))[key]

    arr = dsa.from_array(Probe(), chunks=(3, 5), meta=np.empty((0, 0)))[1:]
    view = _view_of(arr)
    assert view is not None and view.offsets == (1, 0)
    assert _view_of(arr) is view
    arr[0, 0] = 1.0  # dask rewrites the graph (and the name) in place
    assert _view_of(arr) is None
