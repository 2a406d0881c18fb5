"""Per-sample facts computed once over the whole source, vectorised.

:func:`valid_samples` finds the samples whose window holds no NaN (in chosen
variables) and lies inside a boolean mask, with windowed sums along each sliced dim
(dask-friendly, never one read per sample). :func:`chunk_labels` gives each sample the
storage chunk its window starts in, for the chunk-aware shuffle.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from .errors import DimensionError, SchemaError
from .schema import BatchSchema
from .sources import Source

__all__ = ["chunk_labels", "valid_samples"]


def _window_counts(bad: xr.DataArray, schema: BatchSchema) -> xr.DataArray:
    """Number of bad points in each sample's window, on the sample grid."""
    counts = bad.astype(np.int32)
    for w in schema.sliced:
        if w.dim not in counts.dims:
            continue
        k = np.arange(w.n_windows, dtype=np.int64)
        ends = w.starts(k) + w.window - 1
        summed = counts.rolling({w.dim: w.window}).sum() if w.window > 1 else counts
        counts = summed.isel({w.dim: xr.DataArray(ends, dims=(w.dim,))}).drop_vars(
            [w.dim], errors="ignore"
        )
    return counts


def valid_samples(
    data: xr.Dataset,
    schema: BatchSchema,
    *,
    skip_nan: str | Sequence[str] | None = None,
    mask: str | xr.DataArray | None = None,
) -> NDArray[np.int64]:
    """Sample numbers (sorted) whose window has no NaN and is True in ``mask``."""
    names = [skip_nan] if isinstance(skip_nan, str) else list(skip_nan or [])
    bad_parts: list[xr.DataArray] = []
    for name in names:
        if name not in data.data_vars:
            raise DimensionError(
                f"skip_nan names {name!r}, which is not a data variable; variables are "
                f"{list(data.data_vars)}."
            )
        bad_parts.append(data[name].isnull())
    if mask is not None:
        m = data[mask] if isinstance(mask, str) else mask
        if isinstance(mask, str) and mask not in data.variables:
            raise DimensionError(f"mask {mask!r} is not a variable of the dataset.")
        if m.dtype != bool:
            raise SchemaError(
                f"mask must be a boolean variable; got dtype {m.dtype}. Use e.g. "
                "mask=ds.land_fraction > 0.5."
            )
        extra = [d for d in m.dims if d not in dict(schema.sizes)]
        if extra:
            raise SchemaError(f"mask has dims {extra} that the data does not have.")
        bad_parts.append(~m)
    grid_dims: list[Hashable] = [d for d, _ in schema.unsliced] + list(
        schema.sliced_dims
    )
    total: xr.DataArray | None = None
    for bad in bad_parts:
        counts = _window_counts(bad, schema)
        total = counts if total is None else total + counts
    assert total is not None
    for d, n in schema.unsliced:
        if d not in total.dims:
            total = total.expand_dims({d: n})
    for w in schema.sliced:
        if w.dim not in total.dims:
            total = total.expand_dims({w.dim: w.n_windows})
    values = np.asarray(total.transpose(*grid_dims).values)
    return np.flatnonzero(values.reshape(-1) == 0).astype(np.int64)


def chunk_labels(
    schema: BatchSchema,
    sources: Mapping[Hashable, Source],
    var_dims: Mapping[Hashable, tuple[Hashable, ...]],
    units: NDArray[np.int64] | None = None,
) -> NDArray[np.int64]:
    """Storage chunk (as one int) in which each unit's first window starts.

    Uses the chunked data variable with the most chunks; all units get label 0 for in-memory data.
    ``units`` defaults to every unit of the schema.
    """
    if units is None:
        units = np.arange(schema.n_units, dtype=np.int64)
    n = int(units.size)
    # the chunked data variable with the most chunks (then dims, then name): a
    # choice that does not depend on the order of the Dataset's variables
    name = min(
        (k for k, s in sources.items() if s.bounds is not None),
        key=lambda k: (
            -math.prod(sources[k].nchunks),
            -len(var_dims[k]),
            str(k),
        ),
        default=None,
    )
    if name is None:
        return np.zeros(n, dtype=np.int64)
    src = sources[name]
    assert src.bounds is not None
    dims = var_dims[name]
    starts = schema.unit_windows(units).starts
    if schema.mode == "concat":  # a batch expands to many windows: use its first
        counts = schema.unit_window_counts(units)
        first = np.concatenate([[0], np.cumsum(counts)[:-1]])
        starts = {d: s[first] for d, s in starts.items()}
    ids = []
    for d, b in zip(dims, src.bounds, strict=True):
        s = starts.get(d)
        ids.append(
            np.zeros(n, np.int64)
            if s is None
            else np.searchsorted(b, s, side="right") - 1
        )
    return np.ravel_multi_index(ids, src.nchunks).astype(np.int64)
