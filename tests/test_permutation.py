"""The keyed permutation (``xbatcher._permutation``) gives the same values as the
implementation it replaced, on every route (whole domain, tabled blocks, per-element
rounds), for every ``(n, key, positions)``.

``reference_permute`` below is a frozen copy of the implementation before the round
tables (one Feistel evaluation of nine numpy operations a round, cycle walks pass
by pass): the order users get for a seed must never change.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

import xbatcher._blocks as B
import xbatcher._permutation as P
from xbatcher._blocks import BlockPlan, UnitGroups, block_plan
from xbatcher.errors import InputTypeError, SchemaError
from xbatcher.sampling import BlockShuffleSampler, ShuffleSampler, derive_key, permute

# ---------------------------------------------------------------------------------
# The reference: the permutation as it was, copied (do not edit)
# ---------------------------------------------------------------------------------

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MUL1 = 0xBF58476D1CE4E5B9
_MUL2 = 0x94D049BB133111EB
_U_MUL1 = np.uint64(_MUL1)
_U_MUL2 = np.uint64(_MUL2)
_U30 = np.uint64(30)
_U27 = np.uint64(27)
_ROUND_SCHEDULE = ((2, 12), (4, 8), (8, 6))
_MIN_ROUNDS = 4
_CHUNK = 1 << 16
_LOCAL_PASSES = 8


def _mix64_int(z: int) -> int:
    z &= _MASK64
    z = ((z ^ (z >> 30)) * _MUL1) & _MASK64
    z = ((z ^ (z >> 27)) * _MUL2) & _MASK64
    return z ^ (z >> 31)


def _step_int(key: int, stream: int) -> int:
    return _mix64_int(((key ^ stream) + _GOLDEN) & _MASK64)


def _half_bits(n: int) -> int:
    return max(1, ((n - 1).bit_length() + 1) // 2)


def _rounds(half: int) -> int:
    for max_half, rounds in _ROUND_SCHEDULE:
        if half <= max_half:
            return rounds
    return _MIN_ROUNDS


def _feistel(
    x: NDArray[np.uint64],
    half: NDArray[np.uint64],
    mask: NDArray[np.uint64],
    rkeys: list[NDArray[np.uint64]],
) -> NDArray[np.uint64]:
    top = np.uint64(64) - half
    left = np.right_shift(x, half)
    right = np.bitwise_and(x, mask)
    t = np.empty_like(x)
    u = np.empty_like(x)
    for rk in rkeys:
        np.bitwise_xor(right, rk, out=t)
        np.right_shift(t, _U30, out=u)
        t ^= u
        t *= _U_MUL1
        np.right_shift(t, _U27, out=u)
        t ^= u
        t *= _U_MUL2
        np.right_shift(t, top, out=t)
        t ^= left
        left, right, t = right, t, left
    left <<= half
    left |= right
    return left


def _take(param: NDArray[np.uint64], idx: NDArray[np.intp]) -> NDArray[np.uint64]:
    return param if param.shape[0] == 1 else param[idx]


def _walk(
    out: NDArray[np.uint64],
    idx: NDArray[np.intp],
    n: NDArray[np.uint64],
    half: NDArray[np.uint64],
    mask: NDArray[np.uint64],
    rkeys: list[NDArray[np.uint64]],
    max_passes: int | None,
) -> NDArray[np.intp]:
    passes = 0
    while idx.size and (max_passes is None or passes < max_passes):
        cur = _feistel(
            out[idx], _take(half, idx), _take(mask, idx), [_take(k, idx) for k in rkeys]
        )
        out[idx] = cur
        idx = idx[cur >= _take(n, idx)]
        passes += 1
    return idx


def _permute_core(
    x: NDArray[np.uint64],
    n: NDArray[np.uint64],
    half: NDArray[np.uint64],
    rkeys: list[NDArray[np.uint64]],
) -> NDArray[np.uint64]:
    mask = (np.uint64(1) << half) - np.uint64(1)
    out = np.empty_like(x)
    leftovers: list[NDArray[np.intp]] = []
    for start in range(0, x.size, _CHUNK):
        sl = slice(start, start + _CHUNK)

        def part(p: NDArray[np.uint64], sl: slice = sl) -> NDArray[np.uint64]:
            return p if p.shape[0] == 1 else p[sl]

        b_n, b_half, b_mask = part(n), part(half), part(mask)
        b_rk = [part(k) for k in rkeys]
        block = _feistel(x[sl], b_half, b_mask, b_rk)
        idx = np.flatnonzero(block >= b_n)
        idx = _walk(block, idx, b_n, b_half, b_mask, b_rk, _LOCAL_PASSES)
        out[sl] = block
        if idx.size:
            leftovers.append(idx + start)
    if leftovers:
        _walk(out, np.concatenate(leftovers), n, half, mask, rkeys, None)
    return out


def reference_permute(n: int, key: int, positions: Any) -> NDArray[np.int64]:
    """The values of the old ``permute`` (arguments assumed valid)."""
    pos = np.asarray(positions).astype(np.int64)
    flat = pos.reshape(-1).astype(np.uint64)
    if flat.size == 0:
        return pos.astype(np.int64)
    half = _half_bits(n)
    rkeys = [
        np.array([_step_int(key, r + 1)], dtype=np.uint64) for r in range(_rounds(half))
    ]
    out = _permute_core(
        flat, np.array([n], dtype=np.uint64), np.array([half], dtype=np.uint64), rkeys
    )
    return out.astype(np.int64).reshape(pos.shape)


def reference_block_units(
    plan: BlockPlan, groups: UnitGroups, pos: NDArray[np.int64]
) -> NDArray[np.int64]:
    """The values of the old ``_blocks.block_units`` (all pools' positions in one
    per-element evaluation a round count)."""
    flat = pos.reshape(-1)
    pool = np.searchsorted(plan.pool_offsets, flat, side="right") - 1
    start = plan.pool_offsets[pool]
    size = plan.pool_offsets[pool + 1] - start
    local = (flat - start).astype(np.uint64)
    rounds = plan.pool_rounds[pool]
    for r in np.unique(rounds).tolist():
        sel = np.flatnonzero(rounds == r)
        pools = pool[sel]
        local[sel] = _permute_core(
            local[sel],
            size[sel].astype(np.uint64),
            plan.pool_half[pools],
            [rk[pools] for rk in plan.pool_rkeys[:r]],
        )
    seq = start + local.astype(np.int64)
    k = np.searchsorted(plan.seq_offsets, seq, side="right") - 1
    g = plan.group_perm[k]
    unit = groups.order[groups.offsets[g] + (seq - plan.seq_offsets[k])]
    return unit.reshape(pos.shape)


# ---------------------------------------------------------------------------------
# Identical values
# ---------------------------------------------------------------------------------

keys = st.integers(min_value=0, max_value=2**64 - 1)
HUGE = (2**40 + 3, 2**32 - 5, 2**32 + 1, 2**62 + 11, 2**63 - 1)


def assert_same(n: int, key: int, pos: NDArray[np.int64]) -> None:
    got = permute(n, key, pos)
    want = reference_permute(n, key, pos)
    assert got.dtype == want.dtype == np.int64
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@st.composite
def position_sets(draw: st.DrawFn, n: int) -> NDArray[np.int64]:
    """Positions in ``[0, n)``: all of them, a run, a strided run, a random set (with
    repeats, unsorted) or a single one, flat or 2-D."""
    kind = draw(st.sampled_from(["all", "run", "strided", "random", "one"]))
    if kind == "all" and n <= 300_000:
        pos = np.arange(n, dtype=np.int64)
    elif kind in ("all", "run", "strided"):
        length = draw(st.integers(1, min(n, 100_000)))
        step = draw(st.integers(1, 7)) if kind == "strided" else 1
        start = draw(st.integers(0, n - 1))
        pos = (start + step * np.arange(length, dtype=np.int64)) % n
    elif kind == "random":
        seed = draw(st.integers(0, 2**32 - 1))
        size = draw(st.integers(1, 5000))
        pos = np.random.default_rng(seed).integers(0, n, size=size, dtype=np.int64)
    else:
        pos = np.array([draw(st.integers(0, n - 1))], dtype=np.int64)
    if pos.size % 2 == 0 and draw(st.booleans()):
        pos = pos.reshape(2, -1)
    return pos


@given(n=st.integers(min_value=1, max_value=10**7), key=keys, data=st.data())
@settings(max_examples=150, deadline=None)
def test_permute_matches_the_reference(n: int, key: int, data: st.DataObject) -> None:
    assert_same(n, key, data.draw(position_sets(n)))


@given(n=st.integers(min_value=1, max_value=3000), key=keys)
@settings(max_examples=100, deadline=None)
def test_whole_small_epochs_match_the_reference(n: int, key: int) -> None:
    assert_same(n, key, np.arange(n, dtype=np.int64))


@given(n=st.sampled_from(HUGE), key=keys, data=st.data())
@settings(max_examples=40, deadline=None)
def test_huge_n_matches_the_reference(n: int, key: int, data: st.DataObject) -> None:
    assert_same(n, key, data.draw(position_sets(n)))


@pytest.mark.parametrize(
    "n",
    [
        1,
        2,
        3,
        4,
        5,
        16,
        17,
        4**6 + 1,  # a domain four times n: long cycle walks
        23_360,  # S1's epoch
        4**8,
        4**8 + 1,
        4**9 + 1,  # the largest domain evaluated whole (2**20), n a quarter of it
        4**10,
        4**10 + 1,  # beyond it: tabled blocks with leftovers walked together
    ],
)
def test_whole_epochs_match_the_reference(n: int) -> None:
    for key in (0, 1, derive_key(0, 0), _MASK64):
        assert_same(n, key, np.arange(n, dtype=np.int64))


@pytest.mark.parametrize("n", [2**32 - 5, 2**32 + 1])
def test_many_positions_at_the_widest_tables_match_the_reference(n: int) -> None:
    """Half width 16 is the widest tabled (2**17 positions make the tables pay);
    17 takes the per-element rounds."""
    pos = np.random.default_rng(n).integers(0, n, size=140_000, dtype=np.int64)
    assert_same(n, 12345, pos)


def test_every_route_is_exercised(monkeypatch: pytest.MonkeyPatch) -> None:
    """The identity tests above reach each route: whole domain, tabled blocks, and
    the per-element rounds (few positions, or half widths above 16)."""
    routes: list[str] = []
    tabled, core = P._permute_tabled, P._permute_core

    def spy_tabled(*args: Any) -> Any:
        out = tabled(*args)
        if out is not None:
            flat, n, half = args[0], args[1], args[2]
            whole = 1 << (2 * half) <= P._DOMAIN_MAX and flat.size * 2 >= n
            routes.append("whole" if whole else "blocks")
        return out

    def spy_core(*args: Any) -> Any:
        routes.append("rounds")
        return core(*args)

    monkeypatch.setattr(P, "_permute_tabled", spy_tabled)
    monkeypatch.setattr(P, "_permute_core", spy_core)
    permute(23_360, 5, np.arange(23_360))
    permute(4**10 + 1, 5, np.arange(4**10 + 1))
    permute(2**40 + 3, 5, np.arange(1000))
    permute(23_360, 5, [3, 7])
    assert routes == ["whole", "blocks", "rounds", "rounds"]


def test_shuffle_sampler_matches_the_reference() -> None:
    """ShuffleSampler.units skips permute()'s second check of the positions; its
    values are still the reference's, and bad positions still raise."""
    s = ShuffleSampler(seed=7)
    for n, epoch in ((23_360, 0), (23_360, 3), (1, 0), (5000, 2)):
        pos = np.arange(n, dtype=np.int64)
        want = reference_permute(n, derive_key(7, epoch), pos)
        np.testing.assert_array_equal(s.units(n, epoch, pos), want)
    assert s.units(0, 0, []).shape == (0,)
    with pytest.raises(IndexError, match=r"must lie in \[0, 10\)"):
        s.units(10, 0, [10])


def test_permute_errors_are_unchanged() -> None:
    with pytest.raises(SchemaError, match="n must be"):
        permute(0, 1, [])
    with pytest.raises(SchemaError, match="key must be"):
        permute(3, -1, [0])
    with pytest.raises(IndexError, match=r"must lie in \[0, 3\).*got 3"):
        permute(3, 1, [0, 3])
    with pytest.raises(IndexError, match="got -1"):
        permute(3, 1, [-1])
    with pytest.raises(InputTypeError, match="integer array"):
        permute(3, 1, [0.5])


# ---------------------------------------------------------------------------------
# The chunk-aware shuffle: large pools permuted one by one
# ---------------------------------------------------------------------------------


@st.composite
def grouped_epochs(draw: st.DrawFn) -> tuple[UnitGroups, int]:
    """Groups (chunks) of 1 .. 3000 units, some pools large enough to be permuted on
    their own, and a pool size in groups."""
    sizes = draw(st.lists(st.integers(1, 3000), min_size=1, max_size=12))
    labels = np.repeat(np.arange(len(sizes)), sizes)
    seed = draw(st.integers(0, 2**32 - 1))
    np.random.default_rng(seed).shuffle(labels)
    return UnitGroups.from_labels(labels), draw(st.integers(1, 5))


@given(
    grouped=grouped_epochs(),
    seed=st.integers(0, 2**64 - 1),
    epoch=st.integers(0, 10**6),
    data=st.data(),
)
@settings(max_examples=80, deadline=None)
def test_block_shuffle_matches_the_reference(
    grouped: tuple[UnitGroups, int], seed: int, epoch: int, data: st.DataObject
) -> None:
    groups, resident = grouped
    n = groups.n_units
    pos = data.draw(position_sets(n))
    plan = block_plan(seed, epoch, groups, resident)
    want = reference_block_units(plan, groups, pos)
    got = BlockShuffleSampler(seed=seed, resident_groups=resident).units(
        n, epoch, pos, groups
    )
    assert got.dtype == np.int64 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_block_shuffle_permutes_large_pools_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A whole epoch's large pools each take the tabled route (one network
    evaluation over the pool's domain); a pool with few positions asked for stays in
    the vectorised evaluation. Values as the reference's."""
    labels = np.repeat(np.arange(5), [3000, 2500, 40, 2000, 7])
    groups = UnitGroups.from_labels(labels)
    sizes: list[int] = []
    tabled = B._permute_tabled

    def spy(local: Any, size: int, *rest: Any) -> Any:
        sizes.append(size)
        return tabled(local, size, *rest)

    monkeypatch.setattr(B, "_permute_tabled", spy)
    s = BlockShuffleSampler(seed=4, resident_groups=1)
    pos = np.arange(groups.n_units)
    got = s.units(groups.n_units, 3, pos, groups)
    want = reference_block_units(block_plan(4, 3, groups, 1), groups, pos)
    np.testing.assert_array_equal(got, want)
    assert sorted(sizes) == [2000, 2500, 3000]
    sizes.clear()
    s.units(groups.n_units, 3, pos[:500], groups)  # a part of one pool: vectorised
    assert sizes == []
