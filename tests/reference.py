"""A slow, obviously-correct reference implementation of docs/batching.md.

This module is the batching contract written as code. It builds every batch from
``ds.isel``, ``xr.concat``, ``.stack`` and ``.transpose`` only, one window at a time,
so it is easy to check by eye against the rules; speed does not matter here.

Selectors are plain ``{dim: slice}`` dicts (``{dim: slice | int}`` for samples).
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import xarray as xr

Selector = dict[Hashable, Any]
XarrayObj = xr.Dataset | xr.DataArray

INPUT_SUFFIX = "_input"


# --------------------------------------------------------------------------- dims
def dim_order(ds: XarrayObj) -> list[Hashable]:
    """Dims in the documented order: first appearance over the data variables taken
    by number of dims (most first), then name; then coordinate-only dims, first
    appearance over the coordinates by name."""
    if isinstance(ds, xr.DataArray):
        order = list(ds.dims)
    else:
        names = sorted(ds.data_vars, key=lambda k: (-ds[k].ndim, str(k)))
        order = []
        for name in names:
            order += [d for d in ds[name].dims if d not in order]
    for name in sorted(ds.coords, key=str):
        order += [d for d in ds.coords[name].dims if d not in order]
    return order


def data_dims(ds: XarrayObj) -> list[Hashable]:
    """Dims of the data variables (the sample space), in :func:`dim_order`."""
    if isinstance(ds, xr.DataArray):
        return list(ds.dims)
    used = {d for v in ds.data_vars.values() for d in v.dims}
    return [d for d in dim_order(ds) if d in used]


# --------------------------------------------------------------------------- windows
def sliced_dims(
    input_dims: Mapping[Hashable, int], batch_dims: Mapping[Hashable, int] | None
) -> list[Hashable]:
    """Batch dims that are not input dims (given order), then the input dims."""
    batch_dims = batch_dims or {}
    return [d for d in batch_dims if d not in input_dims] + list(input_dims)


def window_starts(
    length: int, window: int, overlap: int, keep_remainder: bool
) -> list[int]:
    """Starts ``0, s, 2s, ...`` of the windows that fit; plus ``L - w`` if asked."""
    stride = window - overlap
    starts = list(range(0, length - window + 1, stride))
    if keep_remainder and (length - window) % stride != 0:
        starts.append(length - window)
    return starts


def _dim_slices(
    ds: XarrayObj,
    input_dims: Mapping[Hashable, int],
    input_overlap: Mapping[Hashable, int] | None,
    batch_dims: Mapping[Hashable, int] | None,
    keep_remainder: bool,
) -> dict[Hashable, list[slice]]:
    """For every sliced dim, the list of its window slices."""
    input_overlap = input_overlap or {}
    batch_dims = batch_dims or {}
    out = {}
    for d in sliced_dims(input_dims, batch_dims):
        w = input_dims[d] if d in input_dims else batch_dims[d]
        starts = window_starts(ds.sizes[d], w, input_overlap.get(d, 0), keep_remainder)
        out[d] = [slice(s, s + w) for s in starts]
    return out


def concat_group(
    ds: XarrayObj,
    d: Hashable,
    input_dims: Mapping[Hashable, int],
    input_overlap: Mapping[Hashable, int],
    batch_dims: Mapping[Hashable, int],
    keep_remainder: bool = False,
) -> int:
    """Windows per batch along sliced dim ``d`` in concat mode."""
    if d not in input_dims:
        return 1  # batch-only dim: one block per batch
    stride = input_dims[d] - input_overlap.get(d, 0)
    if d in batch_dims:  # 0.4: ceil(B / stride) consecutive windows
        return -(-batch_dims[d] // stride)
    # all windows in one batch
    return len(
        window_starts(
            ds.sizes[d], input_dims[d], input_overlap.get(d, 0), keep_remainder
        )
    )


def reference_windows(
    ds: XarrayObj,
    input_dims: Mapping[Hashable, int],
    input_overlap: Mapping[Hashable, int] | None = None,
    batch_dims: Mapping[Hashable, int] | None = None,
    concat_input_dims: bool = False,
    keep_remainder: bool = False,
) -> list[list[Selector]]:
    """The windows of each batch, batches and windows in row-major order."""
    batch_dims = batch_dims or {}
    input_overlap = input_overlap or {}
    slices = _dim_slices(ds, input_dims, input_overlap, batch_dims, keep_remainder)
    dims = list(slices)
    if not concat_input_dims:
        return [
            [dict(zip(dims, combo, strict=True))]
            for combo in itertools.product(*slices.values())
        ]

    # concat mode: group consecutive windows along each sliced dim
    groups_per_dim = []
    duplicate = any(d in input_dims for d in batch_dims)
    for d in dims:
        g = concat_group(ds, d, input_dims, input_overlap, batch_dims, keep_remainder)
        groups = [slices[d][i : i + g] for i in range(0, len(slices[d]), g)]
        if not keep_remainder:
            groups = [grp for grp in groups if len(grp) == g]
            if duplicate and d not in input_dims:  # 0.4: L // B blocks
                groups = groups[: ds.sizes[d] // batch_dims[d]]
        groups_per_dim.append(groups)
    batches = []
    for group_combo in itertools.product(*groups_per_dim):
        windows = [
            dict(zip(dims, combo, strict=True))
            for combo in itertools.product(*group_combo)
        ]
        batches.append(windows)
    return batches


# --------------------------------------------------------------------------- batches
def _rename_to_input(obj: XarrayObj, dims: list[Hashable]) -> XarrayObj:
    """Rename each dim ``d`` to ``d_input``; its index coord stays as coord ``d``."""
    return obj.swap_dims({d: f"{d}{INPUT_SUFFIX}" for d in dims})


def _concat(pieces: list[XarrayObj], dim: str, coords: list[Hashable]) -> XarrayObj:
    """``xr.concat`` with every option spelled out (no reliance on defaults)."""
    return xr.concat(
        pieces,
        dim=dim,
        data_vars="all",
        coords=coords,
        compat="equals",
        join="exact",
        combine_attrs="override",
    )


def _stack_or_keep(
    obj: XarrayObj, first: list[Hashable], last: list[Hashable]
) -> XarrayObj:
    """Stack ``first`` into ``sample`` if 2+ dims, then order dims ``(sample, *last)``."""
    if len(first) >= 2:
        return obj.stack(sample=first, create_index=True).transpose("sample", *last)
    return obj


def reference_batch(
    ds: XarrayObj,
    windows: list[Selector],
    input_dims: Mapping[Hashable, int],
    concat_input_dims: bool,
    single: tuple[Hashable, ...] = (),
) -> XarrayObj:
    """Build one batch (0.4 layout) from its windows.

    ``single``: the input dims along which every batch holds one window (concat mode).
    """
    order = dim_order(ds)
    if not concat_input_dims:
        (window,) = windows
        batch = ds.isel(window)
        others = [d for d in order if d not in input_dims]
        # With 0 or 1 non-input dims the batch keeps the dataset's dims and order.
        return _stack_or_keep(batch, others, list(input_dims))

    new_inputs = [f"{d}{INPUT_SUFFIX}" for d in input_dims]
    pieces = [_rename_to_input(ds.isel(w), list(input_dims)) for w in windows]
    if isinstance(ds, xr.DataArray):
        # 0.4 renames a DataArray's index coordinate d to an index d_input
        for d in single:
            if d in ds.indexes:
                new = f"{d}{INPUT_SUFFIX}"
                pieces = [
                    p.drop_vars(d).assign_coords({new: (new, p[d].values, p[d].attrs)})
                    for p in pieces
                ]
    # Coordinates that depend on an input dim along which the batch has several
    # windows get the input_batch dim; the others are shared (and must be equal
    # across the windows of a batch).
    varying = [f"{d}{INPUT_SUFFIX}" for d in input_dims if d not in single]
    on_inputs = [
        name
        for name, c in pieces[0].coords.items()
        if set(c.dims) & set(varying) and name not in pieces[0].xindexes
    ]
    cat = _concat(pieces, "input_batch", on_inputs)
    others = ["input_batch"] + [
        d for d in order if d in cat.dims and d not in new_inputs
    ]
    # Only input_batch besides the *_input dims: 0.4 keeps the concatenated object
    # as it is, i.e. (input_batch, *_input dims in the dataset's order).
    return _stack_or_keep(cat, others, new_inputs)


def reference_batches(
    ds: XarrayObj,
    input_dims: Mapping[Hashable, int],
    input_overlap: Mapping[Hashable, int] | None = None,
    batch_dims: Mapping[Hashable, int] | None = None,
    concat_input_dims: bool = False,
    keep_remainder: bool = False,
) -> list[XarrayObj]:
    """Every batch of the 0.4 layout (``batch_size=None``), in order."""
    all_windows = reference_windows(
        ds, input_dims, input_overlap, batch_dims, concat_input_dims, keep_remainder
    )
    input_overlap = input_overlap or {}
    batch_dims = batch_dims or {}
    single = tuple(
        d
        for d in input_dims
        if concat_group(ds, d, input_dims, input_overlap, batch_dims, keep_remainder)
        == 1
    )
    return [
        reference_batch(ds, windows, input_dims, concat_input_dims, single)
        for windows in all_windows
    ]


# --------------------------------------------------------------------------- samples
def reference_samples(
    ds: XarrayObj,
    input_dims: Mapping[Hashable, int],
    input_overlap: Mapping[Hashable, int] | None = None,
    batch_dims: Mapping[Hashable, int] | None = None,
    keep_remainder: bool = False,
) -> list[Selector]:
    """All samples in sample-number order (``batch_size`` mode).

    Row-major over the unsliced dims of the data variables (:func:`dim_order`, one
    index each; dims found only on coordinates are not sampled) and then the sliced
    dims (sliced-dims order, one window each).
    """
    slices = _dim_slices(ds, input_dims, input_overlap, batch_dims, keep_remainder)
    options: dict[Hashable, list[Any]] = {
        d: list(range(ds.sizes[d])) for d in data_dims(ds) if d not in slices
    }
    options.update(slices)
    dims = list(options)
    return [
        dict(zip(dims, combo, strict=True))
        for combo in itertools.product(*options.values())
    ]


def reference_sample_batch(
    ds: XarrayObj, selectors: list[Selector], numbers: list[int]
) -> XarrayObj:
    """Stack the given samples (global numbers ``numbers``) along ``sample``.

    Layout ``("sample", *[d_input for d in sliced dims])``: each sliced dim's index
    coord becomes a 2-D coord ``d`` on ``(sample, d_input)``; each unsliced dim's coord
    a 1-D coord on ``sample``; an integer coord ``sample`` holds the sample numbers.
    """
    sliced = [d for d, v in selectors[0].items() if isinstance(v, slice)]
    pieces = [_rename_to_input(ds.isel(sel), sliced) for sel in selectors]
    # every coordinate that has a dim in the source varies per sample: concatenate it
    varying = [name for name in pieces[0].coords if ds[name].ndim > 0]
    batch = _concat(pieces, "sample", varying)
    batch = batch.assign_coords(sample=np.asarray(numbers, dtype=np.int64))
    return batch.transpose("sample", *[f"{d}{INPUT_SUFFIX}" for d in sliced], ...)


def reference_sample_batches(
    ds: XarrayObj,
    input_dims: Mapping[Hashable, int],
    input_overlap: Mapping[Hashable, int] | None = None,
    batch_dims: Mapping[Hashable, int] | None = None,
    keep_remainder: bool = False,
    *,
    batch_size: int,
    drop_last: bool = False,
) -> list[XarrayObj]:
    """Every batch of ``batch_size`` mode, in sequential order."""
    samples = reference_samples(
        ds, input_dims, input_overlap, batch_dims, keep_remainder
    )
    out = []
    for lo in range(0, len(samples), batch_size):
        chunk = samples[lo : lo + batch_size]
        if drop_last and len(chunk) < batch_size:
            break
        out.append(reference_sample_batch(ds, chunk, list(range(lo, lo + len(chunk)))))
    return out
