"""Epochs and resume positions that reach loader worker processes.

A loader's dataset object is copied into each worker process (pickled for ``spawn`` and
``forkserver``, inherited by ``fork``), and persistent workers keep their copy across
epochs, so a plain attribute set in the main process (``set_epoch``) never reaches
them. :class:`SharedEpochs` keeps, for each *stream* (stream 0: the main process;
stream ``1 + k``: worker ``k``), the epoch its next iteration follows and the batch it
starts at, in a small block of shared memory created in the main process. Workers
read their slot when an iteration starts and move it to the next epoch when it ends;
``set(epoch, position)`` in the main process rewrites every slot.

A stream of worker ``k`` among ``n`` reads batches ``position + k``,
``position + k + n``, ...: a DataLoader takes one batch from each worker in turn, so
the loader yields batches ``position, position + 1, ...``, the order of one process.

Framework-free: torch, Keras and JAX loaders can all use it.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Mapping
from multiprocessing.context import get_spawning_popen
from typing import Any

from .._validation import is_int
from ..errors import StateError, StateTypeError

__all__ = ["MAX_WORKERS", "SharedEpochs", "check_loader_state", "stream_indices"]

#: Worker processes one dataset object can follow (slots are 16 bytes each).
MAX_WORKERS = 256


class SharedEpochs:
    """Next epoch and start position of each stream, in shared memory.

    Parameters
    ----------
    epoch : int
        The epoch every stream starts at.

    Examples
    --------
    >>> epochs = SharedEpochs(0)
    >>> epochs.get(0)
    (0, 0)
    >>> epochs.finish(0, 0)  # stream 0 finished epoch 0
    >>> epochs.get(0), epochs.latest()
    ((1, 0), 1)
    >>> epochs.set(5, 12)
    >>> epochs.get(3)
    (5, 12)
    """

    def __init__(self, epoch: int) -> None:
        self._slots: Any = multiprocessing.RawArray("q", 2 * (1 + MAX_WORKERS))
        self.set(epoch, 0)

    def set(self, epoch: int, position: int) -> None:
        """Every stream's next iteration follows ``epoch`` from batch ``position``."""
        slots = self._slots
        for s in range(1 + MAX_WORKERS):
            slots[2 * s] = epoch
            slots[2 * s + 1] = position

    def get(self, stream: int) -> tuple[int, int]:
        """``(epoch, position)`` of the next iteration of ``stream``."""
        return int(self._slots[2 * stream]), int(self._slots[2 * stream + 1])

    def finish(self, stream: int, epoch: int) -> None:
        """``stream`` finished ``epoch``: its next iteration follows ``epoch + 1``."""
        self._slots[2 * stream] = epoch + 1
        self._slots[2 * stream + 1] = 0

    def latest(self) -> int:
        """The furthest epoch any stream has reached."""
        return max(int(self._slots[2 * s]) for s in range(1 + MAX_WORKERS))

    def __getstate__(self) -> dict[str, Any]:
        # to a worker being started: the shared block itself; anywhere else (a
        # pickle on disk, a copy): the values, in a block of the copy's own
        if get_spawning_popen() is not None:
            return {"slots": self._slots}
        return {"values": list(self._slots)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "slots" in state:
            self._slots = state["slots"]
            return
        self._slots = multiprocessing.RawArray("q", state["values"])


def stream_indices(start: int, n_batches: int, worker: int, n_workers: int) -> range:
    """Batches stream ``worker`` of ``n_workers`` reads, from global batch ``start``."""
    return range(start + worker, n_batches, n_workers)


def check_loader_state(
    state: Any, *, n_batches: int, seed: int | None
) -> tuple[int, int]:
    """``(epoch, position)`` of a loader state, every field checked first.

    Raises
    ------
    xbatcher.errors.StateTypeError
        ``state`` is not a mapping, or a field has the wrong type.
    xbatcher.errors.StateError
        A field is missing or does not match this loader (batches per epoch, seed).
    """
    if not isinstance(state, Mapping):
        raise StateTypeError(
            f"a loader state must be the dict state_dict() returned; got "
            f"{type(state).__name__}. Pass the dict (e.g. json.load(file))."
        )
    missing = [
        k for k in ("epoch", "position", "num_batches", "seed") if k not in state
    ]
    if missing:
        raise StateError(
            f"loader state lacks {missing}; got keys {sorted(state)}. Pass the dict "
            "that state_dict() returned."
        )
    for key in ("epoch", "position", "num_batches"):
        value = state[key]
        if not is_int(value) or value < 0:
            raise StateTypeError(
                f"loader state[{key!r}] must be an int >= 0; got {value!r}. Pass the "
                "dict that state_dict() returned, unchanged."
            )
    if state["num_batches"] != n_batches:
        raise StateError(
            f"loader state has num_batches={state['num_batches']} (checkpoint) but "
            f"this loader has {n_batches} (current): it was saved for other data, "
            "batch size or sharding. Build the loader as it was when saved."
        )
    if state["seed"] != seed:
        raise StateError(
            f"loader state has seed={state['seed']!r} (checkpoint) but this loader "
            f"has seed={seed!r} (current): the orders differ. Build the generator "
            "with the checkpoint's seed."
        )
    return int(state["epoch"]), int(state["position"])
