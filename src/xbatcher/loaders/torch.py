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

from types import ModuleType
from typing import Any

from ..errors import OptionalDependencyError, StateTypeError
from ..generator import BatchGenerator
from ._arrays import check_aligned, single_array
from ._epochs import SharedEpochs
from ._pairs import Names

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

# the framework-side modules import torch: after the check above
from ._torch_device import DevicePrefetcher, named_tensor, to_tensor  # noqa: E402
from ._torch_items import (  # noqa: E402
    Transform,
    TransformOn,
    as_tensor,
    check_epoch,
    item,
    pairs_for,
)
from ._torch_iterable import IterableDataset  # noqa: E402

__all__ = ["DevicePrefetcher", "IterableDataset", "MapDataset", "to_tensor"]

_named_tensor = named_tensor  # the accessors' entry point


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
        e = check_epoch(epoch)
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
            return self._legacyitem(idx)  # type: ignore[arg-type]
        values = self._pairs.read(self.epoch, idx)  # type: ignore[arg-type]
        return item(self._pairs, values, self._x_fn, self._y_fn)

    def _legacyitem(self, idx: int) -> Any:
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
