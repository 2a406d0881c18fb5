"""Units grouped by storage chunk, and the block shuffle's per-epoch arithmetic.

:class:`UnitGroups` partitions the units into groups (chunks);
:func:`block_plan` and :func:`block_units` are the arithmetic behind
:class:`xbatcher.sampling.BlockShuffleSampler`: the group order of an epoch, its
pools, and one keyed permutation per pool. Private: :mod:`xbatcher.sampling`
re-exports :class:`UnitGroups`. This module depends on numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xbatcher._permutation import (
    _MAX_ROUNDS,
    _permute_core,
    _permute_tabled,
    _rounds,
    _step,
    derive_key,
    permute,
)
from xbatcher.errors import InputTypeError, SchemaError

__all__ = ["BlockPlan", "UnitGroups", "block_plan", "block_units"]

_STREAM_POOL = 1  # key stream of BlockShuffleSampler pools
# positions of one pool asked for at once from which the pool is permuted on its own,
# with tabled rounds (see _permutation._permute_tabled); fewer go into the one
# vectorised evaluation of all pools' positions
_POOL_ALONE = 1024

# ---------------------------------------------------------------------------------
# Groups of units (storage chunks)
# ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class UnitGroups:
    """A partition of the units ``0 .. n_units - 1`` into non-empty groups.

    Groups are usually the storage chunks that units read from: the
    :class:`BlockShuffleSampler` keeps a few groups "resident" at a time.

    Parameters
    ----------
    order : numpy.ndarray of int64
        Every unit id exactly once, sorted by group.
    offsets : numpy.ndarray of int64
        Strictly increasing, ``offsets[0] == 0`` and ``offsets[-1] == len(order)``;
        group ``g`` holds ``order[offsets[g]:offsets[g + 1]]``.

    Examples
    --------
    >>> g = UnitGroups.from_labels([2, 0, 2, 1, 0])
    >>> g.n_groups, g.n_units
    (3, 5)
    >>> g.order.tolist(), g.offsets.tolist()
    ([1, 4, 3, 0, 2], [0, 2, 3, 5])
    """

    order: NDArray[np.int64]
    offsets: NDArray[np.int64]

    def __post_init__(self) -> None:
        order = np.array(self.order, dtype=np.int64).reshape(-1)
        offsets = np.array(self.offsets, dtype=np.int64).reshape(-1)
        n = order.size
        if offsets.size == 0 or offsets[0] != 0 or offsets[-1] != n:
            raise SchemaError(
                f"offsets must start at 0 and end at len(order) ({n}); got "
                f"{offsets.tolist()[:3]}...{offsets.tolist()[-3:]}. "
                "Build groups with UnitGroups.from_labels(labels)."
            )
        if np.any(np.diff(offsets) <= 0):
            raise SchemaError(
                "offsets must be strictly increasing (every group non-empty); got "
                "an empty group. Build groups with UnitGroups.from_labels(labels), "
                "which drops empty groups."
            )
        if n and (
            order.min() < 0
            or order.max() >= n
            or np.bincount(order, minlength=n).max() != 1
        ):
            raise SchemaError(
                f"order must hold every unit id 0..{n - 1} exactly once; got "
                "duplicates or out-of-range ids. "
                "Build groups with UnitGroups.from_labels(labels)."
            )
        order.flags.writeable = False
        offsets.flags.writeable = False
        object.__setattr__(self, "order", order)
        object.__setattr__(self, "offsets", offsets)

    @classmethod
    def from_labels(cls, labels: ArrayLike) -> UnitGroups:
        """Group units by a label per unit (any ints); groups follow label order.

        Parameters
        ----------
        labels : array_like of int
            ``labels[u]`` is the group label of unit ``u``.

        Returns
        -------
        UnitGroups

        Examples
        --------
        >>> UnitGroups.from_labels(np.arange(6) // 4).offsets.tolist()
        [0, 4, 6]
        """
        lab = np.asarray(labels).reshape(-1)
        if lab.size and lab.dtype.kind not in "iu":
            raise InputTypeError(
                f"labels must be integers; got dtype {lab.dtype}. "
                "Pass one integer group label (e.g. a chunk id) per unit."
            )
        order = np.argsort(lab, kind="stable").astype(np.int64)
        srt = lab[order]
        starts = np.flatnonzero(srt[1:] != srt[:-1]) + 1
        offsets = np.concatenate(([0], starts, [lab.size])).astype(np.int64)
        if lab.size == 0:
            offsets = np.zeros(1, dtype=np.int64)
        return cls(order=order, offsets=offsets)

    @property
    def n_groups(self) -> int:
        """Number of groups."""
        return int(self.offsets.size - 1)

    @property
    def n_units(self) -> int:
        """Number of units."""
        return int(self.order.size)


def _bit_length(v: NDArray[np.int64]) -> NDArray[np.int64]:
    """Vectorised ``int.bit_length`` for non-negative int64."""
    v = v.copy()
    bits = np.zeros_like(v)
    for b in (32, 16, 8, 4, 2, 1):
        big = v >= (1 << b)
        bits[big] += b
        v[big] >>= b
    bits += v > 0
    return bits


@dataclass(frozen=True, slots=True)
class BlockPlan:
    """Per-epoch layout of a block shuffle (O(n_groups) memory)."""

    groups: UnitGroups  # kept alive so its id() cannot be reused while cached
    group_perm: NDArray[np.int64]  # groups in epoch order
    seq_offsets: NDArray[np.int64]  # start of each permuted group in the epoch
    pool_offsets: NDArray[np.int64]  # start of each pool, plus the end
    pool_half: NDArray[np.uint64]  # Feistel half width per pool
    pool_rounds: NDArray[np.int64]  # Feistel rounds per pool
    pool_rkeys: list[NDArray[np.uint64]]  # Feistel round keys per pool (max rounds)


def block_plan(
    seed: int, epoch: int, groups: UnitGroups, resident_groups: int
) -> BlockPlan:
    """The layout of epoch ``epoch`` of a block shuffle: the groups permuted, cut
    into pools of ``resident_groups`` groups, and each pool's permutation keys."""
    n_groups = groups.n_groups
    r = resident_groups
    group_perm = permute(n_groups, derive_key(seed, epoch), np.arange(n_groups))
    sizes = np.diff(groups.offsets)[group_perm]
    seq_offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
    starts = np.append(np.arange(0, n_groups, r), n_groups)
    pool_offsets = seq_offsets[starts]
    pool_sizes = np.diff(pool_offsets)
    pool_half = np.maximum(1, (_bit_length(pool_sizes - 1) + 1) // 2)
    pool_key = _step(
        np.full(
            pool_sizes.size,
            derive_key(seed, epoch, _STREAM_POOL),
            dtype=np.uint64,
        ),
        np.arange(pool_sizes.size, dtype=np.uint64),
    )
    rkeys = [
        _step(pool_key, np.full(pool_sizes.size, k + 1, dtype=np.uint64))
        for k in range(_MAX_ROUNDS)
    ]
    return BlockPlan(
        groups=groups,
        group_perm=group_perm,
        seq_offsets=seq_offsets,
        pool_offsets=pool_offsets,
        pool_half=pool_half.astype(np.uint64),
        pool_rounds=np.array([_rounds(int(h)) for h in pool_half], dtype=np.int64),
        pool_rkeys=rkeys,
    )


def block_units(
    plan: BlockPlan, groups: UnitGroups, pos: NDArray[np.int64]
) -> NDArray[np.int64]:
    """Unit ids at the (validated, non-empty) epoch positions ``pos``."""
    flat = pos.reshape(-1)
    pool = np.searchsorted(plan.pool_offsets, flat, side="right") - 1
    start = plan.pool_offsets[pool]
    size = plan.pool_offsets[pool + 1] - start
    # Within pool p the order is permute(size_p, derive_key(seed, e, 1, p), .):
    # pools with many positions here one by one, the others all at once (one call
    # per distinct round count).
    local = flat - start
    rest = _permute_large_pools(plan, pool, local)
    rounds = plan.pool_rounds[pool[rest]]
    for r in np.unique(rounds).tolist():
        sel = rest[rounds == r]
        pools = pool[sel]
        local[sel] = _permute_core(
            local[sel].astype(np.uint64),
            size[sel].astype(np.uint64),
            plan.pool_half[pools],
            [rk[pools] for rk in plan.pool_rkeys[:r]],
        ).astype(np.int64)
    seq = start + local
    k = np.searchsorted(plan.seq_offsets, seq, side="right") - 1
    g = plan.group_perm[k]
    unit: NDArray[np.int64] = groups.order[
        groups.offsets[g] + (seq - plan.seq_offsets[k])
    ]
    return unit.reshape(pos.shape)


def _permute_large_pools(
    plan: BlockPlan, pool: NDArray[np.int64], local: NDArray[np.int64]
) -> NDArray[np.intp]:
    """Permute in place the ``local`` positions of each pool that has at least
    ``_POOL_ALONE`` of them, as ``permute`` would (tabled rounds; a whole pool's
    network evaluated once); return the indices of the positions left to do."""
    everything = np.arange(pool.size)
    if pool.size < _POOL_ALONE:
        return everything
    ids, counts = np.unique(pool, return_counts=True)
    large = ids[counts >= _POOL_ALONE]
    if large.size == 0:
        return everything
    order = np.argsort(pool, kind="stable")  # linear for sorted pools (an epoch)
    bounds = np.searchsorted(pool[order], np.stack([large, large + 1]))
    done = np.zeros(pool.size, dtype=bool)
    for p, lo, hi in zip(large.tolist(), *bounds.tolist(), strict=True):
        sel = order[lo:hi]
        half = int(plan.pool_half[p])
        rkeys = [int(k[p]) for k in plan.pool_rkeys[: int(plan.pool_rounds[p])]]
        size = int(plan.pool_offsets[p + 1] - plan.pool_offsets[p])
        out = _permute_tabled(local[sel], size, half, rkeys)
        if out is not None:
            local[sel] = out
            done[sel] = True
    return everything[~done]
