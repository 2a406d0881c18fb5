"""Sample-level batches, shuffling, sharding, splits and resumable state of BatchGenerator."""

from __future__ import annotations

import itertools
import json
import warnings

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import xbatcher as xb
from xbatcher.errors import SchemaError, StateError
from xbatcher.splits import split_ranges


def make_da(nt: int = 6, ny: int = 9, nx: int = 11) -> xr.DataArray:
    """Values encode their own position, so a window identifies itself."""
    values = np.arange(nt * ny * nx, dtype=np.float64).reshape(nt, ny, nx)
    return xr.DataArray(
        values,
        dims=("time", "y", "x"),
        coords={
            "time": np.arange(nt) * 10,
            "y": np.arange(ny) * 0.5,
            "x": np.arange(nx) * 2.0,
        },
        name="v",
        attrs={"units": "K"},
    )


def brute_force_samples(
    da: xr.DataArray, wy: int, wx: int, sy: int, sx: int
) -> list[dict]:
    """Every sample's isel selector in sample-number order (unsliced dims first)."""
    out = []
    for t in range(da.sizes["time"]):
        for y0 in range(0, da.sizes["y"] - wy + 1, sy):
            for x0 in range(0, da.sizes["x"] - wx + 1, sx):
                out.append(
                    {"time": t, "y": slice(y0, y0 + wy), "x": slice(x0, x0 + wx)}
                )
    return out


def sample_ids(bgen: xb.BatchGenerator) -> list[int]:
    return [int(s) for batch in bgen for s in batch["sample"].values]


schemas = st.fixed_dictionaries(
    {
        "nt": st.integers(1, 5),
        "ny": st.integers(2, 9),
        "nx": st.integers(2, 9),
        "wy": st.integers(1, 4),
        "wx": st.integers(1, 4),
        "batch_size": st.integers(1, 7),
        "seed": st.integers(0, 2**31),
    }
)


@settings(max_examples=30, deadline=None)
@given(p=schemas, drop_last=st.booleans())
def test_shuffle_every_sample_once_and_values_match_isel(p, drop_last):
    da = make_da(p["nt"], p["ny"], p["nx"])
    wy, wx = min(p["wy"], p["ny"]), min(p["wx"], p["nx"])
    bgen = xb.BatchGenerator(
        da,
        {"y": wy, "x": wx},
        batch_size=p["batch_size"],
        shuffle=True,
        seed=p["seed"],
        drop_last=drop_last,
    )
    expected = brute_force_samples(da, wy, wx, wy, wx)
    got = []
    for batch in bgen:
        assert batch.dims == ("sample", "y_input", "x_input")
        for k, s in enumerate(batch["sample"].values):
            sel = expected[int(s)]
            np.testing.assert_array_equal(batch.values[k], da.isel(sel).values)
            np.testing.assert_array_equal(
                batch["y"].values[k], da["y"].values[sel["y"]]
            )
            assert batch["time"].values[k] == da["time"].values[sel["time"]]
            got.append(int(s))
    n = len(expected)
    if drop_last:
        assert len(got) == n - n % p["batch_size"]
        assert len(set(got)) == len(got)
    else:
        assert sorted(got) == list(range(n))
    assert len(bgen) == (
        n // p["batch_size"] if drop_last else -(-n // p["batch_size"])
    )


def test_arrays_equal_xarray_in_shuffled_order():
    da = make_da()
    bgen = xb.BatchGenerator(da, {"y": 3, "x": 4}, batch_size=5, shuffle=True, seed=3)
    for i in range(len(bgen)):
        np.testing.assert_array_equal(bgen.arrays[i], bgen[i].values)
    fast = list(bgen.arrays)
    bgen.set_epoch(0)
    for a, b in zip(fast, bgen, strict=True):
        np.testing.assert_array_equal(a, b.values)


def test_same_seed_same_order_and_new_epoch_new_order():
    da = make_da()
    kw = dict(input_dims={"y": 3, "x": 3}, batch_size=4, shuffle=True, seed=11)
    a = sample_ids(xb.BatchGenerator(da, **kw))
    b = sample_ids(xb.BatchGenerator(da, **kw))
    assert a == b
    g = xb.BatchGenerator(da, **kw)
    first, second = sample_ids(g), sample_ids(g)  # iterating again advances the epoch
    assert first == a and second != first and sorted(second) == sorted(first)
    g.set_epoch(0)
    assert sample_ids(g) == first


def test_shuffle_without_seed_draws_and_exposes_one():
    da = make_da()
    g = xb.BatchGenerator(da, {"y": 3, "x": 3}, batch_size=4, shuffle=True)
    assert isinstance(g.seed, int)
    again = xb.BatchGenerator(
        da, {"y": 3, "x": 3}, batch_size=4, shuffle=True, seed=g.seed
    )
    assert sample_ids(g) == sample_ids(again)


def test_legacy_layout_shuffles_whole_batches():
    da = make_da()
    seq = xb.BatchGenerator(da, {"y": 3, "x": 3})
    shuf = xb.BatchGenerator(da, {"y": 3, "x": 3}, shuffle=True, seed=0)
    seq_batches = [b.values.tobytes() for b in seq]
    shuf_batches = [b.values.tobytes() for b in shuf]
    assert sorted(seq_batches) == sorted(shuf_batches)
    assert seq_batches != shuf_batches


@settings(max_examples=25, deadline=None)
@given(p=schemas, world=st.integers(1, 4), even=st.sampled_from(["pad", "drop"]))
def test_shards_disjoint_complete_equal_length(p, world, even):
    da = make_da(p["nt"], p["ny"], p["nx"])
    wy, wx = min(p["wy"], p["ny"]), min(p["wx"], p["nx"])
    bgen = xb.BatchGenerator(
        da, {"y": wy, "x": wx}, batch_size=p["batch_size"], shuffle=True, seed=p["seed"]
    )
    n = bgen.n_units
    shards = [bgen.shard(r, world, even=even) for r in range(world)]
    ids = [sample_ids(s) for s in shards]
    lengths = {len(i) for i in ids}
    assert len(lengths) == 1  # equal numbers of samples: DDP never waits on a rank
    assert len({len(s) for s in shards}) == 1
    flat = list(itertools.chain.from_iterable(ids))
    if even == "drop":
        assert len(set(flat)) == len(flat) == n - n % world
    else:
        assert set(flat) == set(range(n))
        assert len(flat) == -(-n // world) * world


@settings(max_examples=25, deadline=None)
@given(p=schemas, stop_after=st.integers(0, 20), arrays=st.booleans())
def test_resume_equals_uninterrupted(p, stop_after, arrays):
    da = make_da(p["nt"], p["ny"], p["nx"])
    wy, wx = min(p["wy"], p["ny"]), min(p["wx"], p["nx"])

    def make():
        return xb.BatchGenerator(
            da,
            {"y": wy, "x": wx},
            batch_size=p["batch_size"],
            shuffle=True,
            seed=p["seed"],
        )

    full = [b.values for b in make()]
    g = make()
    it = iter(g.arrays) if arrays else iter(g)
    stop_after = min(stop_after, len(full))
    for _ in range(stop_after):
        next(it)
    state = json.loads(json.dumps(g.state_dict()))  # states survive JSON checkpoints
    resumed = make()
    resumed.load_state_dict(state)
    rest = [b.values for b in resumed]
    assert len(rest) == len(full) - stop_after
    for a, b in zip(rest, full[stop_after:], strict=True):
        np.testing.assert_array_equal(a, b)
    # after the resumed epoch ends, the next epoch starts from the beginning
    assert resumed.epoch == g.epoch + 1
    assert len([b for b in resumed]) == len(full)


def test_state_from_another_schema_is_refused_with_both_fingerprints():
    da = make_da()
    g1 = xb.BatchGenerator(da, {"y": 3, "x": 3}, batch_size=4, shuffle=True, seed=1)
    g2 = xb.BatchGenerator(da, {"y": 3, "x": 4}, batch_size=4, shuffle=True, seed=1)
    with pytest.raises(StateError) as err:
        g2.load_state_dict(g1.state_dict())
    assert g1.fingerprint in str(err.value) and g2.fingerprint in str(err.value)
    g3 = xb.BatchGenerator(
        da + 0 * da.isel(time=0), {"y": 3, "x": 3}, batch_size=4, shuffle=True, seed=2
    )
    with pytest.raises(StateError):
        g3.load_state_dict(g1.state_dict())


def test_split_by_fraction_never_shares_data():
    da = make_da(nt=20)
    bgen = xb.BatchGenerator(da, {"time": 3, "y": 3}, input_overlap={"time": 2})
    parts = bgen.split("time", train=0.6, val=0.2, test=0.2)
    seen = {}
    for name, g in parts.items():
        times = {int(t) for b in g for t in np.atleast_1d(b["time"].values)}
        seen[name] = times
        assert len(g) > 0
    assert not (seen["train"] & seen["val"]) and not (seen["val"] & seen["test"])
    assert not (seen["train"] & seen["test"])
    # the train part holds exactly the windows that fit in the first 12 time steps
    assert max(seen["train"]) == da["time"].values[11]
    assert (
        len(parts["train"])
        == xb.BatchGenerator(
            da.isel(time=slice(0, 12)), {"time": 3, "y": 3}, {"time": 2}
        ).__len__()
    )


def test_split_by_label_range():
    da = make_da(nt=20)
    g = xb.BatchGenerator(da, {"y": 3, "x": 3}, batch_size=8)
    parts = g.split("time", train=slice(0, 100), val=(110, 190))
    times_train = {int(t) for b in parts["train"] for t in b["time"].values}
    times_val = {int(t) for b in parts["val"] for t in b["time"].values}
    assert times_train == set(range(0, 101, 10))
    assert times_val == set(range(110, 191, 10))


def test_validity_filter_skips_nan_windows():
    da = make_da(nt=3, ny=8, nx=8)
    data = da.values.copy()
    data[1, 2, 5] = np.nan
    da = da.copy(data=data)
    ds = da.to_dataset()
    bgen = xb.BatchGenerator(
        ds, {"y": 4, "x": 4}, input_overlap={"y": 2, "x": 2}, batch_size=5, skip_nan="v"
    )
    kept = set(sample_ids(bgen))
    sels = brute_force_samples(da, 4, 4, 2, 2)
    expected = {i for i, s in enumerate(sels) if not np.isnan(da.isel(s).values).any()}
    assert kept == expected and len(expected) < len(sels)
    for batch in bgen:
        assert not np.isnan(batch["v"].values).any()


def test_mask_filter_and_dask_source_agree():
    da = make_da(nt=2, ny=8, nx=8)
    mask = xr.DataArray(np.ones((8, 8), bool), dims=("y", "x"))
    mask[0:2, 0:2] = False
    ds = da.to_dataset().assign(m=mask)
    g = xb.BatchGenerator(ds[["v"]], {"y": 4, "x": 4}, batch_size=3, mask=mask)
    g_dask = xb.BatchGenerator(
        ds[["v"]].chunk(time=1), {"y": 4, "x": 4}, batch_size=3, mask=mask.chunk()
    )
    ids = sample_ids(g)
    assert ids == sample_ids(g_dask)
    sels = brute_force_samples(da, 4, 4, 4, 4)
    expected = [
        i for i, s in enumerate(sels) if bool(mask.isel(y=s["y"], x=s["x"]).all())
    ]
    assert ids == expected


def test_chunk_aware_shuffle_on_zarr(tmp_path):
    pytest.importorskip("zarr")
    da = make_da(nt=12, ny=8, nx=8)
    path = tmp_path / "d.zarr"
    da.chunk(time=3).to_dataset().to_zarr(path)
    lazy = xr.open_dataset(path, engine="zarr", chunks=None)["v"]
    g = xb.BatchGenerator(
        lazy,
        {"y": 4, "x": 4},
        batch_size=4,
        shuffle="chunks",
        seed=5,
        resident_bytes=2 * 3 * 8 * 8 * 8,
    )
    ids = sample_ids(g)
    assert sorted(ids) == list(range(12 * 4))
    # pools hold 2 chunks: each batch draws from at most 2 chunks (3 time steps each)
    g.set_epoch(0)
    for batch in g:
        assert len({int(t) // 30 for t in batch["time"].values}) <= 2
    # values identical to isel of the in-memory source
    mem = make_da(nt=12, ny=8, nx=8)
    sels = brute_force_samples(mem, 4, 4, 4, 4)
    for batch in g:
        for k, s in enumerate(batch["sample"].values):
            np.testing.assert_array_equal(
                batch.values[k], mem.isel(sels[int(s)]).values
            )
    # each chunk is decoded once per epoch
    g2 = xb.BatchGenerator(
        lazy, {"y": 4, "x": 4}, batch_size=4, shuffle="chunks", seed=7
    )
    for _ in g2.arrays:
        pass
    assert g2.block_cache.stats()["misses"] == 4


def test_random_sampler_with_weights_through_generator():
    da = make_da(nt=2, ny=4, nx=4)
    g0 = xb.BatchGenerator(da, {"y": 2, "x": 2}, batch_size=8)
    n = g0.n_units
    weights = np.zeros(n)
    weights[[1, 5]] = [1.0, 3.0]
    g = xb.BatchGenerator(
        da,
        {"y": 2, "x": 2},
        batch_size=8,
        sampler=xb.RandomSampler(num_samples=4000, weights=weights, seed=0),
    )
    ids = np.array(sample_ids(g))
    assert set(ids) == {1, 5}
    assert abs((ids == 5).mean() - 0.75) < 0.05


def test_bad_sampling_arguments():
    da = make_da()
    with pytest.raises(SchemaError, match="shuffle must be"):
        xb.BatchGenerator(da, {"y": 3}, batch_size=2, shuffle="yes")
    with pytest.raises(SchemaError, match="batch_size"):
        xb.BatchGenerator(da, {"y": 3}, batch_size=0)
    with pytest.raises(SchemaError, match="need sample-level batches"):
        xb.BatchGenerator(da.to_dataset(), {"y": 3}, skip_nan="v")
    with pytest.raises(StateError, match="shard"):
        g = xb.BatchGenerator(da, {"y": 3}, batch_size=2)
        g.shard(0, 2).load_state_dict(g.state_dict())


def test_shuffled_epoch_over_a_billion_samples_starts_small():
    import tracemalloc

    import dask.array as dsa

    big = xr.DataArray(
        dsa.zeros((10**6, 10**4), dtype="float32", chunks=(1000, 1000)),
        dims=("time", "x"),
    )
    tracemalloc.start()
    with pytest.warns(xb.errors.XbatcherWarning, match="37.25 GiB of chunked data"):
        g = xb.BatchGenerator(big, {"x": 10}, batch_size=64, shuffle=True, seed=0)
    units = g.batch_units(0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert g.n_units == 10**9 and len(g) == -(-(10**9) // 64)
    assert units.size == 64 and len(set(units.tolist())) == 64
    assert units.min() >= 0 and units.max() < 10**9
    assert peak < 100 * 2**20
    batch = g.arrays[len(g) - 1]  # the last (short) batch reads only what it needs
    assert batch.shape == (10**9 - 64 * (len(g) - 1), 10)


def test_randomness_report_orders():
    da = make_da(nt=24, ny=8, nx=8).chunk(time=4)
    reports = {
        shuffle: xb.BatchGenerator(
            da,
            {"y": 4, "x": 4},
            batch_size=8,
            shuffle=shuffle,
            seed=0 if shuffle else None,
            resident_bytes=2 * 4 * 8 * 8 * 8,
        ).randomness_report()
        for shuffle in (False, True, "chunks")
    }
    assert reports[False]["max_groups_per_batch"] == 1
    assert reports["chunks"]["max_groups_per_batch"] <= 2
    assert (
        reports[True]["mean_groups_per_batch"]
        > reports["chunks"]["mean_groups_per_batch"]
    )
    assert reports[True]["chunks_in_source"] == 6


@pytest.mark.parametrize("backend", ["numpy", "dask", "zarr"])
def test_generator_pickles_with_its_state_for_worker_processes(tmp_path, backend):
    import pickle

    da = make_da(nt=8)
    if backend == "dask":
        da = da.chunk(time=3)
    elif backend == "zarr":
        pytest.importorskip("zarr")
        da.to_dataset().to_zarr(tmp_path / "d.zarr")
        da = xr.open_dataset(tmp_path / "d.zarr", engine="zarr", chunks=None)["v"]
    g = xb.BatchGenerator(da, {"y": 3, "x": 4}, batch_size=5, shuffle=True, seed=9)
    first = [b.copy() for b in g.arrays][:3]  # fill the chunk cache, advance the epoch
    g.set_epoch(0)
    clone = pickle.loads(pickle.dumps(g))
    assert len(clone.block_cache) == 0  # the cache travels empty
    assert clone.state_dict() == g.state_dict()
    for i in range(3):
        np.testing.assert_array_equal(clone.arrays[i], first[i])
        xr.testing.assert_identical(clone[i], g[i])


def test_full_shuffle_over_chunked_data_bigger_than_the_cache_warns(tmp_path):
    """shuffle=True on chunked data that does not fit block_cache_bytes re-decodes
    chunks for every few batches: the generator says so and names the fix; batches
    stay exact (gathered in waves that fit the cache)."""
    values = np.arange(40 * 16 * 16, dtype=np.float64).reshape(40, 16, 16)
    da = xr.DataArray(values, dims=("time", "y", "x"), name="v").chunk(time=5)
    params = {"input_dims": {"y": 8, "x": 8}, "batch_size": 16, "shuffle": True}
    with pytest.warns(xb.errors.XbatcherWarning, match=r"shuffle='chunks'") as record:
        bgen = xb.BatchGenerator(da, **params, seed=0, block_cache_bytes="40KiB")
    message = str(record[0].message)
    assert "80.00 kiB of chunked data" in message  # 40 x 16 x 16 float64 (dask format)
    assert "block_cache_bytes=40.00 kiB" in message
    for i, arrays in enumerate(bgen.arrays):
        for j, n in enumerate(bgen.batch_units(i).tolist()):
            t, rest = divmod(n, 4)
            y, x = divmod(rest, 2)
            np.testing.assert_array_equal(
                arrays[j], values[t, 8 * y : 8 * y + 8, 8 * x : 8 * x + 8]
            )
    assert bgen.block_cache.stats()["resident_bytes"] <= 40 * 1024
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # fits the default cache, or not chunked
        xb.BatchGenerator(da, **params, seed=0)
        xb.BatchGenerator(da.compute(), **params, seed=0, block_cache_bytes="1KiB")
        xb.BatchGenerator(da, **{**params, "shuffle": "chunks"}, block_cache_bytes=0)


# ---------------------------------------------------------------- composition


def nan_dataset(nt: int, ny: int, nx: int, holes) -> xr.Dataset:
    da = make_da(nt, ny, nx)
    values = da.values.copy()
    values.reshape(-1)[list(holes)] = np.nan
    return da.copy(data=values).to_dataset()


def all_units(bgen: xb.BatchGenerator) -> list[int]:
    return [int(u) for i in range(len(bgen)) for u in bgen.batch_units(i)]


compositions = st.fixed_dictionaries(
    {
        "nt": st.integers(4, 12),
        "wy": st.integers(1, 3),
        "oy": st.integers(0, 1),
        "holes": st.sets(st.integers(0, 12 * 5 * 4 - 1), max_size=12),
        "frac": st.sampled_from([0.25, 0.5, 0.6, 0.75]),
        "gap": st.integers(0, 1),
        "world": st.integers(1, 4),
        "even": st.sampled_from(["pad", "drop"]),
        "shuffle": st.booleans(),
        "use_mask": st.booleans(),
    }
)


@settings(max_examples=40, deadline=None)
@given(p=compositions)
def test_splits_shards_and_filters_compose_in_any_order(p):
    ds = nan_dataset(p["nt"], 5, 4, [h for h in p["holes"] if h < p["nt"] * 20])
    wy = min(p["wy"], 5)
    mask = xr.DataArray(
        np.arange(p["nt"] * 5).reshape(p["nt"], 5) % 3 != 0,
        dims=("time", "y"),
        coords={"time": ds.time, "y": ds.y},
    ).isel(time=slice(None, None, -1))  # descending labels: matched by label
    filt = dict(skip_nan="v", mask=mask if p["use_mask"] else None)
    kw = dict(
        input_dims={"y": wy, "x": 2},
        input_overlap={"y": min(p["oy"], wy - 1)},
        batch_size=3,
        shuffle=p["shuffle"],
        seed=4 if p["shuffle"] else None,
    )
    parts = dict(train=p["frac"], val=1 - p["frac"])
    try:
        bgen = xb.BatchGenerator(ds, **kw, **filt)
        ranges = split_ranges(p["nt"], parts, p["gap"])
    except SchemaError:
        return  # a part too small for the fractions
    split = bgen.split("time", gap=p["gap"], **parts)
    for name, (a, b) in ranges.items():
        sub = ds.isel(time=slice(a, b))
        # natural definition: the same arguments on the part's data
        natural = xb.BatchGenerator(sub, **kw, **filt)
        part = split[name]
        assert all_units(part) == all_units(natural)
        assert part.sample_ids().tolist() == natural.sample_ids().tolist()
        # shards of a split: disjoint (up to padding) and complete
        w = p["world"]
        shards = [part.shard(r, w, p["even"]) for r in range(w)]
        seen = [all_units(s) for s in shards]
        flat = [u for s in seen for u in s]
        n = part.n_units
        if p["even"] == "drop":
            assert len(flat) == len(set(flat)) == n - n % w
        else:
            assert set(flat) == set(part.sample_ids()) and len(flat) == -(-n // w) * w
        # split of a shard == shard of the split, for every rank
        for r in range(w):
            other = bgen.shard(r, w, p["even"]).split("time", gap=p["gap"], **parts)
            assert all_units(other[name]) == seen[r]
        # no filtered sample in any part: values checked, not ids
        for batch in part.arrays:
            assert not np.isnan(batch["v"]).any()


def test_split_keeps_cache_shuffle_and_epoch():
    ds = nan_dataset(8, 5, 4, [7, 100])
    store: dict = {}
    calls = []

    def pre(batch):
        calls.append(1)
        return batch

    bgen = xb.BatchGenerator(
        ds,
        {"y": 2, "x": 2},
        batch_size=2,
        shuffle="chunks",
        seed=9,
        skip_nan="v",
        cache=store,
        cache_preprocess=pre,
        block_cache_bytes="8MiB",
    )
    bgen.set_epoch(3)
    train = bgen.split("time", train=0.5, val=0.5)["train"]
    assert train.sampler == bgen.sampler and train.epoch == 3
    assert train.cache is store and train.cache_preprocess is pre
    assert train.block_cache.max_bytes == 8 * 2**20
    first = train[0]
    assert calls == [1] and store
    xr.testing.assert_identical(train[0], first)  # read back from the cache
    assert calls == [1]


def test_weights_length_checked_at_construction_and_follow_samples():
    ds = nan_dataset(4, 5, 4, [0])  # the NaN removes sample 0
    kw = dict(input_dims={"y": 1, "x": 2}, batch_size=4, skip_nan="v")
    full = 4 * 5 * 2
    with pytest.raises(
        SchemaError,
        match=rf"weights have {full} entries but this "
        rf"generator has {full - 1} samples kept by skip_nan/mask.*"
        r"sample_ids\(\)",
    ):
        xb.BatchGenerator(ds, **kw, sampler=xb.RandomSampler(weights=np.ones(full)))
    bgen = xb.BatchGenerator(ds, **kw)
    assert bgen.n_units == full - 1 and bgen.sample_ids()[0] == 1
    per_sample = np.zeros(full)
    per_sample[[5, 9, 25]] = [1.0, 3.0, 1.0]  # by sample number of the unfiltered grid
    weighted = bgen.with_sampler(
        xb.RandomSampler(num_samples=400, weights=per_sample[bgen.sample_ids()], seed=1)
    )
    drawn = {int(s) for batch in weighted for s in batch["sample"].values}
    assert drawn == {5, 9, 25}
    # weights follow their samples into the parts of a split
    parts = weighted.split("time", early=2, late=2)
    assert {int(s) for b in parts["early"] for s in b["sample"].values} == {5, 9}
    assert {int(s) for b in parts["late"] for s in b["sample"].values} == {5}
    np.testing.assert_array_equal(
        parts["late"].sampler.weights, per_sample[20:][parts["late"].sample_ids()]
    )
    # a cut off the window grid cannot carry weights: refused, with the fix
    ds2 = make_da(2, 6, 2).to_dataset()
    g = xb.BatchGenerator(
        ds2, {"y": 2}, batch_size=2, sampler=xb.RandomSampler(weights=np.ones(12))
    )
    with pytest.raises(SchemaError, match="not a window of the unsplit data's window"):
        g.split("y", a=3, b=3)
    assert g.split("y", a=2, b=4)["b"].sampler.weights.size == 8
