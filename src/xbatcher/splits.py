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
import math
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from ._validation import check_int, is_int
from .errors import DimensionError, SchemaError
from .sampling import Sampler
from .schema import BatchSchema

__all__ = ["check_sampler_fits", "parent_units", "split_bounds", "split_ranges"]


def split_ranges(
    size: int, parts: Mapping[str, float | int], gap: int = 0
) -> dict[str, tuple[int, int]]:
    """Cut ``[0, size)`` into contiguous, disjoint, ordered ranges.

    Parameters
    ----------
    size : int
        Number of points along the dimension.
    parts : mapping of str to float or int
        Part name to fraction (floats in ``(0, 1]`` summing to at most 1) or to a
        count of points (ints, summing with the gaps to at most ``size``); all values
        of one kind. Ranges follow the mapping's order.
    gap : int, default 0
        Points left out between consecutive parts, so that windows (even padded
        ones) never straddle two parts.

    Returns
    -------
    dict of str to (int, int)
        ``{name: (start, stop)}``, half-open.

    Notes
    -----
    Fractions apply to the points left once the gaps are taken out,
    ``size - gap * (len(parts) - 1)``. Boundaries are the cumulative fractions times
    that number, rounded half to even, so the parts tile it exactly when the
    fractions sum to 1.

    Raises
    ------
    SchemaError
        For mixed or invalid values, fractions summing above 1, counts above
        ``size``, a negative gap, or a part that would be empty.

    Examples
    --------
    >>> split_ranges(100, {"train": 0.8, "val": 0.2})
    {'train': (0, 80), 'val': (80, 100)}
    >>> split_ranges(100, {"train": 0.8, "val": 0.2}, gap=10)
    {'train': (0, 72), 'val': (82, 100)}
    >>> split_ranges(100, {"train": 60, "test": 20}, gap=5)
    {'train': (0, 60), 'test': (65, 85)}
    """
    size = check_int(
        size, "size", minimum=0, fix="Pass the length of the dimension to split."
    )
    gap = check_int(
        gap, "gap", minimum=0, fix="Pass the number of points to leave out, >= 0."
    )
    if not isinstance(parts, Mapping) or len(parts) == 0:
        raise SchemaError(
            f"parts must be a non-empty mapping of name to fraction or count; got "
            f"{parts!r}. Pass e.g. {{'train': 0.8, 'val': 0.2}}."
        )
    names = list(parts)
    for name in names:
        if not isinstance(name, str):
            raise SchemaError(
                f"parts keys must be str; got {name!r}. Name each part, e.g. 'train'."
            )
    values = list(parts.values())
    all_ints = all(is_int(v) for v in values)
    all_floats = all(isinstance(v, float | np.floating) for v in values)
    if not (all_ints or all_floats):
        raise SchemaError(
            "parts values must be all fractions (floats) or all counts (ints); got "
            f"{dict(parts)!r}. Use one kind, e.g. {{'train': 0.8, 'val': 0.2}}."
        )
    usable = size - gap * (len(names) - 1)
    if usable < 0:
        raise SchemaError(
            f"gap must leave points to split; got gap={gap} between {len(names)} parts "
            f"of a size-{size} dimension. Lower the gap."
        )
    bounds: list[int] = [0]
    if all_floats:
        fracs = [float(v) for v in values]
        for name, f in zip(names, fracs, strict=True):
            if not (0.0 < f <= 1.0) or not math.isfinite(f):
                raise SchemaError(
                    f"parts[{name!r}] must be a fraction in (0, 1]; got {f}. "
                    "Pass a fraction of the dimension, e.g. 0.2."
                )
        total = 0.0
        for f in fracs:
            total += f
            bounds.append(round(min(total, 1.0) * usable))
        if total > 1.0 + 1e-9:
            raise SchemaError(
                f"parts fractions must sum to at most 1; got {total:g}. "
                "Lower some fractions."
            )
    else:
        counts = [int(v) for v in values]
        for name, c in zip(names, counts, strict=True):
            if c <= 0:
                raise SchemaError(
                    f"parts[{name!r}] must be a count >= 1; got {c}. "
                    "Pass a positive number of points."
                )
        if sum(counts) > usable:
            raise SchemaError(
                f"parts counts plus gaps must be at most size ({size}); got "
                f"{sum(counts)} points + {size - usable} gap points. "
                "Lower the counts or the gap."
            )
        for c in counts:
            bounds.append(bounds[-1] + c)
    out: dict[str, tuple[int, int]] = {}
    for i, name in enumerate(names):
        start, stop = bounds[i] + i * gap, bounds[i + 1] + i * gap
        if stop <= start:
            raise SchemaError(
                f"parts[{name!r}] must cover at least one point; got an empty range "
                f"({values[i]!r} of {usable} points). Increase it or lower the gap."
            )
        out[name] = (start, stop)
    return out


def split_bounds(
    ds: xr.Dataset | xr.DataArray,
    dim: Hashable,
    parts: Mapping[str, Any],
    gap: int = 0,
) -> dict[str, tuple[int, int]]:
    """Index ranges ``{name: (start, stop)}`` of ``split(dim, gap, **parts)``.

    Parts are all fractions / counts (:func:`split_ranges`) or
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
        anchor = {d: a for d, a, _ in parent.anchors}  # windows=: first anchor
        for d, _ in parent.unsliced:
            starts = windows.starts[d] - anchor.get(d, 0)
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
