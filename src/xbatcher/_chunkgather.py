"""Where the windows of one request lie among a source's chunks, and their copy.

:func:`plan_windows` sorts equally shaped windows by the box of chunks they touch: one
chunk for most windows, a few neighbouring chunks for a window across chunk edges. Each
:class:`WindowGroup` then needs a single fancy-indexing copy (see
:mod:`xbatcher.reader`): from the chunk itself, or from a small block stitched out of
its box of chunks that covers only the windows of the group (a thin slab along each
edge they cross). The planning is pure index arithmetic: it reads no data, and its
Python work grows with the number of groups, never with the number of windows.
:func:`put_windows` and :func:`take_windows` then copy a group's windows out of its
block with one fancy index (or one slice per window, for big windows).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided
from numpy.typing import NDArray

__all__ = [
    "WindowGroup",
    "plan_windows",
    "put_windows",
    "take_windows",
    "take_windows_into",
    "window_view",
]


@dataclass(slots=True)
class WindowGroup:
    """The windows of a request that touch the same box of chunks.

    Attributes
    ----------
    rows : ndarray of intp
        Their positions in the request (the rows of the output), ascending.
    rel : tuple of ndarray of intp
        Per axis, their starts relative to ``origin``.
    lo, hi : tuple of int
        The first and the last chunk of the box (equal for windows inside one chunk).
    origin, stop : tuple of int
        The region the windows are cut from: the chunk ``lo`` when ``lo == hi``,
        otherwise the bounding box of the group's windows (inside the box).
    """

    rows: NDArray[np.intp]
    rel: tuple[NDArray[np.intp], ...]
    lo: tuple[int, ...]
    hi: tuple[int, ...]
    origin: tuple[int, ...]
    stop: tuple[int, ...]

    @property
    def single(self) -> bool:
        """True when every window of the group lies inside the chunk ``lo``."""
        return self.lo == self.hi

    def chunk_ids(self) -> Iterator[tuple[int, ...]]:
        """The chunks of the box, in C order (each window of the group touches all)."""
        if self.lo == self.hi:
            return iter((self.lo,))
        return itertools.product(
            *(range(a, b + 1) for a, b in zip(self.lo, self.hi, strict=True))
        )


def plan_windows(
    bounds: Sequence[NDArray[np.int64]],
    starts: Sequence[NDArray[np.int64]],
    lengths: Sequence[int],
) -> list[WindowGroup]:
    """Group windows by the box of chunks they touch, sorted by chunk.

    Parameters
    ----------
    bounds : sequence of ndarray
        Per axis, the chunk boundaries ``[0, c0, c0 + c1, ..., size]``.
    starts : sequence of ndarray
        Per axis, the start of every window (all of the same size).
    lengths : sequence of int
        The window length along each axis.

    Returns
    -------
    list of WindowGroup
        Every window in exactly one group; groups in C order of their first chunk.

    Examples
    --------
    >>> b = (np.array([0, 4, 8]),)
    >>> groups = plan_windows(b, (np.array([5, 0, 3]),), (2,))
    >>> [(g.rows.tolist(), g.lo, g.hi) for g in groups]
    [([1], (0,), (0,)), ([2], (0,), (1,)), ([0], (1,), (1,))]
    """
    ndim = len(bounds)
    count = int(starts[0].size) if ndim else 0
    if count == 0:
        return []
    nchunks = tuple(len(b) - 1 for b in bounds)
    # axes stored in one chunk need no search: every window starts in chunk 0 there
    split = [d for d in range(ndim) if nchunks[d] > 1]
    c_lo = {d: np.searchsorted(bounds[d], starts[d], side="right") - 1 for d in split}
    c_hi = {
        d: np.searchsorted(bounds[d], starts[d] + (lengths[d] - 1), side="right") - 1
        for d in split
    }
    if not split:
        key_lo = key_hi = np.zeros(count, np.intp)
    else:
        shape = tuple(nchunks[d] for d in split)
        key_lo = np.ravel_multi_index([c_lo[d] for d in split], shape)
        key_hi = np.ravel_multi_index([c_hi[d] for d in split], shape)
    if not np.array_equal(key_lo, key_hi):
        order = np.lexsort((key_hi, key_lo))
        kl, kh = key_lo[order], key_hi[order]
        new = (kl[1:] != kl[:-1]) | (kh[1:] != kh[:-1])
    else:
        order = np.argsort(key_lo, kind="stable")
        kl = kh = key_lo[order]
        new = kl[1:] != kl[:-1]
    firsts = np.concatenate([[0], np.flatnonzero(new) + 1])
    rows = order.astype(np.intp, copy=False)
    # starts relative to the chunk each window starts in (its origin, when single)
    rel = np.empty((ndim, count), dtype=np.intp)
    for d in range(ndim):
        s = starts[d][rows]
        rel[d] = s - bounds[d][c_lo[d][rows]] if d in split else s
    ngroups = int(firsts.size)
    lo_ax: list[list[int]] = [[0] * ngroups for _ in range(ndim)]
    hi_ax: list[list[int]] = [[0] * ngroups for _ in range(ndim)]
    org_ax = [[0] * ngroups for _ in range(ndim)]
    stop_ax = [[int(b[1])] * ngroups for b in bounds]
    if split:
        shape = tuple(nchunks[d] for d in split)
        for d, lo_d, hi_d in zip(
            split,
            np.unravel_index(kl[firsts], shape),
            np.unravel_index(kh[firsts], shape),
            strict=True,
        ):
            lo_ax[d], hi_ax[d] = lo_d.tolist(), hi_d.tolist()
            org_ax[d] = bounds[d][lo_d].tolist()
            stop_ax[d] = bounds[d][lo_d + 1].tolist()
    lo_t = list(zip(*lo_ax, strict=True))
    hi_t = list(zip(*hi_ax, strict=True))
    org_t = list(zip(*org_ax, strict=True))
    stop_t = list(zip(*stop_ax, strict=True))
    cuts = [*firsts.tolist(), count]
    per_axis = list(rel)
    groups = []
    for g, (a, z) in enumerate(itertools.pairwise(cuts)):
        lo, hi, origin, stop = lo_t[g], hi_t[g], org_t[g], stop_t[g]
        if lo == hi:
            part = tuple(r[a:z] for r in per_axis)
        else:  # across chunk edges: cut from the windows' bounding box
            block = rel[:, a:z]
            low = block.min(axis=1).tolist()
            high = block.max(axis=1).tolist()
            stop = tuple(
                o + x + n for o, x, n in zip(origin, high, lengths, strict=True)
            )
            origin = tuple(o + x for o, x in zip(origin, low, strict=True))
            part = tuple(block - np.array(low, dtype=np.intp)[:, np.newaxis])
        groups.append(WindowGroup(rows[a:z], part, lo, hi, origin, stop))
    return groups


# windows of at least this many bytes are copied one slice at a time (no index
# arrays, no intermediate copy); smaller ones with one fancy index per group
_SLICE_COPY_BYTES = 16384


def put_windows(
    block: NDArray[Any],
    group: WindowGroup,
    lengths: tuple[int, ...],
    out: NDArray[Any],
) -> None:
    """Copy the windows of ``group`` out of ``block`` (the region from
    ``group.origin`` to ``group.stop``) into ``out[group.rows]``: one fancy-indexing
    copy for small windows, one slice copy per window for big ones."""
    if math.prod(lengths) * out.itemsize >= _SLICE_COPY_BYTES:
        cols = [r.tolist() for r in group.rel]
        for i, ss in zip(group.rows.tolist(), zip(*cols, strict=True), strict=True):
            out[i] = block[
                tuple(slice(s, s + n) for s, n in zip(ss, lengths, strict=True))
            ]
        return
    item = _row_item(block, lengths)
    if item is None:
        out[group.rows] = window_view(block, lengths)[group.rel]
    else:
        out.view(item)[..., 0][group.rows] = window_view(block, lengths, item)[
            group.rel
        ]


def take_windows(
    block: NDArray[Any], rel: tuple[NDArray[np.intp], ...], lengths: tuple[int, ...]
) -> NDArray[Any]:
    """The windows of ``block`` starting at ``rel`` (per axis), as a new
    ``(n, *lengths)`` array."""
    item = _row_item(block, lengths)
    if item is None:
        return window_view(block, lengths)[rel]
    rows = window_view(block, lengths, item)[rel]
    return rows.view(block.dtype).reshape(rows.shape[0], *lengths)


def take_windows_into(
    block: NDArray[Any],
    rel: tuple[NDArray[Any], ...],
    lengths: tuple[int, ...],
    out: NDArray[Any],
) -> None:
    """:func:`take_windows` written into ``out`` (C-contiguous, ``(n, *lengths)``)."""
    item = _row_item(block, lengths)
    if item is None:
        out[...] = window_view(block, lengths)[rel]
    else:
        out.view(item)[..., 0][...] = window_view(block, lengths, item)[rel]


@functools.lru_cache(maxsize=64)
def _row_dtype(dtype: np.dtype[Any], length: int) -> np.dtype[Any] | None:
    if length < 2 or dtype.hasobject:
        return None
    return np.dtype((np.void, length * dtype.itemsize))


def _row_item(block: NDArray[Any], lengths: tuple[int, ...]) -> np.dtype[Any] | None:
    """An opaque dtype as wide as one window row (the window's last axis), when the
    rows of ``block`` are contiguous: numpy then copies a window row as one item
    instead of element by element, which makes small-window gathers about a third
    faster. ``None`` where that does not apply (object dtypes, strided rows)."""
    if not lengths or not block.flags.c_contiguous:
        return None
    return _row_dtype(block.dtype, lengths[-1])


def window_view(
    block: NDArray[Any], lengths: tuple[int, ...], item: np.dtype[Any] | None = None
) -> NDArray[Any]:
    """A view of every window of ``block`` (a sliding window view without its checks:
    this runs once per chunk and group), indexed by window start first. With
    ``item`` (from :func:`_row_item`, so ``block`` is C-contiguous) each window row
    is one element of that dtype, so the view has one axis less. Only read from."""
    positions = [n - w + 1 for n, w in zip(block.shape, lengths, strict=True)]
    strides = block.strides
    if item is not None:
        return np.ndarray(
            (*positions, *lengths[:-1]), item, block, 0, strides + strides[:-1]
        )
    shape = (*positions, *lengths)
    if block.flags.c_contiguous or block.flags.f_contiguous:
        return np.ndarray(shape, block.dtype, block, 0, strides * 2)
    return as_strided(block, shape, strides * 2, writeable=False)
