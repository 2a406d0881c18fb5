"""Per-sample facts computed over the whole source, chunk by chunk.

:class:`SampleFilter` holds the validated ``skip_nan`` / ``mask`` / ``min_valid``
arguments (the mask aligned to the data by coordinate labels, as ``ds.where(mask)``
aligns it) and :meth:`SampleFilter.valid_samples` finds the samples whose window is
valid enough. Validity is counted chunk by chunk through the generator's sources and
chunk cache, on every core: each storage chunk is read once, and memory stays within
the chunk cache plus one chunk per thread (never the whole variable).
:func:`chunk_labels` gives each sample the storage chunk its window starts in, for the
chunk-aware shuffle.
"""

from __future__ import annotations

import itertools
import math
import threading
import warnings
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from numpy.typing import NDArray

from ._threads import usable_cores, worker_pool
from .errors import DimensionError, InputTypeError, SchemaError, XbatcherWarning
from .plan import ChunkGrid
from .reader import BlockCache, read_region
from .schema import BatchSchema
from .sources import InMemorySource, Source, make_source
from .sources._lazy import _default_block

__all__ = ["SampleFilter", "chunk_grid", "chunk_labels", "make_filter"]

_FILTERS = ("skip_nan", "mask")
#: per axis of a variable: ``None`` for a dim whose every point is its own sample
#: (unsliced dims in sample mode), else the (starts, ends) of the windows along it
_AxisWindows = tuple[NDArray[np.int64], NDArray[np.int64]] | None


@dataclass(frozen=True, eq=False)
class SampleFilter:
    """Validated sample filters of a generator.

    Attributes
    ----------
    skip_nan : tuple
        Data variables in which a window must hold (enough) non-NaN points.
    mask : str, xarray.DataArray or None
        Name of a boolean variable of the data, or a boolean DataArray already aligned
        to the data (same labels, same sizes along the dims it shares with it).
    min_valid : dict
        ``{"skip_nan": f, "mask": g}``: the fraction of each window's points that must
        be valid (not NaN in each ``skip_nan`` variable; True in the mask).
    """

    skip_nan: tuple[Hashable, ...]
    mask: Hashable | xr.DataArray | None
    min_valid: Mapping[str, float]

    def arguments(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this filter."""
        min_valid: float | dict[str, float] = dict(self.min_valid)
        if len(set(self.min_valid.values())) == 1:
            min_valid = next(iter(self.min_valid.values()))
        return {
            "skip_nan": list(self.skip_nan) or None,
            "mask": self.mask,
            "min_valid": min_valid,
        }

    def isel(self, dim: Hashable, start: int, stop: int) -> SampleFilter:
        """The filter for the data cut to ``start:stop`` along ``dim`` (a split)."""
        mask = self.mask
        if isinstance(mask, xr.DataArray) and dim in mask.dims:
            mask = mask.isel({dim: slice(start, stop)})
        return SampleFilter(self.skip_nan, mask, self.min_valid)

    def valid_samples(
        self,
        schema: BatchSchema,
        data: xr.Dataset,
        sources: Mapping[Hashable, Source],
        cache: BlockCache,
    ) -> NDArray[np.int64]:
        """Sample numbers (sorted) whose window passes every filter.

        A sample passes a filter when at least ``min_valid`` of its window's points
        are valid: not NaN in each ``skip_nan`` variable, True in the mask (each taken
        over the dims that variable has). Chunks are read through ``sources`` and
        ``cache``, each once, on every core. With several windows per sample
        (``windows=``) a sample passes when every window of it passes: each
        ``skip_nan`` variable in every role that reads it, the mask in every role.
        """
        if schema.windows:
            return self._valid_roles(schema, data, sources, cache)
        grid_dims = [d for d, _ in schema.unsliced] + list(schema.sliced_dims)
        keep = np.ones(schema.unit_shape, dtype=bool)
        for name in self.skip_nan:
            variable = data[name].variable
            if variable.dtype.kind not in "fcmMO":
                continue  # integers and booleans cannot hold NaN
            ok = _window_ok(
                sources[name],
                variable.dims,
                schema,
                cache,
                _nan_points,
                self.min_valid["skip_nan"],
            )
            keep &= _on_grid(ok, variable.dims, grid_dims)
        if self.mask is not None:
            if isinstance(self.mask, xr.DataArray):
                variable = self.mask.variable
                source = make_source(("mask",), variable)
            else:
                variable = data[self.mask].variable
                known = sources.get(self.mask)
                source = (
                    make_source(("mask", self.mask), variable)
                    if known is None
                    else known
                )
            ok = _window_ok(
                source,
                variable.dims,
                schema,
                cache,
                np.logical_not,
                self.min_valid["mask"],
            )
            keep &= _on_grid(ok, variable.dims, grid_dims)
        return np.flatnonzero(keep.reshape(-1)).astype(np.int64)

    def _valid_roles(
        self,
        schema: BatchSchema,
        data: xr.Dataset,
        sources: Mapping[Hashable, Source],
        cache: BlockCache,
    ) -> NDArray[np.int64]:
        """:meth:`valid_samples` with several windows per sample."""
        from ._roles import role_schema, role_variables

        grid_dims = [d for d, _ in schema.unsliced] + list(schema.sliced_dims)
        keep = np.ones(schema.unit_shape, dtype=bool)
        variables = role_variables(schema, list(data.data_vars))
        unread = [
            v for v in self.skip_nan if not any(v in r for r in variables.values())
        ]
        if unread:
            raise SchemaError(
                f"skip_nan names {unread}, which no window reads (roles: "
                f"{ {n: list(v) for n, v in variables.items()} }). Add them to a "
                "Window's variables or drop them from skip_nan."
            )
        mask_source: Source | None = None
        if isinstance(self.mask, xr.DataArray):
            mask_source = make_source(("mask",), self.mask.variable)
        elif self.mask is not None:
            known = sources.get(self.mask)
            mask_source = (
                make_source(("mask", self.mask), data[self.mask].variable)
                if known is None
                else known
            )
        for role, window in schema.windows:
            one = role_schema(schema, role)
            checks: list[tuple[Source, tuple[Hashable, ...], Any, float]] = []
            for name in self.skip_nan:
                variable = data[name].variable
                if name in variables[role] and variable.dtype.kind in "fcmMO":
                    checks.append(
                        (
                            sources[name],
                            variable.dims,
                            _nan_points,
                            self.min_valid["skip_nan"],
                        )
                    )
            if mask_source is not None:
                mask_dims = (
                    self.mask.dims
                    if isinstance(self.mask, xr.DataArray)
                    else data[self.mask].dims
                )
                checks.append(
                    (mask_source, mask_dims, np.logical_not, self.min_valid["mask"])
                )
            for source, dims, is_bad, need in checks:
                ok = _window_ok(source, dims, one, cache, is_bad, need)
                # per window of the role -> per anchor: the role's window of anchor
                # a starts at a + offset (its first offset; 0 without offsets)
                for d, first, count in schema.anchors:
                    if d in dims:
                        o = window.offset(d)
                        lo = first + (0 if o is None else o.first)
                        ok = np.take(ok, np.arange(lo, lo + count), axis=dims.index(d))
                keep &= _on_grid(ok, dims, grid_dims)
        return np.flatnonzero(keep.reshape(-1)).astype(np.int64)


def make_filter(
    data: xr.Dataset,
    schema: BatchSchema,
    skip_nan: Hashable | Sequence[Hashable] | None,
    mask: Hashable | xr.DataArray | None,
    min_valid: float | Mapping[str, float],
) -> SampleFilter | None:
    """Validate the filter arguments of a generator; None when there is no filter."""
    thresholds = _check_min_valid(min_valid)
    if skip_nan is None and mask is None:
        if thresholds != dict.fromkeys(_FILTERS, 1.0):
            raise SchemaError(
                f"min_valid={min_valid!r} is given without skip_nan= or mask=; it "
                "sets how much of a window those filters need valid. Add a filter "
                "or drop min_valid."
            )
        return None
    if schema.mode != "sample":
        raise SchemaError(
            "skip_nan= and mask= filter samples and need sample-level batches; "
            "pass batch_size=N as well."
        )
    names: list[Hashable]
    if skip_nan is None:
        names = []
    elif isinstance(skip_nan, str) or not isinstance(skip_nan, Sequence):
        names = [skip_nan]
    else:
        names = list(skip_nan)
    for name in names:
        if name not in data.data_vars:
            raise DimensionError(
                f"skip_nan names {name!r}, which is not a data variable; variables are "
                f"{list(data.data_vars)}."
            )
    if isinstance(mask, xr.DataArray):
        mask = _align_mask(mask, data, list(dict(schema.sizes)))
    elif mask is not None:
        if not isinstance(mask, Hashable):
            raise InputTypeError(
                f"mask must be the name of a boolean variable or a boolean DataArray; "
                f"got {type(mask).__name__}. Use e.g. mask=ds.land_fraction > 0.5."
            )
        if mask not in data.variables:
            raise DimensionError(
                f"mask {mask!r} is not a variable of the dataset; variables are "
                f"{list(data.variables)}. Pass the name of a boolean variable or a "
                "boolean DataArray."
            )
        _check_mask_dims(data[mask], list(dict(schema.sizes)))
    return SampleFilter(tuple(names), mask, thresholds)


def _check_min_valid(min_valid: float | Mapping[str, float]) -> dict[str, float]:
    given = (
        dict(min_valid)
        if isinstance(min_valid, Mapping)
        else dict.fromkeys(_FILTERS, min_valid)
    )
    unknown = [k for k in given if k not in _FILTERS]
    if unknown:
        raise SchemaError(
            f"min_valid keys must be 'skip_nan' or 'mask'; got {unknown}. Use e.g. "
            "min_valid={'mask': 0.5} (at least half of each window True in the mask)."
        )
    out = dict.fromkeys(_FILTERS, 1.0)
    for key, value in given.items():
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            raise InputTypeError(
                f"min_valid must be a fraction in (0, 1]; got {value!r} of type "
                f"{type(value).__name__}. Use e.g. min_valid=0.5."
            )
        if not 0.0 < float(value) <= 1.0:
            raise SchemaError(
                f"min_valid must be a fraction in (0, 1]; got {value!r}. Use 1.0 (the "
                "default) for windows valid everywhere, 0.5 for at least half valid."
            )
        out[key] = float(value)
    return out


def _check_mask_dims(mask: xr.DataArray, dims: Sequence[Hashable]) -> None:
    if mask.dtype != bool:
        raise SchemaError(
            f"mask must be a boolean variable; got dtype {mask.dtype}. Use e.g. "
            "mask=ds.land_fraction > 0.5."
        )
    extra = [d for d in mask.dims if d not in dims]
    if extra:
        raise DimensionError(
            f"mask has dims {extra} that the data lacks (the data's dims are "
            f"{list(dims)}). Select one element of them, e.g. "
            f"mask.isel({extra[0]}=0), or reduce them (mask.any({extra[0]!r}))."
        )


def _align_mask(
    mask: xr.DataArray, data: xr.Dataset, dims: Sequence[Hashable]
) -> xr.DataArray:
    """``mask`` matched to the data by coordinate labels, as ``ds.where(mask)`` does.

    Along a dim where both have an index, the mask is reindexed to the data's labels
    (order, direction and subsets do not matter); data points the mask does not cover
    count as False, with a warning, since a float-rounding mismatch of labels would
    otherwise drop samples silently. Along other dims the mask matches by position
    and must have the data's size.
    """
    _check_mask_dims(mask, dims)
    indexers: dict[Hashable, pd.Index] = {}
    for d in mask.dims:
        mine, theirs = mask.indexes.get(d), data.indexes.get(d)
        if mine is not None and theirs is not None:
            if mine.equals(theirs):
                continue
            if not mine.is_unique:
                raise SchemaError(
                    f"mask's {d!r} coordinate has duplicate labels, so it cannot be "
                    "matched to the data by label. Drop the duplicates, e.g. "
                    f"mask.drop_duplicates({d!r})."
                )
            indexers[d] = theirs
        elif mask.sizes[d] != data.sizes[d]:
            raise SchemaError(
                f"mask has {mask.sizes[d]} points along {d!r} and the data "
                f"{data.sizes[d]}; without a {d!r} coordinate on both, a mask is "
                "matched by position and needs the data's size. Give both a "
                f"{d!r} coordinate (matched by label) or cut the mask to the data."
            )
    if not indexers:
        return mask
    uncovered: dict[Hashable, int] = {}
    for d, theirs in indexers.items():
        inside = int(theirs.isin(mask.indexes[d]).sum())
        if inside == 0:
            raise SchemaError(
                f"mask shares no {d!r} label with the data (mask "
                f"{_label_range(mask.indexes[d])}, data {_label_range(theirs)}), so "
                "no sample could pass. Give the mask the data's coordinates, e.g. "
                f"mask.assign_coords({d}=ds[{d!r}]) when they only differ in labels."
            )
        if inside < theirs.size:
            uncovered[d] = theirs.size - inside
    if uncovered:
        warnings.warn(
            f"mask lacks some of the data's labels ({uncovered} labels per dim); "
            "samples whose window touches them are dropped (they count as False, as "
            "ds.where(mask) leaves them NaN). Check that the coordinates match, or "
            "pass mask.reindex_like(ds, fill_value=False) to silence this.",
            XbatcherWarning,
            stacklevel=4,
        )
    return mask.reindex(indexers, fill_value=False)


def _label_range(index: pd.Index) -> str:
    return f"{index.min()!r}..{index.max()!r}" if index.size else "empty"


def _nan_points(block: NDArray[Any]) -> NDArray[np.bool_]:
    if block.dtype.kind in "mM":
        return np.asarray(np.isnat(block), dtype=bool)
    if block.dtype.kind == "O":
        return np.asarray(pd.isnull(block), dtype=bool)
    return np.asarray(np.isnan(block), dtype=bool)


def _axis_windows(schema: BatchSchema, dims: Sequence[Hashable]) -> list[_AxisWindows]:
    by_dim = {w.dim: w for w in schema.sliced}
    out: list[_AxisWindows] = []
    for d in dims:
        w = by_dim.get(d)
        if w is None:
            out.append(None)
        else:
            starts = w.starts(np.arange(w.n_windows, dtype=np.int64))
            out.append((starts, starts + w.window))
    return out


def _window_ok(
    source: Source,
    dims: Sequence[Hashable],
    schema: BatchSchema,
    cache: BlockCache,
    is_bad: Callable[[NDArray[Any]], NDArray[np.bool_]],
    min_valid: float,
) -> NDArray[np.bool_]:
    """Per window of this variable (axes: its dims; sliced dims count windows), True
    when at least ``min_valid`` of the window's points are not ``is_bad``."""
    axes = _axis_windows(schema, dims)
    shape = tuple(
        n if a is None else a[0].size for n, a in zip(source.shape, axes, strict=True)
    )
    points = math.prod(1 if a is None else int(a[1][0] - a[0][0]) for a in axes)
    # the fewest valid points allowed (rounded so that 0.7 * 10 counts as 7)
    need = math.ceil(round(min_valid * points, 9))
    dtype = np.int32 if points < 2**31 else np.int64
    bad = np.zeros(shape, dtype=dtype)
    lock = threading.Lock()

    def count(region: tuple[slice, ...]) -> None:
        if isinstance(source, InMemorySource):
            block = source.array[region]
        else:
            block = read_region(source, region, cache)
        found = _block_counts(is_bad(block), region, axes, dtype)
        if found is not None:
            where, counts = found
            with lock:
                bad[where] += counts

    _run_on_all_cores(_bind(count, r) for r in _block_regions(source))
    return np.asarray(points - bad >= need)


def _bind(
    fn: Callable[[tuple[slice, ...]], None], region: tuple[slice, ...]
) -> Callable[[], None]:
    return lambda: fn(region)


def _block_regions(source: Source) -> Iterator[tuple[slice, ...]]:
    """The storage chunks of a source (blocks of about 16 MiB for in-memory data),
    one at a time (a store may have millions)."""
    if source.bounds is not None:
        for cid in itertools.product(*(range(n) for n in source.nchunks)):
            yield source.chunk_region(cid)
        return
    block = _default_block(source.shape, source.dtype.itemsize)
    for starts in itertools.product(
        *(range(0, n, b) for n, b in zip(source.shape, block, strict=True))
    ):
        yield tuple(
            slice(a, min(a + b, n))
            for a, b, n in zip(starts, block, source.shape, strict=True)
        )


def _block_counts(
    bad: NDArray[np.bool_],
    region: tuple[slice, ...],
    axes: Sequence[_AxisWindows],
    dtype: type[np.signedinteger[Any]],
) -> tuple[tuple[slice, ...], NDArray[Any]] | None:
    """Bad points of one block inside each window that meets it.

    Along a windowed axis, a cumulative sum over the block gives the count inside
    ``[start, end)`` of every window as a difference of two entries (clipped to the
    block); the windows' full counts are the sums of these parts over the blocks.
    Returns where the counts go in the per-window array, and the counts.
    """
    if not bad.any():
        return None
    counts: NDArray[Any] = bad
    where: list[slice] = []
    for axis, (r, windows) in enumerate(zip(region, axes, strict=True)):
        a, b = int(r.start), int(r.stop)
        if windows is None:
            where.append(slice(a, b))
            continue
        starts, ends = windows
        k0 = int(np.searchsorted(ends, a, side="right"))
        k1 = int(np.searchsorted(starts, b, side="left"))
        if k0 >= k1:  # points past the last window (a dropped remainder)
            return None
        prefix = np.cumsum(counts, axis=axis, dtype=dtype)
        pad = [(0, 0)] * prefix.ndim
        pad[axis] = (1, 0)
        prefix = np.pad(prefix, pad)
        lo = np.clip(starts[k0:k1] - a, 0, b - a)
        hi = np.clip(ends[k0:k1] - a, 0, b - a)
        counts = np.take(prefix, hi, axis=axis) - np.take(prefix, lo, axis=axis)
        where.append(slice(k0, k1))
    return tuple(where), counts


def _run_on_all_cores(jobs: Iterable[Callable[[], None]]) -> None:
    """Run ``jobs`` on the calling thread and the gather pool's helpers; the first
    error stops the others from starting new jobs and is raised here."""
    queue = iter(jobs)
    lock = threading.Lock()
    failed: list[BaseException] = []

    def drain() -> None:
        while not failed:
            with lock:
                job = next(queue, None)
            if job is None:
                return
            try:
                job()
            except BaseException as err:
                failed.append(err)
                raise

    futures = [worker_pool("gather").submit(drain) for _ in range(usable_cores() - 1)]
    try:
        drain()
    finally:
        for future in futures:
            future.exception()  # wait: no job outlives this call
    if failed:
        raise failed[0]


def _on_grid(
    ok: NDArray[np.bool_], dims: Sequence[Hashable], grid_dims: Sequence[Hashable]
) -> NDArray[np.bool_]:
    """A variable's per-window result, broadcastable to the sample grid."""
    order = sorted(range(len(dims)), key=lambda i: grid_dims.index(dims[i]))
    moved = ok.transpose(order)
    sizes = dict(zip([dims[i] for i in order], moved.shape, strict=True))
    return moved.reshape([sizes.get(d, 1) for d in grid_dims])


def chunk_grid(
    sources: Mapping[Hashable, Source],
    var_dims: Mapping[Hashable, tuple[Hashable, ...]],
) -> ChunkGrid | None:
    """The chunks that group units: those of the chunked data variable with the
    most chunks (then dims, then name: a choice that does not depend on the order
    of the Dataset's variables); None for data in memory."""
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
        return None
    bounds = sources[name].bounds
    assert bounds is not None
    return ChunkGrid(tuple(var_dims[name]), bounds)


def chunk_labels(
    schema: BatchSchema,
    sources: Mapping[Hashable, Source],
    var_dims: Mapping[Hashable, tuple[Hashable, ...]],
    units: NDArray[np.int64] | None = None,
) -> NDArray[np.int64]:
    """Storage chunk (as one int) in which each unit's first window starts.

    Uses the chunks of :func:`chunk_grid`; all units get label 0 for in-memory data.
    ``units`` defaults to every unit of the schema.
    """
    grid = chunk_grid(sources, var_dims)
    if grid is None:
        n = schema.n_units if units is None else int(units.size)
        return np.zeros(n, dtype=np.int64)
    return grid.labels(schema, units)
