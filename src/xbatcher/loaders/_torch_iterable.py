"""The iterable PyTorch dataset: exactly once across workers and ranks, resumable.

Private to :mod:`xbatcher.loaders.torch`, which re-exports :class:`IterableDataset`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import torch

from ..errors import SchemaError
from ..generator import BatchGenerator
from ._epochs import MAX_WORKERS, SharedEpochs, check_loader_state, stream_indices
from ._pairs import BatchPairs, Names
from ._torch_items import Transform, TransformOn, check_epoch, item, pairs_for

__all__ = ["IterableDataset"]

# batches a stream reads at once (about this much output): more per read is faster,
# but the consumer waits for the whole read; a worker is asked for only a few batches
# ahead (prefetch_factor), so its reads are kept short
_GROUP_BYTES = 4 * 2**20
_WORKER_GROUP_BYTES = 2**20
_MAX_GROUP = 64


class IterableDataset(torch.utils.data.IterableDataset[Any]):
    """Iterable PyTorch dataset: one epoch of batches per iteration.

    Every batch comes exactly once per epoch across DataLoader workers (worker ``k``
    of ``n`` reads batches ``k, k + n, ...``, so the loader yields them in the order
    of one process) and across DDP ranks (each rank gets a disjoint share of the
    samples, ``BatchGenerator.shard``). Each iteration follows the next epoch, also
    in persistent workers; :meth:`set_epoch` chooses one.

    Parameters
    ----------
    X_generator : xbatcher.BatchGenerator
        Batches of inputs (and of targets, with ``targets=``).
    y_generator : xbatcher.BatchGenerator, optional
        Batches of targets, aligned with ``X_generator``.
    inputs, targets, as_dict, channel_axis
        Which variables form ``x`` and ``y``, and how (see ``docs/loaders.md``).
    transform, target_transform : callable, optional
        Applied to ``x`` / ``y`` of each item: the tensor (``transform_on="tensors"``,
        the default) or the xarray batch (``"xarray"``).
    transform_on : {"tensors", "xarray"}
        What the transforms take.
    rank, world_size : int, optional
        This process's DDP rank and the number of ranks; default: from
        ``torch.distributed`` when it is initialised, else one rank.
    even : {"pad", "drop"}
        How ranks get equal shares (see ``BatchGenerator.shard``).

    Raises
    ------
    xbatcher.errors.SchemaError
        If the two generators are not aligned, or a selection is invalid.
    """

    def __init__(
        self,
        X_generator: BatchGenerator,
        y_generator: BatchGenerator | None = None,
        *,
        inputs: Names = None,
        targets: Names = None,
        as_dict: bool = False,
        channel_axis: int = 1,
        transform: Transform | None = None,
        target_transform: Transform | None = None,
        transform_on: TransformOn = "tensors",
        rank: int | None = None,
        world_size: int | None = None,
        even: Literal["pad", "drop"] = "pad",
    ) -> None:
        self.X_generator: BatchGenerator | None = X_generator
        self.y_generator = y_generator
        self._pairs, self._x_fn, self._y_fn = pairs_for(
            X_generator,
            y_generator,
            transform,
            target_transform,
            transform_on,
            inputs=inputs,
            targets=targets,
            as_dict=as_dict,
            channel_axis=channel_axis,
        )
        if (rank is None) != (world_size is None):
            raise SchemaError(
                f"pass both rank= and world_size= or neither (then torch.distributed "
                f"gives them); got rank={rank!r}, world_size={world_size!r}."
            )
        if rank is not None and world_size is not None:
            self._pairs.with_shard(rank, world_size, even)  # checks the values
        self._ranks = None if rank is None else (rank, world_size)
        self._even = even
        self._auto_ranks = _distributed_ranks()
        self._shared = SharedEpochs(X_generator.epoch)
        self._pending: tuple[int, int] | None = None  # load_state_dict, this process
        self._live: tuple[int, int] | None = None  # (epoch, next batch) of iteration
        self._sharded: tuple[tuple[int, int], BatchPairs] | None = None

    # ------------------------------------------------------------------ ranks
    def ranks(self) -> tuple[int, int]:
        """``(rank, world_size)`` this dataset reads for."""
        if self._ranks is not None:
            return self._ranks  # type: ignore[return-value]
        found = _distributed_ranks()
        if found is not None:
            self._auto_ranks = found
        return self._auto_ranks or (0, 1)

    def _rank_pairs(self) -> BatchPairs:
        ranks = self.ranks()
        if ranks == (0, 1):
            return self._pairs
        if self._sharded is None or self._sharded[0] != ranks:
            self._sharded = (ranks, self._pairs.with_shard(*ranks, self._even))
        return self._sharded[1]

    def __len__(self) -> int:
        """Batches per epoch on this rank (all workers together)."""
        return len(self._rank_pairs())

    # ------------------------------------------------------------------ epochs
    @property
    def epoch(self) -> int:
        """The epoch the next iteration follows (the furthest any worker reached)."""
        return self._shared.latest()

    def set_epoch(self, epoch: int, position: int = 0) -> None:
        """The next iteration follows ``epoch`` from batch ``position`` (in this
        process and in every DataLoader worker, persistent ones too).

        ``position`` resumes a plain ``DataLoader`` after that many batches of the
        epoch (``DataLoader(batch_size=None)``: one batch per step).
        """
        e = check_epoch(epoch)
        n = len(self)
        if not isinstance(position, int) or not 0 <= position <= n:
            raise SchemaError(
                f"position must be an int in 0 .. {n} (batches of the epoch already "
                f"trained on); got {position!r}."
            )
        self._shared.set(e, position)
        self._pending = None
        if self.X_generator is not None:
            for g in (self.X_generator, self.y_generator):
                if g is not None:
                    g.set_epoch(e)

    def state_dict(self) -> dict[str, Any]:
        """Where this process's stream stands: ``{"epoch", "position", ...}``.

        In a DataLoader worker (torchdata's ``StatefulDataLoader`` asks there) the
        position is the next batch that worker reads; in the main process it is the
        next batch of the epoch.
        """
        info = torch.utils.data.get_worker_info()
        worker = 0 if info is None else info.id
        if self._live is not None:
            epoch, position = self._live
        elif self._pending is not None:
            epoch, position = self._pending
        else:
            epoch, start = self._shared.get(_stream(info))
            position = start + worker
        pairs = self._rank_pairs()
        return {
            "epoch": epoch,
            "position": position,
            "num_batches": len(pairs),
            "seed": pairs.seed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next iteration yields exactly the batches not yet yielded.

        Raises
        ------
        xbatcher.errors.StateError
            A missing field, or a state of another loader (batches, seed).
        """
        pairs = self._rank_pairs()
        epoch, position = check_loader_state(
            state, n_batches=len(pairs), seed=pairs.seed
        )
        if torch.utils.data.get_worker_info() is None:
            self.set_epoch(epoch, min(position, len(pairs)))
        else:  # this worker's own next batch
            self._pending = (epoch, position)

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[Any]:
        info = torch.utils.data.get_worker_info()
        if info is not None and info.num_workers > MAX_WORKERS:
            raise SchemaError(
                f"num_workers={info.num_workers} exceeds the {MAX_WORKERS} workers "
                "an xbatcher dataset follows; use fewer workers."
            )
        pairs = self._rank_pairs()
        stream = _stream(info)
        worker, n_workers = (0, 1) if info is None else (info.id, info.num_workers)
        if self._pending is not None:
            epoch, first = self._pending
            self._pending = None
            indices = range(first, len(pairs), n_workers)
        else:
            epoch, start = self._shared.get(stream)
            indices = stream_indices(start, len(pairs), worker, n_workers)
        self._live = (epoch, indices.start)
        step = _group(pairs, _GROUP_BYTES if info is None else _WORKER_GROUP_BYTES)
        return self._batches(pairs, epoch, indices, stream, step)

    def _batches(
        self, pairs: BatchPairs, epoch: int, indices: range, stream: int, step: int
    ) -> Iterator[Any]:
        for k in range(0, len(indices), step):
            group = indices[k : k + step]
            for i, values in zip(group, pairs.read_indices(epoch, group), strict=True):
                self._live = (epoch, i + indices.step)
                yield item(pairs, values, self._x_fn, self._y_fn)
        self._live = None
        self._shared.finish(stream, epoch)
        if stream == 0:  # one process: every stream moves on, and the generators too
            self._shared.set(epoch + 1, 0)
            for g in (self.X_generator, self.y_generator):
                if g is not None:
                    g.set_epoch(max(g.epoch, epoch + 1))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_auto_ranks"] = self.ranks()  # the workers cannot ask torch.distributed
        state["X_generator"] = state["y_generator"] = None  # the pairs read
        state["_live"] = None
        return state


def _stream(info: Any) -> int:
    return 0 if info is None else 1 + int(info.id)


def _group(pairs: BatchPairs, budget: int) -> int:
    """Batches a stream reads at once: about ``budget`` bytes of output."""
    nbytes = max(1, pairs.x.engine.batch_nbytes)
    return int(max(1, min(_MAX_GROUP, budget // nbytes)))


def _distributed_ranks() -> tuple[int, int] | None:
    """``(rank, world_size)`` of an initialised ``torch.distributed``, else None."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return None
