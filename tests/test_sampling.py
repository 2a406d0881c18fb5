"""Tests of the sampling layer: permutations, samplers, shards, splits."""

from __future__ import annotations

import itertools
import json
import pickle
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xbatcher.errors import InputTypeError, SchemaError
from xbatcher.sampling import (
    BlockShuffleSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
    Shard,
    ShuffleSampler,
    UnitGroups,
    derive_key,
    group_diversity,
    permute,
    resolve_seed,
)
from xbatcher.splits import split_ranges

FAST = settings(max_examples=60, deadline=None)

seeds = st.integers(min_value=0, max_value=2**64 - 1)
epochs = st.integers(min_value=0, max_value=10**6)


def full_epoch(
    sampler: Sampler, n: int, epoch: int = 0, groups: UnitGroups | None = None
) -> np.ndarray[Any, np.dtype[np.int64]]:
    return sampler.units(n, epoch, np.arange(sampler.epoch_length(n)), groups)


# ---------------------------------------------------------------------------------
# Pinned outputs. These values are part of the reproducibility guarantee: a user who
# trained with seed=42 must get the same order after upgrading xbatcher. If a change
# makes these tests fail, the change breaks reproducibility for every user: revert it
# (or, if it is truly intended, document it as a breaking change in the changelog).
# ---------------------------------------------------------------------------------


def test_pinned_derive_key() -> None:
    assert derive_key(42) == 13679457532755275413
    assert derive_key(42, 0) == 6332618229526065668
    assert derive_key(42, 0, 3) == 3133863162058083004


def test_pinned_permute() -> None:
    assert permute(1000, 12345, [0, 1, 2, 999]).tolist() == [403, 163, 503, 546]
    big = 2**40 + 7
    assert permute(big, 9, [0, 1, big - 1]).tolist() == [
        654960418175,
        743858642765,
        305854847130,
    ]


def test_pinned_shuffle() -> None:
    s = ShuffleSampler(seed=42)
    assert s.units(10, 0, np.arange(10)).tolist() == [4, 0, 1, 5, 7, 3, 9, 8, 6, 2]
    assert s.units(10, 1, np.arange(10)).tolist() == [0, 8, 5, 1, 3, 2, 4, 6, 7, 9]
    assert s.units(10**9, 3, [0, 1, 10**9 - 1]).tolist() == [
        865580185,
        10681149,
        846705070,
    ]


def test_pinned_random() -> None:
    assert RandomSampler(seed=42).units(100, 0, np.arange(8)).tolist() == [
        47,
        76,
        24,
        76,
        28,
        37,
        75,
        67,
    ]
    weighted = RandomSampler(seed=42, num_samples=8, weights=[1, 2, 3, 4])
    assert weighted.units(4, 0, np.arange(8)).tolist() == [2, 3, 1, 3, 1, 2, 3, 3]
    no_repl = RandomSampler(seed=42, num_samples=5, replacement=False)
    assert no_repl.units(10, 0, np.arange(5)).tolist() == [4, 0, 1, 5, 7]


def test_pinned_block_shuffle() -> None:
    groups = UnitGroups.from_labels(np.arange(12) // 3)
    s = BlockShuffleSampler(seed=42, resident_groups=2)
    assert full_epoch(s, 12, 0, groups).tolist() == [
        3,
        1,
        0,
        2,
        5,
        4,
        10,
        11,
        9,
        8,
        6,
        7,
    ]


# ---------------------------------------------------------------------------------
# Seeds and keys
# ---------------------------------------------------------------------------------


def test_resolve_seed() -> None:
    assert resolve_seed(7) == 7
    assert resolve_seed(np.int64(7)) == 7
    assert type(resolve_seed(np.uint32(7))) is int
    fresh = {resolve_seed(None) for _ in range(5)}
    assert len(fresh) == 5
    assert all(0 <= s < 2**63 for s in fresh)


@pytest.mark.parametrize("bad", [-1, 2**64])
def test_resolve_seed_rejects(bad: Any) -> None:
    with pytest.raises(SchemaError, match=r"seed must be .*; got"):
        resolve_seed(bad)


@pytest.mark.parametrize("bad", [True, np.True_, 1.5, 2.0, "3", "42"])
def test_resolve_seed_rejects_wrong_types_with_a_type_error(bad: Any) -> None:
    # the same mistake raises the same type everywhere: a TypeError, not a ValueError
    with pytest.raises(InputTypeError, match=r"seed must be .*; got .* of type") as e:
        resolve_seed(bad)
    assert isinstance(e.value, TypeError) and not isinstance(e.value, ValueError)


@given(seed=seeds, a=epochs, b=epochs)
@FAST
def test_derive_key_distinct_streams(seed: int, a: int, b: int) -> None:
    assert derive_key(seed, a) == derive_key(seed, a)
    assert (derive_key(seed, a) == derive_key(seed, b)) == (a == b)
    assert 0 <= derive_key(seed, a, b) < 2**64


def test_derive_key_rejects_negative_stream() -> None:
    with pytest.raises(SchemaError, match=r"streams\[1\] must be an int in"):
        derive_key(1, 0, -3)


# ---------------------------------------------------------------------------------
# permute
# ---------------------------------------------------------------------------------


def test_permute_bijection_exhaustive_small() -> None:
    for n in range(1, 2001):
        out = permute(n, derive_key(11, n), np.arange(n))
        assert out.dtype == np.int64
        assert np.array_equal(np.sort(out), np.arange(n)), n


@given(n=st.integers(min_value=1, max_value=50_000), key=seeds)
@FAST
def test_permute_bijection(n: int, key: int) -> None:
    out = permute(n, key, np.arange(n))
    assert np.array_equal(np.bincount(out, minlength=n), np.ones(n, dtype=np.int64))


@given(
    n=st.integers(min_value=2**32, max_value=2**62),
    key=seeds,
    pos=st.lists(st.integers(min_value=0, max_value=2**32 - 1), min_size=1),
)
@FAST
def test_permute_large_n(n: int, key: int, pos: list[int]) -> None:
    pos_arr = np.unique(np.array(pos, dtype=np.int64))
    out = permute(n, key, pos_arr)
    assert out.min() >= 0
    assert out.max() < n
    assert np.unique(out).size == pos_arr.size


def test_permute_large_n_specific() -> None:
    n = 2**40 + 7
    pos = np.array([0, 1, 2, 12345, n - 2, n - 1], dtype=np.int64)
    out = permute(n, 3, pos)
    assert ((out >= 0) & (out < n)).all()
    assert np.unique(out).size == pos.size
    # Pointwise evaluation equals batched evaluation.
    assert [int(permute(n, 3, [p])[0]) for p in pos] == out.tolist()


def test_permute_keeps_shape_and_accepts_lists() -> None:
    grid = np.arange(12).reshape(3, 4)
    out = permute(12, 5, grid)
    assert out.shape == (3, 4)
    assert np.array_equal(out.reshape(-1), permute(12, 5, list(range(12))))
    assert permute(12, 5, np.array([], dtype=np.int64)).shape == (0,)


def test_permute_looks_uniform_on_small_domains() -> None:
    # Position 0 of a permutation of 5 over 2000 keys: each value ~400 times.
    firsts = np.array([permute(5, derive_key(1, k), [0])[0] for k in range(2000)])
    counts = np.bincount(firsts, minlength=5)
    chi2 = float(((counts - 400.0) ** 2 / 400.0).sum())
    assert chi2 < 30, counts  # 4 dof: p < 1e-5


def test_permute_vectorised_worst_case() -> None:
    """10**6 positions of a domain ~4x n (the cycle-walking worst case) in one call:
    a bijection, and memory linear in the positions (speed lives in benchmarks)."""
    import tracemalloc

    pos = np.arange(10**6)
    tracemalloc.start()
    out = permute(4**10 + 1, 1, pos)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert np.bincount(out).max() == 1
    assert peak < 40 * pos.nbytes


def test_permute_errors() -> None:
    with pytest.raises(SchemaError, match=r"n must be an int in \[1, .*; got 0"):
        permute(0, 1, [])
    with pytest.raises(SchemaError, match=r"key must be an int in"):
        permute(3, -1, [0])
    with pytest.raises(IndexError, match=r"\[0, 3\).*got 3"):
        permute(3, 1, [0, 3])
    with pytest.raises(IndexError, match=r"got -1"):
        permute(3, 1, [-1])
    with pytest.raises(InputTypeError, match=r"integer array; got dtype float64"):
        permute(3, 1, [0.5])


# ---------------------------------------------------------------------------------
# Samplers: every unit once, determinism, epochs
# ---------------------------------------------------------------------------------


def sizes_and_labels() -> st.SearchStrategy[np.ndarray[Any, np.dtype[np.int64]]]:
    return st.lists(st.integers(min_value=-3, max_value=40), max_size=300).map(
        lambda xs: np.array(xs, dtype=np.int64)
    )


@given(n=st.integers(min_value=0, max_value=3000), seed=seeds, epoch=epochs)
@FAST
def test_every_unit_once(n: int, seed: int, epoch: int) -> None:
    for sampler in (SequentialSampler(), ShuffleSampler(seed=seed)):
        out = full_epoch(sampler, n, epoch)
        assert out.dtype == np.int64
        assert np.array_equal(np.sort(out), np.arange(n))


@given(labels=sizes_and_labels(), seed=seeds, epoch=epochs, r=st.integers(1, 6))
@FAST
def test_block_shuffle_every_unit_once(
    labels: np.ndarray[Any, np.dtype[np.int64]], seed: int, epoch: int, r: int
) -> None:
    n = labels.size
    groups = UnitGroups.from_labels(labels)
    out = full_epoch(
        BlockShuffleSampler(seed=seed, resident_groups=r), n, epoch, groups
    )
    assert np.array_equal(np.sort(out), np.arange(n))


@given(
    n=st.integers(min_value=1, max_value=2000),
    frac=st.floats(0.0, 1.0),
    seed=seeds,
    epoch=epochs,
)
@FAST
def test_random_without_replacement_distinct(
    n: int, frac: float, seed: int, epoch: int
) -> None:
    k = int(frac * n)
    s = RandomSampler(num_samples=k, replacement=False, seed=seed)
    out = full_epoch(s, n, epoch)
    assert out.size == k
    assert np.unique(out).size == k
    assert ((out >= 0) & (out < n)).all()
    # The draw is the head of the ShuffleSampler order with the same seed.
    assert np.array_equal(out, full_epoch(ShuffleSampler(seed=seed), n, epoch)[:k])


@given(n=st.integers(min_value=8, max_value=5000), seed=seeds, epoch=epochs)
@FAST
def test_same_seed_same_order_other_epoch_other_order(
    n: int, seed: int, epoch: int
) -> None:
    a, b = ShuffleSampler(seed=seed), ShuffleSampler(seed=seed)
    assert a == b
    assert np.array_equal(full_epoch(a, n, epoch), full_epoch(b, n, epoch))
    assert not np.array_equal(full_epoch(a, n, epoch), full_epoch(a, n, epoch + 1))


@given(n=st.integers(min_value=1, max_value=5000), seed=seeds, data=st.data())
@FAST
def test_positions_addressable_anywhere(n: int, seed: int, data: st.DataObject) -> None:
    # Resuming mid-epoch: any subset of positions gives the same units as the full
    # epoch at those positions.
    pos = np.array(data.draw(st.lists(st.integers(0, n - 1), max_size=50)), np.int64)
    labels = np.arange(n) // 7
    groups = UnitGroups.from_labels(labels)
    samplers: list[Sampler] = [
        SequentialSampler(),
        ShuffleSampler(seed=seed),
        RandomSampler(seed=seed),
        RandomSampler(seed=seed, replacement=False),
        RandomSampler(seed=seed, weights=(np.arange(n) + 1) % 3),
        BlockShuffleSampler(seed=seed, resident_groups=3),
    ]
    for s in samplers:
        assert np.array_equal(
            s.units(n, 2, pos, groups), full_epoch(s, n, 2, groups)[pos]
        )


def test_shuffle_huge_epoch_is_instant() -> None:
    s = ShuffleSampler(seed=1)
    s.units(10**9, 0, np.arange(10))  # warm up imports and caches
    tracemalloc.start()
    start = time.perf_counter()
    out = s.units(10**9, 0, np.arange(1000))
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 0.1
    assert peak < 100 * 2**20
    assert ((out >= 0) & (out < 10**9)).all()
    assert np.unique(out).size == 1000


def test_seed_none_is_resolved_and_exposed() -> None:
    a, b = ShuffleSampler(), ShuffleSampler()
    assert isinstance(a.seed, int)
    assert a.seed != b.seed
    replay = ShuffleSampler(seed=a.seed)
    assert np.array_equal(full_epoch(a, 100, 3), full_epoch(replay, 100, 3))
    assert SequentialSampler().seed is None


def test_to_dict_is_json_and_distinguishes() -> None:
    dicts = [
        SequentialSampler().to_dict(),
        ShuffleSampler(seed=3).to_dict(),
        RandomSampler(seed=3).to_dict(),
        RandomSampler(seed=3, weights=[1, 2]).to_dict(),
        RandomSampler(seed=3, weights=[1, 3]).to_dict(),
        RandomSampler(seed=3, replacement=False, num_samples=4).to_dict(),
        BlockShuffleSampler(seed=3).to_dict(),
        BlockShuffleSampler(seed=3, resident_groups=2).to_dict(),
    ]
    assert ShuffleSampler(seed=3).to_dict() == {"kind": "shuffle", "seed": 3}
    encoded = [json.dumps(d, sort_keys=True) for d in dicts]
    assert len(set(encoded)) == len(encoded)
    assert all(json.loads(e) == d for e, d in zip(encoded, dicts, strict=True))


def test_samplers_are_frozen_hashable_picklable() -> None:
    groups = UnitGroups.from_labels(np.arange(20) // 5)
    block = BlockShuffleSampler(seed=5, resident_groups=2)
    block.units(20, 0, np.arange(20), groups)  # fill the plan cache
    weighted = RandomSampler(seed=1, weights=[1.0, 2.0])
    for s in (SequentialSampler(), ShuffleSampler(seed=1), weighted, block):
        clone = pickle.loads(pickle.dumps(s))
        assert clone == s
        assert hash(clone) == hash(s)
        with pytest.raises(AttributeError):
            s.seed = 3  # type: ignore[misc]
    assert weighted != RandomSampler(seed=1, weights=[1.0, 3.0])
    assert (
        block.units(20, 0, np.arange(20), groups).tolist()
        == pickle.loads(pickle.dumps(block))
        .units(20, 0, np.arange(20), groups)
        .tolist()
    )


def test_replacement_property() -> None:
    assert RandomSampler().replacement is True
    assert RandomSampler(replacement=False).replacement is False
    assert ShuffleSampler().replacement is False
    assert SequentialSampler().replacement is False
    assert BlockShuffleSampler().replacement is False
    assert BlockShuffleSampler.needs_groups
    assert not ShuffleSampler.needs_groups


def test_units_validates_positions() -> None:
    s = ShuffleSampler(seed=0)
    with pytest.raises(IndexError, match=r"positions must lie in \[0, 5\).*got 5"):
        s.units(5, 0, [0, 5])
    with pytest.raises(IndexError, match=r"got -2"):
        SequentialSampler().units(5, 0, [-2])
    with pytest.raises(IndexError, match=r"\[0, 3\)"):
        RandomSampler(num_samples=3).units(100, 0, [3])
    with pytest.raises(SchemaError, match=r"epoch must be an int >= 0; got -1"):
        s.units(5, -1, [0])
    with pytest.raises(SchemaError, match=r"n_units must be an int >= 0; got -5"):
        s.units(-5, 0, [])
    assert s.units(0, 0, np.array([], dtype=np.int64)).size == 0


# ---------------------------------------------------------------------------------
# RandomSampler
# ---------------------------------------------------------------------------------


def test_random_uniform_frequencies() -> None:
    n, draws = 10, 200_000
    out = RandomSampler(num_samples=draws, seed=9).units(n, 0, np.arange(draws))
    counts = np.bincount(out, minlength=n)
    expected = draws / n
    sigma = np.sqrt(draws * (1 / n) * (1 - 1 / n))
    assert (np.abs(counts - expected) < 5 * sigma).all(), counts


def test_random_weighted_frequencies() -> None:
    weights = np.array([1.0, 0.0, 3.0, 0.5, 5.5])
    p = weights / weights.sum()
    draws = 200_000
    s = RandomSampler(num_samples=draws, weights=weights, seed=4)
    counts = np.bincount(s.units(5, 7, np.arange(draws)), minlength=5)
    sigma = np.sqrt(draws * p * (1 - p))
    assert counts[1] == 0
    assert (np.abs(counts - draws * p) <= 5 * sigma + 1e-9).all(), counts


def test_random_zero_weight_tail_never_drawn() -> None:
    weights = [0.1] * 3 + [0.0] * 4
    s = RandomSampler(num_samples=50_000, weights=weights, seed=2)
    assert s.units(7, 0, np.arange(50_000)).max() <= 2


def test_random_epochs_differ_and_repeat_units() -> None:
    s = RandomSampler(seed=3)
    e0, e1 = full_epoch(s, 1000, 0), full_epoch(s, 1000, 1)
    assert not np.array_equal(e0, e1)
    assert np.unique(e0).size < 1000  # with replacement, duplicates are expected


def test_random_errors() -> None:
    with pytest.raises(SchemaError, match=r"unsupported: use replacement=True"):
        RandomSampler(replacement=False, weights=[1, 2])
    with pytest.raises(SchemaError, match=r"weights must be non-negative, finite"):
        RandomSampler(weights=[1, -1])
    with pytest.raises(SchemaError, match=r"weights must be non-negative, finite"):
        RandomSampler(weights=[0, 0])
    with pytest.raises(SchemaError, match=r"weights must be non-negative, finite"):
        RandomSampler(weights=[1, np.nan])
    with pytest.raises(SchemaError, match=r"num_samples must be an int >= 0; got -1"):
        RandomSampler(num_samples=-1)
    with pytest.raises(InputTypeError, match=r"replacement must be True or False"):
        RandomSampler(replacement="yes")  # type: ignore[arg-type]
    s = RandomSampler(weights=[1, 2, 3])
    with pytest.raises(SchemaError, match=r"n_units=4\); got 3 weights"):
        s.units(4, 0, [0])
    with pytest.raises(SchemaError, match=r"num_samples must be <= n_units \(5\)"):
        RandomSampler(num_samples=6, replacement=False).units(5, 0, [0])
    with pytest.raises(SchemaError, match=r"n_units must be >= 1 to draw"):
        RandomSampler(num_samples=3).units(0, 0, [0])


# ---------------------------------------------------------------------------------
# UnitGroups and BlockShuffleSampler
# ---------------------------------------------------------------------------------


def test_unit_groups_from_labels() -> None:
    g = UnitGroups.from_labels([5, -1, 5, 2, -1])
    assert g.n_groups == 3
    assert g.n_units == 5
    assert g.order.tolist() == [1, 4, 3, 0, 2]
    assert g.offsets.tolist() == [0, 2, 3, 5]
    empty = UnitGroups.from_labels([])
    assert (empty.n_groups, empty.n_units) == (0, 0)


def test_unit_groups_validation() -> None:
    with pytest.raises(SchemaError, match=r"offsets must start at 0 and end at"):
        UnitGroups(order=np.arange(3), offsets=np.array([0, 2]))
    with pytest.raises(SchemaError, match=r"strictly increasing"):
        UnitGroups(order=np.arange(3), offsets=np.array([0, 2, 2, 3]))
    with pytest.raises(SchemaError, match=r"every unit id 0..2 exactly once"):
        UnitGroups(order=np.array([0, 0, 1]), offsets=np.array([0, 3]))
    with pytest.raises(InputTypeError, match=r"labels must be integers"):
        UnitGroups.from_labels([0.5, 1.5])


@given(
    n_groups=st.integers(1, 40),
    size=st.integers(1, 30),
    r=st.integers(1, 5),
    seed=seeds,
    epoch=epochs,
)
@FAST
def test_block_shuffle_pools_are_local(
    n_groups: int, size: int, r: int, seed: int, epoch: int
) -> None:
    n = n_groups * size
    labels = np.arange(n) // size
    # Interleave the labels so that groups are not contiguous in unit order.
    labels = labels[permute(n, 99, np.arange(n))]
    groups = UnitGroups.from_labels(labels)
    out = full_epoch(
        BlockShuffleSampler(seed=seed, resident_groups=r), n, epoch, groups
    )
    pool = r * size
    pools = [out[i : i + pool] for i in range(0, n, pool)]
    report = group_diversity(pools, labels)
    assert report["max_groups_per_batch"] <= r
    assert report["batches"] == len(pools)
    # Each pool holds whole groups.
    for p in pools:
        assert np.all(np.bincount(labels[p]) % size == 0)


def test_block_shuffle_mixes_more_than_sequential_less_than_shuffle() -> None:
    n, size = 20_000, 500
    labels = np.arange(n) // size
    groups = UnitGroups.from_labels(labels)
    batch = 64

    def diversity(s: Sampler) -> float:
        out = full_epoch(s, n, 1, groups)
        batches = [out[i : i + batch] for i in range(0, n - batch + 1, batch)]
        return group_diversity(batches, labels)["mean_groups_per_batch"]

    seq = diversity(SequentialSampler())
    block = diversity(BlockShuffleSampler(seed=1, resident_groups=4))
    full = diversity(ShuffleSampler(seed=1))
    assert seq < 1.2
    assert 3.0 < block <= 8.0
    assert full > 20


def test_block_shuffle_within_pool_is_a_permute() -> None:
    # Documented structure: pool p's units are shuffled with
    # permute(pool_size, derive_key(seed, epoch, 1, p), .).
    n, size, r, seed, epoch = 60, 5, 3, 8, 2
    labels = np.arange(n) // size
    groups = UnitGroups.from_labels(labels)
    out = full_epoch(
        BlockShuffleSampler(seed=seed, resident_groups=r), n, epoch, groups
    )
    group_order = permute(n // size, derive_key(seed, epoch), np.arange(n // size))
    for p in range(n // (r * size)):
        concat = np.concatenate(
            [np.flatnonzero(labels == g) for g in group_order[p * r : (p + 1) * r]]
        )
        local = permute(concat.size, derive_key(seed, epoch, 1, p), np.arange(15))
        assert out[p * 15 : (p + 1) * 15].tolist() == concat[local].tolist()


def test_block_shuffle_epochs_differ_and_cache_is_small() -> None:
    labels = np.arange(1000) // 10
    groups = UnitGroups.from_labels(labels)
    s = BlockShuffleSampler(seed=1)
    orders = [full_epoch(s, 1000, e, groups) for e in range(5)]
    assert len({o.tobytes() for o in orders}) == 5
    assert len(s._plans) <= 2
    assert np.array_equal(full_epoch(s, 1000, 0, groups), orders[0])


def test_block_shuffle_errors() -> None:
    s = BlockShuffleSampler(seed=0)
    with pytest.raises(SchemaError, match=r"groups must be a UnitGroups.*got NoneType"):
        s.units(4, 0, [0])
    with pytest.raises(
        SchemaError, match=r"groups must cover n_units \(4\) units; got 3"
    ):
        s.units(4, 0, [0], UnitGroups.from_labels([0, 0, 1]))
    with pytest.raises(
        SchemaError, match=r"resident_groups must be an int >= 1; got 0"
    ):
        BlockShuffleSampler(resident_groups=0)


# ---------------------------------------------------------------------------------
# Shard
# ---------------------------------------------------------------------------------


@given(n=st.integers(0, 500), world=st.integers(1, 12))
@FAST
def test_shards_drop_disjoint_complete(n: int, world: int) -> None:
    shards = [Shard(r, world, even="drop") for r in range(world)]
    lengths = {s.length(n) for s in shards}
    assert lengths == {n // world}
    parts = [s.global_positions(n, np.arange(s.length(n))) for s in shards]
    allpos = np.concatenate(parts)
    assert np.unique(allpos).size == allpos.size  # disjoint
    assert np.array_equal(np.sort(allpos), np.arange(world * (n // world)))


@given(n=st.integers(0, 500), world=st.integers(1, 12))
@FAST
def test_shards_pad_equal_lengths_complete(n: int, world: int) -> None:
    shards = [Shard(r, world) for r in range(world)]
    length = -(-n // world)
    assert {s.length(n) for s in shards} == {length}
    parts = [s.global_positions(n, np.arange(length)) for s in shards]
    allpos = np.concatenate(parts)
    assert allpos.size == world * length
    assert set(allpos.tolist()) == set(range(n))  # complete
    assert ((allpos >= 0) & (allpos < max(n, 1))).all()
    # Only the padding repeats: it wraps around to the start of the epoch.
    expected = np.arange(world * length) % n if n else np.arange(0)
    assert np.array_equal(np.sort(allpos), np.sort(expected))


@given(
    n=st.integers(0, 600),
    w1=st.integers(1, 6),
    w2=st.integers(1, 6),
    data=st.data(),
)
@FAST
def test_then_equals_direct_drop(n: int, w1: int, w2: int, data: st.DataObject) -> None:
    r1 = data.draw(st.integers(0, w1 - 1))
    r2 = data.draw(st.integers(0, w2 - 1))
    outer, inner = Shard(r1, w1, "drop"), Shard(r2, w2, "drop")
    direct = outer.then(inner)
    assert direct == Shard(r1 + w1 * r2, w1 * w2, "drop")
    n_outer = outer.length(n)
    two_step = outer.global_positions(
        n, inner.global_positions(n_outer, np.arange(inner.length(n_outer)))
    )
    assert np.array_equal(
        two_step, direct.global_positions(n, np.arange(direct.length(n)))
    )


@given(k=st.integers(0, 50), w1=st.integers(1, 6), w2=st.integers(1, 6), data=st.data())
@FAST
def test_then_equals_direct_pad_when_divisible(
    k: int, w1: int, w2: int, data: st.DataObject
) -> None:
    n = k * w1 * w2
    r1 = data.draw(st.integers(0, w1 - 1))
    r2 = data.draw(st.integers(0, w2 - 1))
    outer, inner = Shard(r1, w1), Shard(r2, w2)
    direct = outer.then(inner)
    n_outer = outer.length(n)
    two_step = outer.global_positions(
        n, inner.global_positions(n_outer, np.arange(inner.length(n_outer)))
    )
    assert np.array_equal(
        two_step, direct.global_positions(n, np.arange(direct.length(n)))
    )


def test_then_inner_even_wins() -> None:
    assert Shard(0, 2, "drop").then(Shard(1, 3, "pad")) == Shard(2, 6, "pad")


def test_shard_of_sampler_epoch() -> None:
    # Ranks see disjoint slices of one shared shuffled order.
    s, n, world = ShuffleSampler(seed=5), 103, 4
    seen = []
    for rank in range(world):
        shard = Shard(rank, world, "drop")
        seen.append(
            s.units(n, 0, shard.global_positions(n, np.arange(shard.length(n))))
        )
    allunits = np.concatenate(seen)
    assert np.unique(allunits).size == allunits.size == 100


def test_shard_errors() -> None:
    with pytest.raises(SchemaError, match=r"rank must be an int in \[0, 4\).*got 4"):
        Shard(4, 4)
    with pytest.raises(SchemaError, match=r"rank must be .*got -1"):
        Shard(-1, 4)
    with pytest.raises(SchemaError, match=r"world_size must be an int >= 1; got 0"):
        Shard(0, 0)
    with pytest.raises(SchemaError, match=r"even must be 'pad' or 'drop'; got 'x'"):
        Shard(0, 1, even="x")  # type: ignore[arg-type]
    with pytest.raises(IndexError, match=r"local_positions must lie in \[0, 3\)"):
        Shard(0, 4).global_positions(10, [3])
    with pytest.raises(InputTypeError, match=r"inner must be a Shard"):
        Shard(0, 1).then(3)  # type: ignore[arg-type]
    assert Shard(np.int64(1), np.int64(2)).rank == 1  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------
# split_ranges
# ---------------------------------------------------------------------------------


def fractions() -> st.SearchStrategy[list[float]]:
    return st.lists(st.floats(0.01, 1.0), min_size=1, max_size=5).filter(
        lambda fs: sum(fs) <= 1.0
    )


@given(size=st.integers(0, 10_000), fracs=fractions(), gap=st.integers(0, 20))
@FAST
def test_split_ranges_fractions(size: int, fracs: list[float], gap: int) -> None:
    parts = {f"p{i}": f for i, f in enumerate(fracs)}
    usable = size - gap * (len(fracs) - 1)
    bounds = [0] + [round(min(c, 1.0) * usable) for c in itertools.accumulate(fracs)]
    if usable < 0 or any(b <= a for a, b in itertools.pairwise(bounds)):
        with pytest.raises(SchemaError, match=r"at least one point|gap must leave"):
            split_ranges(size, parts, gap=gap)
        return
    out = split_ranges(size, parts, gap=gap)
    ranges = list(out.values())
    assert list(out) == list(parts)
    for (a, b), f in zip(ranges, fracs, strict=True):
        assert 0 <= a < b <= size
        assert abs((b - a) - f * usable) <= 1.0 + 1e-6  # rounding only
    for (_, stop), (start, _) in itertools.pairwise(ranges):
        assert start - stop == gap  # ordered, disjoint, gap respected
    if abs(sum(fracs) - 1.0) < 1e-12:
        assert ranges[-1][1] == size  # fractions summing to 1 tile the dimension


@given(
    size=st.integers(1, 1000),
    counts=st.lists(st.integers(1, 100), min_size=1, max_size=5),
    gap=st.integers(0, 10),
)
@FAST
def test_split_ranges_counts(size: int, counts: list[int], gap: int) -> None:
    parts = {str(i): c for i, c in enumerate(counts)}
    if sum(counts) + gap * (len(counts) - 1) > size:
        with pytest.raises(SchemaError):
            split_ranges(size, parts, gap=gap)
        return
    out = split_ranges(size, parts, gap=gap)
    ranges = list(out.values())
    assert [b - a for a, b in ranges] == counts
    assert ranges[0][0] == 0
    assert all(b <= size for _, b in ranges)
    for (_, stop), (start, _) in itertools.pairwise(ranges):
        assert start - stop == gap


def test_split_ranges_examples() -> None:
    assert split_ranges(10, {"train": 0.8, "val": 0.2}) == {
        "train": (0, 8),
        "val": (8, 10),
    }
    assert split_ranges(7, {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}) == {
        "a": (0, 2),
        "b": (2, 5),
        "c": (5, 7),
    }
    assert split_ranges(103, {"train": 0.7, "val": 0.3}, gap=3) == {
        "train": (0, 70),
        "val": (73, 103),
    }
    assert split_ranges(10, {"val": 0.5}) == {"val": (0, 5)}


def test_split_ranges_errors() -> None:
    with pytest.raises(SchemaError, match=r"fractions must sum to at most 1; got 1.1"):
        split_ranges(100, {"a": 0.6, "b": 0.5})
    with pytest.raises(SchemaError, match=r"parts\['b'\] must cover at least one"):
        split_ranges(10, {"a": 0.96, "b": 0.04})
    with pytest.raises(SchemaError, match=r"all fractions \(floats\) or all counts"):
        split_ranges(10, {"a": 0.5, "b": 5})
    with pytest.raises(
        SchemaError, match=r"parts\['a'\] must be a fraction in \(0, 1\]"
    ):
        split_ranges(10, {"a": 0.0})
    with pytest.raises(SchemaError, match=r"parts\['a'\] must be a count >= 1; got 0"):
        split_ranges(10, {"a": 0})
    with pytest.raises(SchemaError, match=r"counts plus gaps must be at most size"):
        split_ranges(10, {"a": 6, "b": 4}, gap=1)
    with pytest.raises(SchemaError, match=r"gap must be an int >= 0; got -1"):
        split_ranges(10, {"a": 0.5}, gap=-1)
    with pytest.raises(SchemaError, match=r"parts must be a non-empty mapping"):
        split_ranges(10, {})
    with pytest.raises(SchemaError, match=r"gap must leave points to split"):
        split_ranges(10, {"a": 0.5, "b": 0.5}, gap=11)


# ---------------------------------------------------------------------------------
# group_diversity
# ---------------------------------------------------------------------------------


def test_group_diversity() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    report = group_diversity([np.array([0, 1]), np.array([0, 2, 4, 5])], labels)
    assert report == {
        "batches": 2.0,
        "mean_groups_per_batch": 2.0,
        "min_groups_per_batch": 1.0,
        "max_groups_per_batch": 3.0,
        "mean_units_per_group_visit": 1.5,
    }
    assert group_diversity([], labels)["batches"] == 0.0


def test_module_does_not_import_xarray_or_frameworks() -> None:
    import xbatcher.sampling as mod

    source = Path(mod.__file__).read_text()
    for name in ("xarray", "torch", "tensorflow", "jax", "dask", "pandas"):
        assert f"import {name}" not in source
        assert f"from {name}" not in source


def test_block_shuffle_sampler_pickles_without_its_plan_memo() -> None:
    import pickle

    labels = np.arange(20_000) // 500
    groups = UnitGroups.from_labels(labels)
    s = BlockShuffleSampler(seed=3, resident_groups=4)
    before = len(pickle.dumps(s))
    first = s.units(20_000, 0, np.arange(20_000), groups)
    again = pickle.loads(pickle.dumps(s))
    assert len(pickle.dumps(s)) == before < 1024  # the memo stays behind
    assert again == s
    np.testing.assert_array_equal(
        again.units(20_000, 0, np.arange(20_000), groups), first
    )
