"""``BatchPairs``: inputs and targets as numpy, by ``(epoch, index)``.

Values are compared with ``ds.isel`` of each sample's window (the units come from the
plan), so a mistake in the plan, the engine or the stacking shows up as wrong values.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xbatcher as xb
from test_targets import expected, forecast, make_ds, reference_samples
from xbatcher.engine import read_batch
from xbatcher.errors import (
    InputTypeError,
    SchemaError,
    VariableError,
)
from xbatcher.loaders._pairs import BatchPairs, stack_channels


def _ds(n_time: int = 6, n_x: int = 10) -> xr.Dataset:
    """Positional values: a(time, x) = 100 t + x, b = -a, static s(x), y(time)."""
    t = np.arange(n_time)[:, None]
    x = np.arange(n_x)[None, :]
    a = (100 * t + x).astype("float32")
    return xr.Dataset(
        {
            "a": (("time", "x"), a),
            "b": (("time", "x"), -a),
            "s": ("x", 1000.0 + np.arange(n_x)),
            "y": ("time", np.arange(n_time, dtype="float64") * 7),
        }
    )


def _window(ds: xr.Dataset, bgen: xb.BatchGenerator, unit: int, var: str) -> Any:
    """``ds[var]`` over the window of sample ``unit`` (sample dims dropped)."""
    w = bgen.schema.unit_windows(np.array([unit], dtype=np.int64))
    inputs = dict(bgen.schema.input_dims)
    sel: dict[Any, Any] = {}
    for d, s in w.starts.items():
        if d not in ds[var].dims:
            continue
        start = int(s[0])
        sel[d] = slice(start, start + w.lengths[d]) if d in inputs else start
    return ds[var].isel(sel).values


def _expected(ds, bgen, epoch, i, var):
    units = bgen.plan.batch_units(epoch, i, i + 1)[0]
    return np.stack([_window(ds, bgen, int(u), var) for u in units])


def _gen(ds: xr.Dataset, **kw: Any) -> xb.BatchGenerator:
    kw.setdefault("batch_size", 4)
    if not kw.get("shuffle"):
        kw.pop("seed", None)
    return xb.BatchGenerator(ds, {"x": 4}, input_overlap={"x": 2}, **kw)


# ----------------------------------------------------------------------- values
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    epoch=st.integers(0, 3),
    shuffle=st.booleans(),
    inputs=st.sampled_from(["a", ["a"], ["a", "b"], ["b", "a", "s"], ["a", "y"]]),
    channel_axis=st.sampled_from([1, -1, 0]),
    chunked=st.booleans(),
)
def test_inputs_and_targets_equal_isel_of_each_window(
    epoch: int, shuffle: bool, inputs: Any, channel_axis: int, chunked: bool
) -> None:
    ds = _ds()
    data = ds.chunk(time=2, x=5) if chunked else ds
    bgen = _gen(data, shuffle=shuffle, seed=5)
    pairs = BatchPairs(bgen, inputs=inputs, targets="y", channel_axis=channel_axis)
    assert len(pairs) == len(bgen)
    for i in range(len(pairs)):
        x, y = pairs.read(epoch, i)
        np.testing.assert_array_equal(y, _expected(ds, bgen, epoch, i, "y"))
        if isinstance(inputs, str):
            want = _expected(ds, bgen, epoch, i, inputs)
            assert x.dtype == want.dtype
        else:
            channels = []
            for v in inputs:
                e = _expected(ds, bgen, epoch, i, v)
                if e.ndim == 1:  # y(time): broadcast along the window
                    e = np.repeat(e[:, None], 4, axis=1)
                channels.append(e)
            want = np.stack(channels, axis=channel_axis)
            assert x.dtype == np.result_type(*[ds[v].dtype for v in inputs])
        np.testing.assert_array_equal(x, want)


def test_two_aligned_generators_follow_both_plans() -> None:
    ds = _ds()
    kw = {"shuffle": True, "seed": 3}
    x_gen, y_gen = _gen(ds["a"], **kw), _gen(ds[["b"]], **kw)
    pairs = BatchPairs(x_gen, y_gen)
    for epoch in (0, 1):
        x_gen.set_epoch(epoch)
        y_gen.set_epoch(epoch)
        for i in range(len(pairs)):
            x, y = pairs.read(epoch, i)
            np.testing.assert_array_equal(x, x_gen.arrays[i])
            np.testing.assert_array_equal(y, y_gen.arrays[i]["b"])
            np.testing.assert_array_equal(y, -_expected(ds, x_gen, epoch, i, "a"))
    assert BatchPairs(x_gen).read(0, 0)[0].shape == (4, 4)


@settings(max_examples=20, deadline=None)
@given(first=st.integers(0, 7), length=st.integers(0, 7), epoch=st.integers(0, 2))
def test_read_many_equals_read(first: int, length: int, epoch: int) -> None:
    """Also ``read_indices`` of a worker's every other batch."""
    bgen = _gen(_ds(), shuffle=True, seed=1)
    pairs = BatchPairs(bgen, inputs=["a", "s"], targets=["y"])
    n = len(pairs)
    first = min(first, n)
    stop = min(first + length, n)
    many = pairs.read_many(epoch, first, stop)
    assert len(many) == stop - first
    for k, (x, y) in enumerate(many):
        x1, y1 = pairs.read(epoch, first + k)
        np.testing.assert_array_equal(x, x1)
        np.testing.assert_array_equal(y, y1)
        assert y.shape == (x.shape[0], 1)  # a list of one: a channel axis
    strided = list(range(first, n, 2))
    for i, (x, _) in zip(strided, pairs.read_indices(epoch, strided), strict=True):
        np.testing.assert_array_equal(x, pairs.read(epoch, i)[0])


def test_array_path_adds_no_copy_for_one_variable() -> None:
    """``inputs='a'``: the engine's batch buffer itself, not a copy of it."""
    bgen = _gen(_ds())
    pairs = BatchPairs(bgen, inputs="a", targets="y")
    items = pairs.read_many(0, 0, 3)
    # equal batches of one group are views of one gathered buffer
    bases = {id(x.base) for x, _ in items}
    assert len(bases) == 1 and all(x.base is not None for x, _ in items)


def test_only_selected_variables_are_read() -> None:
    ds = _ds().chunk(time=2)
    bgen = _gen(ds)
    BatchPairs(bgen, inputs="a").read(0, 0)
    keys = {k[0] for k in bgen.engine.block_cache._data}
    assert keys and all("a" in str(k) for k in keys), keys


def test_as_dict_and_transforms() -> None:
    ds = _ds()
    bgen = _gen(ds, shuffle=True, seed=2)
    d = BatchPairs(bgen, inputs=["a", "s"], targets="y", as_dict=True).read(1, 2)
    assert list(d) == ["a", "s", "y"]
    for v in d:
        np.testing.assert_array_equal(d[v], _expected(ds, bgen, 1, 2, v))
    fast = BatchPairs(
        bgen,
        inputs="a",
        targets="y",
        transform=lambda a: a * 2,
        target_transform=np.sqrt,
    ).read(1, 2)
    slow = BatchPairs(
        bgen,
        inputs="a",
        targets="y",
        transform=lambda da: da * 2,
        target_transform=np.sqrt,
        transform_on="xarray",
    ).read(1, 2)
    for got in (fast, slow):
        np.testing.assert_array_equal(got[0], 2 * _expected(ds, bgen, 1, 2, "a"))
        np.testing.assert_array_equal(got[1], np.sqrt(_expected(ds, bgen, 1, 2, "y")))
    # an xarray transform over a Dataset of inputs: its variables stacked in order
    stacked = BatchPairs(
        bgen,
        inputs=["b", "a"],
        transform=lambda batch: batch + 1,
        transform_on="xarray",
    ).read(0, 0)[0]
    plain = BatchPairs(bgen, inputs=["b", "a"]).read(0, 0)[0]
    np.testing.assert_array_equal(stacked, plain + 1)
    # a transform result that is not xarray is passed on untouched
    marker = object()
    got = BatchPairs(
        bgen, inputs="a", transform=lambda _: marker, transform_on="xarray"
    ).read(0, 0)
    assert got == (marker,)


def test_big_endian_data_comes_out_native() -> None:
    ds = _ds()
    ds["a"] = ds["a"].astype(">f4")
    x = BatchPairs(_gen(ds), inputs="a").read(0, 0)[0]
    assert x.dtype.isnative and x.dtype == np.float32


def test_pickles_small_and_reads_the_same(tmp_path: Any) -> None:
    ds = xr.Dataset({"a": (("time", "x"), np.random.default_rng(0).random((50, 400)))})
    ds["y"] = ds["a"].mean("x")
    ds.chunk(time=10).to_zarr(tmp_path / "s.zarr")
    lazy = xr.open_zarr(tmp_path / "s.zarr", chunks=None)
    bgen = xb.BatchGenerator(lazy, {"x": 20}, batch_size=8, shuffle=True, seed=0)
    pairs = BatchPairs(bgen, inputs=["a"], targets="y")
    blob = pickle.dumps(pairs)
    assert len(blob) < 50_000 < ds["a"].nbytes  # the path travels, not the data
    copy = pickle.loads(blob)
    for i in (0, len(pairs) - 1):
        for got, want in zip(copy.read(1, i), pairs.read(1, i), strict=True):
            np.testing.assert_array_equal(got, want)


def test_shard_deals_samples_to_both_sides() -> None:
    ds = _ds()
    bgen = _gen(ds, shuffle=True, seed=4)
    pairs = BatchPairs(bgen, inputs="a", targets="y")
    seen = []
    for rank in range(2):
        shard = pairs.with_shard(rank, 2)
        ref = bgen.shard(rank, 2)
        for i in range(len(shard)):
            x, y = shard.read(0, i)
            np.testing.assert_array_equal(x, _expected(ds, ref, 0, i, "a"))
            np.testing.assert_array_equal(y, _expected(ds, ref, 0, i, "y"))
            seen.extend(ref.plan.batch_units(0, i, i + 1)[0].tolist())
    assert sorted(set(seen)) == list(range(bgen.n_units))


def test_stack_channels_broadcasts_fewer_dims() -> None:
    a = np.arange(6.0).reshape(2, 3)
    out = stack_channels([np.array([1, 2]), a], [("s",), ("s", "x")], -1)
    assert out.shape == (2, 3, 2) and out.dtype == np.float64
    np.testing.assert_array_equal(out[..., 0], [[1, 1, 1], [2, 2, 2]])
    np.testing.assert_array_equal(out[..., 1], a)


# ----------------------------------------------------------------------- errors
def test_misaligned_generators_are_refused() -> None:
    ds = _ds()
    with pytest.raises(
        SchemaError, match=r"X_generator has 6 batches but y_generator has 3"
    ):
        BatchPairs(_gen(ds["a"]), _gen(ds["b"], batch_size=8))
    with pytest.raises(
        SchemaError,
        match=r"sampler \{'kind': 'shuffle', 'seed': 1\}.*same shuffle= and",
    ):
        BatchPairs(
            _gen(ds["a"], shuffle=True, seed=1), _gen(ds["b"], shuffle=True, seed=2)
        )
    with pytest.raises(
        SchemaError, match=r"shard \(0, 2\) but y_generator is shard None"
    ):
        BatchPairs(_gen(ds["a"]).shard(0, 2), _gen(ds["b"]))


def test_bad_selections_are_refused_with_the_fix() -> None:
    bgen = _gen(_ds())
    with pytest.raises(
        SchemaError, match=r"has 4: \['a', 'b', 's', 'y'\].*inputs=\['a', 'b'\]"
    ):
        BatchPairs(bgen)
    with pytest.raises(
        VariableError, match=r"inputs names \['z'\].*\['a', 'b', 's', 'y'\]"
    ):
        BatchPairs(bgen, inputs=["a", "z"])
    with pytest.raises(KeyError):  # also the built-in
        BatchPairs(bgen, targets="nope", inputs="a")
    with pytest.raises(InputTypeError, match=r"non-empty list of names; got \[\]"):
        BatchPairs(bgen, inputs=[])
    with pytest.raises(SchemaError, match=r"repeats a variable"):
        BatchPairs(bgen, inputs=["a", "a"])
    with pytest.raises(SchemaError, match=r"selects variables of a Dataset.*DataArray"):
        BatchPairs(_gen(_ds()["a"]), inputs="a")
    with pytest.raises(
        SchemaError, match=r"\['y'\] would be both an input and a target"
    ):
        BatchPairs(bgen, inputs=["a", "y"], targets="y", as_dict=True)
    with pytest.raises(
        SchemaError, match=r"transform_on must be 'arrays' or 'xarray'; got 'np'"
    ):
        BatchPairs(bgen, inputs="a", transform_on="np")  # type: ignore[arg-type]
    with pytest.raises(
        InputTypeError, match=r"transform must be a callable or None; got int"
    ):
        BatchPairs(bgen, inputs="a", transform=3)  # type: ignore[arg-type]
    with pytest.raises(
        InputTypeError,
        match=r"X_generator must be an xbatcher.BatchGenerator; got Dataset",
    ):
        BatchPairs(_ds())  # type: ignore[arg-type]
    cached = xb.BatchGenerator(
        _ds()["a"], {"x": 5}, cache={}, cache_preprocess=lambda b: b
    )
    with pytest.raises(SchemaError, match=r"cache_preprocess.*transform_on='xarray'"):
        BatchPairs(cached)


def test_unstackable_inputs_and_channel_axis_are_refused() -> None:
    bgen = _gen(_ds())
    pairs = BatchPairs(bgen, inputs=["a", "y"], channel_axis=3)
    with pytest.raises(SchemaError, match=r"channel_axis=3 is out of range.*-3 .. 2"):
        pairs.read(0, 0)
    with pytest.raises(
        SchemaError, match=r"batch dims \('x', 's'\) next to \('s', 'x'\)"
    ):
        stack_channels(
            [np.zeros((2, 3)), np.zeros((3, 2))], [("s", "x"), ("x", "s")], 1
        )
    with pytest.raises(
        SchemaError, match=r"shape \(2, 4\) does not match the shape \(2, 3\)"
    ):
        stack_channels(
            [np.zeros((2, 3)), np.zeros((2, 4))], [("s", "x"), ("s", "x")], 1
        )
    pairs = BatchPairs(bgen, inputs="a")
    with pytest.raises(
        IndexError, match=r"batch index 6 is out of range for 6 .*-6..5"
    ):
        pairs.read(0, len(bgen))
    with pytest.raises(TypeError, match=r"must be an integer; got 1.5 of type float"):
        pairs.read(0, 1.5)  # type: ignore[arg-type]
    np.testing.assert_array_equal(pairs.read(0, -1)[0], pairs.read(0, 5)[0])


# ------------------------------------------------------ windows= (forecast pairs)
# make_ds: t2m(time, lat, lon) = 48 time + 8 lat + lon (20 x 6 x 8), u10 = -t2m - 1,
# z_static(lat, lon); forecast(): x = 4 steps of history, y = t2m 6 steps ahead.
FC_DIMS = {"lat": 3, "lon": 4}


def _fc_gen(ds: xr.Dataset | None = None, **kw: Any) -> xb.BatchGenerator:
    kw.setdefault("windows", forecast())
    kw.setdefault("batch_size", 5)
    return xb.BatchGenerator(make_ds() if ds is None else ds, FC_DIMS, **kw)


def _fc_side(
    ds: xr.Dataset, sample: Any, window: Any, names: Any, channel_axis: int
) -> Any:
    """One sample's side, from ``ds.isel`` at the role's offsets: one variable's
    window, or a list's stacked (fewer-dims ones broadcast) at ``channel_axis``
    (counted without the batch axis)."""
    if isinstance(names, str):
        return expected(ds, sample, FC_DIMS, window, names)
    parts = [expected(ds, sample, FC_DIMS, window, v) for v in names]
    shape = max((p.shape for p in parts), key=len)
    stacked = np.stack([np.broadcast_to(p, shape) for p in parts])
    axis = channel_axis - 1 if channel_axis > 0 else channel_axis
    return np.moveaxis(stacked, 0, axis)


def check_forecast_epoch(
    batches: list[tuple[Any, Any]],
    ds: xr.Dataset,
    windows: Any,
    x_names: Any = ("t2m", "u10", "z_static"),
    y_names: Any = ("t2m",),
    channel_axis: int = 1,
) -> list[tuple[int, int, int]]:
    """Check every sample of an epoch's ``(x, y)`` batches against ``ds.isel`` at
    the role offsets and that each sample comes exactly once. A sample is found from
    its y value: t2m at (anchor + 6, lat0, lon0) = 48 (anchor + 6) + 8 lat0 + lon0.
    Returns the samples ``(anchor, lat0, lon0)`` in the order read."""
    seen = []
    for x, y in batches:
        x, y = np.asarray(x), np.asarray(y)
        assert len(x) == len(y)
        for j in range(len(y)):
            code = int(y[j].flat[0])
            anchor, rest = divmod(code, 48)
            sample = (anchor - 6, {"lat": rest // 8, "lon": rest % 8})
            seen.append((sample[0], rest // 8, rest % 8))
            want_x = _fc_side(ds, sample, windows["x"], x_names, channel_axis)
            want_y = _fc_side(ds, sample, windows["y"], y_names, channel_axis)
            np.testing.assert_array_equal(x[j], want_x)
            np.testing.assert_array_equal(y[j], want_y)
    reference = reference_samples(ds, FC_DIMS, windows)
    assert sorted(seen) == sorted((a, s["lat"], s["lon"]) for a, s in reference)
    return seen


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    epoch=st.integers(0, 2),
    shuffle=st.booleans(),
    selection=st.sampled_from(
        [
            (None, None, ("t2m", "u10", "z_static"), ("t2m",)),
            ("x", "y", ("t2m", "u10", "z_static"), ("t2m",)),
            ({"x": ["z_static", "t2m"]}, {"y": "t2m"}, ("z_static", "t2m"), "t2m"),
            ({"x": "u10"}, {"y": ["t2m"]}, "u10", ("t2m",)),
        ]
    ),
    channel_axis=st.sampled_from([1, -1]),
    chunked=st.booleans(),
)
def test_forecast_roles_equal_isel_at_the_role_offsets(
    epoch: int, shuffle: bool, selection: Any, channel_axis: int, chunked: bool
) -> None:
    """A role name stacks the role's variables in its order (the static z_static
    broadcast along time); ``{role: name or list}`` picks some; without inputs= /
    targets= the roles "x" / "y" are used. Every sample once per epoch."""
    ds = make_ds(chunks={"time": 7, "lat": 4} if chunked else None)
    windows = forecast()
    bgen = _fc_gen(ds, shuffle=shuffle, seed=3 if shuffle else None)
    inputs, targets, x_names, y_names = selection
    pairs = BatchPairs(bgen, inputs=inputs, targets=targets, channel_axis=channel_axis)
    batches = [pairs.read(epoch, i) for i in range(len(pairs))]
    assert batches[0][0].shape[0] == 5
    seen = check_forecast_epoch(
        batches,
        ds,
        windows,
        x_names,
        y_names,
        channel_axis,
    )
    many = pairs.read_many(epoch, 0, len(pairs))
    for (x1, y1), (x2, y2) in zip(batches, many, strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    if shuffle:  # shuffled: a new order each epoch
        other = [pairs.read(epoch + 1, i) for i in range(len(pairs))]
        again = check_forecast_epoch(
            other,
            ds,
            windows,
            x_names,
            y_names,
            channel_axis,
        )
        assert again != seen


def test_forecast_roles_with_dataarray_source_dicts_transforms_and_shards() -> None:
    ds = make_ds()
    da_gen = _fc_gen(
        ds["t2m"],
        windows={
            "x": xb.Window(offsets={"time": range(-1, 1)}),
            "y": xb.Window(offsets={"time": 2}),
        },
    )
    x, y = BatchPairs(da_gen).read(0, 0)  # a DataArray role is its array
    ar = da_gen.arrays[0]
    np.testing.assert_array_equal(x, ar["x"])
    np.testing.assert_array_equal(y, ar["y"])
    bgen = _fc_gen(ds)
    item = BatchPairs(
        bgen, inputs={"x": ["u10", "z_static"]}, targets="y", as_dict=True
    ).read(0, 1)
    assert list(item) == ["u10", "z_static", "t2m"]
    ar = bgen.arrays[1]
    for role, var in (("x", "u10"), ("x", "z_static"), ("y", "t2m")):
        np.testing.assert_array_equal(item[var], ar[role][var])
    xr_pairs = BatchPairs(
        bgen,
        inputs={"x": "u10"},
        transform=lambda da: da[:, -1] * 2,  # gets the role's xarray batch
        transform_on="xarray",
    )
    x, _ = xr_pairs.read(0, 1)
    np.testing.assert_array_equal(x, ar["x"]["u10"][:, -1] * 2)
    pairs = BatchPairs(bgen)
    halves = [pairs.with_shard(r, 2) for r in range(2)]
    units = [h.units(0, 0, len(h)) for h in halves]
    assert not set(np.concatenate(units[0])) & set(np.concatenate(units[1]))
    x, y = halves[1].read(0, 0)
    ids = halves[1].units(0, 0, 1)[0]
    whole = read_batch(bgen.engine, ids)
    np.testing.assert_array_equal(x[:, 1], whole["x"]["u10"])
    np.testing.assert_array_equal(y[:, 0], whole["y"]["t2m"])
    for got, want in zip(
        pickle.loads(pickle.dumps(pairs)).read(1, 2), pairs.read(1, 2), strict=True
    ):  # travels to workers
        np.testing.assert_array_equal(got, want)


def test_forecast_role_selections_are_refused_with_the_roles_and_the_fix() -> None:
    bgen = _fc_gen()
    roles = r"\{'x': \['t2m', 'u10', 'z_static'\], 'y': \['t2m'\]\}"
    with pytest.raises(
        VariableError, match=rf"'u10' is not a role.*{roles}.*inputs='x'"
    ):
        BatchPairs(bgen, inputs="u10")
    with pytest.raises(KeyError, match=r"does not name one role.*inputs=\{'x'"):
        BatchPairs(bgen, inputs=["t2m", "u10"])
    with pytest.raises(VariableError, match=r"does not name one role"):
        BatchPairs(bgen, inputs={"x": "t2m", "y": "t2m"})
    with pytest.raises(
        VariableError, match=r"names \['u10'\], not variables of role 'y'.*\['t2m'\]"
    ):
        BatchPairs(bgen, targets={"y": ["u10"]})
    with pytest.raises(InputTypeError, match=r"name or a non-empty list; got \[\]"):
        BatchPairs(bgen, inputs={"x": []})
    with pytest.raises(SchemaError, match=r"repeats a variable"):
        BatchPairs(bgen, inputs={"x": ["t2m", "t2m"]})
    with pytest.raises(SchemaError, match=r"\['t2m'\] would be both an input"):
        BatchPairs(bgen, as_dict=True)
    other = _fc_gen(windows={"past": xb.Window(offsets={"time": range(-2, 1)})})
    with pytest.raises(
        SchemaError, match=r"default to the role 'x'.*\{'past': \['t2m', 'u10'"
    ):
        BatchPairs(other)
    with pytest.raises(SchemaError, match=r"picks variables, but.*DataArray"):
        BatchPairs(
            _fc_gen(make_ds()["t2m"], windows={"x": xb.Window()}), inputs={"x": "t2m"}
        )
    with pytest.raises(SchemaError, match=r"has no windows="):
        BatchPairs(_gen(_ds()), inputs={"x": ["a"]})
