"""The epoch plan (``bgen.plan``): units of batches, pickled small, shards apart."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import xbatcher as xb
from conftest import positional, schemas
from xbatcher.engine import read_batch
from xbatcher.plan import ChunkGrid, EpochPlan


def _all_units(plan: EpochPlan, epoch: int) -> list[list[int]]:
    return [u.tolist() for u in plan.batch_units(epoch, 0, plan.num_batches())]


@settings(max_examples=40, deadline=None)
@given(
    spec=schemas(sample_mode=True),
    shuffle=st.sampled_from([False, True, "chunks"]),
    batch_size=st.integers(1, 7),
    shard=st.sampled_from([None, (0, 2), (1, 3)]),
)
def test_pickled_plan_gives_the_generators_units(spec, shuffle, batch_size, shard):
    """A plan unpickled elsewhere (a loader worker) answers every batch of every
    epoch as the generator does, also sharded and chunk-aware."""
    sizes, params = spec
    data = positional(sizes).chunk({d: max(1, n // 2) for d, n in sizes.items()})
    params = {k: v for k, v in params.items() if k != "concat_input_dims"}
    bgen = xb.BatchGenerator(
        data, **params, batch_size=batch_size, shuffle=shuffle, seed=3
    )
    if shard is not None:
        bgen = bgen.shard(*shard)
    plan = bgen.plan
    assert plan.num_batches() == len(bgen)
    assert plan.n_units == bgen.n_units
    clone = pickle.loads(pickle.dumps(plan))
    for epoch in (0, 1):
        bgen.set_epoch(epoch)
        expected = [bgen.batch_units(i).tolist() for i in range(len(bgen))]
        assert _all_units(plan, epoch) == expected
        assert _all_units(clone, epoch) == expected
        # the generator's batches are read from exactly these units
        for i in range(min(len(bgen), 3)):
            np.testing.assert_array_equal(
                bgen.arrays[i],
                read_batch(bgen.engine, plan.batch_units(epoch, i, i + 1)[0]),
            )


def test_plan_pickles_small_without_its_caches():
    """Neither the data nor the page of units computed for bgen[i] travels."""
    da = xr.DataArray(np.zeros((64, 128, 128), np.float32), dims=("t", "y", "x"))
    bgen = xb.BatchGenerator(da, {"y": 4, "x": 4}, batch_size=64, shuffle=True, seed=1)
    plan = bgen.plan
    before = len(pickle.dumps(plan))
    plan.batch_units(0, 0, 40)  # fills the 4096-unit page cache (32 KiB)
    assert plan._memo.page is not None
    assert len(pickle.dumps(plan)) == before < 4096 < da.nbytes // 1000
    clone = pickle.loads(pickle.dumps(plan))
    assert clone._memo.page is None
    assert _all_units(clone, 0)[:40] == _all_units(plan, 0)[:40]


def test_filter_travels_with_the_plan():
    ds = xr.Dataset({"v": ("x", [1.0, np.nan, 3.0, 4.0, 5.0, 6.0, np.nan, 8.0])})
    bgen = xb.BatchGenerator(ds, {"x": 2}, batch_size=2, skip_nan="v", shuffle=True)
    clone = pickle.loads(pickle.dumps(bgen.plan))
    assert clone.sample_ids().tolist() == [1, 2] == bgen.sample_ids().tolist()
    assert clone.n_units == 2
    assert _all_units(clone, 5) == _all_units(bgen.plan, 5)


def test_derived_plans_share_no_state():
    da = xr.DataArray(np.arange(40.0), dims="x").chunk(x=8)
    plan = xb.BatchGenerator(da, {"x": 2}, batch_size=3, shuffle=True, seed=0).plan
    whole = _all_units(plan, 0)
    halves = [plan.with_shard(r, 2, even="drop") for r in range(2)]
    seen = sorted(u for h in halves for b in _all_units(h, 0) for u in b)
    assert seen == list(range(20))  # disjoint and complete
    assert _all_units(plan, 0) == whole  # the shards' page caches are their own
    assert halves[0].with_shard(0, 1).shard == halves[0].shard.then(xb.Shard(0, 1))
    seq = plan.with_sampler(xb.SequentialSampler())
    assert _all_units(seq, 0)[0] == [0, 1, 2]
    assert _all_units(plan, 0) == whole and plan.sampler != seq.sampler
    with pytest.raises(AttributeError):
        plan.sampler = xb.SequentialSampler()  # type: ignore[misc]  # frozen


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(4, 60),
    batch_size=st.integers(1, 5),
    shard=st.sampled_from([(0, 2), (1, 2), (2, 3)]),
    seed=st.integers(0, 3),
    epoch=st.integers(0, 2),
)
def test_dataclasses_replace_of_a_used_plan_answers_for_its_own_fields(
    n, batch_size, shard, seed, epoch
):
    """``dataclasses.replace`` (as ``split`` uses it) on a plan that already answered
    ``batch_units`` gives a plan with its own memo: its units are those of a plan
    built fresh with the new fields, not the copied plan's (a kept page of units
    handed out the unsharded order)."""
    import dataclasses

    da = xr.DataArray(np.arange(float(n)), dims="x")
    plan = xb.BatchGenerator(
        da, {"x": 1}, batch_size=batch_size, shuffle=True, seed=seed
    ).plan
    _all_units(plan, epoch)  # fills the page memo
    sharded = dataclasses.replace(plan, shard=xb.Shard(*shard))
    fresh = EpochPlan(plan.schema, plan.sampler, shard=xb.Shard(*shard))
    assert _all_units(sharded, epoch) == _all_units(fresh, epoch)
    resampled = dataclasses.replace(plan, sampler=xb.ShuffleSampler(seed=seed + 7))
    fresh = EpochPlan(plan.schema, xb.ShuffleSampler(seed=seed + 7))
    assert _all_units(resampled, epoch) == _all_units(fresh, epoch)


def test_chunk_grid_labels_units_by_the_chunk_of_their_first_window():
    da = xr.DataArray(np.zeros((4, 12)), dims=("t", "x")).chunk(t=2, x=5)
    bgen = xb.BatchGenerator(da, {"x": 3}, batch_size=2)
    grid = bgen.plan.grid
    assert isinstance(grid, ChunkGrid) and grid.dims == ("t", "x")
    # samples: 4 times x 4 windows starting at x = 0, 3, 6, 9; chunks x: 0-4, 5-9, 10-11
    expected = [t // 2 * 3 + x // 5 for t in range(4) for x in (0, 3, 6, 9)]
    assert grid.labels(bgen.schema).tolist() == expected
    in_memory = xb.BatchGenerator(da.compute(), {"x": 3}, batch_size=2)
    assert in_memory.plan.grid is None


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 200),
    batch_size=st.integers(1, 9),
    drop_last=st.booleans(),
    shuffle=st.booleans(),
    data=st.data(),
)
def test_batch_units_are_the_epochs_units_split_into_batches(
    n, batch_size, drop_last, shuffle, data
):
    """Batches ``first .. stop - 1`` are the units of their positions, cut every
    ``batch_size`` (the last one shorter; one empty batch for an empty range), as
    ``np.split`` cut them, and views of one array as they were."""
    da = xr.DataArray(np.zeros(n + 1), dims="x")
    bgen = xb.BatchGenerator(
        da,
        {"x": 1},
        batch_size=batch_size,
        drop_last=drop_last,
        shuffle=shuffle,
        seed=0 if shuffle else None,
    )
    plan = bgen.plan
    nb = plan.num_batches()
    first = data.draw(st.integers(0, nb))
    stop = data.draw(st.integers(first, nb))
    lo, hi = first * batch_size, min(stop * batch_size, plan.epoch_length())
    units = plan.units(5, np.arange(lo, hi, dtype=np.int64))
    want = np.split(units, np.arange(batch_size, hi - lo, batch_size))
    got = plan.batch_units(5, first, stop)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_array_equal(g, w)
    if len(got) > 1:  # views of one array: a batch written to is seen by no other
        assert np.shares_memory(got[0], got[-1]) is False
        assert got[0].base is not None


def test_batch_units_does_not_split_batch_by_batch(monkeypatch):
    """A whole epoch's units are cut into batches as rows of one reshape: np.split
    costs about 1 us a batch (0.7 ms of S1's 730-batch epoch)."""
    bgen = xb.BatchGenerator(
        xr.DataArray(np.zeros(1000), dims="x"), {"x": 1}, batch_size=7, shuffle=True
    )
    calls = []
    monkeypatch.setattr(np, "split", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(np, "array_split", lambda *a, **k: calls.append(a))
    batches = bgen.plan.batch_units(0, 0, len(bgen))
    assert calls == []
    assert [b.size for b in batches] == [7] * 142 + [6]
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
