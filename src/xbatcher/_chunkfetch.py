"""Whole chunks through the chunk cache: claimed, decoded, settled.

:func:`fetch_chunks` hands the reader the chunks a gather needs. Each missing chunk
is claimed in the :class:`~xbatcher.lru.BlockCache` (single flight: one reader
decodes it, the others wait for it), decoded in the source's pool when it has one
(straight into its slot of the source's dense buffer when there is one, see
:mod:`xbatcher._dense`), and settled: put in the cache, failed, or released when its
reader was interrupted, so that no claim is ever left behind. :data:`decoding`
counts the decodes in flight, which big gathers leave their cores to.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Hashable, Iterable
from concurrent.futures import Future
from typing import Any

from numpy.typing import NDArray

from ._dense import DenseBuffer, dense_buffer
from .lru import BlockCache, ReleasedClaim
from .sources import Source

__all__ = ["decoding", "fetch_chunks"]


class _InFlight:
    """How many chunk decodes submitted to the decode pool have not finished: a
    gather shares its work only with the cores those decodes leave idle."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def add(self, n: int) -> None:
        with self._lock:
            self.count += n

    def done(self, _task: object = None) -> None:
        with self._lock:
            self.count -= 1

    def reset(self) -> None:
        """None in flight (a forked child runs none of its parent's decodes)."""
        self._lock = threading.Lock()
        self.count = 0


decoding = _InFlight()
if hasattr(os, "register_at_fork"):  # a forked child runs none of the parent's decodes
    os.register_at_fork(after_in_child=decoding.reset)


def fetch_chunks(
    source: Source,
    chunk_ids: Iterable[tuple[int, ...]],
    cache: BlockCache | None,
    wait: bool = True,
) -> dict[tuple[int, ...], NDArray[Any]]:
    """Chunks from the cache; missing ones are read once even when two threads (the
    prefetcher and the consumer) ask for them at the same time.

    Sources that decode in a pool (``submit_chunk``) get one task per chunk, and each
    chunk enters the cache as soon as it is decoded, so a consumer waits only for the
    chunks it needs. With ``wait=False`` (prefetching) the reads are only started, and
    the result holds the chunks that were already cached.
    """
    if cache is None:
        ids = list(chunk_ids)
        return dict(zip(ids, source.read_chunks(ids), strict=True))
    found: dict[tuple[int, ...], NDArray[Any]] = {}
    todo = list(chunk_ids)
    while todo:  # again for chunks whose loader was interrupted (claim released)
        todo = _fetch_claimed(source, todo, cache, wait, found)
    return found


def _fetch_claimed(
    source: Source,
    chunk_ids: list[tuple[int, ...]],
    cache: BlockCache,
    wait: bool,
    found: dict[tuple[int, ...], NDArray[Any]],
) -> list[tuple[int, ...]]:
    """One pass of :func:`fetch_chunks`: claim, load or wait, fill ``found``; returns
    the chunks whose claim another loader released (to be fetched again).

    Every claim this pass takes ends settled (put, failed or handed to a task whose
    callback settles it) or released, whatever is raised, ``KeyboardInterrupt``
    included: a claim left behind would make every later read of its chunk wait
    forever.
    """
    mine: list[tuple[int, ...]] = []
    handed = 0  # mine[:handed] are settled or owned by a task's callback
    waiting: list[tuple[tuple[int, ...], Future[NDArray[Any]]]] = []
    # the chunk being claimed: an interruption just as claim() returns would lose
    # the claim. Releasing it even when another thread holds it only makes its
    # waiters load the chunk themselves: an extra read, never a wrong value.
    claiming: tuple[int, ...] | None = None
    dense = dense_buffer(source, cache)
    try:
        for cid in chunk_ids:
            claiming = cid
            hit, future = cache.claim((source.key, cid))
            if hit is None and future is None and dense is not None:
                hit = dense.held(cid)  # evicted, but still in its dense slot
                if hit is not None:
                    cache.put((source.key, cid), hit)  # settles the claim
            claiming = None
            if hit is not None:
                found[cid] = hit
            elif future is None:
                mine.append(cid)
            else:
                waiting.append((cid, future))
        if mine and source.submits_chunks and (len(mine) > 1 or not wait):
            for cid in mine:
                task = _submit(source, cid, dense)
                decoding.add(1)
                task.add_done_callback(decoding.done)
                task.add_done_callback(
                    functools.partial(_settle, cache, (source.key, cid))
                )
                handed += 1
                waiting.append((cid, task))
        elif mine:
            try:
                blocks = _read_now(source, mine, dense)
            except Exception as err:
                for cid in mine:
                    cache.fail((source.key, cid), err)
                handed = len(mine)
                raise
            for cid, block in zip(mine, blocks, strict=True):
                found[cid] = block
                cache.put((source.key, cid), block)
                handed += 1
    except BaseException:
        for cid in [*mine[handed:], *([] if claiming is None else [claiming])]:
            cache.release((source.key, cid))
        raise
    retry: list[tuple[int, ...]] = []
    if wait:
        for cid, future in waiting:
            try:
                found[cid] = future.result()
            except ReleasedClaim:
                retry.append(cid)
    return retry


def _submit(
    source: Source, cid: tuple[int, ...], dense: DenseBuffer | None
) -> Future[NDArray[Any]]:
    """Start decoding chunk ``cid`` in the source's pool: into its dense slot when
    the source has a dense buffer and the slot is free."""
    slot = None if dense is None else dense.begin(cid)
    if dense is None or slot is None:
        return source.submit_chunk(cid)
    try:
        task = source.submit_chunk(cid, slot)
    except BaseException:
        dense.abandon(cid)
        raise
    task.add_done_callback(functools.partial(_settle_slot, dense, cid, slot))
    return task


def _settle_slot(
    dense: DenseBuffer,
    cid: tuple[int, ...],
    slot: NDArray[Any],
    task: Future[NDArray[Any]],
) -> None:
    """A decode into a dense slot ended: the slot is held when the decode wrote it
    (runs before :func:`_settle` hands the chunk to the cache), free otherwise."""
    try:
        ok = not task.cancelled() and task.exception() is None
        dense.settle(cid, slot, task.result() if ok else None)
    except BaseException:
        dense.abandon(cid)
        raise


def _read_now(
    source: Source, ids: list[tuple[int, ...]], dense: DenseBuffer | None
) -> list[NDArray[Any]]:
    """Read chunks ``ids`` on this thread, into their dense slots where free."""
    if dense is None:
        return source.read_chunks(ids)
    blocks = []
    for cid in ids:
        slot = dense.begin(cid)
        if slot is None:
            blocks.extend(source.read_chunks([cid]))
            continue
        try:
            block = source.read_chunk_into(cid, slot)
        except BaseException:
            dense.abandon(cid)
            raise
        dense.settle(cid, slot, block)
        blocks.append(block)
    return blocks


def _settle(cache: BlockCache, key: Hashable, task: Future[NDArray[Any]]) -> None:
    """Hand a finished chunk read to the cache (and to the threads waiting on it);
    a cancelled or interrupted read releases its claim."""
    try:
        if task.cancelled():
            cache.release(key)
            return
        err = task.exception()
        if err is not None:
            cache.fail(key, err)
        else:
            cache.put(key, task.result())
    except BaseException:  # a callback's error is only logged: never keep the claim
        cache.release(key)
        raise
