"""The ``.batch`` accessor: ``ds.batch.generator(...)`` on Datasets and DataArrays."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Literal

import xarray as xr

from .generator import BatchGenerator
from .sampling import Sampler

__all__ = ["BatchAccessor"]


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

    def generator(
        self,
        input_dims: Mapping[Hashable, int],
        input_overlap: Mapping[Hashable, int] | None = None,
        batch_dims: Mapping[Hashable, int] | None = None,
        concat_input_dims: bool = False,
        preload_batch: bool = True,
        cache: Any = None,
        cache_preprocess: Callable[[Any], Any] | None = None,
        *,
        keep_remainder: bool = False,
        batch_size: int | None = None,
        drop_last: bool = False,
        shuffle: bool | Literal["chunks"] = False,
        seed: int | None = None,
        sampler: Sampler | None = None,
        block_cache_bytes: int | str = "512MiB",
        resident_bytes: int | str | None = None,
        skip_nan: str | Sequence[str] | None = None,
        mask: str | xr.DataArray | None = None,
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
            keep_remainder=keep_remainder,
            batch_size=batch_size,
            drop_last=drop_last,
            shuffle=shuffle,
            seed=seed,
            sampler=sampler,
            block_cache_bytes=block_cache_bytes,
            resident_bytes=resident_bytes,
            skip_nan=skip_nan,
            mask=mask,
        )
