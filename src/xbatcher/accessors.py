"""Accessors on Datasets and DataArrays: ``.batch``, ``.torch`` and ``.tf``.

* ``obj.batch.generator(...)`` builds a :class:`BatchGenerator`;
* ``obj.torch.to_tensor()`` / ``obj.torch.to_named_tensor()`` copy a DataArray (or a
  Dataset with one data variable) into a ``torch.Tensor``;
* ``obj.tf.to_tensor()`` does the same into a ``tf.Tensor``.

Registering them imports neither torch nor TensorFlow: each method imports its
framework when called, and raises an ``ImportError`` naming the extra to install if it
is missing.
"""

from __future__ import annotations

import inspect
from typing import Any

import xarray as xr

from .generator import BatchGenerator
from .loaders._arrays import as_dataarray

__all__ = ["BatchAccessor", "TFAccessor", "TorchAccessor"]


def _as_xarray_dataarray(xr_obj: xr.Dataset | xr.DataArray) -> xr.DataArray:
    """The DataArray a tensor is made of: ``xr_obj`` or a Dataset's only variable.

    (0.4's private helper, which its tests import; see
    :func:`xbatcher.loaders._arrays.as_dataarray`.)
    """
    return as_dataarray(xr_obj)


@xr.register_dataarray_accessor("batch")  # type: ignore[no-untyped-call]
@xr.register_dataset_accessor("batch")  # type: ignore[no-untyped-call]
class BatchAccessor:
    """``obj.batch.generator(input_dims, ...)`` builds a :class:`BatchGenerator`.

    Examples
    --------
    >>> import numpy as np, xarray as xr, xbatcher
    >>> da = xr.DataArray(np.zeros((4, 10)), dims=("t", "x"))
    >>> len(da.batch.generator({"x": 5}))
    2
    """

    def __init__(self, xarray_obj: xr.Dataset | xr.DataArray) -> None:
        self._obj = xarray_obj

    def generator(self, *args: Any, **kwargs: Any) -> BatchGenerator:
        """Return a :class:`BatchGenerator` over this object (same arguments)."""
        return BatchGenerator(self._obj, *args, **kwargs)


# the accessor takes the generator's own arguments: its signature (what help() and
# IDEs show) is built from BatchGenerator's, never written out a second time
_signature = inspect.signature(BatchGenerator)
BatchAccessor.generator.__signature__ = _signature.replace(  # type: ignore[attr-defined]
    parameters=[
        inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        *list(_signature.parameters.values())[1:],  # all but ds
    ],
    return_annotation="BatchGenerator",
)


@xr.register_dataarray_accessor("torch")  # type: ignore[no-untyped-call]
@xr.register_dataset_accessor("torch")  # type: ignore[no-untyped-call]
class TorchAccessor:
    """``obj.torch.to_tensor()``: the data as a ``torch.Tensor`` (needs torch).

    Examples
    --------
    >>> import numpy as np, xarray as xr, xbatcher
    >>> da = xr.DataArray(np.arange(6, dtype="int32").reshape(2, 3), dims=("t", "x"))
    >>> t = da.torch.to_tensor()
    >>> t.dtype, t.tolist()
    (torch.int32, [[0, 1, 2], [3, 4, 5]])
    >>> da.torch.to_named_tensor().names
    ('t', 'x')
    """

    def __init__(self, xarray_obj: xr.Dataset | xr.DataArray) -> None:
        self._obj = xarray_obj

    def to_tensor(self) -> Any:
        """Copy the data (computed if lazy) into a ``torch.Tensor``, same dtype.

        ``.names`` of the tensor is all ``None``. A Dataset must have one data
        variable (``SchemaError`` otherwise).
        """
        from .loaders.torch import _named_tensor

        return _named_tensor(self._obj, named=False)

    def to_named_tensor(self) -> Any:
        """:meth:`to_tensor` with ``.names`` set to the dims of the data.

        torch 2.13 and later have no named tensors: the names are then carried as
        metadata by the tensor, and operations on it return plain tensors.
        """
        from .loaders.torch import _named_tensor

        return _named_tensor(self._obj, named=True)


@xr.register_dataarray_accessor("tf")  # type: ignore[no-untyped-call]
@xr.register_dataset_accessor("tf")  # type: ignore[no-untyped-call]
class TFAccessor:
    """``obj.tf.to_tensor()``: the data as a ``tf.Tensor`` (needs TensorFlow)."""

    def __init__(self, xarray_obj: xr.Dataset | xr.DataArray) -> None:
        self._obj = xarray_obj

    def to_tensor(self) -> Any:
        """Copy the data (computed if lazy) into a ``tf.Tensor``, same dtype.

        A Dataset must have one data variable (``SchemaError`` otherwise).
        """
        from .loaders.tensorflow import to_tensor

        return to_tensor(self._obj)
