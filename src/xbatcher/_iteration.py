"""Iterating over an epoch: groups of batches, read-ahead, the cursor.

An iteration reads its batches a group at a time (about ``_GROUP_BYTES`` of output,
gathered together) and, over chunked sources, has a background thread decode the
chunks of the next groups (``_READAHEAD_BYTES`` of output) while the current group is
gathered. Each iteration advances its own :class:`~xbatcher._state.Cursor`; the epoch
it follows is the cursor's, fixed when it started.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from ._state import Cursor
from ._threads import usable_cores
from .engine import BatchEngine, prefetch, prefetch_all
from .plan import EpochPlan
from .sampling import BlockShuffleSampler, ShuffleSampler

__all__ = ["batches", "group_size", "groups_of_batches"]

T = TypeVar("T")
Units = NDArray[np.int64]
_GROUP_BYTES = 2 * 2**20  # output gathered at once while iterating (cache-friendly)
_MAX_GROUP = 512
# a full shuffle over chunked data draws every group from the whole store (a
# chunk-aware one from a whole pool of chunks), so each group pays a fixed cost per
# touched chunk: bigger groups put more windows on each chunk (S1: 2 MiB -> 0.92x,
# 8 MiB -> 1.12x of read-each-chunk-once; chunk-aware 0.86x -> 0.91x of the all-core
# ideal). Batches are views of their group's buffer, so a batch kept alive holds at
# most this much memory.
_SHUFFLE_GROUP_BYTES = 8 * 2**20
# output bytes whose chunks are decoded ahead of the consumer (capped at a quarter of
# the block cache, so prefetched chunks are not evicted before they are used); about
# two chunk-aware shuffle pools, so the next pool decodes while this one is gathered
_READAHEAD_BYTES = 128 * 2**20


def batches(
    plan: EpochPlan,
    engine: BatchEngine,
    cursor: Cursor,
    read_group: Callable[[list[Units]], Iterable[T]],
    finish: Callable[[Cursor], None],
    concurrent: bool = False,
) -> Iterator[T]:
    """The batches of ``cursor.epoch`` from ``cursor.position`` on, each group read
    by ``read_group``; ``cursor.position`` counts the batches yielded, and ``finish``
    is called once the epoch's last batch was yielded.

    With ``concurrent`` (``read_group`` is thread-safe and reads the whole group),
    a shuffle over chunked data reads several groups at once on background threads
    (:func:`reads_in_flight`), so every core gathers while the consumer takes the
    batches already read; the batches and their order do not change."""
    indices = range(cursor.position, plan.num_batches())
    step = group_size(engine, plan)
    groups = groups_of_batches(plan, engine, cursor.epoch, indices, step)
    reads = reads_in_flight(engine, plan) if concurrent else 0
    read: Iterator[tuple[int, Iterable[T]]]
    if reads:
        read = _read_concurrently(groups, read_group, reads)
    else:
        read = ((first, read_group(group)) for first, group in groups)
    for first, group_batches in read:
        for j, batch in enumerate(group_batches):
            cursor.position = first + j + 1
            yield batch
    finish(cursor)


def _shuffled_chunked(engine: BatchEngine, plan: EpochPlan | None) -> bool:
    """True for a full or chunk-aware shuffle of batches over chunked sources."""
    return (
        plan is not None
        and isinstance(plan.sampler, ShuffleSampler | BlockShuffleSampler)
        and engine.chunked
        and plan.schema.batch_size is not None
    )


def reads_in_flight(engine: BatchEngine, plan: EpochPlan) -> int:
    """Groups read at once on background threads while iterating: one per usable
    core for a full or chunk-aware shuffle over chunked sources (each of its groups
    gathers ``_SHUFFLE_GROUP_BYTES`` from many chunks), else 0 (each group is read
    on the consumer's thread when the consumer reaches it). Not for a full shuffle
    over more data than the chunk cache holds: each group then walks more chunks
    than the cache keeps, and groups read together would evict each other's."""
    cores = usable_cores()
    if cores < 2 or not _shuffled_chunked(engine, plan) or _thrashes(plan, engine):
        return 0
    return cores


def _read_concurrently(
    groups: Generator[tuple[int, list[Units]], None, None],
    read_group: Callable[[list[Units]], Iterable[T]],
    reads: int,
) -> Generator[tuple[int, list[T]], None, None]:
    """``(first, batches)`` of each group in order, ``reads`` groups being read on
    background threads beyond the one handed out. A failed read raises when its
    group's turn comes; an abandoned iteration never waits for the reads in flight
    (they finish on their own and settle the chunks they claimed)."""
    pool = ThreadPoolExecutor(max_workers=reads, thread_name_prefix="xbatcher-read")
    flight: deque[tuple[int, Future[list[T]]]] = deque()
    try:
        for first, group in groups:
            flight.append((first, pool.submit(_read_all, read_group, group)))
            if len(flight) > reads:
                done_first, task = flight.popleft()
                yield done_first, task.result()
        while flight:
            done_first, task = flight.popleft()
            yield done_first, task.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        groups.close()  # its read-ahead pool too, now rather than at garbage collection


def _read_all(
    read_group: Callable[[list[Units]], Iterable[T]], group: list[Units]
) -> list[T]:
    return list(read_group(group))


def group_size(engine: BatchEngine, plan: EpochPlan | None = None) -> int:
    """Batches gathered at once while iterating: about ``_GROUP_BYTES`` of output, or
    ``_SHUFFLE_GROUP_BYTES`` (at most a quarter of the chunk cache) for a full or a
    chunk-aware shuffle over chunked sources."""
    budget = _GROUP_BYTES
    if _shuffled_chunked(engine, plan):
        budget = max(
            budget, min(_SHUFFLE_GROUP_BYTES, engine.block_cache.max_bytes // 4)
        )
    return int(max(1, min(_MAX_GROUP, budget // engine.batch_nbytes)))


def _readahead_groups(engine: BatchEngine, step: int) -> int:
    """Groups of ``step`` batches whose chunks are requested ahead at once."""
    group_bytes = max(1, step * engine.batch_nbytes)
    budget = min(_READAHEAD_BYTES, engine.block_cache.max_bytes // 4)
    return max(1, budget // group_bytes)


def _thrashes(plan: EpochPlan, engine: BatchEngine) -> bool:
    """True for a full shuffle over more chunked data than the chunk cache holds:
    each group then walks more chunks than the cache keeps, so chunks decoded ahead
    for the next groups would be evicted by the current one before they are used
    (decoded twice)."""
    if not isinstance(plan.sampler, ShuffleSampler):
        return False
    chunked = sum(s.nbytes for s in engine.sources.values() if s.chunked)
    return chunked > engine.block_cache.max_bytes


# a whole epoch's units are computed in one call up to this many (int64 each)
_WHOLE_EPOCH_UNITS = 2**22


def _reads_whole_data(plan: EpochPlan, engine: BatchEngine, n_batches: int) -> bool:
    """True for a full shuffle over chunked data that half the chunk cache holds,
    decoded in a pool: each of its groups draws from nearly every chunk, so all the
    chunks are requested up front, as a decode-once ideal does (planning the chunks
    of each group ahead would only take the decoders' CPU)."""
    if engine.roles is not None or not isinstance(plan.sampler, ShuffleSampler):
        return False
    chunked = [s for s in engine.sources.values() if s.chunked]
    return (
        bool(chunked)
        and all(s.submits_chunks for s in chunked)
        and sum(s.nbytes for s in chunked) <= engine.block_cache.max_bytes // 2
        and n_batches * (plan.schema.batch_size or 1) <= _WHOLE_EPOCH_UNITS
    )


def _prefetch(
    plan: EpochPlan,
    first: int,
    stop: int,
    epoch: int,
    engine: BatchEngine,
    units: Future[list[Units]],
) -> None:
    """Decode the chunks of batches ``first .. stop - 1`` of ``epoch`` (background);
    their units go to ``units`` first, for the groups that read them (the sampler
    runs once per batch)."""
    try:
        block = plan.batch_units(epoch, first, stop)
    except BaseException as err:
        units.set_exception(err)
        raise
    units.set_result(block)
    prefetch(engine, np.concatenate(block))


def groups_of_batches(
    plan: EpochPlan, engine: BatchEngine, epoch: int, indices: range, step: int
) -> Generator[tuple[int, list[Units]], None, None]:
    """Units of consecutive groups of ``step`` batches of ``epoch``; with chunked
    sources, the chunks of the next groups (``_READAHEAD_BYTES`` of output) are
    requested together from a background thread while the current group is
    gathered."""
    firsts = range(indices.start, indices.stop, step)
    if _reads_whole_data(plan, engine, len(indices)):
        # every group draws from nearly every chunk: all are requested at once
        # (decoding starts now), then the sampler runs once for the whole epoch
        prefetch_all(engine)
        epoch_units = plan.batch_units(epoch, indices.start, indices.stop)
        for first in firsts:
            at = first - indices.start
            yield first, epoch_units[at : at + step]
        return
    if not engine.chunked or _thrashes(plan, engine):
        for first in firsts:
            stop = min(first + step, indices.stop)
            yield first, plan.batch_units(epoch, first, stop)
        return
    ahead = _readahead_groups(engine, step)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xbatcher-prefetch")
    try:
        pending: dict[int, Future[None]] = {}
        job: Future[None] | None = None
        # units of the groups after the last readahead's first, and where they start
        ahead_units: Future[list[Units]] | None = None
        ahead_first = 0
        for k, first in enumerate(firsts):
            stop = min(first + step, indices.stop)
            future = pending.pop(k, None)
            units = None
            if future is not None and ahead_units is not None:
                # computed by the readahead job, unless it ended without them
                either: list[Future[Any]] = [ahead_units, future]
                wait(either, return_when=FIRST_COMPLETED)
                if ahead_units.done():
                    units = ahead_units.result()[
                        first - ahead_first : stop - ahead_first
                    ]
                else:
                    future.result()  # the job's error, here
            if units is None:
                units = plan.batch_units(epoch, first, stop)
            if future is not None and (future.done() or k % ahead == 0):
                future.result()  # re-raises a failed read here, never hangs
            if k % ahead == 0 and k + 1 < len(firsts):
                # the chunks of the next `ahead` groups, requested at once
                last = min(k + ahead, len(firsts) - 1)
                ahead_first = firsts[k + 1]
                ahead_units = Future()
                job = pool.submit(
                    _prefetch,
                    plan,
                    ahead_first,
                    min(firsts[last] + step, indices.stop),
                    epoch,
                    engine,
                    ahead_units,
                )
                pending.update(dict.fromkeys(range(k + 1, last + 1), job))
            yield first, units
        if job is not None:
            job.result()  # the last job's errors, had no group waited for it
    finally:
        # never wait here: an abandoned iteration is closed wherever its last
        # reference goes (the garbage collector, in any thread, maybe one that
        # holds a lock the prefetch job needs, or the prefetch thread itself).
        # A running job finishes on its own and settles the chunks it claimed;
        # on a normal end, job.result() above has waited for it already.
        pool.shutdown(wait=False, cancel_futures=True)
