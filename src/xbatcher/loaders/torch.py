"""PyTorch datasets over batch generators (the ``xbatcher.loaders.torch`` of 0.4).

``MapDataset`` and ``IterableDataset`` take the arguments of xbatcher 0.4 plus
keyword-only ones (``inputs=``, ``targets=``, ``as_dict=``, ``transform_on=``, ranks).
Each item is one batch, so use them with ``DataLoader(batch_size=None)``. Both read
through a :class:`~xbatcher.loaders._pairs.BatchPairs` (the epoch plan and
``read_batch``): tensors wrap the gathered arrays without a copy.

* ``IterableDataset`` gives every batch exactly once per epoch across DataLoader
  workers and DDP ranks (rank and world size from ``torch.distributed``, or
  ``rank=`` / ``world_size=``), a new order each epoch (also with persistent
  workers: ``set_epoch`` and the end of each epoch reach the workers through shared
  memory), and resumes mid-epoch: ``state_dict`` / ``load_state_dict`` for torchdata's
  ``StatefulDataLoader``, ``set_epoch(epoch, position=step)`` for a plain
  ``DataLoader``.
* ``MapDataset`` item ``i`` is batch ``i`` of the current epoch (``set_epoch``).
* :class:`DevicePrefetcher` moves batches to the GPU on a side stream.

Importing this module imports torch; without it, it raises an ``ImportError`` naming
the extra to install.

Examples
--------
>>> import numpy as np, xarray as xr, torch, xbatcher
>>> from xbatcher.loaders.torch import MapDataset
>>> da = xr.DataArray(np.arange(40.0).reshape(20, 2), dims=("sample", "feature"))
>>> dataset = MapDataset(xbatcher.BatchGenerator(da, {"sample": 5}))
>>> loader = torch.utils.data.DataLoader(dataset, batch_size=None)
>>> [tuple(x.shape) for x in loader]
[(5, 2), (5, 2), (5, 2), (5, 2)]
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from types import ModuleType
from typing import Any, Literal

import numpy as np
import xarray as xr

from ..errors import OptionalDependencyError, SchemaError
from ..generator import BatchGenerator
from ._arrays import check_aligned, native_array, single_array
from ._epochs import MAX_WORKERS, SharedEpochs, check_loader_state, stream_indices
from ._pairs import BatchPairs, Names

try:
    import torch
except ImportError as exc:
    raise OptionalDependencyError(
        "xbatcher.loaders.torch needs PyTorch, which is not installed. Please "
        'install PyTorch to proceed: pip install "xbatcher[torch]"'
    ) from exc

dask: ModuleType | None
try:
    import dask
except ImportError:  # batches are then loaded one by one by the transform
    dask = None

from ._torch_device import DevicePrefetcher, named_tensor, to_tensor  # noqa: E402

__all__ = ["DevicePrefetcher", "IterableDataset", "MapDataset", "to_tensor"]

T_DataArrayOrSet = xr.DataArray | xr.Dataset
Transform = Callable[[Any], Any]
TransformOn = Literal["xarray", "tensors"]
_named_tensor = named_tensor  # the accessors' entry point
# batches a stream reads at once (about this much output): more per read is faster,
# but the consumer waits for the whole read; a worker is asked for only a few batches
# ahead (prefetch_factor), so its reads are kept short
_GROUP_BYTES = 4 * 2**20
_WORKER_GROUP_BYTES = 2**20
_MAX_GROUP = 64


def as_tensor(value: Any) -> Any:
    """``value`` with numpy arrays (also inside dicts) as tensors sharing memory."""
    if isinstance(value, np.ndarray):
        array = native_array(value)
        if not array.flags.writeable:  # torch cannot share read-only memory
            array = array.copy()
        return torch.from_numpy(array)
    if isinstance(value, dict):
        return {k: as_tensor(v) for k, v in value.items()}
    return value


def _pairs_for(
    X_generator: BatchGenerator,
    y_generator: BatchGenerator | None,
    transform: Transform | None,
    target_transform: Transform | None,
    transform_on: str,
    **kwargs: Any,
) -> tuple[BatchPairs, Transform | None, Transform | None]:
    """The pairs to read, and the tensor transforms to apply after reading."""
    if transform_on not in ("xarray", "tensors"):
        raise SchemaError(
            f"transform_on must be 'xarray' (the transform takes the xarray batch, "
            f"as in 0.4) or 'tensors' (it takes the tensor: faster); got "
            f"{transform_on!r}."
        )
    on_xarray = transform_on == "xarray"
    x_fn = None if transform is to_tensor else transform
    y_fn = None if target_transform is to_tensor else target_transform
    pairs = BatchPairs(
        X_generator,
        y_generator,
        transform=x_fn if on_xarray else None,
        target_transform=y_fn if on_xarray else None,
        transform_on="xarray",
        **kwargs,
    )
    if on_xarray:
        return pairs, None, None
    return pairs, x_fn, y_fn


def _item(
    pairs: BatchPairs,
    values: tuple[Any, ...] | dict[Hashable, Any],
    x_fn: Transform | None,
    y_fn: Transform | None,
) -> Any:
    """A read item as tensors: ``x``, ``(x, y)`` or a dict."""
    if isinstance(values, dict):
        out = as_tensor(values)
        if x_fn is not None or y_fn is not None:
            n_x = len(pairs.x.names or (pairs.x.key,))
            keys = list(out)
            xs = {k: out[k] for k in keys[:n_x]}
            ys = {k: out[k] for k in keys[n_x:]}
            out = {
                **(xs if x_fn is None else x_fn(xs)),
                **(ys if y_fn is None or not ys else y_fn(ys)),
            }
        return out
    tensors = [as_tensor(v) for v in values]
    if x_fn is not None:
        tensors[0] = x_fn(tensors[0])
    if y_fn is not None and len(tensors) > 1:
        tensors[1] = y_fn(tensors[1])
    return tensors[0] if len(tensors) == 1 else tuple(tensors)


class MapDataset(torch.utils.data.Dataset[Any]):
    """Map-style PyTorch dataset: item ``i`` is batch ``i`` of the current epoch.

    Parameters
    ----------
    X_generator : xbatcher.BatchGenerator
        Batches of inputs (and of targets, with ``targets=``).
    y_generator : xbatcher.BatchGenerator, optional
        Batches of targets, aligned with ``X_generator`` (same number of batches,
        same sampler).
    transform, target_transform : callable
        Applied to ``x`` / ``y`` of each item: to the xarray batch (as in 0.4; the
        default, :func:`to_tensor`, takes the array fast path instead, same values),
        or to the tensor with ``transform_on="tensors"``.
    inputs, targets, as_dict, channel_axis
        Which variables form ``x`` and ``y``, and how (see
        :class:`~xbatcher.loaders._pairs.BatchPairs` and ``docs/loaders.md``).
    transform_on : {"xarray", "tensors"}
        What the transforms take.

    Raises
    ------
    xbatcher.errors.SchemaError
        If the two generators are not aligned, or a selection is invalid.

    Notes
    -----
    Items follow ``self.epoch``: the epoch given to :meth:`set_epoch` (it reaches
    DataLoader workers, persistent ones too), else the generator's. The DataLoader's
    sampler decides the order in which items are asked for.
    """

    def __init__(
        self,
        X_generator: BatchGenerator,
        y_generator: BatchGenerator | None = None,
        transform: Transform = to_tensor,
        target_transform: Transform = to_tensor,
        *,
        inputs: Names = None,
        targets: Names = None,
        as_dict: bool = False,
        channel_axis: int = 1,
        transform_on: TransformOn = "xarray",
    ) -> None:
        self.X_generator: BatchGenerator | None = X_generator
        self.y_generator = y_generator
        self.transform = transform
        self.target_transform = target_transform
        # 0.4's batch cache (cache=) is read through the generator, as 0.4 did
        self._legacy = (
            inputs is None
            and targets is None
            and not as_dict
            and transform_on == "xarray"
            and any(
                g is not None and g.cache is not None
                for g in (X_generator, y_generator)
            )
        )
        if self._legacy:
            if y_generator is not None:
                check_aligned(X_generator, y_generator)
            return
        self._pairs, self._x_fn, self._y_fn = _pairs_for(
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
        self._shared = SharedEpochs(-1)  # -1: follow the generator's epoch
        self._epoch_when_copied = X_generator.epoch

    @property
    def epoch(self) -> int:
        """The epoch whose order items follow."""
        if self._legacy:
            assert self.X_generator is not None
            return self.X_generator.epoch
        chosen = self._shared.get(0)[0]
        if chosen >= 0:
            return chosen
        if self.X_generator is not None:
            return self.X_generator.epoch
        return self._epoch_when_copied

    def set_epoch(self, epoch: int) -> None:
        """Items follow ``epoch`` (in this process and in every DataLoader worker)."""
        e = _check_epoch(epoch)
        if self._legacy:
            for g in (self.X_generator, self.y_generator):
                if g is not None:
                    g.set_epoch(e)
            return
        self._shared.set(e, 0)

    def state_dict(self) -> dict[str, Any]:
        """``{"epoch": ...}``: the DataLoader's sampler state holds the position."""
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Follow the checkpoint's epoch (see :meth:`state_dict`)."""
        if not isinstance(state, dict) or "epoch" not in state:
            from ..errors import StateTypeError

            raise StateTypeError(
                f"a MapDataset state is the dict state_dict() returned, with an "
                f"'epoch'; got {state!r}. Pass that dict."
            )
        self.set_epoch(state["epoch"])

    def __len__(self) -> int:
        if self._legacy:
            assert self.X_generator is not None
            return len(self.X_generator)
        return len(self._pairs)

    def __getitem__(self, idx: int | torch.Tensor) -> Any:
        """Batch ``idx`` (an int or a one-element tensor): ``x``, ``(x, y)`` or a dict."""
        if torch.is_tensor(idx):
            value = idx.tolist()
            if isinstance(value, list):
                if len(value) != 1:
                    raise NotImplementedError(
                        f"{type(self).__name__}[idx] takes a single batch index; got "
                        f"a tensor of {len(value)}. Each item is already a batch: "
                        f"use DataLoader(dataset, batch_size=None)."
                    )
                value = value[0]
            idx = value
        if self._legacy:
            return self._legacy_item(idx)  # type: ignore[arg-type]
        values = self._pairs.read(self.epoch, idx)  # type: ignore[arg-type]
        return _item(self._pairs, values, self._x_fn, self._y_fn)

    def _legacy_item(self, idx: int) -> Any:
        assert self.X_generator is not None
        pairs: list[tuple[BatchGenerator, Transform]] = [
            (self.X_generator, self.transform)
        ]
        if self.y_generator is not None:
            pairs.append((self.y_generator, self.target_transform))
        out: list[Any] = []
        batches = [g[idx] for g, _ in pairs]
        if dask is not None:
            batches = list(dask.compute(*batches))
        for (g, fn), batch in zip(pairs, batches, strict=True):
            if fn is to_tensor and g.cache_preprocess is None:
                out.append(as_tensor(single_array(g.arrays[idx])))
            else:
                out.append(fn(batch))
        return out[0] if len(out) == 1 else tuple(out)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if not self._legacy:  # workers read through the pairs: no dataset travels
            state["_epoch_when_copied"] = self.epoch
            state["X_generator"] = state["y_generator"] = None
        return state


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
        self._pairs, self._x_fn, self._y_fn = _pairs_for(
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
        e = _check_epoch(epoch)
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
                yield _item(pairs, values, self._x_fn, self._y_fn)
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


def _check_epoch(epoch: Any) -> int:
    from .._validation import check_int

    return check_int(epoch, "epoch", minimum=0, fix="Epochs are numbered 0, 1, 2, ...")
