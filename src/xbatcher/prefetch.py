"""Bounded background prefetch: batches read ahead of the consumer on threads.

A :class:`Prefetcher` runs a producer on background threads while the caller trains
on the batches already delivered. It holds at most ``depth`` items and about
``max_bytes`` bytes ahead of the consumer (read or being read, not yet delivered),
delivers items in the order of the source, and re-raises a producer's exception in the
consumer with the producer's traceback. Threads work well here: numpy copies, chunk
decoding (zarr codecs) and dask release the GIL.

Two ways to produce: iterate a source on one background thread
(``Prefetcher(iterable)``, e.g. a generator's batches), or map a function over keys on
``threads`` threads (``Prefetcher(keys, fn, threads=4)``, e.g. batch numbers read with
:func:`xbatcher.engine.read_batch`), delivered in key order either way.

:meth:`Prefetcher.close` (also called by ``with`` and at the end of the items) stops
the threads and waits for them; a prefetcher dropped without closing stops its threads
when it is garbage collected (without waiting: they end after the item they are
reading). ``bgen.prefetch(n)`` (:meth:`xbatcher.BatchGenerator.prefetch`) is the
generator's epoch read this way.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray

from ._iteration import batches
from ._state import Cursor
from ._validation import check_int
from .engine import BatchEngine
from .errors import PrefetchForkError
from .plan import EpochPlan
from .reader import parse_bytes

__all__ = ["EpochPrefetcher", "Iterates", "Prefetcher", "nbytes", "prefetch_epoch"]

T = TypeVar("T")
K = TypeVar("K")
_names = itertools.count()


def nbytes(item: object) -> int:
    """Bytes held by ``item``: an array, a tensor, an xarray object, or a dict,
    tuple or list of them (0 for anything without an ``nbytes``).

    Examples
    --------
    >>> nbytes({"x": np.zeros(4), "y": (np.zeros(2, "int8"), None)})
    34
    """
    if isinstance(item, Mapping):
        return sum(nbytes(v) for v in item.values())
    if isinstance(item, tuple | list):
        return sum(nbytes(v) for v in item)
    size = getattr(item, "nbytes", 0)
    try:
        return int(size)
    except (TypeError, ValueError):  # a tensor's nbytes may be a method or tensor
        return 0


class _Shared:
    """What the consumer and the producer threads share (never the Prefetcher itself,
    so dropping the Prefetcher lets the garbage collector stop the threads)."""

    def __init__(
        self,
        source: Iterator[Any],
        fn: Callable[[Any], Any] | None,
        depth: int,
        max_bytes: int | None,
        item_bytes: int,
    ) -> None:
        self.cond = threading.Condition()
        self.source_lock = threading.Lock()  # held while the source is advanced
        self.source: Iterator[Any] | None = source
        self.fn = fn
        self.depth = depth
        self.max_bytes = max_bytes
        self.estimate = item_bytes  # bytes expected of the next item
        self.started = 0  # items handed out to producers (numbered 0, 1, ...)
        self.delivered = 0  # items given to the consumer
        self.reserved = 0  # bytes of items started and not yet delivered
        # seq -> (ok, value or exception, bytes reserved for it)
        self.results: dict[int, tuple[bool, Any, int]] = {}
        self.end: int | None = None  # number of items, once the source is exhausted
        self.stop = False  # start no more items (closed, or an item failed)
        self.closed = False  # closed: the consumer takes nothing more

    def admit(self) -> bool:
        """Whether a producer may start the next item (under ``cond``)."""
        ahead = self.started - self.delivered
        if ahead == 0:
            return True  # always make progress, even past the byte budget
        if ahead >= self.depth:
            return False
        return self.max_bytes is None or self.reserved + self.estimate <= self.max_bytes

    def halt(self) -> None:
        """Close: producers exit after the item they are reading, the consumer
        takes nothing more."""
        with self.cond:
            self.stop = self.closed = True
            self.cond.notify_all()


def _produce(shared: _Shared) -> None:
    """A producer thread: start items while the budget allows, in source order."""
    try:
        while True:
            with shared.source_lock:  # the next key (or item) and its number together
                with shared.cond:
                    while not shared.stop and shared.end is None and not shared.admit():
                        shared.cond.wait()
                    if shared.stop or shared.end is not None or shared.source is None:
                        return
                    seq = shared.started
                    shared.started += 1
                    reserve = shared.estimate
                    shared.reserved += reserve
                try:
                    key = next(shared.source)
                except StopIteration:
                    with shared.cond:
                        shared.end = seq
                        shared.started -= 1
                        shared.reserved -= reserve
                        shared.cond.notify_all()
                    return
                except BaseException as exc:
                    _settle(shared, seq, False, exc, reserve)
                    return
            try:
                value = key if shared.fn is None else shared.fn(key)
            except BaseException as exc:
                _settle(shared, seq, False, exc, reserve)
                return
            _settle(shared, seq, True, value, reserve)
    finally:
        if shared.stop:  # closed early or failed: run the source's cleanup here
            _close_source(shared)


def _settle(shared: _Shared, seq: int, ok: bool, value: Any, reserve: int) -> None:
    """Record item ``seq`` (its value or exception) for the consumer."""
    with shared.cond:
        size = nbytes(value) if ok else 0
        shared.reserved += size - reserve
        if ok:
            shared.estimate = size
        else:
            shared.stop = True  # nothing is started after a failure
        shared.results[seq] = (ok, value, size)
        shared.cond.notify_all()


def _close_source(shared: _Shared) -> None:
    """Close the source (a generator's ``finally`` runs) on a producer thread."""
    if not shared.source_lock.acquire(blocking=False):
        return  # another producer is advancing it; the last one out closes it
    try:
        source, shared.source = shared.source, None
        close = getattr(source, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):  # no one to raise it to
                close()
    finally:
        shared.source_lock.release()


class Prefetcher(Generic[T]):
    """Iterator over ``source`` (or ``fn`` of each of its keys), read ahead on threads.

    Parameters
    ----------
    source : iterable
        The items, or with ``fn`` the keys; advanced on a background thread only.
    fn : callable, optional
        Called on a producer thread with each key; its results are delivered in the
        order of the keys. Without it the items of ``source`` are delivered.
    depth : int, default 2
        Items held ahead of the consumer at most (being read or waiting), >= 1.
    max_bytes : int or str, optional
        Bytes held ahead of the consumer (``"64MiB"``...): an item is started only
        while the items ahead and its expected size fit (an item may come out
        bigger than expected); one item is always read, however large. ``None``:
        only ``depth`` bounds the prefetch.
    threads : int, default 1
        Producer threads (with ``fn``: items read at once; the source itself is
        advanced by one thread at a time).
    item_bytes : int, default 0
        Expected bytes of an item, the byte budget's estimate before the first item
        is read (afterwards: the last item's size, by :func:`nbytes`).

    Raises
    ------
    xbatcher.errors.SchemaError, xbatcher.errors.InputTypeError
        For a ``depth``, ``threads`` or ``max_bytes`` out of range or of the wrong type.

    Examples
    --------
    >>> with Prefetcher(range(5), lambda i: i * i, depth=2, threads=2) as squares:
    ...     list(squares)
    [0, 1, 4, 9, 16]
    """

    def __init__(
        self,
        source: Iterable[Any],
        fn: Callable[[Any], T] | None = None,
        *,
        depth: int = 2,
        max_bytes: int | str | None = None,
        threads: int = 1,
        item_bytes: int = 0,
    ) -> None:
        depth = check_int(
            depth, "depth", minimum=1, fix="It counts the batches read ahead."
        )
        threads = check_int(
            threads, "threads", minimum=1, fix="Use 1 to read on one thread."
        )
        budget = None if max_bytes is None else parse_bytes(max_bytes, "max_bytes")
        self._shared = _Shared(
            iter(source), fn, depth, budget, check_int(item_bytes, "item_bytes")
        )
        name = f"xbatcher-prefetcher-{next(_names)}"
        self._threads = [
            threading.Thread(
                target=_produce, args=(self._shared,), name=f"{name}-{k}", daemon=True
            )
            for k in range(min(threads, depth))
        ]
        self._pid = os.getpid()  # the threads live in this process only
        # garbage collection stops the threads (not waiting: it may run anywhere)
        self._finalizer = weakref.finalize(self, self._shared.halt)
        for thread in self._threads:
            thread.start()

    @property
    def depth(self) -> int:
        """Items held ahead of the consumer at most."""
        return self._shared.depth

    @property
    def max_bytes(self) -> int | None:
        """Bytes held ahead of the consumer at most (``None``: no byte budget)."""
        return self._shared.max_bytes

    @property
    def in_flight(self) -> tuple[int, int]:
        """Items and bytes (read or reserved) ahead of the consumer now."""
        with self._shared.cond:
            shared = self._shared
            return shared.started - shared.delivered, shared.reserved

    def __iter__(self) -> Prefetcher[T]:
        return self

    def __next__(self) -> T:
        if os.getpid() != self._pid:
            raise PrefetchForkError(
                f"this prefetcher was made in process {self._pid} and is iterated in "
                f"process {os.getpid()}, a fork of it: its reading threads did not "
                "follow the fork, so it would wait forever. Make the prefetcher in "
                "the process that iterates it (e.g. call bgen.prefetch(...) inside "
                "the worker's loop, not before the workers start)."
            )
        shared = self._shared
        with shared.cond:
            while True:
                seq = shared.delivered
                if seq in shared.results:
                    ok, value, size = shared.results.pop(seq)
                    shared.delivered += 1
                    shared.reserved -= size
                    shared.cond.notify_all()
                    if ok:
                        return value  # type: ignore[no-any-return]
                    break
                # after a failure the items before it still come, then its error
                if shared.closed or (shared.end is not None and seq >= shared.end):
                    value = None
                    break
                shared.cond.wait()
        self.close()
        if isinstance(value, BaseException):  # item seq failed: raise it here
            value.add_note(
                f"(raised on an xbatcher prefetch thread, reading item {seq})"
            )
            raise value
        raise StopIteration

    def close(self) -> None:
        """Stop the producer threads and wait for them (each ends after the item it
        is reading); undelivered items are dropped. Safe to call twice."""
        self._finalizer()
        current = threading.current_thread()
        for thread in self._threads:
            if thread is not current:
                thread.join()
        with self._shared.cond:
            self._shared.results.clear()
        _close_source(self._shared)

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class EpochPrefetcher(Prefetcher[T]):
    """A :class:`Prefetcher` over one epoch of a generator that follows its cursor:
    ``cursor.position`` counts the batches delivered (not those read ahead), and the
    generator's epoch ends once the last one is delivered."""

    def __init__(
        self,
        source: Iterable[T],
        cursor: Cursor,
        finish: Callable[[Cursor], None],
        *,
        depth: int,
        max_bytes: int | str | None,
        item_bytes: int,
    ) -> None:
        super().__init__(
            source, depth=depth, max_bytes=max_bytes, item_bytes=item_bytes
        )
        self.cursor = cursor
        self._finish = finish

    def __next__(self) -> T:
        try:
            item = super().__next__()
        except StopIteration:
            shared = self._shared
            ended = shared.end is not None and shared.delivered >= shared.end
            if ended and not self.cursor.done:
                self._finish(self.cursor)
            raise
        self.cursor.position += 1
        return item


class Iterates(Protocol):
    """What :func:`prefetch_epoch` uses of a generator (its public iteration
    contract: ``plan``, ``engine``, ``start_iteration``, ``finish_iteration``)."""

    @property
    def plan(self) -> EpochPlan: ...

    @property
    def engine(self) -> BatchEngine: ...

    def start_iteration(self) -> Cursor: ...

    def finish_iteration(self, cursor: Cursor) -> None: ...


def prefetch_epoch(
    gen: Iterates,
    read_group: Callable[[list[NDArray[np.int64]]], Iterable[T]],
    *,
    depth: int = 2,
    max_bytes: int | str | None = None,
) -> EpochPrefetcher[T]:
    """One epoch of ``gen`` (from its cursor on), read ahead: ``bgen.prefetch(n)``.

    The same batches, in the same order, as the plain iteration
    (:func:`xbatcher._iteration.batches` with ``read_group``); a background thread
    reads them, groups of batches gathered together as the plain iteration does, so
    it also holds the group it is gathering (about 2 MiB) beyond the budget. The
    iteration's cursor (``gen.start_iteration()``) counts the batches delivered, and
    ``gen.finish_iteration`` ends the epoch after the last one. The arguments are
    checked before the iteration starts.
    """
    check_int(depth, "n", minimum=1, fix="It counts the batches read ahead.")
    if max_bytes is not None:
        parse_bytes(max_bytes, "max_bytes")
    cursor = gen.start_iteration()
    ahead = Cursor(cursor.epoch, cursor.position)  # the producer's own position
    source = batches(gen.plan, gen.engine, ahead, read_group, _ignore)
    return EpochPrefetcher(
        source,
        cursor,
        gen.finish_iteration,
        depth=depth,
        max_bytes=max_bytes,
        item_bytes=gen.engine.batch_nbytes,
    )


def _ignore(cursor: Cursor) -> None:
    """The producer's cursor ends silently (the consumer's finishes the epoch)."""
