"""PyTorch datasets over batch generators (the ``xbatcher.loaders.torch`` of 0.4).

``MapDataset`` and ``IterableDataset`` take the same arguments as in xbatcher 0.4. Each
item is one batch of the generator(s), so use them with ``DataLoader(batch_size=None)``.
With the default ``transform`` the tensors are built from the array fast path
(``bgen.arrays[i]``, fresh arrays wrapped without a copy) and hold the values of
``to_tensor(bgen[i])``; a custom ``transform`` receives the xarray batch, as in 0.4.

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
from typing import Any

import xarray as xr
from numpy.typing import NDArray

from ..errors import OptionalDependencyError
from ..generator import BatchGenerator
from ._arrays import as_dataarray, check_aligned, native_array, single_array

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

__all__ = ["IterableDataset", "MapDataset", "to_tensor"]

T_DataArrayOrSet = xr.DataArray | xr.Dataset
Transform = Callable[[T_DataArrayOrSet], Any]


def to_tensor(xr_obj: T_DataArrayOrSet) -> torch.Tensor:
    """Copy a DataArray, or a Dataset with one data variable, into a ``torch.Tensor``.

    Parameters
    ----------
    xr_obj : xarray.DataArray or xarray.Dataset
        A batch; dask-backed data is computed.

    Returns
    -------
    torch.Tensor
        A new tensor (not sharing memory with ``xr_obj``) of the same shape, dim order,
        dtype and values.

    Raises
    ------
    xbatcher.errors.SchemaError
        For a Dataset with several data variables.
    """
    return torch.tensor(native_array(as_dataarray(xr_obj).to_numpy()))


def _array_tensor(batch: NDArray[Any] | dict[Hashable, NDArray[Any]]) -> torch.Tensor:
    """A tensor over a fresh ``bgen.arrays`` batch (no copy when torch can share it)."""
    array = native_array(single_array(batch))
    if not array.flags.writeable:  # torch cannot share read-only memory
        array = array.copy()
    return torch.from_numpy(array)


def _fast(generator: BatchGenerator, transform: Transform) -> bool:
    """Whether ``transform(generator[i])`` equals ``_array_tensor(generator.arrays[i])``.

    True for the default transform over a :class:`BatchGenerator` without a batch cache
    (a cache's ``cache_preprocess`` may change the xarray batches).
    """
    return (
        transform is to_tensor
        and isinstance(generator, BatchGenerator)
        and generator.cache is None
    )


def _tensors_at(pairs: list[tuple[BatchGenerator, Transform]], idx: int) -> list[Any]:
    """``transform(generator[idx])`` for each pair; lazy batches computed together."""
    out: list[Any] = [None] * len(pairs)
    lazy: dict[int, T_DataArrayOrSet] = {}
    for k, (generator, transform) in enumerate(pairs):
        if _fast(generator, transform):
            out[k] = _array_tensor(generator.arrays[idx])
        else:
            lazy[k] = generator[idx]
    if lazy:
        batches = dask.compute(*lazy.values()) if dask is not None else lazy.values()
        for k, batch in zip(lazy, batches, strict=True):
            out[k] = pairs[k][1](batch)
    return out


def _iter_tensors(generator: BatchGenerator) -> Iterator[torch.Tensor]:
    """One epoch of ``generator`` as tensors (iteration reads many batches at once)."""
    if _fast(generator, to_tensor):
        return map(_array_tensor, generator.arrays)
    return map(to_tensor, generator)


class MapDataset(torch.utils.data.Dataset[Any]):
    """Map-style PyTorch dataset: item ``i`` is batch ``i`` of the generator(s).

    Parameters
    ----------
    X_generator : xbatcher.BatchGenerator
        Batches of inputs.
    y_generator : xbatcher.BatchGenerator, optional
        Batches of targets, aligned with ``X_generator`` (same number of batches).
    transform, target_transform : callable
        Applied to the xarray batch of ``X_generator`` / ``y_generator``; the default,
        :func:`to_tensor`, takes the array fast path instead (same values).

    Raises
    ------
    xbatcher.errors.SchemaError
        If the two generators give different numbers of batches.
    """

    def __init__(
        self,
        X_generator: BatchGenerator,
        y_generator: BatchGenerator | None = None,
        transform: Transform = to_tensor,
        target_transform: Transform = to_tensor,
    ) -> None:
        if y_generator is not None:
            check_aligned(X_generator, y_generator)
        self.X_generator = X_generator
        self.y_generator = y_generator
        self.transform = transform
        self.target_transform = target_transform

    def __len__(self) -> int:
        return len(self.X_generator)

    def __getitem__(self, idx: int | torch.Tensor) -> Any:
        """Batch ``idx`` (an int or a one-element tensor): ``x`` or ``(x, y)``."""
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
        pairs: list[tuple[BatchGenerator, Transform]] = [
            (self.X_generator, self.transform)
        ]
        if self.y_generator is not None:
            pairs.append((self.y_generator, self.target_transform))
        out = _tensors_at(pairs, idx)  # type: ignore[arg-type]
        return out[0] if len(out) == 1 else tuple(out)


class IterableDataset(torch.utils.data.IterableDataset[tuple[torch.Tensor, ...]]):
    """Iterable PyTorch dataset: one epoch of ``(x, y)`` tensor batches.

    In the main process it iterates both generators (an epoch each, so a shuffled
    generator moves to its next epoch). Under ``DataLoader(num_workers=n)`` worker
    ``k`` yields batches ``k, k + n, k + 2n, ...`` of the current epoch, so every batch
    comes exactly once across the workers.

    Parameters
    ----------
    X_generator, y_generator : xbatcher.BatchGenerator
        Batches of inputs and of targets, with the same number of batches.

    Raises
    ------
    xbatcher.errors.SchemaError
        If the two generators give different numbers of batches.
    """

    def __init__(
        self, X_generator: BatchGenerator, y_generator: BatchGenerator
    ) -> None:
        check_aligned(X_generator, y_generator)
        self.X_generator = X_generator
        self.y_generator = y_generator

    def __len__(self) -> int:
        return len(self.X_generator)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        info = torch.utils.data.get_worker_info()
        if info is None:
            xs, ys = _iter_tensors(self.X_generator), _iter_tensors(self.y_generator)
            for x in xs:
                yield x, next(ys)
            next(ys, None)  # let the targets' epoch end too
            return
        pairs: list[tuple[BatchGenerator, Transform]] = [
            (self.X_generator, to_tensor),
            (self.y_generator, to_tensor),
        ]
        for idx in range(info.id, len(self), info.num_workers):
            yield tuple(_tensors_at(pairs, idx))


# ---------------------------------------------------------------- accessor support
_NAMED_TENSORS = hasattr(torch.Tensor, "names")


class _LabelledTensor(torch.Tensor):
    """A tensor that carries its dim names as ``.names`` (metadata only).

    torch 2.13 removed named tensors; 0.4 code reads ``.names`` from the accessor's
    tensors. Operations on it return plain tensors (torch-function dispatch is off).
    """

    names: tuple[Hashable | None, ...]


_disabled = getattr(torch._C, "_disabled_torch_function_impl", None)
if _disabled is not None:  # else operations keep the subclass: slower, same values
    _LabelledTensor.__torch_function__ = _disabled  # type: ignore[method-assign]


def _named_tensor(obj: T_DataArrayOrSet, *, named: bool) -> torch.Tensor:
    """:func:`to_tensor` of ``obj`` with dim names (``named``) or none, as torch allows.

    With torch's named tensors the names are real ones; without them the tensor is a
    :class:`_LabelledTensor` carrying the names.
    """
    da = as_dataarray(obj)
    tensor = to_tensor(da)
    names: tuple[Hashable | None, ...] = (
        tuple(da.dims) if named else (None,) * tensor.ndim
    )
    if _NAMED_TENSORS:
        return tensor.refine_names(*names) if named else tensor  # type: ignore[attr-defined]
    labelled = tensor.as_subclass(_LabelledTensor)
    labelled.names = names
    return labelled
