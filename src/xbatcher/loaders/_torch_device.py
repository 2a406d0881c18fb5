"""Tensors on devices: the device prefetcher and the accessor's (named) tensors.

Private to :mod:`xbatcher.loaders.torch`, which re-exports :class:`DevicePrefetcher`.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator
from typing import Any

import torch
import xarray as xr

from ._arrays import as_dataarray, native_array

__all__ = ["DevicePrefetcher", "move_to", "named_tensor", "to_tensor"]


def to_tensor(xr_obj: xr.DataArray | xr.Dataset) -> torch.Tensor:
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


def move_to(batch: Any, device: torch.device, non_blocking: bool) -> Any:
    """``batch`` (a tensor, or tuples, lists and dicts of them) on ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, tuple | list):
        return type(batch)(move_to(b, device, non_blocking) for b in batch)
    if isinstance(batch, dict):
        return {k: move_to(v, device, non_blocking) for k, v in batch.items()}
    return batch


def _record(batch: Any, stream: Any) -> None:
    """Tell the caching allocator that ``stream`` uses the tensors of ``batch``."""
    if isinstance(batch, torch.Tensor):
        batch.record_stream(stream)
    elif isinstance(batch, tuple | list):
        for b in batch:
            _record(b, stream)
    elif isinstance(batch, dict):
        for b in batch.values():
            _record(b, stream)


class DevicePrefetcher:
    """Iterate ``loader`` with each batch on ``device``, the next one copied ahead.

    On a CUDA device the next batch is copied on a side stream while the model runs
    on the current one (use ``DataLoader(pin_memory=True)`` so the copy is
    asynchronous); the current stream waits for the copy before the batch is
    yielded. On any other device each batch is moved when it is yielded (on the CPU:
    nothing to do).

    Parameters
    ----------
    loader : iterable
        Yields tensors, or tuples, lists or dicts of tensors (a ``DataLoader``).
    device : torch.device or str, optional
        Where batches go; default ``"cuda"`` if available, else ``"cpu"``.
    non_blocking : bool
        Asynchronous copies (CUDA, from pinned memory).

    Examples
    --------
    >>> import torch
    >>> batches = [(torch.zeros(2), torch.ones(2))]
    >>> [x.device.type for x, _ in DevicePrefetcher(batches, "cpu")]
    ['cpu']
    """

    def __init__(
        self,
        loader: Iterable[Any],
        device: torch.device | str | None = None,
        *,
        non_blocking: bool = True,
    ) -> None:
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.loader = loader
        self.device = torch.device(device)
        self.non_blocking = non_blocking

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        if self.device.type != "cuda":
            for batch in self.loader:
                yield move_to(batch, self.device, self.non_blocking)
            return
        side = torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]
        current = torch.cuda.current_stream(self.device)
        batches = iter(self.loader)
        done = object()

        def copy_next() -> Any:
            batch = next(batches, done)
            if batch is done:
                return done
            with torch.cuda.stream(side):  # the copy runs while the model runs
                return move_to(batch, self.device, self.non_blocking)

        upcoming = copy_next()
        while upcoming is not done:
            current.wait_stream(side)  # the copy has landed before it is used
            batch = upcoming
            _record(batch, current)  # its memory is not reused while in use
            upcoming = copy_next()
            yield batch


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


def named_tensor(obj: xr.DataArray | xr.Dataset, *, named: bool) -> torch.Tensor:
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
