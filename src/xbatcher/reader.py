"""The reader: block reads of the source and vectorised window gathers.

One :class:`~xbatcher.sources.Source` wraps one variable of the dataset, whatever backs
it: an in-memory numpy array, a dask array, or a lazily indexed backend array (Zarr,
NetCDF...) opened by xarray without dask (see :mod:`xbatcher.sources`). Chunked
sources are read one storage chunk at a time through a byte-bounded
:class:`BlockCache`, so consecutive batches that touch the same chunk decode it once.
:func:`gather` copies any set of equally shaped windows out of a source into one
contiguous ``(n_windows, *window_shape)`` array with one numpy fancy-indexing operation
per chunk group, never one ``isel`` per window.
"""

from __future__ import annotations

import bisect
import itertools
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import dask.utils
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

from ._chunkfetch import decoding as _decoding
from ._chunkfetch import fetch_chunks as _fetch_chunks
from ._chunkgather import (
    _SLICE_COPY_BYTES,
    WindowGroup,
    plan_windows,
    put_windows,
    take_windows,
    take_windows_into,
)
from ._dense import DenseBuffer, dense_buffer

# the sources and the thread pools moved to xbatcher.sources and xbatcher._threads;
# their names stay importable from here
from ._threads import usable_cores as usable_cores
from ._threads import worker_pool as worker_pool
from .errors import SchemaError
from .lru import BlockCache as BlockCache
from .lru import ReleasedClaim as ReleasedClaim
from .sources import DaskSource as DaskSource
from .sources import InMemorySource as InMemorySource
from .sources import LazySource as LazySource
from .sources import Source as Source
from .sources import make_source as make_source

__all__ = [
    "BlockCache",
    "format_bytes",
    "gather",
    "parse_bytes",
    "prefetch",
    "prefetch_all",
    "read_region",
    "read_region_copy",
]

T = TypeVar("T")

# gathers of at least this many output bytes are shared among the cores
_PARALLEL_GATHER_BYTES = 2**20


def gather_helpers(nbytes: int) -> int:
    """Helper threads that may share a gather of ``nbytes`` of output: none below
    ``_PARALLEL_GATHER_BYTES``; otherwise one per core that neither the caller nor
    an unfinished chunk decode keeps busy (decoding the chunks the next batches
    need comes first; once it is done, every core gathers)."""
    if nbytes < _PARALLEL_GATHER_BYTES or _reading_concurrently():
        return 0
    cores = usable_cores()
    return max(0, cores - 1 - min(cores, _decoding.count))


def _reading_concurrently() -> bool:
    """True on the threads of an iteration that reads several groups at once
    (:func:`xbatcher._iteration.batches`): those already keep every core busy."""
    return threading.current_thread().name.startswith("xbatcher-read")


# units parse_bytes names in its error message (dask also takes "k", "Mi"...)
_UNITS = ("B", "kB", "MB", "GB", "TB", "KiB", "MiB", "GiB", "TiB")


def format_bytes(n: int) -> str:
    """A byte count for messages, as :func:`dask.utils.format_bytes` writes it.

    Examples
    --------
    >>> format_bytes(512), format_bytes(81920), format_bytes(3 * 2**30)
    ('512 B', '80.00 kiB', '3.00 GiB')
    """
    return str(dask.utils.format_bytes(int(n)))


def parse_bytes(value: int | str, what: str = "block_cache_bytes") -> int:
    """Parse a byte count such as ``2**28``, ``"256MiB"`` or ``"1GB"``.

    Strings are read by :func:`dask.utils.parse_bytes` but must hold a number
    (``"MB"`` alone is refused); bad values raise :class:`~xbatcher.errors.SchemaError`.

    Examples
    --------
    >>> parse_bytes("256MiB"), parse_bytes("1.5 GB"), parse_bytes(0)
    (268435456, 1500000000, 0)
    """
    if isinstance(value, bool):
        raise SchemaError(
            f"{what} must be a byte count like 2**28 or '256MiB'; got {value!r}."
        )
    if isinstance(value, int | np.integer):
        n = int(value)
    elif isinstance(value, str):
        try:
            if not any(c.isdigit() for c in value):
                raise ValueError(value)
            n = int(dask.utils.parse_bytes(value))
        except (ValueError, OverflowError):
            raise SchemaError(
                f"{what} must be a byte count like 2**28, '256MiB' or '1GB'; got "
                f"{value!r}. Known units: {list(_UNITS)}."
            ) from None
    else:
        raise SchemaError(
            f"{what} must be an int or a string like '256MiB'; got {value!r}."
        )
    if n < 0:
        raise SchemaError(f"{what} must be >= 0; got {value!r}.")
    return n


@dataclass(frozen=True, slots=True)
class WindowRequest:
    """Windows over one variable: a start array and a length for every axis."""

    starts: tuple[NDArray[np.int64], ...]
    lengths: tuple[int, ...]
    count: int


def gather(
    source: Source, request: WindowRequest, cache: BlockCache | None
) -> NDArray[Any]:
    """Copy the requested windows out of ``source`` into a new contiguous array.

    Returns an array of shape ``(request.count, *request.lengths)``.
    """
    if isinstance(source, InMemorySource):
        return _gather_array(source.array, source, request.starts, request.lengths)
    return _gather_chunked(source, request, cache)


def _gather_array(
    array: NDArray[Any],
    source: InMemorySource | None,
    starts: tuple[NDArray[np.int64], ...],
    lengths: tuple[int, ...],
    out: NDArray[Any] | None = None,
    rows: NDArray[np.intp] | None = None,
) -> NDArray[Any]:
    """Windows of ``array`` as ``(count, *lengths)``; with ``out``, written into
    ``out[rows]`` instead (no intermediate copy)."""
    count = int(starts[0].size) if starts else 1
    if array.ndim == 0:
        result = np.broadcast_to(array, (count,)).copy()
    elif count == 1 and out is None:
        region = tuple(
            slice(int(s[0]), int(s[0]) + n)
            for s, n in zip(starts, lengths, strict=True)
        )
        return array[region][np.newaxis].copy()
    elif math.prod(lengths) * array.itemsize >= _SLICE_COPY_BYTES:
        # big windows: a slice copy per window beats fancy indexing over a view
        if out is None:
            out = np.empty((count, *lengths), dtype=array.dtype)
            rows = None
        targets = rows.tolist() if rows is not None else range(count)
        cols = [s.tolist() for s in starts]
        for i, ss in zip(targets, zip(*cols, strict=True), strict=True):
            out[i] = array[
                tuple(slice(s, s + n) for s, n in zip(ss, lengths, strict=True))
            ]
        return out
    else:
        view = (
            source.windows_view(lengths)
            if source is not None
            else sliding_window_view(array, lengths)
        )
        result = view[starts]
    if out is None:
        return result
    out[rows] = result
    return out


def _chunk_spans(
    source: Source, request: WindowRequest
) -> tuple[list[NDArray[np.intp]], list[NDArray[np.intp]]]:
    """Per axis, the chunk each window starts in and the chunk it ends in."""
    assert source.bounds is not None
    c_lo = [
        np.searchsorted(b, s, side="right") - 1
        for b, s in zip(source.bounds, request.starts, strict=True)
    ]
    c_hi = [
        np.searchsorted(b, s + (n - 1), side="right") - 1
        for b, s, n in zip(source.bounds, request.starts, request.lengths, strict=True)
    ]
    return c_lo, c_hi


def _needed_chunks(
    source: Source, c_lo: list[NDArray[np.intp]], c_hi: list[NDArray[np.intp]]
) -> list[tuple[int, ...]]:
    """The chunks some window touches, in order of first appearance."""
    nchunks = source.nchunks
    if not c_lo:
        return [()]
    lo = np.ravel_multi_index(c_lo, nchunks)
    hi = np.ravel_multi_index(c_hi, nchunks)
    if np.array_equal(lo, hi):  # every window inside one chunk: no Python per chunk
        ids, first = np.unique(lo, return_index=True)
        ids = ids[np.argsort(first, kind="stable")]
        axes = np.unravel_index(ids, nchunks)
        return list(zip(*(a.tolist() for a in axes), strict=True))
    # one entry per distinct (first chunk, last chunk) pair; most windows lie in
    # one chunk, so this is usually just the distinct first chunks
    total = math.prod(nchunks)
    pairs, first = np.unique(lo * total + hi, return_index=True)
    needed: dict[tuple[int, ...], None] = {}
    for pair in pairs[np.argsort(first, kind="stable")].tolist():
        a = np.unravel_index(pair // total, nchunks)
        z = np.unravel_index(pair % total, nchunks)
        needed.update(
            dict.fromkeys(
                itertools.product(
                    *(range(int(i), int(j) + 1) for i, j in zip(a, z, strict=True))
                )
            )
        )
    return list(needed)


def prefetch(
    source: Source,
    request: WindowRequest,
    cache: BlockCache,
    max_bytes: int | None = None,
) -> None:
    """Decode the chunks a request will need into ``cache`` (for a background thread):
    the first ones it needs, up to ``max_bytes`` of chunks."""
    if source.bounds is None:
        return
    needed = _needed_chunks(source, *_chunk_spans(source, request))
    if max_bytes is not None:
        needed = needed[: max(0, max_bytes // max(1, source.chunk_nbytes))]
    _fetch_chunks(source, needed, cache, wait=not source.submits_chunks)


def prefetch_all(source: Source, cache: BlockCache) -> None:
    """Request every chunk of ``source`` into ``cache``, in C order (without waiting
    for the decodes of a source that decodes in a pool)."""
    if source.bounds is None:
        return
    ids = list(np.ndindex(*source.nchunks))
    _fetch_chunks(source, ids, cache, wait=not source.submits_chunks)


def _gather_chunked(
    source: Source, request: WindowRequest, cache: BlockCache | None
) -> NDArray[Any]:
    """Windows of a chunked source: the windows are grouped by chunk once for the
    whole request (:func:`~xbatcher._chunkplan.plan_windows`), then each group is one
    fancy-indexing copy into the output, gathered as soon as its chunks are decoded."""
    lengths = request.lengths
    if request.count == 1 or not lengths:
        # one window (or a 0-d variable): a region read, without the grouping
        region = tuple(
            slice(int(s[0]), int(s[0]) + n)
            for s, n in zip(request.starts, lengths, strict=True)
        )
        block = read_region(source, region, cache)
        out = np.empty((1, *lengths), dtype=source.dtype)
        out[0] = block
        return out
    assert source.bounds is not None
    dense = dense_buffer(source, cache)
    if dense is not None:
        gathered = _gather_dense(source, dense, request, cache)
        if gathered is not None:
            return gathered
    groups = plan_windows(source.bounds, request.starts, lengths)
    budget = None if cache is None else cache.max_bytes // 2
    if len(groups) == 1 and groups[0].single:
        # one chunk: the fancy index writes the output itself (its rows are in order)
        group = groups[0]
        chunks = _fetch_chunks(source, [group.lo], cache)
        return take_windows(chunks[group.lo], group.rel, lengths)
    out = np.empty((request.count, *lengths), dtype=source.dtype)
    # more chunks than half the cache (a full shuffle over big data) are gathered in
    # waves of chunks that fit, so memory stays within the budget
    if cache is not None and budget is not None:
        groups = _cached_first(source, groups, cache, budget)
    for wave, ids in _waves(source, groups, budget):
        _gather_wave(source, wave, ids, cache, lengths, out)
    return out


def _gather_dense(
    source: Source,
    dense: DenseBuffer,
    request: WindowRequest,
    cache: BlockCache | None,
) -> NDArray[Any] | None:
    """The windows of ``request`` out of the dense buffer of ``source``, once the
    chunks they touch are held there (decoded straight into it, in the decode pool);
    ``None`` when one of them is not (another reader's abandoned write), and the
    caller gathers chunk by chunk."""
    array = dense.array
    if not dense.complete:
        needed = _needed_chunks(source, *_chunk_spans(source, request))
        if not dense.holds(needed):
            # a chunk decoded into its slot comes back as a view of the buffer (its
            # decode has returned, though the callback that marks the slot held may
            # not have run yet); any other array means the chunk is elsewhere
            chunks = _fetch_chunks(source, needed, cache)
            if any(chunks[cid].base is not array for cid in needed):
                return None
    # one fancy index whatever the window size: from one buffer it beats a slice
    # copy per window also for big windows (W4z: 8x32x32 float32, 1.06-1.09x of the
    # per-chunk gather, where slices were 0.87-1.02x)
    lengths = request.lengths
    count = request.count
    nbytes = count * math.prod(lengths) * array.itemsize
    helpers = gather_helpers(nbytes)
    if helpers < 1:
        return take_windows(array, request.starts, lengths)
    out = np.empty((count, *lengths), dtype=array.dtype)
    # contiguous runs of rows, in pieces whose temporary stays in the CPU cache
    per_row = max(1, nbytes // count)
    step = max(1, _DENSE_PIECE_BYTES // per_row)
    pieces = [(a, min(a + step, count)) for a in range(0, count, step)]

    def run(share: list[tuple[int, int]]) -> None:
        for a, z in share:
            rel = tuple(s[a:z] for s in request.starts)
            take_windows_into(array, rel, lengths, out[a:z])

    _run_shared(run, [pieces[j :: helpers + 1] for j in range(helpers + 1)])
    return out


def _run_shared(run: Callable[[list[T]], None], shares: list[list[T]]) -> None:
    """``run`` each share: the first on this thread, the others on the gather
    pool's helpers (numpy copies without the GIL)."""
    tasks = [worker_pool("gather").submit(run, share) for share in shares[1:] if share]
    try:
        run(shares[0])
    except BaseException:
        for task in tasks:  # interrupted: the helpers' output is thrown away
            task.cancel()
        raise
    for task in tasks:
        task.result()


# output rows copied by one fancy index of a shared dense gather
_DENSE_PIECE_BYTES = 2**19


def _cached_first(
    source: Source, groups: list[WindowGroup], cache: BlockCache, budget: int
) -> list[WindowGroup]:
    """``groups`` with those whose chunks are all cached first, when their chunks do
    not fit ``budget`` (more than one wave).

    A gather that walks more chunks than the cache holds leaves the last ones it
    used cached; in chunk order, the next such gather would start with the chunks
    evicted longest ago and evict these before reaching them (every chunk decoded
    again). Starting with them reuses them. Only the order in which the output's
    rows are filled changes, never their values.
    """
    if len(groups) < 2:
        return groups
    n_chunks = len({cid for g in groups for cid in g.chunk_ids()})
    if n_chunks * max(1, source.chunk_nbytes) <= budget:
        return groups  # one wave: its chunks are all requested at once anyway
    key = source.key
    cached: list[WindowGroup] = []
    rest: list[WindowGroup] = []
    for group in groups:
        hit = all((key, cid) in cache for cid in group.chunk_ids())
        (cached if hit else rest).append(group)
    return cached + rest if cached and rest else groups


def _gather_wave(
    source: Source,
    groups: list[WindowGroup],
    ids: list[tuple[int, ...]],
    cache: BlockCache | None,
    lengths: tuple[int, ...],
    out: NDArray[Any],
) -> None:
    """Gather ``groups`` (whose chunks are ``ids``) into ``out``. Chunks decoded in a
    pool are all requested first; then the groups whose chunks are cached are gathered
    while the others decode, and each of those as soon as its chunks arrive."""
    pipelined = (
        cache is not None
        and source.submits_chunks
        and len(ids) * source.chunk_nbytes <= cache.max_bytes // 2
    )
    # wait=False starts every read and returns the chunks already cached; decoded
    # chunks enter the cache, which holds the whole wave (checked just above)
    chunks = _fetch_chunks(source, ids, cache, wait=not pipelined)
    waiting_on: dict[tuple[int, ...], list[int]] = {}
    missing = [0] * len(groups)
    ready: list[WindowGroup] = []
    for g, group in enumerate(groups):
        for cid in group.chunk_ids():
            if cid not in chunks:
                waiting_on.setdefault(cid, []).append(g)
                missing[g] += 1
        if not missing[g]:
            ready.append(group)
    _gather_groups(source, chunks, ready, lengths, out)
    for cid in ids:
        if cid not in waiting_on:
            continue
        chunks.update(_fetch_chunks(source, [cid], cache))
        ready = []
        for g in waiting_on[cid]:
            missing[g] -= 1
            if not missing[g]:
                ready.append(groups[g])
        _gather_groups(source, chunks, ready, lengths, out)


def _gather_groups(
    source: Source,
    chunks: dict[tuple[int, ...], NDArray[Any]],
    groups: list[WindowGroup],
    lengths: tuple[int, ...],
    out: NDArray[Any],
) -> None:
    """Gather every group's windows into ``out``; big gathers are shared among the
    cores (numpy copies without the GIL)."""

    def run(share: list[WindowGroup]) -> None:
        for group in share:
            _gather_group(source, chunks, group, lengths, out)

    if len(groups) < 2:
        run(groups)
        return
    nbytes = sum(g.rows.size for g in groups) * math.prod(lengths) * out.itemsize
    helpers = gather_helpers(nbytes)
    if helpers < 1:
        run(groups)
        return
    shares: list[list[WindowGroup]] = [[] for _ in range(helpers + 1)]
    for j, group in enumerate(sorted(groups, key=lambda g: -g.rows.size)):
        shares[j % len(shares)].append(group)
    _run_shared(run, shares)


def _waves(
    source: Source, groups: list[WindowGroup], budget: int | None
) -> Iterable[tuple[list[WindowGroup], list[tuple[int, ...]]]]:
    """Consecutive groups whose chunks together stay within ``budget`` bytes (at
    least one group per wave; all of them for ``budget=None``), with those chunks."""
    per_chunk = max(1, source.chunk_nbytes)
    wave: list[WindowGroup] = []
    ids: dict[tuple[int, ...], None] = {}
    for group in groups:
        if group.single:
            mine = [group.lo]
            new = mine if group.lo not in ids else []
        else:
            mine = list(group.chunk_ids())
            new = [cid for cid in mine if cid not in ids]
        if wave and budget is not None and (len(ids) + len(new)) * per_chunk > budget:
            yield wave, list(ids)
            wave, ids = [], {}
            new = mine
        wave.append(group)
        ids.update(dict.fromkeys(new))
    if wave:
        yield wave, list(ids)


def _gather_group(
    source: Source,
    chunks: dict[tuple[int, ...], NDArray[Any]],
    group: WindowGroup,
    lengths: tuple[int, ...],
    out: NDArray[Any],
) -> None:
    """Copy one group's windows into ``out[group.rows]``, from their chunk or from
    the small block stitched out of their box of chunks."""
    if group.single:
        block = chunks[group.lo]
    else:
        block = _assemble(source, chunks, group.origin, group.stop, group.lo, group.hi)
    put_windows(block, group, lengths, out)


def _assemble(
    source: Source,
    chunks: dict[tuple[int, ...], NDArray[Any]],
    start: Sequence[int],
    stop: Sequence[int],
    lo: tuple[int, ...],
    hi: tuple[int, ...],
) -> NDArray[Any]:
    """Copy the region ``[start, stop)`` out of the chunks that cover it."""
    assert source.bounds is not None
    region = np.empty(
        [b - a for a, b in zip(start, stop, strict=True)], dtype=source.dtype
    )
    for cid in itertools.product(
        *(range(a, b + 1) for a, b in zip(lo, hi, strict=True))
    ):
        if cid not in chunks:  # inside the bounding box but touched by no window
            continue
        src_sel, dst_sel = [], []
        for b, c, a, z in zip(source.bounds, cid, start, stop, strict=True):
            c0, c1 = int(b[c]), int(b[c + 1])
            i0, i1 = max(a, c0), min(z, c1)
            if i0 >= i1:
                break
            src_sel.append(slice(i0 - c0, i1 - c0))
            dst_sel.append(slice(i0 - a, i1 - a))
        else:
            region[tuple(dst_sel)] = chunks[cid][tuple(src_sel)]
    return region


def read_region(
    source: Source, region: tuple[slice, ...], cache: BlockCache | None
) -> NDArray[Any]:
    """The block ``region`` of ``source``: a view for in-memory data, otherwise
    assembled from the (cached) chunks it overlaps (a view of the cached chunk when
    one chunk holds it all)."""
    return _region(source, region, cache)[0]


def read_region_copy(
    source: Source, region: tuple[slice, ...], cache: BlockCache | None
) -> NDArray[Any]:
    """:func:`read_region` as an array of its own (never a view of the source or of
    a cached chunk), copied once."""
    block, fresh = _region(source, region, cache)
    return block if fresh else block.copy()


def _region(
    source: Source, region: tuple[slice, ...], cache: BlockCache | None
) -> tuple[NDArray[Any], bool]:
    """:func:`read_region`, and whether the block is a fresh array (assembled from
    several chunks) rather than a view."""
    if source.bounds is None and isinstance(source, InMemorySource):
        return source.array[region], False
    lists = source.bound_lists
    lo: list[int] = []
    hi: list[int] = []
    inner: list[slice] = []
    for b, r in zip(lists, region, strict=True):
        a, z = int(r.start), int(r.stop)
        c = bisect.bisect_right(b, a) - 1
        lo.append(c)
        hi.append(bisect.bisect_right(b, z - 1) - 1)
        inner.append(slice(a - b[c], z - b[c]))
    if lo == hi:  # one chunk holds the region: a view of it
        cid = tuple(lo)
        return _fetch_chunks(source, [cid], cache)[cid][tuple(inner)], False
    ids = list(
        itertools.product(*(range(a, b + 1) for a, b in zip(lo, hi, strict=True)))
    )
    chunks = _fetch_chunks(source, ids, cache)
    start = [int(r.start) for r in region]
    stop = [int(r.stop) for r in region]
    return _assemble(source, chunks, start, stop, tuple(lo), tuple(hi)), True


def gather_grid(
    block: NDArray[Any],
    counts: Sequence[int],
    steps: Sequence[int],
    axes: Sequence[int],
    lengths: Sequence[int],
    order: Sequence[int],
) -> NDArray[Any]:
    """Copy a regular grid of windows out of ``block`` in one strided copy.

    Window ``(k_0, ..., k_m)`` starts at ``k_j * steps[j]`` along axis ``axes[j]``
    of ``block`` and has shape ``lengths`` (one length per axis of ``block``). The
    result has the axes ``(k_0, ..., k_m, *block axes)`` permuted by ``order``, and is
    contiguous in that order.
    """
    strides = block.strides
    view = np.lib.stride_tricks.as_strided(
        block,
        (*counts, *lengths),
        (*(s * strides[a] for s, a in zip(steps, axes, strict=True)), *strides),
        writeable=False,
    ).transpose(order)
    out = np.empty(view.shape, dtype=block.dtype)
    np.copyto(out, view)
    return out
