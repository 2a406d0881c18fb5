"""Read-ahead for in-order indexed access (``bgen[i]``, ``bgen[i + 1]``, ...).

Iterating a generator gathers its batches a group at a time and decodes the chunks
of the coming groups on a background thread (:mod:`xbatcher._iteration`); a loop of
``bgen[i]`` over ``range(len(bgen))`` has no iteration to do that for. An
:class:`IndexedReadAhead` watches the indices asked for: once an index follows the
previous one (``i == last + 1``), it

- has the chunks of the next batches (as many as an iteration reads ahead) decoded
  into the chunk cache by one job on a process-wide background thread, and
- for sample and window batches, reads batches ``i .. i + group - 1`` together (one
  gather, as iterating does) and hands them out one by one as they are asked for.

Random access (an index that does not follow the previous one) starts nothing, and
a job not yet started is dropped. Values never change: the job only fills the chunk
cache, whose single-flight loads let a batch that needs a chunk being decoded wait
for it instead of decoding it again, and the group holds the batches
:func:`~xbatcher.engine.read_batches_xarray` gives (each batch's values are a view
of its row of the group's buffer, as when iterating).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from ._iteration import _readahead_groups, group_size
from .engine import Batch, BatchEngine, prefetch, read_batches_xarray
from .plan import EpochPlan

__all__ = ["IndexedReadAhead", "read_ahead_for"]

_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _after_fork_in_child() -> None:
    """A forked child gets a thread of its own on first use (the parent's is gone)."""
    global _pool, _pool_lock
    _pool = None
    _pool_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _read_ahead_pool() -> ThreadPoolExecutor:
    """The one background thread every generator's indexed read-ahead shares (one
    thread per process, however many generators read ahead)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(1, thread_name_prefix="xbatcher-readahead")
        return _pool


def read_ahead_for(
    engine: BatchEngine, preload: bool, batch_cache: bool
) -> IndexedReadAhead | None:
    """The read-ahead of a generator's in-order ``bgen[i]``: only for preloaded
    batches read from chunked sources without a batch cache (a cache hit needs no
    chunk); sample and window batches are then read a group at a time, as
    iterating reads them."""
    if not engine.chunked or not preload or batch_cache:
        return None
    return IndexedReadAhead(engine.schema.mode != "concat" and engine.roles is None)


class IndexedReadAhead:
    """Reads ahead when ``bgen[i]`` follows ``bgen[i - 1]``: the chunks of the next
    batches (one job at a time, within an iteration's read-ahead budget) and, with
    ``grouped``, the batches of the next group.

    Parameters
    ----------
    grouped : bool
        Read sample and window batches a group at a time in order.

    Attributes
    ----------
    jobs, groups : int
        Read-ahead jobs started and groups read (random access starts none).
    """

    __slots__ = (
        "_covered",
        "_epoch",
        "_failed_until",
        "_group",
        "_job",
        "_last",
        "_lock",
        "_run",
        "_span",
        "grouped",
        "groups",
        "jobs",
    )

    def __init__(self, grouped: bool = False) -> None:
        self.grouped = grouped  # in order, batches are read a group at a time
        self.groups = 0  # groups read (for tests)
        # (plan, epoch, first index, batches not yet handed out)
        self._group: tuple[EpochPlan, int, int, list[Batch | None]] | None = None
        self._lock = threading.Lock()
        self._failed_until = 0  # a group read failed: read singly up to here
        self._last = -2  # the index asked for last
        self._epoch = -1
        self._covered = 0  # batches before this one are read ahead (or asked for)
        self._job: Future[None] | None = None
        self._run = [True]  # the running job's go-on flag (replaced to stop it)
        self._span: tuple[int, int] | None = None  # (group, read-ahead) in batches
        self.jobs = 0

    def __reduce__(self) -> tuple[type[IndexedReadAhead], tuple[bool]]:
        # a copy (pickled generator, a worker's) starts without history or job
        return IndexedReadAhead, (self.grouped,)

    def batch(
        self, plan: EpochPlan, engine: BatchEngine, epoch: int, index: int
    ) -> Batch | None:
        """Batch ``index`` of ``epoch`` when in-order access has read it with its
        group (each batch is handed out once), else None (the caller reads it).

        An index that follows the previous one starts the read-ahead of chunks
        and, with ``grouped``, reads the batches ``index .. index + group - 1``
        together (one gather; each batch's values are a view of its row of the
        group's buffer, as when iterating)."""
        in_order = self.note(plan, engine, epoch, index)
        if not self.grouped:
            return None
        with self._lock:
            group = self._group
            if group is not None and group[0] is plan and group[1] == epoch:
                j = index - group[2]
                if 0 <= j < len(group[3]):
                    batch = group[3][j]
                    group[3][j] = None
                    if batch is not None:
                        return batch
            if not in_order or index < self._failed_until:
                return None
            assert self._span is not None  # set by note() for in-order access
            stop = min(index + self._span[0], plan.num_batches())
            try:
                batches: list[Batch | None] = list(
                    read_batches_xarray(engine, plan.batch_units(epoch, index, stop))
                )
            except Exception:
                # a later batch of the group failed (a corrupt chunk, say): read
                # these one by one, so each error surfaces at its own batch
                self._failed_until = stop
                return None
            self.groups += 1
            batch, batches[0] = batches[0], None
            self._group = (plan, epoch, index, batches)
            return batch

    def wait(self) -> None:
        """Wait for the job under way, if any (its errors are not raised)."""
        job = self._job
        if job is not None:
            job.exception()

    def note(
        self, plan: EpochPlan, engine: BatchEngine, epoch: int, index: int
    ) -> bool:
        """Batch ``index`` of ``epoch`` is about to be read: read ahead if it
        follows the previous index (returns whether it does)."""
        in_order = index == self._last + 1 and epoch == self._epoch
        self._last, self._epoch = index, epoch
        if not in_order:
            if self._job is not None:
                self._run[0] = False  # random access now: stop the job under way
                self._job = None
            self._covered = 0
            return False
        if self._span is None:
            step = group_size(engine, plan)
            self._span = (step, step * _readahead_groups(engine, step))
        step, span = self._span
        if index + span // 2 < self._covered:
            return True  # enough is read ahead already
        job = self._job
        if job is not None and not job.done():
            return True  # one job at a time
        n = plan.num_batches()
        start = max(self._covered, index + 1)
        stop = min(index + 1 + span, n)
        if start >= stop:
            return True
        self._covered = stop
        self._run = run = [True]
        self.jobs += 1
        self._job = _read_ahead_pool().submit(
            _read_chunks, plan, engine, epoch, start, stop, run
        )
        return True


def _read_chunks(
    plan: EpochPlan,
    engine: BatchEngine,
    epoch: int,
    start: int,
    stop: int,
    run: list[bool],
) -> None:
    """Decode the chunks of batches ``start .. stop - 1`` of ``epoch`` into the
    chunk cache (at most a quarter of it, as :func:`xbatcher.engine.prefetch`
    bounds it), unless ``run[0]`` was cleared before the job started."""
    if not run[0]:
        return
    units = np.concatenate(plan.batch_units(epoch, start, stop))
    try:
        prefetch(engine, units)
    except Exception:  # the batch that needs the chunk reads it and reports this
        return
