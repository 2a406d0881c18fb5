"""The ``.batch`` accessor: ``ds.batch.generator(...)`` on Datasets and DataArrays."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import xarray as xr

from .generator import BatchGenerator

__all__ = ["BatchAccessor"]


@xr.register_dataarray_accessor("batch")
@xr.register_dataset_accessor("batch")
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

    def generator(
        self,
        input_dims: Mapping[Hashable, int],
        input_overlap: Mapping[Hashable, int] | None = None,
        batch_dims: Mapping[Hashable, int] | None = None,
        concat_input_dims: bool = False,
        preload_batch: bool = True,
        cache: Any = None,
        cache_preprocess: Any = None,
        **options: Any,
    ) -> BatchGenerator:
        """Return a :class:`BatchGenerator` over this object (same arguments)."""
        return BatchGenerator(
            self._obj,
            input_dims,
            input_overlap,
            batch_dims,
            concat_input_dims,
            preload_batch,
            cache,
            cache_preprocess,
            **options,
        )
