"""One array per batch: the framework-free half of every loader and accessor.

A framework tensor is built from one array. A DataArray batch gives its data; a
Dataset batch gives the data of its only variable (as the xbatcher 0.4 loaders did with
``to_array().squeeze("variable")``); a Dataset with several variables is refused with
an error that says how to choose one.
"""

from __future__ import annotations

from collections.abc import Hashable, Sized
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from ..errors import SchemaError

__all__ = ["as_dataarray", "check_aligned", "native_array", "single_array"]


def _only_variable(names: list[Hashable]) -> Hashable:
    """The single name of ``names``; a typed error for zero or several."""
    if len(names) != 1:
        raise SchemaError(
            f"a batch becomes one tensor only from a DataArray or a Dataset with one "
            f"data variable; this Dataset has {len(names)}: {names}. Batch one "
            f"variable (ds['x'] or ds[['x']]) or pass a transform= that combines them."
        )
    return names[0]


def as_dataarray(obj: xr.Dataset | xr.DataArray) -> xr.DataArray:
    """The DataArray of ``obj``: itself, or the only data variable of a Dataset.

    Parameters
    ----------
    obj : xarray.Dataset or xarray.DataArray
        A batch (or any xarray object).

    Returns
    -------
    xarray.DataArray
        ``obj`` if it is a DataArray, else the only data variable of the Dataset.

    Raises
    ------
    xbatcher.errors.SchemaError
        If a Dataset has no data variable or several.
    """
    if isinstance(obj, xr.DataArray):
        return obj
    return obj[_only_variable(list(obj.data_vars))]


def single_array(batch: NDArray[Any] | dict[Hashable, NDArray[Any]]) -> NDArray[Any]:
    """The one array of a ``bgen.arrays`` batch (see :func:`as_dataarray`)."""
    if isinstance(batch, dict):
        return batch[_only_variable(list(batch))]
    return batch


def native_array(array: Any) -> NDArray[Any]:
    """``array`` as numpy in the machine's byte order (frameworks refuse the other)."""
    out = np.asarray(array)
    if not out.dtype.isnative:
        out = out.astype(out.dtype.newbyteorder("="))
    return out


def check_aligned(X_generator: Sized, y_generator: Sized) -> None:
    """Refuse inputs and targets that give different numbers of batches."""
    nx, ny = len(X_generator), len(y_generator)
    if nx != ny:
        raise SchemaError(
            f"X_generator has {nx} batches but y_generator has {ny}; inputs and "
            f"targets must give the same number of batches. Build both generators "
            f"with the same input_dims, batch_dims and sampling arguments."
        )
