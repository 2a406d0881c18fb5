"""BatchGenerator against the reference implementation of docs/batching.md."""

from __future__ import annotations

import warnings
from collections.abc import Hashable
from typing import Any

import dask
import dask.array as dsa
import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import xbatcher as xb
from conftest import (
    ChunkCounter,
    count_windows,
    make_dataarray,
    make_dataset,
    positional,
    schemas,
    to_backend,
)
from reference import (
    reference_batch,
    reference_batches,
    reference_sample_batch,
    reference_sample_batches,
    reference_samples,
    reference_windows,
    sliced_dims,
)

# 0.4-layout schemas over the standard data (time=6, level=3, lat=10, lon=12).
CASES: dict[str, dict[str, Any]] = {
    "two-inputs": {"input_dims": {"lon": 4, "lat": 5}},
    "overlap": {
        "input_dims": {"lat": 5, "lon": 4},
        "input_overlap": {"lat": 2, "lon": 1},
    },
    "batch-dim": {"input_dims": {"lon": 6}, "batch_dims": {"time": 2}},
    "two-batch-dims": {
        "input_dims": {"lon": 6, "lat": 5},
        "batch_dims": {"time": 3, "level": 2},
    },
    "all-dims-input": {"input_dims": {"time": 2, "lon": 12, "lat": 10, "level": 3}},
    "keep-remainder": {
        "input_dims": {"lon": 5},
        "input_overlap": {"lon": 1},
        "keep_remainder": True,
    },
    "batch-only-overlap": {
        "input_dims": {"lat": 5},
        "batch_dims": {"time": 4},
        "input_overlap": {"time": 2},
    },
    "concat": {"input_dims": {"lon": 4, "lat": 5}, "concat_input_dims": True},
    "concat-batch-dim": {
        "input_dims": {"lon": 4, "lat": 5},
        "batch_dims": {"time": 2},
        "concat_input_dims": True,
    },
    "concat-dup-dim": {
        "input_dims": {"lon": 3, "lat": 5},
        "input_overlap": {"lon": 1},
        "batch_dims": {"lon": 7, "time": 3},
        "concat_input_dims": True,
    },
    "concat-remainder": {
        "input_dims": {"lon": 5, "lat": 4},
        "batch_dims": {"lon": 9},
        "concat_input_dims": True,
        "keep_remainder": True,
    },
    "concat-all-input": {
        "input_dims": {"lon": 6, "lat": 5, "time": 3, "level": 3},
        "concat_input_dims": True,
    },
}

SAMPLE_CASES: dict[str, dict[str, Any]] = {
    "samples": {"input_dims": {"lon": 6, "lat": 5}, "batch_size": 7},
    "samples-batch-dim": {
        "input_dims": {"lat": 5, "lon": 6},
        "batch_dims": {"time": 3},
        "batch_size": 5,
        "drop_last": True,
    },
    "samples-remainder": {
        "input_dims": {"lon": 12, "lat": 4},
        "input_overlap": {"lat": 1},
        "keep_remainder": True,
        "batch_size": 8,
    },
}

REF_KEYS = (
    "input_dims",
    "input_overlap",
    "batch_dims",
    "concat_input_dims",
    "keep_remainder",
)


def ref_kwargs(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k in REF_KEYS}


def quiet_generator(obj: Any, **params: Any) -> xb.BatchGenerator:
    """A generator with the (expected, tested elsewhere) duplicate-dim warning muted."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return xb.BatchGenerator(obj, **params)


def expected_batches(obj: Any, params: dict[str, Any]) -> list[Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if params.get("batch_size") is not None:
            return reference_sample_batches(
                obj,
                **{
                    k: v
                    for k, v in ref_kwargs(params).items()
                    if k != "concat_input_dims"
                },
                batch_size=params["batch_size"],
                drop_last=params.get("drop_last", False),
            )
        return reference_batches(obj, **ref_kwargs(params))


def assert_arrays_match(arrays: Any, batch: Any) -> None:
    """The numpy fast path has the shape, dim order, dtype and values of the batch."""
    if isinstance(batch, xr.DataArray):
        assert isinstance(arrays, np.ndarray)
        expected = {None: batch}
        got = {None: arrays}
    else:
        assert isinstance(arrays, dict)
        assert list(arrays) == list(batch.data_vars)
        expected = {k: batch[k] for k in batch.data_vars}
        got = arrays
    for name, var in expected.items():
        arr = got[name]
        assert isinstance(arr, np.ndarray), name
        assert arr.dtype == var.dtype, name
        assert arr.shape == var.shape, name
        np.testing.assert_array_equal(arr, var.values)


def is_numpy_backed(var: xr.Variable) -> bool:
    # ``Variable.data`` would load a lazily indexed backend array; look at what is held.
    return isinstance(var._data, np.ndarray)


def loaded_variables(batch: Any) -> dict[Hashable, xr.Variable]:
    """Data variables and non-index coordinates (index coords are pandas-backed)."""
    ds = batch._to_temp_dataset() if isinstance(batch, xr.DataArray) else batch
    return {k: v for k, v in ds.variables.items() if k not in ds.xindexes}


# --------------------------------------------------------------------------- vs reference
@pytest.mark.parametrize("case", list(CASES) + list(SAMPLE_CASES))
def test_batches_match_reference(case: str, source: Any) -> None:
    params = {**CASES, **SAMPLE_CASES}[case]
    bgen = quiet_generator(source, **params)
    expected = expected_batches(
        source.compute(), params
    )  # in memory: faster, same values
    assert len(bgen) == len(expected) > 0
    for i, ref in enumerate(expected):
        got = bgen[i]
        xr.testing.assert_identical(got, ref)
        assert_arrays_match(bgen.arrays[i], got)


@pytest.mark.parametrize(
    "case", ["two-batch-dims", "concat-dup-dim", "samples-batch-dim"]
)
def test_iteration_equals_indexing(case: str, kind: str) -> None:
    params = {**CASES, **SAMPLE_CASES}[case]
    obj = make_dataarray() if kind == "DataArray" else make_dataset()
    bgen = quiet_generator(obj, **params)
    batches = list(bgen)
    arrays = list(bgen.arrays)
    assert len(batches) == len(arrays) == len(bgen)
    for i, (batch, arr) in enumerate(zip(batches, arrays, strict=True)):
        xr.testing.assert_identical(batch, bgen[i])
        assert_arrays_match(arr, batch)
    # a second epoch gives the same batches in the same order
    for batch, again in zip(batches, bgen, strict=True):
        xr.testing.assert_identical(batch, again)


@pytest.mark.parametrize("case", ["overlap", "concat-batch-dim", "samples"])
def test_negative_and_numpy_indices(case: str) -> None:
    params = {**CASES, **SAMPLE_CASES}[case]
    bgen = quiet_generator(make_dataset(), **params)
    n = len(bgen)
    for i in (0, 1, n - 1):
        expected = bgen[i]
        for key in (i - n, np.int64(i), np.int32(i), np.int64(i - n), np.intp(i)):
            xr.testing.assert_identical(bgen[key], expected)
        assert_arrays_match(bgen.arrays[i - n], expected)
        assert_arrays_match(bgen.arrays[np.int64(i)], expected)


def test_attributes_and_schema() -> None:
    ds = make_dataset()
    bgen = quiet_generator(ds, input_dims={"lon": 4}, batch_dims={"time": 2})
    assert bgen.ds is ds
    assert bgen.input_dims == {"lon": 4}
    assert bgen.input_overlap == {}
    assert bgen.batch_dims == {"time": 2}
    assert bgen.concat_input_dims is False
    assert bgen.preload_batch is True
    for attr in ("input_dims", "input_overlap", "batch_dims"):
        assert type(getattr(bgen, attr)) is dict
    for params in list(CASES.values()) + list(SAMPLE_CASES.values()):
        schema = quiet_generator(ds, **params).schema
        assert isinstance(schema, xb.BatchSchema)
        assert len(schema) == len(quiet_generator(ds, **params))
        assert xb.BatchSchema.from_json(schema.to_json()) == schema


# --------------------------------------------------------------------------- properties
def _generator_kwargs(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(
    schema=schemas(),
    kind=st.sampled_from(["DataArray", "Dataset"]),
    chunked=st.booleans(),
)
def test_property_matches_reference(
    schema: tuple[dict[str, int], dict[str, Any]], kind: str, chunked: bool
) -> None:
    sizes, params = schema
    obj = positional(sizes, kind)
    if chunked:
        obj = obj.chunk({d: max(1, -(-n // 2)) for d, n in sizes.items()})
    bgen = quiet_generator(obj, **_generator_kwargs(params))
    expected = expected_batches(obj, params)
    assert len(bgen) == len(expected) == len(bgen.schema)
    for i, ref in enumerate(expected):
        got = bgen[i]
        xr.testing.assert_identical(got, ref)
        assert_arrays_match(bgen.arrays[i], got)


def _window_starts_in(
    values: np.ndarray, shape: tuple[int, ...], dims: list[str], sliced: list[str]
) -> tuple[int, ...]:
    """Decode the start of each sliced dim from positional values (value = flat index)."""
    pos = np.unravel_index(np.asarray(values).ravel(), shape)
    return tuple(int(pos[dims.index(d)].min()) for d in sliced)


def delivered_windows(
    bgen: xb.BatchGenerator, sizes: dict[str, int]
) -> list[tuple[int, ...]]:
    """Every window delivered in one epoch, decoded from the values of the batches."""
    dims, shape = list(sizes), tuple(sizes.values())
    sliced = sliced_dims(bgen.input_dims, bgen.batch_dims)
    out = []
    for batch in bgen:
        if not bgen.concat_input_dims:
            out.append(_window_starts_in(batch.values, shape, dims, sliced))
            continue
        # concat: axis 0 is ``sample`` (with an ``input_batch`` level) or ``input_batch``
        assert batch.dims[0] in ("sample", "input_batch")
        which = batch["input_batch"].values
        for k in np.unique(which):
            out.append(_window_starts_in(batch.values[which == k], shape, dims, sliced))
    return out


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(schema=schemas(max_windows=60))
def test_property_every_window_once_per_epoch(
    schema: tuple[dict[str, int], dict[str, Any]],
) -> None:
    sizes, params = schema
    obj = positional(sizes)
    bgen = quiet_generator(obj, **_generator_kwargs(params))
    got = delivered_windows(bgen, sizes)
    sliced = sliced_dims(params["input_dims"], params["batch_dims"] or {})
    expected = [
        tuple(w[d].start for d in sliced)
        for batch in reference_windows(obj, **ref_kwargs(params))
        for w in batch
    ]
    assert len(got) == len(set(got)), "a window was delivered twice"
    assert set(got) == set(expected)
    assert len(expected) == len(set(expected))
    if not params["concat_input_dims"]:
        # without grouping every window of the grid is delivered (grid + remainder)
        assert len(got) == count_windows(sizes, params)


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(
    schema=schemas(sample_mode=True),
    batch_size=st.integers(1, 9),
    drop_last=st.booleans(),
    kind=st.sampled_from(["DataArray", "Dataset"]),
)
def test_property_samples(
    schema: tuple[dict[str, int], dict[str, Any]],
    batch_size: int,
    drop_last: bool,
    kind: str,
) -> None:
    sizes, params = schema
    obj = positional(sizes, kind)
    samples = reference_samples(
        obj, **{k: v for k, v in ref_kwargs(params).items() if k != "concat_input_dims"}
    )
    assume(len(samples) <= 150)
    params = {
        **params,
        "concat_input_dims": False,
        "batch_size": batch_size,
        "drop_last": drop_last,
    }
    bgen = quiet_generator(obj, **_generator_kwargs(params))
    expected = expected_batches(obj, params)
    assert len(bgen) == len(expected)
    seen = []
    for i, ref in enumerate(expected):
        got = bgen[i]
        xr.testing.assert_identical(got, ref)
        assert_arrays_match(bgen.arrays[i], got)
        seen.extend(got["sample"].values.tolist())
    n_kept = len(samples) - (len(samples) % batch_size if drop_last else 0)
    assert seen == list(range(n_kept)), "every sample exactly once, in order"


# --------------------------------------------------------------------------- samples mode
def test_sample_mode_layout_by_hand() -> None:
    """Samples numbered over unsliced dims (dataset order) then sliced dims."""
    da = make_dataarray()  # (time=6, level=3, lat=10, lon=12)
    bgen = xb.BatchGenerator(da, input_dims={"lon": 6, "lat": 5}, batch_size=4)
    # unsliced (time, level) = 18 points x sliced lon(2) x lat(2) windows = 72 samples
    assert len(bgen) == 18
    b = bgen[1]
    assert b.dims == ("sample", "lon_input", "lat_input")
    assert b.sizes == {"sample": 4, "lon_input": 6, "lat_input": 5}
    np.testing.assert_array_equal(b["sample"].values, [4, 5, 6, 7])
    assert b["lon"].dims == ("sample", "lon_input")
    assert b["lat"].dims == ("sample", "lat_input")
    assert b["time"].dims == ("sample",)
    assert b["level"].dims == ("sample",)
    # sample 5 = (time 0, level 1, lon window 0, lat window 1)
    sel = {"time": 0, "level": 1, "lon": slice(0, 6), "lat": slice(5, 10)}
    np.testing.assert_array_equal(
        b.isel(sample=1).values, da.isel(sel).transpose("lon", "lat").values
    )
    xr.testing.assert_identical(
        b,
        reference_sample_batch(
            da, reference_samples(da, {"lon": 6, "lat": 5})[4:8], [4, 5, 6, 7]
        ),
    )


def test_sample_mode_drop_last() -> None:
    da = make_dataarray()
    params = {"input_dims": {"lon": 6, "lat": 5}}
    n_samples = 72
    keep = xb.BatchGenerator(da, **params, batch_size=10)
    drop = xb.BatchGenerator(da, **params, batch_size=10, drop_last=True)
    assert len(keep) == 8
    assert len(drop) == 7
    assert keep[-1].sizes["sample"] == n_samples - 70
    xr.testing.assert_identical(drop[-1], keep[6])
    with pytest.raises(IndexError):
        drop[7]


def test_sample_mode_duplicate_dim_warns() -> None:
    with pytest.warns(UserWarning, match="lon"):
        bgen = xb.BatchGenerator(
            make_dataarray(),
            input_dims={"lon": 6},
            batch_dims={"lon": 12},
            batch_size=4,
        )
    ref = reference_sample_batches(make_dataarray(), {"lon": 6}, batch_size=4)
    assert len(bgen) == len(ref)
    xr.testing.assert_identical(bgen[3], ref[3])


# --------------------------------------------------------------------------- lazy / preload
@pytest.mark.parametrize(
    "case", ["two-inputs", "concat-batch-dim", "concat", "samples"]
)
@pytest.mark.parametrize("backend_name", ["dask", "zarr", "zarr-dask"])
def test_preload_returns_numpy(case: str, backend_name: str, tmp_path: Any) -> None:
    params = {**CASES, **SAMPLE_CASES}[case]
    src = to_backend(make_dataset(), backend_name, tmp_path / "s.zarr")
    bgen = xb.BatchGenerator(src, **params, preload_batch=True)
    for i in (0, len(bgen) - 1):
        batch = bgen[i]
        for name, var in loaded_variables(batch).items():
            assert is_numpy_backed(var), (
                f"{name} is {type(var._data).__name__}, not numpy"
            )


@pytest.mark.parametrize(
    "case", ["two-inputs", "batch-dim", "concat-batch-dim", "samples"]
)
@pytest.mark.parametrize("kind_", ["DataArray", "Dataset"])
def test_preload_false_is_lazy(case: str, kind_: str) -> None:
    params = {**CASES, **SAMPLE_CASES}[case]
    obj = make_dataarray() if kind_ == "DataArray" else make_dataset()
    src = obj.chunk({"time": 2, "lat": 5})
    bgen = xb.BatchGenerator(src, **params, preload_batch=False)
    expected = expected_batches(obj, params)
    assert len(bgen) == len(expected)
    for i in (0, len(bgen) - 1):
        batch = bgen[i]
        data_vars = (
            [batch.variable]
            if isinstance(batch, xr.DataArray)
            else [v.variable for v in batch.data_vars.values()]
        )
        for var in data_vars:
            assert isinstance(var.data, dsa.Array)
        xr.testing.assert_identical(batch.compute(), expected[i])


@pytest.mark.parametrize("preload", [True, False])
def test_reads_only_needed_chunks(preload: bool) -> None:
    counter = ChunkCounter((8, 20, 30), (2, 10, 10))
    da = xr.DataArray(counter.array, dims=("time", "y", "x"), name="v")
    ref = xr.DataArray(
        np.arange(8 * 20 * 30, dtype=np.float64).reshape(8, 20, 30),
        dims=("time", "y", "x"),
        name="v",
    )
    with dask.config.set(scheduler="synchronous"):
        bgen = xb.BatchGenerator(
            da,
            input_dims={"x": 10, "y": 5},
            batch_dims={"time": 2},
            preload_batch=preload,
        )
        assert counter.computed == [], "constructing the generator computed data"
        # batch 7: time block 0, x window 1 (10..20), y window 3 (15..20)
        batch = bgen[7]
        if not preload:
            batch = batch.compute()
        xr.testing.assert_identical(
            batch, ref.isel(time=slice(0, 2), x=slice(10, 20), y=slice(15, 20))
        )
        needed = counter.needed({0: (0, 2), 1: (15, 20), 2: (10, 20)})
        assert set(counter.computed) <= needed, (
            f"read chunks {set(counter.computed) - needed} outside the batch"
        )
        assert len(counter.computed) <= len(needed), (
            "a chunk was computed twice for one batch"
        )

        # concat mode with batch_dims: one time block per batch, not the whole source
        counter.computed.clear()
        bgen = xb.BatchGenerator(
            da,
            input_dims={"x": 10, "y": 5},
            batch_dims={"time": 2},
            concat_input_dims=True,
            preload_batch=preload,
        )
        batch = bgen[1]
        if not preload:
            batch = batch.compute()
        assert set(counter.computed) <= counter.needed({0: (2, 4)})
        xr.testing.assert_identical(
            batch,
            reference_batches(
                ref, {"x": 10, "y": 5}, batch_dims={"time": 2}, concat_input_dims=True
            )[1],
        )


def test_huge_schema_constructs_without_work() -> None:
    """O(1) construction, counted rather than timed: no dask task runs and almost no
    memory is allocated for 10**10 windows; batch -1 computes only its own chunks."""
    import tracemalloc

    from dask.callbacks import Callback

    arr = dsa.zeros((10**5, 10**3, 10**3), chunks=(1000, 100, 100), dtype=np.float32)
    da = xr.DataArray(arr, dims=("t", "y", "x"))
    tasks: list[object] = []

    class Count(Callback):  # type: ignore[misc]
        def _posttask(self, key: object, *args: object) -> None:
            tasks.append(key)

    tracemalloc.start()
    with Count():
        bgen = xb.BatchGenerator(da, input_dims={"t": 10, "y": 1, "x": 1})
        _, peak = tracemalloc.get_traced_memory()
        assert len(bgen) == 10**10
        assert tasks == []
        assert peak < 8 * 2**20, f"construction allocated {peak} bytes"
        last = bgen[-1]
    tracemalloc.stop()
    assert last.sizes == {"t": 10, "y": 1, "x": 1}
    assert float(last.sum()) == 0.0
    # the last window lies in one storage chunk: one zeros task for that chunk
    # (plus at most a getter), never a task per chunk of the 10**5 x 10**3 x 10**3 array
    assert 1 <= len(tasks) <= 4, tasks


# --------------------------------------------------------------------------- specific rules
def test_duplicate_dim_warns_without_concat() -> None:
    da = make_dataarray()
    with pytest.warns(UserWarning, match="lon"):
        bgen = xb.BatchGenerator(da, input_dims={"lon": 4}, batch_dims={"lon": 8})
    # the batch_dims entry is ignored: same batches as without it
    plain = xb.BatchGenerator(da, input_dims={"lon": 4})
    assert len(bgen) == len(plain) == 3
    for a, b in zip(bgen, plain, strict=True):
        xr.testing.assert_identical(a, b)


def test_duplicate_dim_does_not_warn_with_concat() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        xb.BatchGenerator(
            make_dataarray(),
            input_dims={"lon": 4},
            batch_dims={"lon": 8},
            concat_input_dims=True,
        )


def test_concat_span_not_multiple_of_window_keeps_04_count() -> None:
    # lon=12, window 3, span 7: 0.4 puts ceil(7 / 3) = 3 consecutive windows in a
    # batch (starts 0, 3, 6) and makes 12 // 7 = 1 batch; the 4th window is left out.
    da = make_dataarray()
    bgen = xb.BatchGenerator(
        da,
        input_dims={"lon": 3, "lat": 5},
        batch_dims={"lon": 7},
        concat_input_dims=True,
    )
    assert len(bgen) == 1
    (batch,) = list(bgen)
    # 3 lon windows x 2 lat windows per batch, each with all (time, level) points
    assert batch.sizes == {"sample": 3 * 2 * 6 * 3, "lon_input": 3, "lat_input": 5}
    np.testing.assert_array_equal(np.unique(batch["lon"].values), da["lon"].values[0:9])
    expected = reference_batches(
        da, {"lon": 3, "lat": 5}, batch_dims={"lon": 7}, concat_input_dims=True
    )
    for got, ref in zip(bgen, expected, strict=True):
        xr.testing.assert_identical(got, ref)


def test_keep_remainder_covers_last_points() -> None:
    da = make_dataarray()  # lon has 12 points; windows of 5 at 0, 5 and (remainder) 7
    default = xb.BatchGenerator(da, input_dims={"lon": 5})
    keep = xb.BatchGenerator(da, input_dims={"lon": 5}, keep_remainder=True)
    assert len(default) == 2
    assert len(keep) == 3
    covered = np.unique(np.concatenate([b["lon"].values for b in keep]))
    np.testing.assert_array_equal(covered, da["lon"].values)
    xr.testing.assert_identical(
        keep[-1], reference_batch(da, [{"lon": slice(7, 12)}], {"lon": 5}, False)
    )
    assert keep[-1].dims == ("sample", "lon")
    assert da["lon"].values[-1] not in np.concatenate(
        [b["lon"].values for b in default]
    )
    # concat: the remainder window joins a last, smaller group
    cat = xb.BatchGenerator(
        da,
        input_dims={"lon": 5},
        batch_dims={"lon": 10},
        concat_input_dims=True,
        keep_remainder=True,
    )
    assert [b["input_batch"].to_index().nunique() for b in cat] == [2, 1]
    xr.testing.assert_identical(
        cat[1],
        reference_batches(
            da,
            {"lon": 5},
            batch_dims={"lon": 10},
            concat_input_dims=True,
            keep_remainder=True,
        )[1],
    )


@pytest.mark.parametrize("kind_", ["DataArray", "Dataset"])
def test_accessor(kind_: str) -> None:
    obj = make_dataarray() if kind_ == "DataArray" else make_dataset()
    params = {"input_dims": {"lon": 4, "lat": 5}, "batch_dims": {"time": 3}}
    via_accessor = obj.batch.generator(**params)
    direct = xb.BatchGenerator(obj, **params)
    assert isinstance(via_accessor, xb.BatchGenerator)
    assert len(via_accessor) == len(direct)
    for a, b in zip(via_accessor, direct, strict=True):
        xr.testing.assert_identical(a, b)
    sampled = obj.batch.generator(input_dims={"lon": 4}, batch_size=5)
    xr.testing.assert_identical(
        sampled[2], xb.BatchGenerator(obj, input_dims={"lon": 4}, batch_size=5)[2]
    )


# --------------------------------------------------------------------------- 0.4 layouts
def test_04_layout_one_extra_dim_keeps_dataset_order() -> None:
    # DataArray(time=10, y=20, x=30), input_dims x=10, y=5: sliced dims [x, y] give
    # 3 x 4 = 12 windows. Only `time` is left besides the input dims, so nothing is
    # stacked and every batch keeps the dataset's dims in the dataset's order.
    da = xr.DataArray(
        np.random.default_rng(0).random((10, 20, 30)), dims=("time", "y", "x")
    )
    bgen = xb.BatchGenerator(da, input_dims={"x": 10, "y": 5})
    assert len(bgen) == 12
    assert bgen[0].dims == ("time", "y", "x")
    assert bgen[0].shape == (10, 5, 10)
    # batches are row-major over [x, y]: y changes fastest
    xr.testing.assert_identical(bgen[1], da.isel(x=slice(0, 10), y=slice(5, 10)))
    xr.testing.assert_identical(bgen[4], da.isel(x=slice(10, 20), y=slice(0, 5)))

    # batch_dims time=2 adds `time` in front of the sliced dims: 5 x 3 x 4 = 60 batches
    bgen = xb.BatchGenerator(da, input_dims={"x": 10, "y": 5}, batch_dims={"time": 2})
    assert len(bgen) == 60
    assert bgen[13].dims == ("time", "y", "x")
    assert bgen[13].shape == (2, 5, 10)
    xr.testing.assert_identical(
        bgen[13], da.isel(time=slice(2, 4), x=slice(0, 10), y=slice(5, 10))
    )


def test_04_layout_two_extra_dims_stack_into_sample() -> None:
    # Dataset(time=4, z=3, y=20, x=30), input_dims x=10, y=5: time and z are stacked
    # into `sample` (levels in dataset order) and the batch is (sample, x, y).
    rng = np.random.default_rng(1)
    ds = xr.Dataset(
        {"a": (("time", "z", "y", "x"), rng.random((4, 3, 20, 30)))},
        coords={"time": np.arange(4), "z": [10, 20, 30]},
    )
    bgen = xb.BatchGenerator(ds, input_dims={"x": 10, "y": 5})
    b = bgen[0]
    assert len(bgen) == 12
    assert b["a"].dims == ("sample", "x", "y")
    assert b["a"].shape == (12, 10, 5)
    assert list(b.indexes["sample"].names) == ["time", "z"]
    expected = (
        ds.isel(x=slice(0, 10), y=slice(0, 5))
        .stack(sample=["time", "z"])
        .transpose("sample", "x", "y")
    )
    xr.testing.assert_identical(b, expected)


def test_04_layout_concat() -> None:
    # concat_input_dims with batch_dims time=2 on DataArray(time=10, y=20, x=30):
    # 5 batches of all 3 x 4 = 12 windows; input_batch (12) and time (2) are stacked
    # into sample = 24, dims (sample, x_input, y_input).
    da = xr.DataArray(
        np.random.default_rng(2).random((10, 20, 30)), dims=("time", "y", "x")
    )
    bgen = xb.BatchGenerator(
        da, input_dims={"x": 10, "y": 5}, batch_dims={"time": 2}, concat_input_dims=True
    )
    assert len(bgen) == 5
    b = bgen[0]
    assert b.dims == ("sample", "x_input", "y_input")
    assert b.shape == (24, 10, 5)
    assert list(b.indexes["sample"].names) == ["input_batch", "time"]
    # no batch_dims: one batch with every window, sample = 12 x 10
    bgen = xb.BatchGenerator(da, input_dims={"x": 10, "y": 5}, concat_input_dims=True)
    assert len(bgen) == 1
    assert bgen[0].shape == (120, 10, 5)
    # all dims are input dims: nothing to stack, input_batch stays a dim
    bgen = xb.BatchGenerator(
        da, input_dims={"time": 10, "y": 10, "x": 15}, concat_input_dims=True
    )
    assert len(bgen) == 1
    assert bgen[0].dims == ("input_batch", "time_input", "y_input", "x_input")
    assert bgen[0].shape == (4, 10, 10, 15)
    np.testing.assert_array_equal(bgen[0].values[3], da.values[:, 10:20, 15:30])
