"""One epoch of :class:`~xbatcher.loaders._pairs.BatchPairs` items, read ahead.

The TensorFlow and JAX loaders stream an epoch the same way: they follow the input
generator's epochs and cursor (``start_iteration`` / ``finish_iteration``, so
``bgen.state_dict()`` says where training stands and ``bgen.load_state_dict``
resumes it), read groups of consecutive batches together
(:meth:`BatchPairs.read_many`) on background threads
(:class:`~xbatcher.prefetch.Prefetcher`), and deliver them in order.
Framework-free.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from typing import Any

from .._validation import check_int
from ..engine import BatchEngine
from ..prefetch import Iterates, Prefetcher
from ..reader import parse_bytes
from ._pairs import BatchPairs, Item

__all__ = ["epoch_items", "item_nbytes", "unwrap"]

_GROUP_BYTES = 4 * 2**20  # output read together (one chunk plan for the group)
_MAX_GROUP = 64


def _engine_nbytes(engine: BatchEngine) -> int:
    """``engine.batch_nbytes`` of an engine whose ``sources`` were cut to a few
    variables (``BatchPairs`` does that, leaving ``var_dims`` whole)."""
    if list(engine.var_dims) != list(engine.sources):
        engine = copy.copy(engine)
        engine.var_dims = {k: engine.var_dims[k] for k in engine.sources}
    return engine.batch_nbytes


def item_nbytes(pairs: BatchPairs) -> int:
    """Bytes of one full item (inputs and targets), before any transform."""
    size = _engine_nbytes(pairs.x.engine)
    if pairs.y is not None:
        size += _engine_nbytes(pairs.y.engine)
    return int(size)


def unwrap(item: Item) -> Any:
    """``x`` for an item ``(x,)`` (no targets); ``(x, y)`` and dicts as they are."""
    if isinstance(item, tuple) and len(item) == 1:
        return item[0]
    return item


def check_prefetch(
    prefetch: int, threads: int, max_bytes: int | str | None
) -> tuple[int, int, int | None]:
    """The read-ahead arguments of a loader, checked (typed errors naming them)."""
    return (
        check_int(prefetch, "prefetch", minimum=1, fix="It counts batches read ahead."),
        check_int(threads, "threads", minimum=1, fix="Use 1 to read on one thread."),
        None if max_bytes is None else parse_bytes(max_bytes, "max_bytes"),
    )


def epoch_items(
    pairs: BatchPairs,
    gen: Iterates,
    *,
    prefetch: int = 4,
    threads: int = 1,
    max_bytes: int | None = None,
) -> Iterator[Item]:
    """The items of the epoch ``gen``'s next iteration follows, from its cursor on.

    About ``prefetch`` batches (and ``max_bytes``) are read ahead on ``threads``
    threads, in groups of consecutive batches; ``gen``'s cursor counts the items
    delivered and its epoch ends after the last one. Closing the iterator (or
    dropping it) stops the threads.
    """
    n = len(pairs)
    each = max(1, item_nbytes(pairs))
    group = max(1, min(_MAX_GROUP, _GROUP_BYTES // each, max(1, prefetch // 2)))
    cursor = gen.start_iteration()
    epoch = cursor.epoch

    def read(first: int) -> list[Item]:
        return pairs.read_many(epoch, first, min(first + group, n))

    groups = Prefetcher(
        range(cursor.position, n, group),
        read,
        depth=max(1, math.ceil(prefetch / group)),
        max_bytes=max_bytes,
        threads=threads,
        item_bytes=group * each,
    )
    with groups:
        for items in groups:
            for item in items:
                cursor.position += 1
                yield item
    gen.finish_iteration(cursor)
