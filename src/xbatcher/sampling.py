"""Epoch orderings of units: sequential, shuffled, random, chunk-aware, sharded.

A *unit* is an integer ``0 .. n_units - 1``: a sample or a whole batch, the sampler
does not care which. A sampler maps the *positions* ``0 .. epoch_length - 1`` of one
epoch to unit ids by pure index arithmetic on ``(seed, epoch, position)``. Nothing of
size ``n_units`` is built for the plain shuffle, any position is addressable in O(1)
(so resuming in the middle of an epoch is free), and the same seed and epoch give the
same order on every machine, process, rank and worker.

This module depends on numpy only.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xbatcher._blocks import BlockPlan, UnitGroups, block_plan, block_units
from xbatcher._permutation import (
    _as_positions,
    _check_range,
    _permute_checked,
    _uniform,
    derive_key,
    permute,
    resolve_seed,
)
from xbatcher._validation import check_bool, check_int, is_int
from xbatcher.errors import InputTypeError, SchemaError

__all__ = [
    "BlockShuffleSampler",
    "RandomSampler",
    "Sampler",
    "SequentialSampler",
    "Shard",
    "ShuffleSampler",
    "UnitGroups",
    "derive_key",
    "group_diversity",
    "permute",
    "resolve_seed",
]


# ---------------------------------------------------------------------------------
# Samplers
# ---------------------------------------------------------------------------------


class Sampler(ABC):
    """An epoch ordering of units, addressable by position.

    Subclasses are frozen dataclasses. ``units(n_units, epoch, positions)`` is a pure
    function of the sampler's parameters and its arguments.
    """

    __slots__ = ()

    #: True when :meth:`units` needs a :class:`UnitGroups` partition.
    needs_groups: ClassVar[bool] = False
    #: The resolved seed (``None`` for samplers that do not use randomness).
    seed: int | None

    @property
    def replacement(self) -> bool:
        """True when a unit may appear several times in one epoch."""
        return False

    @abstractmethod
    def epoch_length(self, n_units: int) -> int:
        """Number of positions in one epoch over ``n_units`` units."""

    @abstractmethod
    def units(
        self,
        n_units: int,
        epoch: int,
        positions: ArrayLike,
        groups: UnitGroups | None = None,
    ) -> NDArray[np.int64]:
        """Unit ids at ``positions`` of epoch ``epoch`` (int64, same shape).

        Raises ``IndexError`` for positions outside ``[0, epoch_length(n_units))``.
        """

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description, e.g. ``{"kind": "shuffle", "seed": 3}``."""

    def _prepare(
        self, n_units: int, epoch: int, positions: ArrayLike
    ) -> tuple[int, int, NDArray[np.int64]]:
        n = check_int(n_units, "n_units", minimum=0, fix="Pass the number of units.")
        e = check_int(epoch, "epoch", minimum=0, fix="Epochs are numbered 0, 1, 2, ...")
        pos = _as_positions(positions)
        _check_range(pos, self.epoch_length(n))
        return n, e, pos


@dataclass(frozen=True, slots=True)
class SequentialSampler(Sampler):
    """Units in their natural order, every epoch.

    Examples
    --------
    >>> SequentialSampler().units(5, 0, np.arange(5)).tolist()
    [0, 1, 2, 3, 4]
    """

    seed: None = field(default=None, init=False)

    def epoch_length(self, n_units: int) -> int:
        """Number of positions in one epoch: ``n_units``."""
        return check_int(n_units, "n_units", minimum=0, fix="Pass the number of units.")

    def units(
        self,
        n_units: int,
        epoch: int,
        positions: ArrayLike,
        groups: UnitGroups | None = None,
    ) -> NDArray[np.int64]:
        """Unit ids at ``positions``: the positions themselves."""
        _, _, pos = self._prepare(n_units, epoch, positions)
        return pos.copy()

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": "sequential"}``."""
        return {"kind": "sequential"}


def _shuffle_units(
    seed: int, n: int, epoch: int, pos: NDArray[np.int64]
) -> NDArray[np.int64]:
    if pos.size == 0:
        return pos.astype(np.int64)
    # the positions were checked by the caller (Sampler._prepare): permute() would
    # check them again (a min and a max over a whole epoch's positions)
    return _permute_checked(n, derive_key(seed, epoch), pos)


@dataclass(frozen=True, slots=True)
class ShuffleSampler(Sampler):
    """A fresh uniform-looking permutation of all units every epoch.

    Position ``p`` of epoch ``e`` is ``permute(n_units, derive_key(seed, e), p)``:
    O(1) per position and no memory proportional to ``n_units``.

    Parameters
    ----------
    seed : int or None, default None
        ``None`` draws a fresh seed (exposed as ``.seed`` so it can be saved).

    Examples
    --------
    >>> s = ShuffleSampler(seed=42)
    >>> sorted(s.units(6, 0, np.arange(6)).tolist())
    [0, 1, 2, 3, 4, 5]
    >>> bool((s.units(6, 0, [2, 3]) == s.units(6, 0, np.arange(6))[2:4]).all())
    True
    """

    seed: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "seed", resolve_seed(self.seed))

    def epoch_length(self, n_units: int) -> int:
        """Number of positions in one epoch: ``n_units``."""
        return check_int(n_units, "n_units", minimum=0, fix="Pass the number of units.")

    def units(
        self,
        n_units: int,
        epoch: int,
        positions: ArrayLike,
        groups: UnitGroups | None = None,
    ) -> NDArray[np.int64]:
        """Unit ids at ``positions`` of epoch ``epoch``."""
        n, e, pos = self._prepare(n_units, epoch, positions)
        assert self.seed is not None
        return _shuffle_units(self.seed, n, e, pos)

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": "shuffle", "seed": seed}``."""
        return {"kind": "shuffle", "seed": self.seed}


_STREAM_DRAW = 1  # key stream of RandomSampler(replacement=True) draws


@dataclass(frozen=True, slots=True)
class RandomSampler(Sampler):
    """Random draws of units, with or without replacement, optionally weighted.

    Parameters
    ----------
    num_samples : int or None, default None
        Positions per epoch; ``None`` means ``n_units``.
    replacement : bool, default True
        With replacement, position ``p`` of epoch ``e`` draws a unit independently
        from a uniform hashed from ``(seed, e, p)``. Without, the epoch is the first
        ``num_samples`` positions of :class:`ShuffleSampler` with the same seed.
    weights : array_like of float or None, default None
        Relative, non-negative, finite weights, one per unit (the length must equal
        ``n_units`` at :meth:`units` time). Requires ``replacement=True``.
    seed : int or None, default None
        ``None`` draws a fresh seed (exposed as ``.seed``).

    Examples
    --------
    >>> s = RandomSampler(num_samples=4, seed=0)
    >>> s.epoch_length(100)
    4
    >>> draws = RandomSampler(weights=[0.0, 1.0, 0.0], seed=0).units(3, 0, [0, 1, 2])
    >>> draws.tolist()
    [1, 1, 1]
    """

    num_samples: int | None = None
    replacement: bool = True
    weights: ArrayLike | None = field(default=None, compare=False)
    seed: int | None = None
    _weights_digest: str | None = field(default=None, init=False, repr=False)
    _cdf: NDArray[np.float64] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "seed", resolve_seed(self.seed))
        if self.num_samples is not None:
            object.__setattr__(
                self,
                "num_samples",
                check_int(
                    self.num_samples,
                    "num_samples",
                    minimum=0,
                    fix="Pass the number of draws per epoch, or None for n_units.",
                ),
            )
        object.__setattr__(
            self, "replacement", check_bool(self.replacement, "replacement")
        )
        if self.weights is None:
            return
        if not self.replacement:
            raise SchemaError(
                "weights must be None when replacement=False; got weights. Weighted "
                "sampling without replacement is unsupported: use replacement=True."
            )
        w = np.array(self.weights, dtype=np.float64).reshape(-1)
        if w.size == 0 or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise SchemaError(
                "weights must be non-negative, finite and sum to a positive value; "
                f"got {w.size} weights (min {w.min() if w.size else None}, "
                f"sum {w.sum()}). Give each unit a relative weight >= 0, "
                "at least one > 0."
            )
        cdf = np.cumsum(w)
        cdf /= cdf[-1]
        # Units after the last positive weight must never be drawn, even when the
        # normalised cumulative sum falls short of 1.0 by a rounding error.
        cdf[int(np.flatnonzero(w > 0)[-1]) :] = 1.0
        w.flags.writeable = False
        cdf.flags.writeable = False
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "_cdf", cdf)
        object.__setattr__(
            self, "_weights_digest", hashlib.sha256(w.tobytes()).hexdigest()
        )

    def epoch_length(self, n_units: int) -> int:
        """Number of positions in one epoch: ``num_samples`` or ``n_units``."""
        n = check_int(n_units, "n_units", minimum=0, fix="Pass the number of units.")
        return n if self.num_samples is None else self.num_samples

    def units(
        self,
        n_units: int,
        epoch: int,
        positions: ArrayLike,
        groups: UnitGroups | None = None,
    ) -> NDArray[np.int64]:
        """Unit ids drawn at ``positions`` of epoch ``epoch``."""
        n, e, pos = self._prepare(n_units, epoch, positions)
        assert self.seed is not None
        if not self.replacement:
            if self.epoch_length(n) > n:
                raise SchemaError(
                    f"num_samples must be <= n_units ({n}) without replacement; got "
                    f"{self.num_samples}. Lower num_samples or use replacement=True."
                )
            return _shuffle_units(self.seed, n, e, pos)
        if self._cdf is not None and self._cdf.size != n:
            raise SchemaError(
                f"weights must have one entry per unit (n_units={n}); got "
                f"{self._cdf.size} weights. Pass weights of length {n}."
            )
        if pos.size and n == 0:
            raise SchemaError(
                "n_units must be >= 1 to draw samples; got 0. "
                "There is nothing to sample from."
            )
        u = _uniform(derive_key(self.seed, e, _STREAM_DRAW), pos.reshape(-1))
        if self._cdf is None:
            idx = np.minimum(np.floor(u * n).astype(np.int64), n - 1)
        else:
            idx = np.searchsorted(self._cdf, u, side="right").astype(np.int64)
        return idx.reshape(pos.shape)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description; ``weights`` appears as a SHA-256 hex digest."""
        return {
            "kind": "random",
            "seed": self.seed,
            "num_samples": self.num_samples,
            "replacement": self.replacement,
            "weights": self._weights_digest,
        }


@dataclass(frozen=True, slots=True)
class BlockShuffleSampler(Sampler):
    """Chunk-aware shuffle: a few groups (storage chunks) resident at a time.

    Per epoch the group order is permuted; consecutive runs of ``resident_groups``
    groups form *pools*; the units of a pool are shuffled together. The epoch is
    pool 0's shuffled units, then pool 1's, and so on: every unit exactly once, and
    any stretch of the epoch shorter than a pool touches at most
    ``2 * resident_groups`` groups, so each chunk is read about once per epoch.

    Parameters
    ----------
    seed : int or None, default None
        ``None`` draws a fresh seed (exposed as ``.seed``).
    resident_groups : int, default 4
        Groups mixed together in one pool: more groups, better mixing, more memory.

    Examples
    --------
    >>> groups = UnitGroups.from_labels(np.arange(12) // 3)  # 4 chunks of 3
    >>> s = BlockShuffleSampler(seed=1, resident_groups=2)
    >>> order = s.units(12, 0, np.arange(12), groups)
    >>> sorted(order.tolist()) == list(range(12))
    True
    >>> len(set((order[:6] // 3).tolist()))  # first pool: 2 chunks
    2
    """

    needs_groups: ClassVar[bool] = True

    seed: int | None = None
    resident_groups: int = 4
    _plans: dict[tuple[int, int], BlockPlan] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "seed", resolve_seed(self.seed))
        object.__setattr__(
            self,
            "resident_groups",
            check_int(
                self.resident_groups,
                "resident_groups",
                minimum=1,
                fix="Pass how many groups (chunks) may be mixed at a time, e.g. 4.",
            ),
        )

    def epoch_length(self, n_units: int) -> int:
        """Number of positions in one epoch: ``n_units``."""
        return check_int(n_units, "n_units", minimum=0, fix="Pass the number of units.")

    def __getstate__(self) -> dict[str, Any]:
        """Pickles without its per-epoch plan memo (rebuilt on use in a worker)."""
        return {"seed": self.seed, "resident_groups": self.resident_groups}

    def __setstate__(self, state: dict[str, Any]) -> None:
        object.__setattr__(self, "seed", state["seed"])
        object.__setattr__(self, "resident_groups", state["resident_groups"])
        object.__setattr__(self, "_plans", {})

    def _plan(self, epoch: int, groups: UnitGroups) -> BlockPlan:
        cache_key = (epoch, id(groups))
        plan = self._plans.get(cache_key)
        if plan is not None and plan.groups is groups:
            return plan
        assert self.seed is not None
        plan = block_plan(self.seed, epoch, groups, self.resident_groups)
        # Keep the two most recent plans (current epoch and, e.g., a prefetched next).
        for old in list(self._plans)[:-1]:
            self._plans.pop(old, None)
        self._plans[cache_key] = plan
        return plan

    def units(
        self,
        n_units: int,
        epoch: int,
        positions: ArrayLike,
        groups: UnitGroups | None = None,
    ) -> NDArray[np.int64]:
        """Unit ids at ``positions`` of epoch ``epoch``; ``groups`` is required."""
        n, e, pos = self._prepare(n_units, epoch, positions)
        if not isinstance(groups, UnitGroups):
            raise SchemaError(
                "groups must be a UnitGroups for BlockShuffleSampler; got "
                f"{type(groups).__name__}. Pass UnitGroups.from_labels(chunk_id_per_unit)."
            )
        if groups.n_units != n:
            raise SchemaError(
                f"groups must cover n_units ({n}) units; got {groups.n_units}. "
                "Build the groups from one label per unit."
            )
        if pos.size == 0:
            return pos.astype(np.int64)
        return block_units(self._plan(e, groups), groups, pos)

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": "block_shuffle", "seed": seed, "resident_groups": r}``."""
        return {
            "kind": "block_shuffle",
            "seed": self.seed,
            "resident_groups": self.resident_groups,
        }


# ---------------------------------------------------------------------------------
# Sharding across ranks and workers
# ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Shard:
    """Strided share of an epoch's positions for one rank (or loader worker).

    Rank ``r`` of ``W`` gets the global positions ``r, r + W, r + 2W, ...``.

    Parameters
    ----------
    rank : int
        ``0 <= rank < world_size``.
    world_size : int
        Number of shards, ``>= 1``.
    even : {"pad", "drop"}, default "pad"
        ``"pad"``: every rank gets ``ceil(n / W)`` positions; positions past the end
        wrap around to ``p % n`` (like ``torch.utils.data.DistributedSampler``), so
        all ranks run the same number of steps and collective ops never deadlock.
        ``"drop"``: every rank gets ``n // W`` positions; the last ``n % W`` are
        skipped this epoch.

    Examples
    --------
    >>> s = Shard(rank=1, world_size=4)
    >>> s.length(10), s.global_positions(10, np.arange(3)).tolist()
    (3, [1, 5, 9])
    >>> Shard(3, 4).global_positions(10, np.arange(3)).tolist()  # 11 wraps to 1
    [3, 7, 1]
    >>> Shard(3, 4, even="drop").length(10)
    2
    """

    rank: int
    world_size: int
    even: Literal["pad", "drop"] = "pad"

    def __post_init__(self) -> None:
        world = check_int(
            self.world_size,
            "world_size",
            minimum=1,
            fix="Pass the number of ranks (e.g. torch.distributed.get_world_size()).",
        )
        if not is_int(self.rank) or not 0 <= int(self.rank) < world:
            raise (SchemaError if is_int(self.rank) else InputTypeError)(
                f"rank must be an int in [0, {world}) (world_size={world}); got "
                f"{self.rank!r}"
                + ("" if is_int(self.rank) else f" of type {type(self.rank).__name__}")
                + ". Pass this process's rank, "
                "e.g. torch.distributed.get_rank()."
            )
        if self.even not in ("pad", "drop"):
            raise SchemaError(
                f"even must be 'pad' or 'drop'; got {self.even!r}. Use 'pad' to "
                "repeat a few positions so all ranks get the same length, 'drop' to "
                "skip the remainder."
            )
        object.__setattr__(self, "rank", int(self.rank))
        object.__setattr__(self, "world_size", world)

    def length(self, n_positions: int) -> int:
        """Number of positions this shard gets out of ``n_positions``."""
        n = check_int(
            n_positions, "n_positions", minimum=0, fix="Pass the epoch length."
        )
        if self.even == "pad":
            return -(-n // self.world_size)
        return n // self.world_size

    def global_positions(
        self, n_positions: int, local_positions: ArrayLike
    ) -> NDArray[np.int64]:
        """Map this shard's positions ``0 .. length - 1`` to epoch positions."""
        length = self.length(n_positions)
        local = _as_positions(local_positions, "local_positions")
        _check_range(local, length, "local_positions")
        out = self.rank + self.world_size * local
        if self.even == "pad" and local.size:
            out %= n_positions
        return out.astype(np.int64, copy=False)

    def then(self, inner: Shard) -> Shard:
        """Shard this shard again (DDP rank, then DataLoader worker) as one Shard.

        Returns the strided shard with ``rank = self.rank + self.world_size *
        inner.rank`` and ``world_size = self.world_size * inner.world_size``;
        ``inner.even`` wins. The result equals sharding twice exactly when both use
        ``"drop"``, or when ``n_positions`` is a multiple of the combined world size.
        Otherwise it is still disjoint and complete (``"pad"``: up to padding) but
        lengths may differ by one from the two-step result.

        Examples
        --------
        >>> Shard(1, 2, "drop").then(Shard(2, 3, "drop"))
        Shard(rank=5, world_size=6, even='drop')
        """
        if not isinstance(inner, Shard):
            raise InputTypeError(
                f"inner must be a Shard; got {type(inner).__name__}. "
                "Pass Shard(worker_id, num_workers)."
            )
        return Shard(
            rank=self.rank + self.world_size * inner.rank,
            world_size=self.world_size * inner.world_size,
            even=inner.even,
        )


# ---------------------------------------------------------------------------------
# Diagnostics
# ---------------------------------------------------------------------------------


def group_diversity(
    batches: Iterable[ArrayLike], labels: ArrayLike
) -> dict[str, float]:
    """Report how many groups (chunks) each batch draws from.

    A quick randomness check: a sequential order touches few groups per batch; a
    full shuffle touches nearly ``batch_size``; a block shuffle lies in between.

    Parameters
    ----------
    batches : iterable of array_like of int
        Unit ids of each batch.
    labels : array_like of int
        Group label of every unit.

    Returns
    -------
    dict of str to float
        ``batches`` (count), ``mean_groups_per_batch``, ``min_groups_per_batch``,
        ``max_groups_per_batch`` and ``mean_units_per_group_visit`` (units per
        distinct group per batch, averaged over all visits). All zero when there
        are no batches.

    Examples
    --------
    >>> labels = np.arange(8) // 4
    >>> group_diversity([np.arange(4), np.array([0, 7])], labels)["max_groups_per_batch"]
    2.0
    """
    lab = np.asarray(labels)
    counts: list[int] = []
    n_units = 0
    for batch in batches:
        b = np.asarray(batch, dtype=np.int64).reshape(-1)
        counts.append(int(np.unique(lab[b]).size))
        n_units += b.size
    if not counts:
        return {
            "batches": 0.0,
            "mean_groups_per_batch": 0.0,
            "min_groups_per_batch": 0.0,
            "max_groups_per_batch": 0.0,
            "mean_units_per_group_visit": 0.0,
        }
    visits = sum(counts)
    return {
        "batches": float(len(counts)),
        "mean_groups_per_batch": visits / len(counts),
        "min_groups_per_batch": float(min(counts)),
        "max_groups_per_batch": float(max(counts)),
        "mean_units_per_group_visit": n_units / visits if visits else 0.0,
    }
