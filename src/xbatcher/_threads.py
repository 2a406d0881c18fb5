"""The process-wide thread pools the reader and the sources share.

Two pools per process: ``"decode"`` (chunk decoding, one thread per usable core) and
``"gather"`` (helpers that share big window gathers, one fewer). A forked child (a
DataLoader worker) inherits this module's state but none of its threads, so it gets
new pools on first use.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

from .errors import SchemaError

__all__ = ["usable_cores", "worker_pool"]

_MAX_THREADS = 8
_pools_lock = threading.Lock()
_pools: dict[str, tuple[int, int, ThreadPoolExecutor]] = {}


def _after_fork_in_child() -> None:
    """New pools on first use in a forked child: the parent's threads are gone."""
    global _pools_lock
    _pools_lock = threading.Lock()
    _pools.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def usable_cores() -> int:
    """Threads the reader may keep busy: ``XBATCHER_NUM_THREADS`` when set (e.g. 1
    in each of many loader worker processes), else the cores this process may run
    on, at most 8."""
    setting = os.environ.get("XBATCHER_NUM_THREADS", "").strip()
    if setting:
        try:
            wanted = int(setting)
        except ValueError:
            raise SchemaError(
                f"XBATCHER_NUM_THREADS must be a whole number >= 1; got {setting!r}. "
                "Unset it to use every core."
            ) from None
        if wanted < 1:
            raise SchemaError(
                f"XBATCHER_NUM_THREADS must be >= 1; got {wanted}. Use 1 to read and "
                "gather on the calling thread and one decode thread."
            )
        return wanted
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(_MAX_THREADS, cores))


def worker_pool(kind: str) -> ThreadPoolExecutor:
    """The process-wide thread pool for ``kind`` (``"decode"``: chunk decoding, one
    thread per usable core; ``"gather"``: helpers that share big gathers, one fewer).
    A forked child (a DataLoader worker, say) gets pools of its own, and a changed
    ``XBATCHER_NUM_THREADS`` a new pool."""
    pid = os.getpid()
    workers = max(1, usable_cores() - (kind == "gather"))
    with _pools_lock:
        entry = _pools.get(kind)
        if entry is None or entry[:2] != (pid, workers):
            if entry is not None and entry[0] == pid:
                entry[2].shutdown(wait=False)  # queued work still runs
            pool = ThreadPoolExecutor(workers, thread_name_prefix=f"xbatcher-{kind}")
            entry = _pools[kind] = (pid, workers, pool)
        return entry[2]
