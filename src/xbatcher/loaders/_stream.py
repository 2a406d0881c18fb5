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

import math
from collections.abc import Iterator
from typing import Any

from .._iteration import group_size
from .._validation import check_int
from ..prefetch import Iterates, Prefetcher
from ..reader import parse_bytes
from ._pairs import BatchPairs, Item

__all__ = ["epoch_items", "item_nbytes", "unwrap"]


def item_nbytes(pairs: BatchPairs) -> int:
    """Bytes of one full item (inputs and targets), before any transform."""
    size = pairs.x.engine.batch_nbytes
    if pairs.y is not None:
        size += pairs.y.engine.batch_nbytes
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

    Batches are read in groups of consecutive batches, as many as the plain
    iteration gathers at once (about 2 MiB of output; 8 MiB for a full shuffle of
    chunked data), ``prefetch`` batches (and ``max_bytes``) ahead, rounded up to
    whole groups (at least one), on ``threads`` threads. ``gen``'s cursor counts the items delivered and its epoch
    ends after the last one. Closing the iterator (or dropping it) stops the
    threads.
    """
    n = len(pairs)
    each = max(1, item_nbytes(pairs))
    group = group_size(pairs.x.engine, pairs.x.plan)
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
