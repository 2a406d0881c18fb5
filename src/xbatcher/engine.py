"""The batch engine: units in, batches out.

A :class:`BatchEngine` holds what reading needs and nothing about epochs: the
sources of the data and coordinate variables (:mod:`xbatcher.sources`), the cache of
decoded chunks (:class:`~xbatcher.reader.BlockCache`) and the layouts of
:mod:`xbatcher.layout`. The module-level, pure functions :func:`read_batch`,
:func:`read_batches` (numpy) and :func:`read_batch_xarray` (xarray) turn the units of
a batch (from :meth:`xbatcher.plan.EpochPlan.batch_units`) into the batch; a loader,
a cache and a Dask task all call them. An engine pickles small (lazily opened sources
travel as their paths, the chunk cache travels empty) and reads in the process that
unpickles it. ``BatchGenerator.engine`` is the engine of a generator.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, cast

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from ._roles import (
    Role,
    make_roles,
    prefetch_roles,
    read_roles,
    read_roles_xarray,
    roles_nbytes,
)
from ._windowread import ChunkMemo
from .layout import VarLayout, XarrayBuilder, layout_array, plan_layout
from .reader import (
    BlockCache,
    WindowRequest,
    gather,
    gather_grid,
    read_region,
)
from .reader import prefetch as prefetch_chunks
from .reader import prefetch_all as prefetch_source
from .schema import BatchSchema, Windows
from .sources import Source, make_source

__all__ = [
    "ArrayBatch",
    "Batch",
    "BatchEngine",
    "prefetch",
    "prefetch_all",
    "read_batch",
    "read_batch_xarray",
    "read_batches",
    "read_batches_xarray",
]

Batch = xr.Dataset | xr.DataArray
ArrayBatch = NDArray[Any] | dict[Hashable, NDArray[Any]]
# With ``windows=`` a batch is a dict role -> batch (``{"x": ..., "y": ...}``). The
# functions below keep their one-window return types (so callers that never pass
# windows= keep narrow types) and cast the role dict to them.
RoleBatch = dict[str, Batch]
RoleArrayBatch = dict[str, ArrayBatch]


class BatchEngine:
    """Sources, chunk cache and layouts of one dataset and schema (no epoch state).

    Parameters
    ----------
    ds : xarray.Dataset or xarray.DataArray
        The data (in memory, dask-backed or lazily opened).
    schema : BatchSchema
        The schema of ``ds`` whose units the engine reads.
    block_cache : BlockCache
        The cache of decoded source chunks.

    Attributes
    ----------
    sources, coord_sources : dict
        A :class:`~xbatcher.sources.Source` per data variable / per coordinate read
        through the reader.
    var_dims : dict
        The dims of each data variable.
    builder : XarrayBuilder
        Wraps gathered arrays into xarray batches.

    Examples
    --------
    >>> import numpy as np, xarray as xr, xbatcher as xb
    >>> da = xr.DataArray(np.arange(12.0).reshape(3, 4), dims=("t", "x"))
    >>> bgen = xb.BatchGenerator(da, {"x": 2}, batch_size=2)
    >>> read_batch(bgen.engine, np.array([0, 5])).tolist()  # samples 0 and 5
    [[0.0, 1.0], [10.0, 11.0]]
    """

    def __init__(
        self,
        ds: xr.Dataset | xr.DataArray,
        schema: BatchSchema,
        block_cache: BlockCache,
    ) -> None:
        self.schema = schema
        self.block_cache = block_cache
        self.is_dataarray = isinstance(ds, xr.DataArray)
        self.builder = XarrayBuilder(ds, schema)
        data = ds._to_temp_dataset() if isinstance(ds, xr.DataArray) else ds
        variables = data.variables  # data[name] would build a DataArray each time
        self.sources: dict[Hashable, Source] = {
            name: make_source(name, variables[name]) for name in data.data_vars
        }
        self.coord_sources: dict[Hashable, Source] = {
            name: make_source(("coord", name), variables[name])
            for name in self.builder.windowed_coords + self.builder.block_coords
        }
        self.var_dims = {name: variables[name].dims for name in data.data_vars}
        # dims of every source, data and coordinate (their names cannot collide)
        self.source_dims = {
            **self.var_dims,
            **{name: variables[name].dims for name in self.coord_sources},
        }
        self.sizes = dict(ds.sizes)
        self.layouts: dict[Hashable, VarLayout] = {
            name: plan_layout(self.schema, self.builder.ds_dims, dims, self.sizes)
            for name, dims in self.var_dims.items()
        }
        # several windows per sample (``windows=``): the roles, else None
        self.roles: dict[str, Role] | None = (
            make_roles(ds, schema) if schema.windows else None
        )

    @functools.cached_property
    def window_spans(
        self,
    ) -> dict[Hashable, tuple[tuple[Hashable, int | None, int], ...]]:
        """Per source (data and coordinate), ``(dim, window length, dim size)`` for
        each of its dims; the length is None for a dim that windows do not cut (it is
        read whole)."""
        lengths = {w.dim: w.window for w in self.schema.sliced}
        return {
            name: tuple((d, lengths.get(d), self.sizes[d]) for d in dims)
            for name, dims in self.source_dims.items()
        }

    @functools.cached_property
    def chunk_memo(self) -> ChunkMemo:
        """The chunk each source's last window batch was read from (``bgen[i]`` in
        window mode reads the next window from it without a chunk lookup)."""
        return ChunkMemo()

    @property
    def chunked(self) -> bool:
        """True when a data variable is read chunk by chunk (through the cache)."""
        return any(s.bounds is not None for s in self.sources.values())

    @property
    def batch_nbytes(self) -> int:
        """Bytes of one (full) batch, all variables."""
        if self.roles is not None:
            return roles_nbytes(self)
        s = self.schema
        sizes = dict(s.sizes)
        windows = {w.dim: w.window for w in s.sliced}
        batch_bytes = 0
        for src, dims in zip(
            self.sources.values(), self.var_dims.values(), strict=True
        ):
            per_window = math.prod(
                windows.get(d, 1 if s.mode == "sample" else sizes[d]) for d in dims
            )
            batch_bytes += (
                per_window
                * src.dtype.itemsize
                * s.windows_per_unit
                * (s.batch_size or 1)
            )
        return max(1, batch_bytes)

    def request(self, windows: Windows, dims: Sequence[Hashable]) -> WindowRequest:
        """Windows of a variable over its own dims (a dim it lacks is not read;
        a dim outside the windows, e.g. a coordinate-only dim, is read whole)."""
        sizes = self.sizes
        starts, lengths = [], []
        zero = np.zeros(windows.count, dtype=np.int64)
        for d in dims:
            if d in windows.starts:
                starts.append(windows.starts[d])
                lengths.append(windows.lengths[d])
            else:
                starts.append(zero)
                lengths.append(sizes[d])
        return WindowRequest(tuple(starts), tuple(lengths), windows.count)

    def gather_all(
        self, windows: Windows, sources: Mapping[Hashable, Source]
    ) -> dict[Hashable, NDArray[Any]]:
        """The windows of each of ``sources``, stacked along a first axis."""
        out = {}
        for name, src in sources.items():
            request = self.request(windows, self.source_dims[name])
            out[name] = gather_windows(src, request, self.block_cache)
        return out

    def pack(self, per_var: dict[Hashable, NDArray[Any]]) -> ArrayBatch:
        """A batch of per-variable arrays: the only array for a DataArray source."""
        if self.is_dataarray:
            return next(iter(per_var.values()))
        return per_var


def gather_windows(
    src: Source, request: WindowRequest, cache: BlockCache
) -> NDArray[Any]:
    """:func:`~xbatcher.reader.gather`, also for a variable without any of the
    request's dims (a 0-d variable next to sliced ones: the same value for every
    window)."""
    out = gather(src, request, cache)
    if out.shape[0] != request.count:
        out = np.repeat(out[:1], request.count, axis=0)
    return out


# ---------------------------------------------------------------------- numpy batches
def read_batch(engine: BatchEngine, units: NDArray[np.int64]) -> ArrayBatch:
    """The batch of ``units`` as numpy: an ``ndarray`` for a DataArray source, a dict
    name -> ``ndarray`` for a Dataset (the values and layout of ``bgen.arrays[i]``).

    Parameters
    ----------
    engine : BatchEngine
        The engine of the data (``bgen.engine``).
    units : numpy.ndarray of int64
        The units of one batch (``bgen.plan.batch_units(epoch, i, i + 1)[0]``).

    Returns
    -------
    numpy.ndarray or dict
        With ``windows=``, a dict role -> the role's batch (as above).
    """
    return read_batches(engine, [units])[0]


def read_batches(
    engine: BatchEngine, batches: Sequence[NDArray[np.int64]]
) -> list[ArrayBatch]:
    """:func:`read_batch` of each of ``batches``, gathered together (one chunk plan,
    one copy per chunk)."""
    if engine.roles is not None:
        return cast(list[ArrayBatch], read_roles(engine, batches))
    if engine.schema.mode == "concat":
        return [_concat_arrays(engine, int(b[0])) for b in batches]
    return _arrays_generic(engine, batches)


def _arrays_generic(
    engine: BatchEngine, batches: Sequence[NDArray[np.int64]]
) -> list[ArrayBatch]:
    schema = engine.schema
    flat = np.concatenate(batches)
    windows = schema.unit_windows(flat)
    gathered = engine.gather_all(windows, engine.sources)
    counts = (
        [int(schema.unit_window_counts(b).sum()) for b in batches]
        if schema.mode == "concat"
        else [b.size for b in batches]
    )
    edges = np.cumsum([0, *counts])
    layouts = engine.layouts
    if len(set(counts)) == 1 and all(
        lay.n_stack <= 1
        and not lay.broadcast
        and lay.perm == tuple(range(len(lay.perm)))
        for lay in layouts.values()
    ):
        # equal batches needing no transpose: lay the whole group out at once and
        # hand out views (no per-batch layout work)
        split = {
            name: _group_layout(g, counts[0], layouts[name])
            for name, g in gathered.items()
        }
        if engine.is_dataarray:
            return list(next(iter(split.values())))
        return [{name: s[j] for name, s in split.items()} for j in range(len(batches))]
    out: list[ArrayBatch] = []
    for j in range(len(batches)):
        per_var = {
            name: layout_array(g[edges[j] : edges[j + 1]], layouts[name])
            for name, g in gathered.items()
        }
        out.append(engine.pack(per_var))
    return out


def _group_layout(g: NDArray[Any], count: int, lay: VarLayout) -> NDArray[Any]:
    """``(n_batches * count, *window)`` -> ``(n_batches, *batch shape)``."""
    g = g.reshape((-1, count, *g.shape[1:]))
    if lay.squeeze:
        drop = {a + 1 for a in lay.squeeze}
        g = g.reshape([n for i, n in enumerate(g.shape) if i not in drop])
    return g


def _concat_arrays(engine: BatchEngine, unit: int) -> ArrayBatch:
    """A concat batch: its windows form a regular grid inside one block, so read
    the block once and copy the grid out with one strided copy, straight into the
    final layout."""
    schema = engine.schema
    gidx = np.unravel_index(unit, schema.unit_shape)
    first: dict[Hashable, int] = {}
    counts: dict[Hashable, int] = {}
    for w, g in zip(schema.sliced, gidx, strict=True):
        k0 = int(g) * w.group
        counts[w.dim] = min(w.group, w.n_windows - k0)
        first[w.dim] = k0
        if k0 + counts[w.dim] > w.n_regular:  # the keep_remainder window: irregular
            return _arrays_generic(engine, [np.array([unit])])[0]
    sizes = dict(schema.sizes)
    by_dim = {w.dim: w for w in schema.sliced}
    per_var: dict[Hashable, NDArray[Any]] = {}
    windows: Windows | None = None
    for name, src in engine.sources.items():
        dims = engine.var_dims[name]
        lay = engine.layouts[name]
        if lay.broadcast or any(d not in dims for d in by_dim):
            # a variable lacking a sliced or stacked dim: window by window
            if windows is None:
                windows = schema.unit_windows(np.array([unit], dtype=np.int64))
            request = engine.request(windows, dims)
            gathered = gather_windows(src, request, engine.block_cache)
            per_var[name] = layout_array(gathered, lay)
            continue
        region, lengths = [], []
        for d in dims:
            dw = by_dim.get(d)
            if dw is None:
                region.append(slice(0, sizes[d]))
                lengths.append(sizes[d])
            else:
                a = first[d] * dw.stride
                region.append(slice(a, a + (counts[d] - 1) * dw.stride + dw.window))
                lengths.append(dw.window)
        block = read_region(src, tuple(region), engine.block_cache)
        m = len(schema.sliced)
        order = [j for p in lay.perm for j in (range(m) if p == 0 else [m + p - 1])]
        grid = gather_grid(
            block,
            [counts[w.dim] for w in schema.sliced],
            [w.stride for w in schema.sliced],
            [dims.index(w.dim) for w in schema.sliced],
            lengths,
            order,
        )
        n_lead = m + max(lay.n_stack, 1) - 1
        per_var[name] = grid.reshape((-1, *grid.shape[n_lead:]))
    return engine.pack(per_var)


# --------------------------------------------------------------------- xarray batches
def read_batch_xarray(
    engine: BatchEngine, units: NDArray[np.int64], preload: bool = True
) -> Batch:
    """The batch of ``units`` as xarray (the batch ``bgen[i]`` gives).

    Parameters
    ----------
    engine : BatchEngine
        The engine of the data (``bgen.engine``).
    units : numpy.ndarray of int64
        The units of one batch.
    preload : bool
        numpy-backed variables (True) or lazy, dask-backed ones (False).

    Returns
    -------
    xarray.Dataset or xarray.DataArray
        With ``windows=``, a dict role -> the role's batch.
    """
    if engine.roles is not None:
        return cast(Batch, read_roles_xarray(engine, [units], preload)[0])
    schema = engine.schema
    if schema.mode == "window" and preload:
        return _window_xarray(engine, int(units[0]))
    windows = schema.unit_windows(units)
    if preload:
        arrays = engine.gather_all(windows, engine.sources)
    else:
        arrays = _lazy_all(engine, windows)
    coords = engine.gather_all(windows, engine.coord_sources)
    first = {d: int(s[0]) for d, s in windows.starts.items()} if windows.count else {}
    return engine.builder.build(arrays, coords, first, units)


def read_batches_xarray(
    engine: BatchEngine, batches: Sequence[NDArray[np.int64]]
) -> list[Batch]:
    """:func:`read_batch_xarray` (preloaded) of each of ``batches``; sample and
    window batches are gathered together (one gather of all their windows), then
    wrapped."""
    if engine.roles is not None:
        return cast(list[Batch], read_roles_xarray(engine, batches))
    if engine.schema.mode == "window" and batches:
        return _windows_xarray(engine, batches)
    if engine.schema.mode != "sample":
        return [read_batch_xarray(engine, units) for units in batches]
    windows = engine.schema.unit_windows(np.concatenate(batches))
    arrays = engine.gather_all(windows, engine.sources)
    coords = engine.gather_all(windows, engine.coord_sources)
    out: list[Batch] = []
    lo = 0
    for units in batches:
        hi = lo + units.size
        first = {d: int(s[lo]) for d, s in windows.starts.items()} if hi > lo else {}
        out.append(
            engine.builder.build(
                {k: a[lo:hi] for k, a in arrays.items()},
                {k: a[lo:hi] for k, a in coords.items()},
                first,
                units,
            )
        )
        lo = hi
    return out


def _window_xarray(engine: BatchEngine, unit: int) -> Batch:
    """A 0.4 window batch: scalar arithmetic, one region read per lazy variable."""
    first = engine.schema.window_starts(unit)
    spans = engine.window_spans
    cache = engine.block_cache
    builder = engine.builder
    memo = engine.chunk_memo
    lazy: dict[Hashable, NDArray[Any]] = {}
    coords: dict[Hashable, NDArray[Any]] = {}
    for out, names, sources in (
        (lazy, builder.lazy_vars, engine.sources),
        (coords, engine.coord_sources, engine.coord_sources),
    ):
        for name in names:
            region = tuple(
                [
                    slice(0, n) if w is None else slice(first[d], first[d] + w)
                    for d, w, n in spans[name]
                ]
            )
            out[name] = memo.read_copy(name, sources[name], region, cache)[np.newaxis]
    return builder.build_window(lazy, coords, first)


def _windows_xarray(
    engine: BatchEngine, batches: Sequence[NDArray[np.int64]]
) -> list[Batch]:
    """Window batches (one window each) whose lazy variables and coordinates are
    gathered together: each batch's values are a view of its row of the group's
    buffer, as on the array path."""
    units = np.concatenate(batches)
    windows = engine.schema.unit_windows(units)
    builder = engine.builder
    lazy = engine.gather_all(windows, {k: engine.sources[k] for k in builder.lazy_vars})
    coords = engine.gather_all(windows, engine.coord_sources)
    starts = {d: s.tolist() for d, s in windows.starts.items()}
    return [
        builder.build_window(
            {k: a[j : j + 1] for k, a in lazy.items()},
            {k: a[j : j + 1] for k, a in coords.items()},
            {d: s[j] for d, s in starts.items()},
        )
        for j in range(units.size)
    ]


def _lazy_all(engine: BatchEngine, windows: Windows) -> dict[Hashable, Any]:
    import dask.array as da
    from dask.delayed import delayed

    out = {}
    for name, src in engine.sources.items():
        request = engine.request(windows, engine.var_dims[name])
        task = delayed(gather_windows, pure=True)(src, request, engine.block_cache)
        shape = (request.count, *request.lengths)
        out[name] = da.from_delayed(task, shape=shape, dtype=src.dtype)  # type: ignore[no-untyped-call]
    return out


# --------------------------------------------------------------------------- prefetch
def prefetch_all(engine: BatchEngine) -> None:
    """Request every chunk of every chunked data variable (decoded into the chunk
    cache in the sources' pools; returns at once for sources that decode in a
    pool)."""
    for src in engine.sources.values():
        prefetch_source(src, engine.block_cache)


def prefetch(engine: BatchEngine, units: NDArray[np.int64]) -> None:
    """Decode into the chunk cache the chunks that the windows of ``units`` need
    (a background thread calls this for the batches about to be read)."""
    if engine.roles is not None:
        return prefetch_roles(engine, units)
    windows = engine.schema.unit_windows(units)
    # prefetched chunks must still be cached when they are used
    budget = engine.block_cache.max_bytes // (4 * max(1, len(engine.sources)))
    for name, src in engine.sources.items():
        prefetch_chunks(
            src,
            engine.request(windows, engine.var_dims[name]),
            engine.block_cache,
            budget,
        )
