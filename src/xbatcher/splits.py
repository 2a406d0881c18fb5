"""Splits of a generator's data, and how its samples and weights carry over.

``BatchGenerator.split`` cuts the data along one dim into contiguous ranges
(:func:`split_bounds`) and builds each part from the same arguments on its range.
A part's samples are windows of the parent's data: :func:`parent_units` finds, for
each of them, the parent's unit with the same window, so per-unit weights follow
their samples into the parts. :func:`check_sampler_fits` refuses, at construction, a
sampler that cannot order a generator's units (weights of another length).
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from .errors import DimensionError, SchemaError
from .sampling import Sampler, split_ranges
from .schema import BatchSchema

__all__ = ["check_sampler_fits", "parent_units", "split_bounds"]


def split_bounds(
    ds: xr.Dataset | xr.DataArray,
    dim: Hashable,
    parts: Mapping[str, Any],
    gap: int = 0,
) -> dict[str, tuple[int, int]]:
    """Index ranges ``{name: (start, stop)}`` of ``split(dim, gap, **parts)``.

    Parts are all fractions / counts (:func:`~xbatcher.sampling.split_ranges`) or
    all label ranges (``slice(a, b)`` or ``(a, b)``, inclusive as in ``.sel``),
    which must not overlap.
    """
    if dim not in ds.dims:
        raise DimensionError(
            f"split dim {dim!r} is not a dimension of the data; dims are "
            f"{list(ds.dims)}."
        )
    if not parts:
        raise SchemaError(
            "split needs at least one part, e.g. split('time', train=0.8, val=0.2)."
        )
    if not all(isinstance(v, slice | tuple) for v in parts.values()):
        return split_ranges(ds.sizes[dim], parts, gap)
    index = ds.indexes.get(dim, None)
    if index is None:
        raise SchemaError(f"label ranges need a coordinate on {dim!r}; use fractions.")
    ranges: dict[str, tuple[int, int]] = {}
    for name, v in parts.items():
        lab = v if isinstance(v, slice) else slice(v[0], v[1])
        sl = index.slice_indexer(lab.start, lab.stop)
        ranges[name] = (
            int(sl.start or 0),
            int(sl.stop if sl.stop is not None else len(index)),
        )
    spans = sorted(ranges.values())
    for (_a0, a1), (b0, _) in itertools.pairwise(spans):
        if b0 < a1:
            raise SchemaError(f"split label ranges overlap along {dim!r}: {parts}.")
    return ranges


def parent_units(
    parent: BatchSchema,
    parent_ids: NDArray[np.int64],
    part: BatchSchema,
    part_ids: NDArray[np.int64],
    dim: Hashable,
    offset: int,
) -> NDArray[np.int64]:
    """For each unit of a part (data cut at ``offset`` along ``dim``), the parent's
    unit with the same window.

    ``parent_ids`` / ``part_ids`` are the generators' ``sample_ids()`` (sorted).
    Raises :class:`~xbatcher.errors.SchemaError` when a part's window is not one of
    the parent's (the cut is off the parent's window grid, or concat batches).
    """
    if parent.mode == "concat":
        raise SchemaError(
            "weights cannot follow a split of concat_input_dims batches (a part's "
            "batches group other windows). Give each part its own weights with "
            "part.with_sampler(RandomSampler(weights=...))."
        )
    windows = part.unit_windows(part_ids)
    grid: list[NDArray[np.int64]] = []
    found = np.ones(part_ids.size, dtype=bool)
    if parent.mode == "sample":
        for d, _ in parent.unsliced:
            starts = windows.starts[d]
            grid.append(starts + offset if d == dim else starts)
    for w in parent.sliced:
        starts = windows.starts[w.dim] + (offset if w.dim == dim else 0)
        k = starts // w.stride
        regular = (starts % w.stride == 0) & (k < w.n_regular)
        last = (w.n_windows > w.n_regular) & (starts == w.size - w.window)
        k = np.where(regular, k, w.n_regular)
        found &= regular | last
        grid.append(np.where(found, k, 0))
    ids = np.ravel_multi_index(tuple(grid), parent.unit_shape).astype(np.int64)
    units = np.searchsorted(parent_ids, ids)
    units = np.minimum(units, max(parent_ids.size - 1, 0))
    found &= parent_ids[units] == ids if parent_ids.size else False
    if not found.all():
        bad = int(np.flatnonzero(~found)[0])
        raise SchemaError(
            f"weights cannot follow this split: sample {int(part_ids[bad])} of the "
            f"part (cut at {offset} along {dim!r}) is not a window of the unsplit "
            "data's window grid. Cut at a multiple of the stride, or give each part "
            "its own weights with part.with_sampler(RandomSampler(weights=...)) "
            "indexed by part.sample_ids()."
        )
    return units.astype(np.int64)


def check_sampler_fits(sampler: Sampler, n_units: int, filtered: bool) -> None:
    """Refuse, at construction, a sampler that cannot order ``n_units`` units."""
    weights = getattr(sampler, "weights", None)
    what = "samples kept by skip_nan/mask" if filtered else "units"
    if weights is not None and len(weights) != n_units:
        raise SchemaError(
            f"RandomSampler weights have {len(weights)} entries but this generator "
            f"has {n_units} {what} (n_units); weights are indexed by position in "
            "bgen.sample_ids(). Build them for those samples, e.g. "
            "bgen.with_sampler(RandomSampler(weights=w[bgen.sample_ids()])) with one "
            "weight per sample of the unfiltered grid in w."
        )
    if not sampler.replacement and sampler.epoch_length(n_units) > n_units:
        raise SchemaError(
            f"num_samples must be <= n_units ({n_units} {what}) without "
            f"replacement; got {sampler.epoch_length(n_units)}. Lower num_samples or "
            "use replacement=True."
        )
