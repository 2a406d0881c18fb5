"""Batches produced on a Dask ``distributed`` cluster.

:class:`DaskBatches` reads a generator's batches on the workers of a
``distributed.Client``: the generator's plan and engine are sent to every worker
once (``client.scatter(..., broadcast=True)``), then each batch is one small task
``read_batch(engine, plan.batch_units(epoch, i, i + 1)[0])`` (plus an optional
per-batch transform). At most ``max_in_flight`` tasks are submitted ahead of the
consumer and the batches are delivered in the epoch's order, following the
generator's epochs and resumable state (``bgen.start_iteration()`` /
``finish_iteration()``) as ``bgen.arrays`` does.

Tasks are pure: a batch depends only on the plan, the engine, the epoch and its
index. When a worker dies, the scheduler runs its tasks again on another worker and
the batch is the same; each batch is delivered exactly once, at its position.
``distributed`` is an optional dependency, imported when a client is needed.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._validation import check_int
from .engine import ArrayBatch, BatchEngine, read_batch
from .errors import InputTypeError, OptionalDependencyError
from .plan import EpochPlan

if TYPE_CHECKING:
    from .generator import BatchGenerator

# distributed is untyped where we use it (scatter, submit, Future)
Client = Any
Future = Any

__all__ = ["DaskBatches", "get_client", "read_planned_batch"]

Transform = Callable[[Any], Any]
_tokens = itertools.count()
_PAYLOAD_RETRIES = 3  # times a lost payload is sent again before giving up


@dataclass(frozen=True, slots=True)
class Payload:
    """What every task needs, scattered to the workers once: the plan, the engine
    and an optional transform (one object, so ``scatter`` sends one future)."""

    plan: EpochPlan
    engine: BatchEngine
    transform: Transform | None = None


def read_planned_batch(payload: Payload, epoch: int, index: int) -> Any:
    """Batch ``index`` of ``epoch``, transformed: the task a worker runs.

    Parameters
    ----------
    payload : Payload
        The plan, the engine and the transform (scattered once per worker).
    epoch, index : int
        Which batch.

    Returns
    -------
    numpy.ndarray or dict
        ``read_batch`` of the batch's units, through ``payload.transform`` if set.
        Dask-backed sources are computed synchronously inside the task.
    """
    import dask

    units = payload.plan.batch_units(epoch, index, index + 1)[0]
    # a dask-backed source computes its chunks inside this task: synchronously,
    # never through the worker's client (a task waiting on tasks can deadlock a
    # worker whose threads are all busy)
    with dask.config.set(scheduler="synchronous"):
        batch: ArrayBatch = read_batch(payload.engine, units)
        return batch if payload.transform is None else payload.transform(batch)


def _distributed() -> Any:
    try:
        import distributed
    except ImportError as err:  # pragma: no cover - the test extra installs it
        raise OptionalDependencyError(
            "Dask distributed is needed to produce batches on a cluster; install it "
            'with pip install "xbatcher[distributed]" (or pip install distributed).'
        ) from err
    return distributed


def get_client(client: Client | str | None) -> tuple[Client, bool]:
    """A client for ``client`` and whether it was created here (and must be closed).

    ``None`` starts a ``LocalCluster`` (the machine's cores, one worker process
    each); a string is a scheduler address (``"tcp://host:8786"``); a
    ``distributed.Client`` is used as is.
    """
    distributed = _distributed()
    if client is None:
        return distributed.Client(distributed.LocalCluster()), True
    if isinstance(client, str):
        return distributed.Client(client), True
    if isinstance(client, distributed.Client):
        return client, False
    raise InputTypeError(
        f"client must be a distributed.Client, a scheduler address (str) or None "
        f"(start a LocalCluster); got {type(client).__name__}. Pass e.g. "
        "distributed.Client(distributed.LocalCluster(n_workers=2))."
    )


class DaskBatches:
    """A generator's batches (numpy, as ``bgen.arrays``) read on a Dask cluster.

    Parameters
    ----------
    bgen : BatchGenerator
        Whose batches, in whose epoch order, from whose resumable position.
    client : distributed.Client or str, optional
        The cluster: a client, a scheduler address, or None for a new
        ``LocalCluster`` (closed by :meth:`close` or on leaving a ``with`` block).
    max_in_flight : int, default 8
        Batches submitted ahead of the consumer (bounds the memory held in results).
    transform : callable, optional
        Applied to each batch on the worker (e.g. a
        :class:`~xbatcher.transforms.Compose` or a fitted
        :class:`~xbatcher.normalize.Normalizer`); it must pickle.

    Notes
    -----
    Iterating follows ``bgen``'s current epoch from its restored position (as
    ``bgen.arrays`` does) and moves ``bgen`` to the next epoch at the end, so
    ``bgen.state_dict()`` checkpoints a distributed run as it does a local one.
    ``bgen[i]``-style access is ``batches[i]`` (one task).

    Examples
    --------
    >>> import numpy as np, xarray as xr, xbatcher as xb
    >>> from distributed import Client, LocalCluster
    >>> da = xr.DataArray(np.arange(40.0).reshape(4, 10), dims=("t", "x"))
    >>> bgen = xb.BatchGenerator(da, {"x": 5}, batch_size=2, shuffle=True, seed=1)
    >>> local = [b.tolist() for b in bgen.arrays]  # epoch 0; bgen moves to epoch 1
    >>> bgen.set_epoch(0)
    >>> with Client(LocalCluster(n_workers=1, processes=False)) as client:
    ...     remote = [b.tolist() for b in xb.DaskBatches(bgen, client)]
    >>> remote == local, bgen.epoch
    (True, 1)
    """

    def __init__(
        self,
        bgen: BatchGenerator,
        client: Client | str | None = None,
        *,
        max_in_flight: int = 8,
        transform: Transform | None = None,
    ) -> None:
        if transform is not None and not callable(transform):
            raise InputTypeError(
                f"transform must be a callable taking and returning a batch; got "
                f"{type(transform).__name__}. Pass e.g. xb.Compose(...) or a function."
            )
        self.bgen = bgen
        self.max_in_flight = check_int(
            max_in_flight,
            "max_in_flight",
            minimum=1,
            fix="Pass the number of batches to compute ahead, e.g. 8.",
        )
        self.transform = transform
        self.client, self._owns_client = get_client(client)
        self._scattered: tuple[EpochPlan, Future] | None = None

    def _payload(self) -> Future:
        """The scattered payload of the generator's current plan (sent once; again
        only if the plan changed, e.g. after ``set_epoch`` nothing is resent)."""
        plan = self.bgen.plan
        if self._scattered is None or self._scattered[0] is not plan:
            payload = Payload(plan, self.bgen.engine, self.transform)
            future = self.client.scatter(payload, broadcast=True, hash=False)
            self._scattered = (plan, future)
        return self._scattered[1]

    def __len__(self) -> int:
        return len(self.bgen)

    def submit(self, epoch: int, index: int) -> Future:
        """The future of batch ``index`` of ``epoch`` (one task on the cluster)."""
        return self.client.submit(
            read_planned_batch,
            self._payload(),
            epoch,
            index,
            key=f"xbatcher-batch-{next(_tokens)}-{epoch}-{index}",
            pure=False,
            priority=-index,
        )

    def __getitem__(self, idx: int) -> Any:
        from .generator import _check_index

        i = _check_index(idx, len(self))
        return self.submit(self.bgen.epoch, i).result()

    def __iter__(self) -> Iterator[Any]:
        cursor = self.bgen.start_iteration()
        return self._iterate(cursor)

    def _iterate(self, cursor: Any) -> Iterator[Any]:
        n = len(self.bgen)
        pending: deque[Future] = deque()
        nxt = cursor.position
        try:
            while cursor.position < n:
                while nxt < n and len(pending) < self.max_in_flight:
                    pending.append(self.submit(cursor.epoch, nxt))
                    nxt += 1
                batch = self._result(pending, cursor.epoch, cursor.position)
                cursor.position += 1
                yield batch
            self.bgen.finish_iteration(cursor)
        finally:
            for future in pending:  # an abandoned iteration: drop its tasks
                future.release()

    def _result(self, pending: deque[Future], epoch: int, index: int) -> Any:
        """The result of the first pending task (batch ``index``). Should every
        worker holding the scattered payload die, the scheduler cancels the tasks
        that need it: then the payload is scattered again and the pending tasks
        submitted again (a task is pure, so its batch is the same)."""
        for attempt in range(_PAYLOAD_RETRIES + 1):
            try:
                return pending.popleft().result()
            except CancelledError:
                if attempt == _PAYLOAD_RETRIES:
                    raise
                self._scattered = None  # lost with its workers: send it again
                first = index
                for future in pending:
                    future.release()
                count = len(pending) + 1
                pending.clear()
                pending.extend(self.submit(epoch, first + j) for j in range(count))
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Release the scattered payload; close the client if it was created here."""
        if self._scattered is not None:
            self._scattered[1].release()
            self._scattered = None
        if self._owns_client:
            cluster = self.client.cluster
            self.client.close()
            if cluster is not None:
                cluster.close()
            self._owns_client = False

    def __enter__(self) -> DaskBatches:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
