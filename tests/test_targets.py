"""Several windows per sample (``windows=``): values, sample space, readers, errors."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xbatcher as xb
import xbatcher._roles
from xbatcher.engine import read_batch, read_batch_xarray
from xbatcher.errors import (
    DimensionError,
    InputTypeError,
    SchemaError,
    StateError,
    VariableError,
)


def make_ds(t=20, y=6, x=8, dims=("time", "lat", "lon"), chunks=None):
    """t2m / u10 on (time, lat, lon) in ``dims`` order, a static z(lat, lon);
    values encode their position."""
    sizes = {"time": t, "lat": y, "lon": x}
    shape = tuple(sizes[d] for d in dims)
    base = np.arange(np.prod(shape), dtype="f8").reshape(shape)
    ds = xr.Dataset(
        {
            "t2m": (dims, base),
            "u10": (dims, -base - 1),
            "z_static": (
                ("lat", "lon"),
                1000 + np.arange(y * x, dtype="f8").reshape(y, x),
            ),
        },
        coords={
            "time": np.arange(t) * 10,
            "lat": np.linspace(-5.0, 5.0, y),
            "lon": np.arange(x),
        },
    )
    if chunks:
        ds = ds.chunk(chunks)
    return ds


def forecast(x_vars=("t2m", "u10", "z_static"), hist=range(-3, 1), lead=6):
    return {
        "x": xb.Window(variables=list(x_vars), offsets={"time": hist}),
        "y": xb.Window(variables=["t2m"], offsets={"time": lead}),
    }


def reference_samples(ds, input_dims, windows):
    """Every sample as (anchor time, {dim: start}), in numbering order, found by
    brute force: every anchor whose every window lies inside the data."""
    t = ds.sizes["time"]
    offs = [0]
    for w in windows.values():
        for o in w.offsets:
            offs += [o.first, o.last]
    anchors = [a for a in range(t) if all(0 <= a + o < t for o in offs)]
    starts = [range(0, ds.sizes[d] - n + 1, n) for d, n in input_dims.items()]
    out = []
    for a in anchors:
        for s in itertools.product(*starts):
            out.append((a, dict(zip(input_dims, s, strict=True))))
    return out


def expected(ds, sample, input_dims, window, var):
    """``ds[var].isel(...)`` of one role's window of one sample, in the batch's
    dim order: offset dims first, then input dims."""
    a, starts = sample
    sel = {d: slice(s, s + input_dims[d]) for d, s in starts.items()}
    o = window.offset("time")
    if o is None:
        sel["time"] = a
    elif o.scalar:
        sel["time"] = a + o.first
    else:
        sel["time"] = slice(a + o.first, a + o.first + o.count)
        assert a + o.first >= 0 and a + o.last < ds.sizes["time"]
    da = ds[var].isel({k: v for k, v in sel.items() if k in ds[var].dims})
    order = [d for d in ("time", *input_dims) if d in da.dims]
    return da.transpose(*order).values


def check_batch(ds, bgen, i, samples, input_dims, windows):
    units = bgen.batch_units(i)
    ids = bgen.sample_ids()[units]
    xa = bgen[i]
    ar = bgen.arrays[i]
    assert set(xa) == set(windows) == set(ar)
    for role, window in windows.items():
        names = window.variables or list(ds.data_vars)
        assert set(xa[role].data_vars) == set(names)
        assert list(xa[role]["sample"].values) == list(ids)
        for var in names:
            for j, sid in enumerate(ids):
                want = expected(ds, samples[sid], input_dims, window, var)
                np.testing.assert_array_equal(ar[role][var][j], want)
                np.testing.assert_array_equal(xa[role][var].values[j], want)
            if "time" in ds[var].dims:
                o = window.offset("time")
                for j, sid in enumerate(ids):
                    a = samples[sid][0]
                    times = ds["time"].values
                    got = xa[role]["time"].values[j]
                    if o is None:
                        assert got == times[a]
                    elif o.scalar:
                        assert got == times[a + o.first]
                    else:
                        np.testing.assert_array_equal(
                            got, times[a + o.first : a + o.last + 1]
                        )


def test_forecast_pair_layout_and_values():
    ds = make_ds()
    windows = forecast()
    bgen = xb.BatchGenerator(ds, {"lat": 3, "lon": 4}, batch_size=5, windows=windows)
    # anchors 3 .. 13 (3 steps of history, a lead of 6 in 20 steps) x 2 x 2 windows
    assert bgen.n_units == 11 * 4 and len(bgen) == 9
    b = bgen[0]
    assert b["x"]["t2m"].dims == ("sample", "time_input", "lat_input", "lon_input")
    assert b["x"]["z_static"].dims == ("sample", "lat_input", "lon_input")
    assert b["y"]["t2m"].dims == ("sample", "lat_input", "lon_input")
    assert list(b["y"].data_vars) == ["t2m"]
    samples = reference_samples(ds, {"lat": 3, "lon": 4}, windows)
    assert len(samples) == bgen.n_units
    for i in range(len(bgen)):
        check_batch(ds, bgen, i, samples, {"lat": 3, "lon": 4}, windows)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    t=st.integers(4, 16),
    lo=st.integers(-5, 3),
    n_hist=st.integers(1, 4),
    lead=st.integers(-4, 8),
    lead_list=st.booleans(),
    wy=st.integers(1, 4),
    wx=st.integers(1, 5),
    order=st.permutations(("time", "lat", "lon")),
    tchunk=st.one_of(st.none(), st.integers(1, 7)),
    xchunk=st.integers(1, 8),
    batch_size=st.integers(1, 7),
    shuffle=st.sampled_from([False, True, "chunks"]),
)
def test_values_equal_isel_property(
    t, lo, n_hist, lead, lead_list, wy, wx, order, tchunk, xchunk, batch_size, shuffle
):
    ds = make_ds(t=t, y=4, x=5, dims=tuple(order))
    if tchunk is not None:
        ds = ds.chunk({"time": tchunk, "lon": xchunk})
    windows = forecast(hist=range(lo, lo + n_hist), lead=[lead] if lead_list else lead)
    span = max(0, lo + n_hist - 1, lead) - min(0, lo, lead) + 1
    input_dims = {"lat": wy, "lon": wx}
    if span > t:
        with pytest.raises(SchemaError, match=r"no sample fits|is out of range"):
            xb.BatchGenerator(ds, input_dims, batch_size=batch_size, windows=windows)
        return
    bgen = xb.BatchGenerator(
        ds,
        input_dims,
        batch_size=batch_size,
        windows=windows,
        shuffle=shuffle,
        seed=None if shuffle is False else 5,
    )
    samples = reference_samples(ds, input_dims, windows)
    assert bgen.n_units == len(samples) == (t - span + 1) * (4 // wy) * (5 // wx)
    for i in sorted({0, len(bgen) - 1}):
        check_batch(ds, bgen, i, samples, input_dims, windows)
    # iteration (grouped reads) gives the same batches as indexing, and every
    # sample once
    seen = []
    for i, (b, a) in enumerate(zip(bgen, bgen.arrays, strict=True)):
        bgen.set_epoch(0)
        ref = bgen.arrays[i]
        seen += b["y"]["sample"].values.tolist()
        for role in windows:
            for var in a[role]:
                np.testing.assert_array_equal(a[role][var], ref[role][var])
                np.testing.assert_array_equal(b[role][var].values, ref[role][var])
    assert sorted(seen) == list(range(bgen.n_units))


def test_keep_remainder_and_drop_last():
    ds = make_ds(t=12, y=5, x=8)
    windows = forecast(hist=range(-1, 1), lead=2)
    bgen = xb.BatchGenerator(
        ds,
        {"lat": 2, "lon": 8},
        batch_size=4,
        drop_last=True,
        keep_remainder=True,
        windows=windows,
    )
    assert bgen.n_units == 9 * 3 and len(bgen) == 6  # lat windows 0, 2 and 3
    # samples 20..23: (anchor 7, lat 3:5), (anchor 8, lat 0:2, 2:4, 3:5)
    last = bgen.arrays[-1]
    np.testing.assert_array_equal(
        last["x"]["u10"][1], ds.u10.isel(time=slice(7, 9), lat=slice(0, 2)).values
    )
    np.testing.assert_array_equal(
        last["y"]["t2m"][3], ds.t2m.isel(time=10, lat=slice(3, 5)).values
    )


def test_dataarray_source_gives_arrays_per_role():
    da = make_ds()["t2m"]
    windows = {
        "x": xb.Window(offsets={"time": range(-1, 1)}),
        "y": xb.Window(offsets={"time": [2]}),
    }
    bgen = xb.BatchGenerator(da, {"lat": 6, "lon": 8}, batch_size=3, windows=windows)
    a = bgen.arrays[0]
    assert a["x"].shape == (3, 2, 6, 8) and a["y"].shape == (3, 1, 6, 8)
    np.testing.assert_array_equal(a["x"][0], da.isel(time=[0, 1]).values)
    np.testing.assert_array_equal(a["y"][2], da.isel(time=[5]).values)
    b = bgen[0]
    assert isinstance(b["x"], xr.DataArray) and b["x"].name == "t2m"
    np.testing.assert_array_equal(b["y"].values, a["y"])
    # read_batch / read_batch_xarray are what bgen.arrays / bgen[i] give
    units = bgen.plan.batch_units(0, 0, 1)[0]
    np.testing.assert_array_equal(read_batch(bgen.engine, units)["y"], a["y"])
    xr.testing.assert_identical(read_batch_xarray(bgen.engine, units)["x"], b["x"])


def test_offsets_without_history_and_roles_without_offsets():
    ds = make_ds(t=10)
    windows = {
        "x": xb.Window(variables="t2m"),  # the anchor's point
        "static": xb.Window(variables=["z_static"]),
        "y": xb.Window(variables="u10", offsets={"time": range(1, 4)}),
    }
    bgen = xb.BatchGenerator(ds, {"lat": 6, "lon": 8}, batch_size=2, windows=windows)
    assert bgen.n_units == 7  # anchors 0 .. 6: the last reads 7, 8, 9
    samples = reference_samples(ds, {"lat": 6, "lon": 8}, windows)
    for i in range(len(bgen)):
        check_batch(ds, bgen, i, samples, {"lat": 6, "lon": 8}, windows)


def _seen(bgen):
    return sorted(int(s) for b in bgen for s in b["y"]["sample"].values)


@pytest.mark.parametrize("shuffle", [True, "chunks"])
def test_every_sample_once_per_epoch_with_shuffles(shuffle):
    ds = make_ds(t=30, chunks={"time": 7})
    bgen = xb.BatchGenerator(
        ds,
        {"lat": 3, "lon": 4},
        batch_size=6,
        windows=forecast(),
        shuffle=shuffle,
        seed=1,
    )
    assert _seen(bgen) == list(range(bgen.n_units))
    assert _seen(bgen) == list(range(bgen.n_units))  # epoch 1, another order


def test_shards_are_disjoint_and_complete():
    ds = make_ds(t=25)
    bgen = xb.BatchGenerator(
        ds, {"lat": 3, "lon": 4}, batch_size=4, windows=forecast(), shuffle=True, seed=3
    )
    parts = [_seen(bgen.shard(r, 3, even="drop")) for r in range(3)]
    flat = sorted(itertools.chain(*parts))
    assert len(flat) == len(set(flat)) == bgen.n_units // 3 * 3


def test_weighted_sampler_follows_anchors():
    ds = make_ds(t=15)
    bgen = xb.BatchGenerator(ds, {"lat": 6, "lon": 8}, batch_size=4, windows=forecast())
    weights = np.zeros(bgen.n_units)
    weights[2] = 1.0  # only sample 2: anchor 5
    w = bgen.with_sampler(xb.RandomSampler(weights=weights, num_samples=8, seed=0))
    b = w.arrays[0]
    np.testing.assert_array_equal(b["y"]["t2m"][0], ds.t2m.isel(time=11).values)
    np.testing.assert_array_equal(
        b["x"]["t2m"][3], ds.t2m.isel(time=slice(2, 6)).values
    )


def test_split_keeps_every_window_inside_its_part():
    ds = make_ds(t=40)
    bgen = xb.BatchGenerator(ds, {"lat": 6, "lon": 8}, batch_size=4, windows=forecast())
    parts = bgen.split("time", train=0.5, val=0.5)
    train, val = parts["train"], parts["val"]
    assert train.n_units == 20 - 9 and val.n_units == 20 - 9
    for b in val:
        assert b["x"]["time"].values.min() >= 200  # val is time 20 .. 39
        assert b["y"]["time"].values.max() <= 390
    for b in train:
        assert b["y"]["time"].values.max() < 200
    v = val.arrays[0]
    np.testing.assert_array_equal(v["y"]["t2m"][0], ds.t2m.isel(time=29).values)
    # weights follow their samples into the parts
    weights = np.arange(bgen.n_units, dtype=float) + 1
    wgen = bgen.with_sampler(xb.RandomSampler(weights=weights, seed=0))
    wval = wgen.split("time", train=0.5, val=0.5)["val"]
    # val's first anchor is time 23, the parent's sample 20 (anchors start at 3)
    assert wval.sampler.weights[0] == weights[20]


def test_skip_nan_drops_samples_with_nan_in_any_window():
    ds = make_ds(t=20)
    ds["t2m"][10, 0, 0] = np.nan  # time 10
    ds["u10"][2, 5, 7] = np.nan  # time 2: only u10, read by x
    windows = forecast()
    samples = reference_samples(ds, {"lat": 6, "lon": 8}, windows)
    bgen = xb.BatchGenerator(
        ds,
        {"lat": 6, "lon": 8},
        batch_size=3,
        windows=windows,
        skip_nan=["t2m", "u10"],
    )
    # anchors 3..13: x reads a-3..a (t2m and u10), y reads t2m at a+6
    bad = {a for a, _ in samples if a - 3 <= 10 <= a or a + 6 == 10 or a - 3 <= 2}
    want = [i for i, (a, _) in enumerate(samples) if a not in bad]
    assert bgen.sample_ids().tolist() == want
    for b in bgen.arrays:
        for role in b.values():
            for arr in role.values():
                assert not np.isnan(arr).any()
    # u10 alone: only its own windows count (y does not read it)
    only_u = xb.BatchGenerator(
        ds, {"lat": 6, "lon": 8}, batch_size=3, windows=windows, skip_nan="u10"
    )
    assert only_u.sample_ids().tolist() == [
        i for i, (a, _) in enumerate(samples) if not a - 3 <= 2
    ]


def test_mask_must_hold_over_every_window():
    ds = make_ds(t=20)
    ok = xr.DataArray(np.ones(20, bool), dims="time", coords={"time": ds.time})
    ok[15] = False
    bgen = xb.BatchGenerator(
        ds, {"lat": 6, "lon": 8}, batch_size=3, windows=forecast(), mask=ok
    )
    samples = reference_samples(ds, {"lat": 6, "lon": 8}, forecast())
    # x never reaches 15 (anchors <= 13), y reads a + 6 == 15 for anchor 9
    assert bgen.sample_ids().tolist() == [
        i for i, (a, _) in enumerate(samples) if a != 9
    ]


def test_state_dict_resume_and_pickled_engine():
    ds = make_ds(t=30, chunks={"time": 5})
    kw = dict(batch_size=4, windows=forecast(), shuffle=True, seed=7)
    full = [
        b["y"]["t2m"].copy()
        for b in xb.BatchGenerator(ds, {"lat": 3, "lon": 4}, **kw).arrays
    ]
    bgen = xb.BatchGenerator(ds, {"lat": 3, "lon": 4}, **kw)
    it = iter(bgen.arrays)
    for _ in range(3):
        next(it)
    state = bgen.state_dict()
    again = xb.BatchGenerator(ds, {"lat": 3, "lon": 4}, **kw)
    again.load_state_dict(state)
    rest = [b["y"]["t2m"] for b in again.arrays]
    assert len(rest) == len(full) - 3
    for a, b in zip(rest, full[3:], strict=True):
        np.testing.assert_array_equal(a, b)
    # another windows= is another fingerprint: a checkpoint does not fit
    other = xb.BatchGenerator(
        ds, {"lat": 3, "lon": 4}, **{**kw, "windows": forecast(lead=5)}
    )
    with pytest.raises(StateError, match="fingerprint"):
        other.load_state_dict(state)
    engine = pickle.loads(pickle.dumps(bgen.engine))
    units = bgen.plan.batch_units(0, 2, 3)[0]
    got, want = read_batch(engine, units), read_batch(bgen.engine, units)
    for role in want:
        for var in want[role]:
            np.testing.assert_array_equal(got[role][var], want[role][var])


def test_batch_cache_round_trips_roles(monkeypatch):
    pytest.importorskip("zarr")
    ds = make_ds(t=15)
    store: dict = {}
    bgen = xb.BatchGenerator(
        ds, {"lat": 6, "lon": 8}, batch_size=2, windows=forecast(), cache=store
    )
    first = bgen[1]
    roles = {k.split("/")[-2] for k in store if k.count("/") == 2}
    assert roles == {"x", "y"}  # one group per role, under the batch's key
    n = len(store)

    def no_read(*args, **kwargs):
        raise AssertionError("read instead of taken from the cache")

    monkeypatch.setattr(xbatcher._roles, "read_roles_xarray", no_read)
    again = bgen[1]  # from the cache
    assert len(store) == n
    for role in first:
        xr.testing.assert_identical(again[role], first[role])


def test_lazy_batches_hold_the_same_values():
    ds = make_ds(t=15, chunks={"time": 4})
    kw = dict(batch_size=3, windows=forecast())
    lazy = xb.BatchGenerator(ds, {"lat": 3, "lon": 4}, preload_batch=False, **kw)
    eager = xb.BatchGenerator(ds, {"lat": 3, "lon": 4}, **kw)
    b = lazy[2]
    assert b["x"]["t2m"].chunks is not None
    xr.testing.assert_identical(b["x"].compute(), eager[2]["x"])
    xr.testing.assert_identical(b["y"].compute(), eager[2]["y"])


def test_no_windows_keeps_schema_json_and_fingerprint():
    s = xb.BatchSchema({"time": 10, "x": 8}, {"x": 4}, batch_size=2)
    assert "windows" not in s.to_dict()
    assert s.fingerprint == "4e0cd066f1e165e8"  # main's value, before windows=
    w = xb.BatchSchema({"time": 10, "x": 8}, {"x": 4}, batch_size=2, windows=forecast())
    assert xb.BatchSchema.from_json(w.to_json()) == w
    assert w.fingerprint != s.fingerprint


# ---------------------------------------------------------------------------- reads
def _chunks_touched(bounds_per_dim, region):
    """Chunk ids (per dim ranges) that a region (dict dim -> (start, stop)) touches."""
    out = []
    for d, b in bounds_per_dim.items():
        a, z = region[d]
        out.append(
            range(
                int(np.searchsorted(b, a, "right")) - 1,
                int(np.searchsorted(b, z - 1, "right")),
            )
        )
    return set(itertools.product(*out))


@pytest.mark.parametrize("backend", ["dask", "zarr"])
def test_each_window_decodes_only_the_chunks_it_touches(backend, tmp_path):
    t, y, x = 60, 8, 8
    ds = make_ds(t=t, y=y, x=x, chunks={"time": 5, "lat": 4, "lon": 4})
    if backend == "zarr":
        pytest.importorskip("zarr")
        ds.to_zarr(tmp_path / "s.zarr", consolidated=False)
        ds = xr.open_dataset(
            tmp_path / "s.zarr", engine="zarr", chunks=None, consolidated=False
        )
    windows = forecast(hist=range(-3, 1), lead=30)
    bgen = xb.BatchGenerator(ds, {"lat": 4, "lon": 4}, batch_size=1, windows=windows)
    bounds = {
        "time": np.arange(0, t + 1, 5),
        "lat": np.arange(0, y + 1, 4),
        "lon": np.arange(0, x + 1, 4),
    }
    samples = reference_samples(ds, {"lat": 4, "lon": 4}, windows)
    for sid in (0, 7, 45, len(samples) - 1):
        a, s = samples[sid]
        space = {d: (v, v + 4) for d, v in s.items()}
        x_chunks = _chunks_touched(bounds, {"time": (a - 3, a + 1), **space})
        y_chunks = _chunks_touched(bounds, {"time": (a + 30, a + 31), **space})
        # t2m: chunks of x and y (shared ones once); u10: x's; z_static: one chunk
        chunk = 5 * 4 * 4 * 8
        want = chunk * (len(x_chunks | y_chunks) + len(x_chunks)) + 4 * 4 * 8
        bgen.block_cache.clear()
        before = bgen.block_cache.stats()["decoded_bytes"]
        read_batch(bgen.engine, np.array([sid]))
        assert bgen.block_cache.stats()["decoded_bytes"] - before == want


def test_in_order_epoch_decodes_each_chunk_once():
    ds = make_ds(t=60, y=8, x=8, chunks={"time": 6})
    bgen = xb.BatchGenerator(
        ds, {"lat": 4, "lon": 4}, batch_size=8, windows=forecast(lead=12)
    )
    for _ in bgen.arrays:
        pass
    stats = bgen.block_cache.stats()
    total = sum(v.nbytes for v in ds.data_vars.values())
    # a big window over inputs + lead (16 steps) would decode most chunks ~3x
    assert stats["decoded_bytes"] <= total


# --------------------------------------------------------------------------- errors
def test_error_unknown_variable():
    with pytest.raises(VariableError, match=r"'q'.*data variables are \['t2m', 'u10'"):
        xb.BatchGenerator(
            make_ds(), {"lat": 6}, batch_size=2, windows={"x": xb.Window(["t2m", "q"])}
        )


def test_error_offset_out_of_range():
    with pytest.raises(
        SchemaError, match=r"offset 25 along 'time' is out of range.*-19\.\.19"
    ):
        xb.BatchGenerator(
            make_ds(), {"lat": 6}, batch_size=2, windows=forecast(lead=25)
        )


def test_error_window_fits_nowhere():
    with pytest.raises(
        SchemaError, match=r"span 21 points along 'time'.*has 20.*no sample"
    ):
        xb.BatchGenerator(
            make_ds(),
            {"lat": 6},
            batch_size=2,
            windows=forecast(hist=range(-10, 1), lead=10),
        )


def test_error_duplicate_role_names():
    w = xb.Window("t2m")
    with pytest.raises(SchemaError, match=r"role 'x' twice.*own name"):
        xb.BatchGenerator(
            make_ds(), {"lat": 6}, batch_size=2, windows=[("x", w), ("x", w)]
        )
    with pytest.raises(SchemaError, match=r"non-empty str.*got ''"):
        xb.BatchGenerator(make_ds(), {"lat": 6}, batch_size=2, windows={"": w})


def test_error_offsets_on_a_sliced_dim():
    with pytest.raises(
        SchemaError, match=r"offsets along 'lat'.*sliced dims.*Drop 'lat'"
    ):
        xb.BatchGenerator(
            make_ds(),
            {"lat": 3},
            batch_size=2,
            windows={"x": xb.Window(offsets={"lat": 1})},
        )


def test_error_offsets_on_unknown_dim():
    with pytest.raises(DimensionError, match=r"'level'.*\['time', 'lat', 'lon'\]"):
        xb.BatchGenerator(
            make_ds(),
            {"lat": 3},
            batch_size=2,
            windows={"x": xb.Window(offsets={"level": 1})},
        )


def test_error_windows_need_batch_size():
    with pytest.raises(SchemaError, match="pass batch_size=N"):
        xb.BatchGenerator(make_ds(), {"lat": 3}, windows=forecast())


@pytest.mark.parametrize(
    ("offsets", "error", "match"),
    [
        ({"time": [0, 6]}, SchemaError, r"consecutive increasing ints.*got \[0, 6\]"),
        ({"time": range(0, 6, 2)}, SchemaError, r"step 1; got range\(0, 6, 2\)"),
        ({"time": []}, SchemaError, r"consecutive ints; got \[\]"),
        (
            {"time": 1.5},
            InputTypeError,
            r"int, a range or a list of ints; got float 1.5",
        ),
        ([("time", 1)], InputTypeError, r"dict of dim -> offsets; got list"),
    ],
)
def test_error_bad_offsets(offsets, error, match):
    with pytest.raises(error, match=match):
        xb.Window(offsets=offsets)


def test_error_bad_windows_argument():
    with pytest.raises(
        InputTypeError, match=r"windows\['x'\] must be an xb.Window; got dict"
    ):
        xb.BatchGenerator(
            make_ds(), {"lat": 6}, batch_size=2, windows={"x": {"variables": ["t2m"]}}
        )
    with pytest.raises(SchemaError, match="windows is empty"):
        xb.BatchGenerator(make_ds(), {"lat": 6}, batch_size=2, windows={})
    with pytest.raises(SchemaError, match="empty list"):
        xb.Window(variables=[])


def test_error_skip_nan_variable_no_window_reads():
    with pytest.raises(SchemaError, match=r"skip_nan names \['u10'\], which no window"):
        xb.BatchGenerator(
            make_ds(),
            {"lat": 6},
            batch_size=2,
            windows={"x": xb.Window("t2m")},
            skip_nan="u10",
        )


def test_docstring_examples_of_windows_module():
    import doctest

    import xbatcher.windows

    result = doctest.testmod(xbatcher.windows, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    t=st.integers(6, 14),
    lo=st.integers(-3, 1),
    n_hist=st.integers(1, 3),
    lead=st.integers(-2, 4),
    nan_t2m=st.lists(st.tuples(st.integers(0, 13), st.integers(0, 3)), max_size=3),
    nan_u10=st.lists(st.tuples(st.integers(0, 13), st.integers(0, 3)), max_size=3),
    chunked=st.booleans(),
)
def test_skip_nan_is_every_window_valid_property(
    t, lo, n_hist, lead, nan_t2m, nan_u10, chunked
):
    ds = make_ds(t=t, y=4, x=2)
    for var, points in (("t2m", nan_t2m), ("u10", nan_u10)):
        for ti, yi in points:
            if ti < t:
                ds[var][ti, yi, 0] = np.nan
    if chunked:
        ds = ds.chunk(time=3)
    windows = forecast(hist=range(lo, lo + n_hist), lead=lead)
    input_dims = {"lat": 2, "lon": 2}
    span = max(0, lo + n_hist - 1, lead) - min(0, lo, lead) + 1
    if span > t:
        return
    bgen = xb.BatchGenerator(
        ds, input_dims, batch_size=2, windows=windows, skip_nan=["t2m", "u10"]
    )
    samples = reference_samples(ds, input_dims, windows)
    want = []
    for i, sample in enumerate(samples):
        values = [
            expected(ds, sample, input_dims, window, var)
            for window in windows.values()
            for var in window.variables
            if var != "z_static"
        ]
        if not any(np.isnan(v).any() for v in values):
            want.append(i)
    assert bgen.sample_ids().tolist() == want


def test_accessor_forwards_windows():
    ds = make_ds(t=12)
    bgen = ds.batch.generator({"lat": 6, "lon": 8}, batch_size=2, windows=forecast())
    assert bgen.n_units == 3 and set(bgen[0]) == {"x", "y"}


def test_every_role_keeps_every_coordinate_cut_to_its_window():
    ds = make_ds(t=12).assign_coords(
        time_bnds=(("time", "bnds"), np.arange(24.0).reshape(12, 2))
    )
    windows = {**forecast(), "static": xb.Window("z_static")}
    b = xb.BatchGenerator(ds, {"lat": 6, "lon": 8}, batch_size=2, windows=windows)[0]
    # sample 1: anchor 4; x reads times 1..4, y time 10, static the anchor's time 4
    assert b["x"]["time_bnds"].dims == ("sample", "time_input", "bnds")
    np.testing.assert_array_equal(b["x"]["time_bnds"].values[1], ds.time_bnds[1:5])
    np.testing.assert_array_equal(b["y"]["time_bnds"].values[1], ds.time_bnds[10])
    assert b["static"]["time"].values.tolist() == [30, 40]
    np.testing.assert_array_equal(b["static"]["time_bnds"].values[1], ds.time_bnds[4])


def test_engine_over_a_store_pickles_small_with_roles(tmp_path):
    pytest.importorskip("zarr")
    make_ds(t=200, y=32, x=32).to_zarr(tmp_path / "s.zarr", consolidated=False)
    ds = xr.open_dataset(
        tmp_path / "s.zarr", engine="zarr", chunks=None, consolidated=False
    )
    bgen = xb.BatchGenerator(ds, {"lat": 8, "lon": 8}, batch_size=4, windows=forecast())
    blob = pickle.dumps(bgen.engine)
    assert len(blob) < 64_000  # the data is 3 MB: the store travels as its path
    engine = pickle.loads(blob)
    got = read_batch(engine, np.array([5, 77]))
    assert isinstance(got, dict)
    want = read_batch(bgen.engine, np.array([5, 77]))
    for role in want:
        for var in want[role]:
            np.testing.assert_array_equal(got[role][var], want[role][var])
