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
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeGuard

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xbatcher._validation import check_bool, check_int, check_seed, is_int
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
    "split_ranges",
]

# ---------------------------------------------------------------------------------
# 64-bit mixing. Every constant and operation below is part of the reproducibility
# guarantee: changing any of them changes the order users get for a given seed.
# ---------------------------------------------------------------------------------

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # 2**64 / golden ratio, the splitmix64 increment
_MUL1 = 0xBF58476D1CE4E5B9
_MUL2 = 0x94D049BB133111EB
_U_GOLDEN = np.uint64(_GOLDEN)
_U_MUL1 = np.uint64(_MUL1)
_U_MUL2 = np.uint64(_MUL2)
_U30 = np.uint64(30)
_U27 = np.uint64(27)
_U31 = np.uint64(31)
_U11 = np.uint64(11)
# Feistel rounds by half width h (domain 4**h). Four rounds of a strong round function
# suffice on large domains (Luby-Rackoff); tiny domains need more to look uniform.
_ROUND_SCHEDULE = ((2, 12), (4, 8), (8, 6))
_MAX_ROUNDS = 12
_MIN_ROUNDS = 4
_MAX_INT64 = (1 << 63) - 1


def _mix64_int(z: int) -> int:
    """Splitmix64 finaliser on a Python int (a bijection of ``[0, 2**64)``)."""
    z &= _MASK64
    z = ((z ^ (z >> 30)) * _MUL1) & _MASK64
    z = ((z ^ (z >> 27)) * _MUL2) & _MASK64
    return z ^ (z >> 31)


def _mix64(z: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """Splitmix64 finaliser, vectorised; bit-identical to :func:`_mix64_int`."""
    z = z ^ (z >> _U30)
    z *= _U_MUL1
    z ^= z >> _U27
    z *= _U_MUL2
    z ^= z >> _U31
    return z


def _step_int(key: int, stream: int) -> int:
    """One link of the key chain: mix the stream id into the key."""
    return _mix64_int(((key ^ stream) + _GOLDEN) & _MASK64)


def _step(key: NDArray[np.uint64], stream: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """Vectorised :func:`_step_int`."""
    z = key ^ stream
    z += _U_GOLDEN
    return _mix64(z)


# ---------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------


def _is_int(value: object) -> TypeGuard[int | np.integer[Any]]:
    return is_int(value)


def _check_int(
    name: str, value: object, minimum: int, fix: str, maximum: int | None = None
) -> int:
    return check_int(value, name, minimum=minimum, maximum=maximum, fix=fix)


def _as_positions(positions: ArrayLike, name: str = "positions") -> NDArray[np.int64]:
    arr = np.asarray(positions)
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise InputTypeError(
            f"{name} must be an integer array; got dtype {arr.dtype}. "
            "Pass integer positions, e.g. np.arange(start, stop)."
        )
    if arr.dtype.kind == "u" and arr.max() > _MAX_INT64:
        raise IndexError(f"{name} must be < 2**63; got max {int(arr.max())}.")
    return arr.astype(np.int64, copy=False)


def _check_range(
    positions: NDArray[np.int64], length: int, name: str = "positions"
) -> None:
    if positions.size == 0:
        return
    lo, hi = int(positions.min()), int(positions.max())
    if lo < 0 or hi >= length:
        bad = lo if lo < 0 else hi
        raise IndexError(
            f"{name} must lie in [0, {length}) (the epoch length); got {bad}. "
            "Negative positions are not wrapped around."
        )


# ---------------------------------------------------------------------------------
# Seeds, keys and the permutation primitive
# ---------------------------------------------------------------------------------


def resolve_seed(seed: int | np.integer[Any] | None) -> int:
    """Validate a seed, or draw a fresh one when it is ``None``.

    Parameters
    ----------
    seed : int or None
        A non-negative int below ``2**64`` (numpy integers accepted, ``bool``
        rejected). ``None`` draws a fresh random 63-bit seed from the operating
        system's entropy.

    Returns
    -------
    int
        The seed as a Python int.

    Raises
    ------
    SchemaError
        If ``seed`` is not ``None`` and not an int in ``[0, 2**64)``.

    Examples
    --------
    >>> resolve_seed(42)
    42
    >>> 0 <= resolve_seed(None) < 2**63
    True
    """
    if seed is None:
        entropy = np.random.SeedSequence().entropy
        assert isinstance(entropy, int)
        return entropy & _MAX_INT64
    return check_seed(seed)


def derive_key(seed: int, *streams: int) -> int:
    """Mix a seed and stream ids (epoch, rank, pool, ...) into a 64-bit key.

    A splitmix64 chain in exact 64-bit unsigned arithmetic: the result is the same on
    every platform, Python version and process (it never uses :func:`hash`). Distinct
    last stream ids under the same prefix always give distinct keys.

    Parameters
    ----------
    seed : int
        Non-negative int below ``2**64``.
    *streams : int
        Non-negative ints below ``2**64``, mixed in order.

    Returns
    -------
    int
        A key in ``[0, 2**64)``.

    Examples
    --------
    >>> derive_key(42, 0) == derive_key(42, 0)
    True
    >>> derive_key(42, 0) != derive_key(42, 1)
    True
    """
    fix = "Seeds and stream ids (epoch, rank, ...) are non-negative ints below 2**64."
    key = _mix64_int(
        (_check_int("seed", seed, 0, fix, maximum=_MASK64) + _GOLDEN) & _MASK64
    )
    for i, stream in enumerate(streams):
        key = _step_int(key, _check_int(f"streams[{i}]", stream, 0, fix, _MASK64))
    return key


def _half_bits(n: int) -> int:
    """Half the bit width of the smallest even-width domain ``4**h >= n`` (h >= 1)."""
    return max(1, ((n - 1).bit_length() + 1) // 2)


def _rounds(half: int) -> int:
    """Number of Feistel rounds on a domain of ``4**half`` values."""
    for max_half, rounds in _ROUND_SCHEDULE:
        if half <= max_half:
            return rounds
    return _MIN_ROUNDS


def _round_keys(key: int, rounds: int) -> list[int]:
    return [_step_int(key, r + 1) for r in range(rounds)]


def _feistel(
    x: NDArray[np.uint64],
    half: NDArray[np.uint64],
    mask: NDArray[np.uint64],
    rkeys: list[NDArray[np.uint64]],
) -> NDArray[np.uint64]:
    """Balanced Feistel network on ``2 * half`` bits (parameters broadcast against x).

    Round function: the top ``half`` bits of the splitmix64 multiply-xorshift chain of
    ``right ^ round_key`` (the best-mixed bits of the last product). Works in place on
    three scratch buffers: no allocation per round.
    """
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
    """Subset a per-element parameter; length-1 parameters are shared."""
    return param if param.shape[0] == 1 else param[idx]


_CHUNK = 1 << 16  # elements per cache-resident block of work
_LOCAL_PASSES = 8  # cycle-walking passes done block by block before a global tail


def _walk(
    out: NDArray[np.uint64],
    idx: NDArray[np.intp],
    n: NDArray[np.uint64],
    half: NDArray[np.uint64],
    mask: NDArray[np.uint64],
    rkeys: list[NDArray[np.uint64]],
    max_passes: int | None,
) -> NDArray[np.intp]:
    """Cycle-walk ``out[idx]`` in place; return the indices still out of range."""
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
    """Cycle-walking Feistel permutation of ``[0, n)``, per element, 1-D arrays.

    ``n``, ``half`` and each round key are 1-D of length 1 (shared) or ``len(x)``.
    The work runs on blocks small enough to stay in the CPU cache; only the few
    elements with long cycle walks are finished together at the end.
    """
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


def permute(n: int, key: int, positions: ArrayLike) -> NDArray[np.int64]:
    """Evaluate a pseudo-random bijection of ``[0, n)`` at ``positions``.

    A balanced Feistel network (4 rounds of a splitmix64 round function, round keys
    derived from ``key``) on the smallest even-bit-width domain ``2**(2h) >= n``, with
    cycle-walking to land back in ``[0, n)``. Nothing of size ``n`` is built: the cost
    is proportional to ``len(positions)`` only.

    Parameters
    ----------
    n : int
        Size of the permuted range, ``1 <= n < 2**63``.
    key : int
        Permutation key in ``[0, 2**64)``, e.g. from :func:`derive_key`.
    positions : array_like of int
        Positions in ``[0, n)``, any shape.

    Returns
    -------
    numpy.ndarray of int64
        The images of ``positions``, same shape.

    Raises
    ------
    SchemaError
        If ``n`` or ``key`` is out of range.
    IndexError
        If a position is outside ``[0, n)``.

    Examples
    --------
    >>> out = permute(10, derive_key(7), np.arange(10))
    >>> sorted(out.tolist())
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    """
    n = _check_int(
        "n", n, 1, "The permuted range must hold at least one value.", _MAX_INT64
    )
    key = _check_int("key", key, 0, "Derive keys with derive_key().", _MASK64)
    pos = _as_positions(positions)
    _check_range(pos, n)
    flat = pos.reshape(-1).astype(np.uint64)
    if flat.size == 0:
        return pos.astype(np.int64)
    half = _half_bits(n)
    rkeys = [np.array([k], dtype=np.uint64) for k in _round_keys(key, _rounds(half))]
    out = _permute_core(
        flat,
        np.array([n], dtype=np.uint64),
        np.array([half], dtype=np.uint64),
        rkeys,
    )
    return out.astype(np.int64).reshape(pos.shape)


def _uniform(key: int, positions: NDArray[np.int64]) -> NDArray[np.float64]:
    """Per-position uniforms in ``[0, 1)``: splitmix64 output ``position`` of ``key``.

    The top 53 bits of the 64-bit hash become the float64 mantissa.
    """
    z = positions.astype(np.uint64) + np.uint64(1)
    z *= _U_GOLDEN
    z += np.uint64(key)
    z = _mix64(z)
    z >>= _U11
    return z.astype(np.float64) * (1.0 / (1 << 53))


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
        n = _check_int("n_units", n_units, 0, "Pass the number of units.")
        e = _check_int("epoch", epoch, 0, "Epochs are numbered 0, 1, 2, ...")
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
        return _check_int("n_units", n_units, 0, "Pass the number of units.")

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
    return permute(n, derive_key(seed, epoch), pos)


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
        return _check_int("n_units", n_units, 0, "Pass the number of units.")

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
_STREAM_POOL = 1  # key stream of BlockShuffleSampler pools


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
                _check_int(
                    "num_samples",
                    self.num_samples,
                    0,
                    "Pass the number of draws per epoch, or None for n_units.",
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
        n = _check_int("n_units", n_units, 0, "Pass the number of units.")
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
class _BlockPlan:
    """Per-epoch layout of a block shuffle (O(n_groups) memory)."""

    groups: UnitGroups  # kept alive so its id() cannot be reused while cached
    group_perm: NDArray[np.int64]  # groups in epoch order
    seq_offsets: NDArray[np.int64]  # start of each permuted group in the epoch
    pool_offsets: NDArray[np.int64]  # start of each pool, plus the end
    pool_half: NDArray[np.uint64]  # Feistel half width per pool
    pool_rounds: NDArray[np.int64]  # Feistel rounds per pool
    pool_rkeys: list[NDArray[np.uint64]]  # Feistel round keys per pool (max rounds)


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
    _plans: dict[tuple[int, int], _BlockPlan] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "seed", resolve_seed(self.seed))
        object.__setattr__(
            self,
            "resident_groups",
            _check_int(
                "resident_groups",
                self.resident_groups,
                1,
                "Pass how many groups (chunks) may be mixed at a time, e.g. 4.",
            ),
        )

    def epoch_length(self, n_units: int) -> int:
        """Number of positions in one epoch: ``n_units``."""
        return _check_int("n_units", n_units, 0, "Pass the number of units.")

    def _plan(self, epoch: int, groups: UnitGroups) -> _BlockPlan:
        cache_key = (epoch, id(groups))
        plan = self._plans.get(cache_key)
        if plan is not None and plan.groups is groups:
            return plan
        assert self.seed is not None
        n_groups = groups.n_groups
        r = self.resident_groups
        group_perm = permute(
            n_groups, derive_key(self.seed, epoch), np.arange(n_groups)
        )
        sizes = np.diff(groups.offsets)[group_perm]
        seq_offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
        starts = np.append(np.arange(0, n_groups, r), n_groups)
        pool_offsets = seq_offsets[starts]
        pool_sizes = np.diff(pool_offsets)
        pool_half = np.maximum(1, (_bit_length(pool_sizes - 1) + 1) // 2)
        pool_key = _step(
            np.full(
                pool_sizes.size,
                derive_key(self.seed, epoch, _STREAM_POOL),
                dtype=np.uint64,
            ),
            np.arange(pool_sizes.size, dtype=np.uint64),
        )
        rkeys = [
            _step(pool_key, np.full(pool_sizes.size, k + 1, dtype=np.uint64))
            for k in range(_MAX_ROUNDS)
        ]
        plan = _BlockPlan(
            groups=groups,
            group_perm=group_perm,
            seq_offsets=seq_offsets,
            pool_offsets=pool_offsets,
            pool_half=pool_half.astype(np.uint64),
            pool_rounds=np.array([_rounds(int(h)) for h in pool_half], dtype=np.int64),
            pool_rkeys=rkeys,
        )
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
        plan = self._plan(e, groups)
        flat = pos.reshape(-1)
        pool = np.searchsorted(plan.pool_offsets, flat, side="right") - 1
        start = plan.pool_offsets[pool]
        size = plan.pool_offsets[pool + 1] - start
        # Within pool p the order is permute(size_p, derive_key(seed, e, 1, p), .),
        # evaluated for all positions at once (one call per distinct round count).
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
        world = _check_int(
            "world_size",
            self.world_size,
            1,
            "Pass the number of ranks (e.g. torch.distributed.get_world_size()).",
        )
        if not _is_int(self.rank) or not 0 <= int(self.rank) < world:
            raise (SchemaError if _is_int(self.rank) else InputTypeError)(
                f"rank must be an int in [0, {world}) (world_size={world}); got "
                f"{self.rank!r}"
                + ("" if _is_int(self.rank) else f" of type {type(self.rank).__name__}")
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
        n = _check_int("n_positions", n_positions, 0, "Pass the epoch length.")
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
# Splits and diagnostics
# ---------------------------------------------------------------------------------


def split_ranges(
    size: int, parts: Mapping[str, float | int], gap: int = 0
) -> dict[str, tuple[int, int]]:
    """Cut ``[0, size)`` into contiguous, disjoint, ordered ranges.

    Parameters
    ----------
    size : int
        Number of points along the dimension.
    parts : mapping of str to float or int
        Part name to fraction (floats in ``(0, 1]`` summing to at most 1) or to a
        count of points (ints, summing with the gaps to at most ``size``); all values
        of one kind. Ranges follow the mapping's order.
    gap : int, default 0
        Points left out between consecutive parts, so that windows (even padded
        ones) never straddle two parts.

    Returns
    -------
    dict of str to (int, int)
        ``{name: (start, stop)}``, half-open.

    Notes
    -----
    Fractions apply to the points left once the gaps are taken out,
    ``size - gap * (len(parts) - 1)``. Boundaries are the cumulative fractions times
    that number, rounded half to even, so the parts tile it exactly when the
    fractions sum to 1.

    Raises
    ------
    SchemaError
        For mixed or invalid values, fractions summing above 1, counts above
        ``size``, a negative gap, or a part that would be empty.

    Examples
    --------
    >>> split_ranges(100, {"train": 0.8, "val": 0.2})
    {'train': (0, 80), 'val': (80, 100)}
    >>> split_ranges(100, {"train": 0.8, "val": 0.2}, gap=10)
    {'train': (0, 72), 'val': (82, 100)}
    >>> split_ranges(100, {"train": 60, "test": 20}, gap=5)
    {'train': (0, 60), 'test': (65, 85)}
    """
    size = _check_int("size", size, 0, "Pass the length of the dimension to split.")
    gap = _check_int("gap", gap, 0, "Pass the number of points to leave out, >= 0.")
    if not isinstance(parts, Mapping) or len(parts) == 0:
        raise SchemaError(
            f"parts must be a non-empty mapping of name to fraction or count; got "
            f"{parts!r}. Pass e.g. {{'train': 0.8, 'val': 0.2}}."
        )
    names = list(parts)
    for name in names:
        if not isinstance(name, str):
            raise SchemaError(
                f"parts keys must be str; got {name!r}. Name each part, e.g. 'train'."
            )
    values = list(parts.values())
    all_ints = all(_is_int(v) for v in values)
    all_floats = all(isinstance(v, float | np.floating) for v in values)
    if not (all_ints or all_floats):
        raise SchemaError(
            "parts values must be all fractions (floats) or all counts (ints); got "
            f"{dict(parts)!r}. Use one kind, e.g. {{'train': 0.8, 'val': 0.2}}."
        )
    usable = size - gap * (len(names) - 1)
    if usable < 0:
        raise SchemaError(
            f"gap must leave points to split; got gap={gap} between {len(names)} parts "
            f"of a size-{size} dimension. Lower the gap."
        )
    bounds: list[int] = [0]
    if all_floats:
        fracs = [float(v) for v in values]
        for name, f in zip(names, fracs, strict=True):
            if not (0.0 < f <= 1.0) or not math.isfinite(f):
                raise SchemaError(
                    f"parts[{name!r}] must be a fraction in (0, 1]; got {f}. "
                    "Pass a fraction of the dimension, e.g. 0.2."
                )
        total = 0.0
        for f in fracs:
            total += f
            bounds.append(round(min(total, 1.0) * usable))
        if total > 1.0 + 1e-9:
            raise SchemaError(
                f"parts fractions must sum to at most 1; got {total:g}. "
                "Lower some fractions."
            )
    else:
        counts = [int(v) for v in values]
        for name, c in zip(names, counts, strict=True):
            if c <= 0:
                raise SchemaError(
                    f"parts[{name!r}] must be a count >= 1; got {c}. "
                    "Pass a positive number of points."
                )
        if sum(counts) > usable:
            raise SchemaError(
                f"parts counts plus gaps must be at most size ({size}); got "
                f"{sum(counts)} points + {size - usable} gap points. "
                "Lower the counts or the gap."
            )
        for c in counts:
            bounds.append(bounds[-1] + c)
    out: dict[str, tuple[int, int]] = {}
    for i, name in enumerate(names):
        start, stop = bounds[i] + i * gap, bounds[i + 1] + i * gap
        if stop <= start:
            raise SchemaError(
                f"parts[{name!r}] must cover at least one point; got an empty range "
                f"({values[i]!r} of {usable} points). Increase it or lower the gap."
            )
        out[name] = (start, stop)
    return out


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
