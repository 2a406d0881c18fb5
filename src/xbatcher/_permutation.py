"""The keyed permutation behind the samplers: splitmix64 mixing, seeds and keys,
and a cycle-walking Feistel bijection of ``[0, n)`` evaluated at any positions.

Private: :mod:`xbatcher.sampling` re-exports the public names (:func:`permute`,
:func:`derive_key`, :func:`resolve_seed`). This module depends on numpy only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xbatcher._validation import check_int, check_seed
from xbatcher.errors import InputTypeError

__all__ = ["derive_key", "permute", "resolve_seed"]

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
        (check_int(seed, "seed", minimum=0, fix=fix, maximum=_MASK64) + _GOLDEN)
        & _MASK64
    )
    for i, stream in enumerate(streams):
        key = _step_int(
            key, check_int(stream, f"streams[{i}]", minimum=0, fix=fix, maximum=_MASK64)
        )
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
    cycle-walking to land back in ``[0, n)``. The cost is proportional to
    ``len(positions)`` only: nothing of size ``n`` is built, except when most of
    ``[0, n)`` is asked for (a whole epoch), where the network is evaluated once over
    its whole domain (at most ``4 * n`` and ``2**20`` values).

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
    n = check_int(
        n,
        "n",
        minimum=1,
        fix="The permuted range must hold at least one value.",
        maximum=_MAX_INT64,
    )
    key = check_int(
        key, "key", minimum=0, fix="Derive keys with derive_key().", maximum=_MASK64
    )
    pos = _as_positions(positions)
    _check_range(pos, n)
    return _permute_checked(n, key, pos)


def _permute_checked(n: int, key: int, pos: NDArray[np.int64]) -> NDArray[np.int64]:
    """:func:`permute` of checked arguments (``pos`` int64 in ``[0, n)``); a new array."""
    flat = pos.reshape(-1)
    if flat.size == 0:
        return pos.astype(np.int64)
    half = _half_bits(n)
    rkeys = _round_keys(key, _rounds(half))
    out = _permute_tabled(flat, n, half, rkeys)
    if out is None:
        out = _permute_core(
            flat.astype(np.uint64),
            np.array([n], dtype=np.uint64),
            np.array([half], dtype=np.uint64),
            [np.array([k], dtype=np.uint64) for k in rkeys],
        ).astype(np.int64)
    return out.reshape(pos.shape)


# ---------------------------------------------------------------------------------
# The same permutation with tabled round functions (one key, one n for all positions)
#
# A round's function depends only on the right half, ``half`` bits: up to
# ``_TABLE_HALF`` bits its value at each of the ``2**half`` right halves is computed
# once, and a round becomes one lookup and one xor instead of nine operations. The
# values are those of :func:`_feistel`, bit for bit (the tests compare the two).
# When most of ``[0, n)`` is asked for (a whole epoch) and the domain is small, the
# network is evaluated once over the whole domain, and the cycle walks follow that
# table: the walks evaluate about as many domain values anyway, in many small passes.
# ---------------------------------------------------------------------------------

_TABLE_HALF = 16  # widest half tabled (a table of 2**16 int64 a round: 512 KiB)
_DOMAIN_MAX = 1 << 20  # largest domain evaluated whole (an 8 MiB table)
# values per evaluation of the whole domain: its temporaries stay in the CPU cache and
# under glibc's default mmap threshold (128 KiB; larger ones are mapped and unmapped
# at each call, and their pages faulted in again: twice the time in a fresh process)
_DOMAIN_BLOCK = 1 << 13


def _round_tables(half: int, rkeys: list[int]) -> list[NDArray[np.int64]]:
    """The round function of :func:`_feistel` at every right half ``0 .. 2**half-1``,
    one table per round key (all rounds in one pass: rows of one array)."""
    t = (
        np.arange(1 << half, dtype=np.uint64)
        ^ np.array(rkeys, dtype=np.uint64)[:, None]
    )
    t ^= t >> _U30
    t *= _U_MUL1
    t ^= t >> _U27
    t *= _U_MUL2
    t >>= np.uint64(64 - half)
    return list(t.astype(np.int64))


def _feistel_tabled(
    x: NDArray[np.int64], half: int, tables: list[NDArray[np.int64]]
) -> NDArray[np.int64]:
    """:func:`_feistel` with one half width for all of ``x`` and tabled rounds (a new
    array; ``x`` is not changed)."""
    left = x >> half
    right = x & ((1 << half) - 1)
    t = np.empty_like(x)
    for table in tables:
        np.take(table, right, out=t, mode="clip")  # right < 2**half: never clipped
        t ^= left
        left, right, t = right, t, left
    left <<= half
    left |= right
    return left


def _walk_by(
    out: NDArray[np.int64],
    idx: NDArray[np.intp],
    n: int,
    step: Callable[[NDArray[np.int64]], NDArray[np.int64]],
    max_passes: int | None = None,
) -> NDArray[np.intp]:
    """Cycle-walk ``out[idx]`` in place with ``step`` (one network evaluation, array
    in, new array out); return the indices still out of range."""
    passes = 0
    while idx.size and (max_passes is None or passes < max_passes):
        cur = step(out[idx])
        out[idx] = cur
        idx = idx[cur >= n]
        passes += 1
    return idx


def _permute_tabled(
    flat: NDArray[np.int64], n: int, half: int, rkeys: list[int]
) -> NDArray[np.int64] | None:
    """``permute(n, key, flat)`` with tabled rounds (``rkeys``: the round keys of
    ``key``), or None when tables would cost more than they save."""
    domain = 1 << (2 * half)
    walked = flat.size * (domain / n)  # network evaluations expected by walking
    if half > _TABLE_HALF or (1 << half) * 2 > walked:
        return None
    tables = _round_tables(half, rkeys)

    def network(x: NDArray[np.int64]) -> NDArray[np.int64]:
        return _feistel_tabled(x, half, tables)

    if domain <= _DOMAIN_MAX and domain <= 2 * walked:
        image = np.empty(domain, dtype=np.int64)
        for start in range(0, domain, _DOMAIN_BLOCK):
            stop = min(start + _DOMAIN_BLOCK, domain)
            image[start:stop] = network(np.arange(start, stop, dtype=np.int64))
        out = image[flat]
        _walk_by(out, np.flatnonzero(out >= n), n, image.__getitem__)
        return out
    out = np.empty_like(flat)
    leftovers: list[NDArray[np.intp]] = []
    for start in range(0, flat.size, _CHUNK):
        block = network(flat[start : start + _CHUNK])
        idx = _walk_by(block, np.flatnonzero(block >= n), n, network, _LOCAL_PASSES)
        out[start : start + _CHUNK] = block
        if idx.size:
            leftovers.append(idx + start)
    if leftovers:
        _walk_by(out, np.concatenate(leftovers), n, network)
    return out


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
